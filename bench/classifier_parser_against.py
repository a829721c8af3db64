"""The classifier's parser against another revision's, interleaved in one process.

    .venv/bin/python bench/classifier_parser_against.py REV [--corpus plain-8bit] [--mails 400] [--rounds 40]

Loads ``services/classifier/parsing.py`` as it is at git revision ``REV`` beside this
tree's, and with it the address helpers (``addresses.py``) at ``REV``: the revision's
parser calls the revision's helpers of that module. Then it alternates the two over the
same mails, ``--rounds`` times, swapping which goes first every round. Two measurements,
each as this tree's CPU time over REV's per round (median and quartiles), so that a change
of a few per cent shows through a machine whose speed drifts by more than that between
runs:

- *parse*: ``parse_mail`` alone;
- *pass*: what the service does for each record (decode the ``mail.raw`` record, parse,
  decide, encode), one record at a time, with only the parser swapped.

The rest of the tree is this one's for both: the revision's parser and address helpers
must import against it (a parser from before a change of its other helpers will not).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import services.classifier.core as classifier_core  # noqa: E402
import services.classifier.parsing as this_parser  # noqa: E402
from bench.classifier_throughput import CORPORA, _no_claim_check, raw_record  # noqa: E402
from mailintake.runtime.garbage_collection import tune_for_streaming  # noqa: E402
from services.classifier.service import raw_decoder, record_handler  # noqa: E402
from services.classifier.settings import ClassifierSettings  # noqa: E402

PARSER = "services/classifier/parsing.py"
HELPERS = {"services.classifier.addresses": "services/classifier/addresses.py"}
"""Helper modules taken at the revision too, by module name: the parser's names bound to
them are bound to the revision's."""


def module_at(revision: str, source: str, name: str, folder: Path) -> ModuleType:
    """The file ``source`` as it is at ``revision``, imported as a module named ``name``."""
    try:
        text = subprocess.run(
            ["git", "show", f"{revision}:{source}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"cannot read {source} at {revision}: {error.stderr.strip()}") from None
    path = folder / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def parser_at(revision: str, folder: Path) -> ModuleType:
    """``parsing.py`` as it is at ``revision``, calling the :data:`HELPERS` as they are there."""
    parser = module_at(revision, PARSER, "parsing_at_revision", folder)
    for number, (helper_name, source) in enumerate(HELPERS.items()):
        helper = module_at(revision, source, f"helper_{number}_at_revision", folder)
        for name, value in vars(parser).items():
            if getattr(value, "__module__", None) == helper_name and hasattr(helper, name):
                setattr(parser, name, getattr(helper, name))
    return parser


def interleaved(rounds: int, runs: dict[str, Callable[[], None]]) -> list[float]:
    """Per round, the CPU time of ``runs["this"]`` over that of ``runs["revision"]``."""
    ratios = []
    for number in range(rounds):
        order = ["this", "revision"] if number % 2 else ["revision", "this"]
        seconds = {}
        for name in order:
            started = time.thread_time()
            runs[name]()
            seconds[name] = time.thread_time() - started
        ratios.append(seconds["this"] / seconds["revision"])
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="the git revision whose parser to compare with, e.g. HEAD~1")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="plain-8bit")
    parser.add_argument("--mails", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        other_parser = parser_at(args.revision, Path(folder))
    rng = random.Random(5)
    mails = [CORPORA[args.corpus](rng, number) for number in range(args.mails)]
    records = [raw_record(raw, number) for number, raw in enumerate(mails)]
    decode = raw_decoder()
    handle = record_handler(classifier_core.Classifier.from_settings(ClassifierSettings()), _no_claim_check)
    tune_for_streaming()  # as every service process does at start

    def parse_with(module: ModuleType) -> Callable[[], None]:
        def run() -> None:
            for raw in mails:
                module.parse_mail(raw)
        return run

    def pass_with(module: ModuleType) -> Callable[[], None]:
        def run() -> None:
            classifier_core.parse_mail = module.parse_mail  # what classify() calls
            for record in records:
                handle(decode(record), None)  # type: ignore[arg-type]  # the handler never reads the message
        return run

    results = {
        "parse": interleaved(args.rounds, {"this": parse_with(this_parser), "revision": parse_with(other_parser)}),
        "pass": interleaved(args.rounds, {"this": pass_with(this_parser), "revision": pass_with(other_parser)}),
    }
    classifier_core.parse_mail = this_parser.parse_mail
    print(f"corpus {args.corpus}, {args.mails} mails, {args.rounds} rounds, this tree's parser against {args.revision}'s")
    print("| measurement | this / revision, median | quartiles |")
    print("|---|---|---|")
    for name, ratios in results.items():
        low, median, high = statistics.quantiles(ratios, n=4)
        print(f"| {name} | {statistics.median(ratios):.3f} | {low:.3f} - {high:.3f} |")


if __name__ == "__main__":
    main()
