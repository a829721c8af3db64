"""The classifier's pass one record at a time against its pass in groups, interleaved.

    .venv/bin/python bench/classifier_grouped_pass.py [--corpus plain-8bit|typical] [--mails 500] [--rounds 20]

Both run what the stream loop hands a batch of ``mail.raw`` records to, over the same
records: decode each, then the service's handler of many records. *One at a time* wraps
``record_handler`` (each mail parsed, decided and encoded before the next is decoded), as
the service ran until this bench was written; *grouped* is ``grouped_handler``
(``process_grouped``: a group of mails parsed back to back, then decided and encoded).
The two alternate, the first swapping every round; the result is the grouped pass's CPU
time over the other's per round (median and quartiles), with both medians in us a mail.
The outputs of the two are checked to be equal first.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.classifier_throughput import CORPORA, _no_claim_check, raw_record  # noqa: E402
from mailintake.runtime.garbage_collection import tune_for_streaming  # noqa: E402
from mailintake.runtime.stream_processor import one_at_a_time  # noqa: E402
from services.classifier.core import Classifier  # noqa: E402
from services.classifier.service import grouped_handler, raw_decoder, record_handler  # noqa: E402
from services.classifier.settings import ClassifierSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="plain-8bit")
    parser.add_argument("--mails", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    rng = random.Random(7)
    values = [raw_record(CORPORA[args.corpus](rng, n), n) for n in range(args.mails)]
    classifier = Classifier.from_settings(ClassifierSettings())
    decode = raw_decoder()
    handlers = {
        "one at a time": one_at_a_time(record_handler(classifier, _no_claim_check)),
        "grouped": grouped_handler(classifier, _no_claim_check),
    }

    def run(handler):  # noqa: ANN001, ANN202
        return [[(o.key, o.value) for o in outputs] for outputs in handler((decode(v), None) for v in values)]

    first, second = (run(h) for h in handlers.values())
    assert first == second, "the two passes made different outputs"
    tune_for_streaming()  # as `mailintake run` does
    spent: dict[str, list[float]] = {name: [] for name in handlers}
    for round_number in range(args.rounds):
        order = list(handlers.items())
        for name, handler in order if round_number % 2 else reversed(order):
            started = time.process_time()
            run(handler)
            spent[name].append((time.process_time() - started) / len(values) * 1e6)
    ratios = sorted(g / o for g, o in zip(spent["grouped"], spent["one at a time"]))
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"corpus {args.corpus}, {args.mails} mails, {args.rounds} rounds")
    print("| pass | CPU us a mail, median |")
    print("|---|---|")
    for name, times in spent.items():
        print(f"| {name} | {statistics.median(times):.0f} |")
    median = statistics.median(ratios)
    print(f"grouped / one at a time: median {median:.3f}, quartiles {quartiles[0]:.3f} - {quartiles[2]:.3f}")


if __name__ == "__main__":
    main()
