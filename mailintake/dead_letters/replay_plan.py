"""What ``dlq replay`` does with the letters it selected. Pure.

The policy, in order, for each selected letter:

1. it has been replayed before (the ledger ``mail.dlq.replays`` names it) -> skipped,
   unless ``again`` is set: a second run over the same selection replays nothing twice;
2. it holds no original value (only a claim-check reference) -> skipped, said why;
3. its target topic (``to_topic``, or else the topic it came from) is not a pipeline
   topic that carries raw input (``mail.raw`` or ``mail.classified``) -> skipped;
4. otherwise it is replayed: its original key and value go to the target topic, in one
   Kafka transaction with its ledger entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Set
from dataclasses import dataclass

from mailintake.contracts.records import DlqReplay
from mailintake.dead_letters.selection import StoredLetter

REPLAYABLE_TOPICS = frozenset({"mail.raw", "mail.classified"})
"""Topics a letter may go back to: the inputs of the services that dead-letter."""


@dataclass(frozen=True)
class Replay:
    stored: StoredLetter
    to_topic: str

    def ledger_entry(self, at: dt.datetime) -> DlqReplay:
        letter = self.stored.letter
        return DlqReplay(
            dlq_partition=self.stored.partition,
            dlq_offset=self.stored.offset,
            service=letter.service,
            source_topic=letter.source_topic,
            source_partition=letter.source_partition,
            source_offset=letter.source_offset,
            to_topic=self.to_topic,
            reason=letter.reason,
            replayed_at=at,
        )


@dataclass(frozen=True)
class Skip:
    stored: StoredLetter
    why: str


def plan_replay(
    letters: Iterable[StoredLetter], replayed: Set[tuple[int, int]], to_topic: str | None = None, again: bool = False
) -> list[Replay | Skip]:
    """A ``Replay`` or a ``Skip`` (with the reason) for each letter, in order (see the module docstring)."""
    plan: list[Replay | Skip] = []
    for stored in letters:
        target = to_topic or stored.letter.source_topic
        if stored.position in replayed and not again:
            plan.append(Skip(stored, "already replayed (see mail.dlq.replays; --again replays it anyway)"))
        elif stored.letter.original_value is None:
            plan.append(Skip(stored, "no original value kept (claim check only)"))
        elif target not in REPLAYABLE_TOPICS:
            plan.append(Skip(stored, f"{target} is no topic a letter may be replayed to ({', '.join(sorted(REPLAYABLE_TOPICS))})"))
        else:
            plan.append(Replay(stored, target))
    return plan
