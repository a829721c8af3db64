"""Record keys, as the topic yaml files describe them.

Keys decide partitions, and so which records keep their order: every producer
must build them the same way, hence one function here.
"""

from __future__ import annotations

from mailintake.contracts.records import (
    AccountNotice,
    DeadLetter,
    Decision,
    DlqReplay,
    MailClassified,
    MailRaw,
    TicketEvent,
    TopicRecord,
)


def key_text(record: TopicRecord) -> str:
    """The key of ``record`` as text; ``ValueError`` if the record lacks what its key needs."""
    if isinstance(record, (MailRaw, AccountNotice)):
        return record.account_id
    if isinstance(record, MailClassified):
        if record.decision is Decision.NEW_TICKET:
            if not record.bundle_key:
                raise ValueError("a NEW_TICKET decision needs a bundle_key, its record key")
            return record.bundle_key
        if record.decision is Decision.FOLLOW_UP:
            if not record.ticket_reference:
                raise ValueError("a FOLLOW_UP decision needs a ticket_reference, its record key")
            return record.ticket_reference
        return f"{record.account_id}:{record.source_id}"
    if isinstance(record, TicketEvent):
        if record.ticket_number is not None:
            return str(record.ticket_number)
        return record.account_id
    if isinstance(record, DeadLetter):
        return f"{record.source_topic}:{record.source_partition}:{record.source_offset}"
    if isinstance(record, DlqReplay):
        return f"mail.dlq:{record.dlq_partition}:{record.dlq_offset}"
    raise TypeError(f"no key rule for {type(record).__name__}")


def record_key(record: TopicRecord) -> bytes:
    """The Kafka key of ``record``: ``key_text`` in UTF-8."""
    return key_text(record).encode("utf-8")
