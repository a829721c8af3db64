"""Classifier throughput per process, as a ratio to bare ``email`` parsing, and peak memory on a 50 MB mail.

    .venv/bin/python bench/classifier_throughput.py [--mails 400] [--rounds 7] [--big-mb 50] [--corpus typical]

Throughput: a corpus of typical mails (5-50 KB: Outlook- and Gmail-shaped text + HTML
alternatives, some with a PDF or image, HTML-only newsletters, plain replies with quoted
history), each wrapped in a real ``mail.raw`` record. ``--corpus plain-8bit`` takes the
end-to-end benchmark's mails instead (2.7-8.4 KB, a plain 8-bit UTF-8 body behind the
headers a mail that crossed the internet carries). One classifier pass is what the
service does for each record, one record at a time: decode the Avro record, parse,
decide, sanitise HTML, encode the ``mail.classified`` record. The baseline pass is
``email.message_from_bytes(raw, policy=policy.default)`` on the same mails. The machine
is noisy, so the two passes alternate within one run and the ratio is taken of the
medians, side by side.

Peak memory: a fresh interpreter reads a 50 MB mail (one base64 attachment) from a
file, resets its peak-RSS mark (``/proc/self/clear_refs``, Linux) and classifies it;
``VmHWM`` afterwards is the run's peak. The same is measured for bare
``message_from_bytes`` for comparison.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import email
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from email import policy
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fetcher_throughput import realistic_mail  # noqa: E402
from bench.mail_corpus import WORDS, prose  # noqa: E402
from mailintake.contracts.records import MailRaw, SenderIdentity, TicketOptions, encode_record  # noqa: E402
from services.classifier.core import Classifier  # noqa: E402
from services.classifier.service import raw_decoder, record_handler  # noqa: E402
from services.classifier.settings import ClassifierSettings  # noqa: E402

def _html(text: str, rng: random.Random) -> str:
    # Outlook-like markup: a style block, classes, spans, a signature table.
    paragraphs = "".join(
        f'<p class="MsoNormal"><span style="font-family:Calibri">{p}</span><o:p></o:p></p>' for p in text.split("\n") if p
    )
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"><style>'
        "p.MsoNormal{margin:0cm;font-size:11pt;font-family:Calibri,sans-serif}</style></head>"
        f'<body lang="DE"><div class="WordSection1">{paragraphs}'
        '<table border="0"><tr><td><b>Anna Schmidt</b><br>IT Service Desk</td>'
        f'<td><a href="https://example.com/{rng.randint(1, 999)}">example.com</a></td></tr></table></div></body></html>'
    )


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode().replace("\n", "\r\n")


def typical_mail(rng: random.Random, number: int) -> bytes:
    """One mail of 5-50 KB, of a kind drawn with roughly the mix a help desk sees."""
    kind = rng.choices(["alternative", "alternative+attachment", "html-only", "plain-reply"], [45, 25, 15, 15])[0]
    size = rng.randint(3_200, 9_000)
    text = prose(rng, size)
    head = (
        f'From: "Schmidt, Anna" <anna.schmidt{number % 50}@example.com>\r\nTo: support@helpdesk.example.org\r\n'
        f"Subject: =?utf-8?q?{rng.choice(WORDS)}_{number}_=E2=80=93_{rng.choice(WORDS)}?=\r\n"
        f"Message-ID: <bench-{number}@example.com>\r\nDate: Mon, 2 Dec 2024 09:00:00 +0100\r\nMIME-Version: 1.0\r\n"
    )
    if kind == "plain-reply":
        quoted = "\n".join("> " + line for line in prose(rng, size).split("\n"))
        body = f"{text}\n\nAm 1.12. schrieb IT Support:\n{quoted}\n"
        return (head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()
    html = _html(text, rng)
    if kind == "html-only":
        return (head + "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + html).encode()
    alternative = (
        "Content-Type: multipart/alternative; boundary=alt\r\n\r\n"
        f"--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{_b64(text.encode())}"
        f"--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{_b64(html.encode())}"
        "--alt--\r\n"
    )
    if kind == "alternative":
        return (head + alternative).encode()
    attachment = rng.randbytes(rng.randint(2_000, 12_000))
    name, content_type = rng.choice([("scan.pdf", "application/pdf"), ("screenshot.png", "image/png")])
    return (
        head + "Content-Type: multipart/mixed; boundary=mix\r\n\r\n--mix\r\n" + alternative + "--mix\r\n"
        f'Content-Type: {content_type}; name="{name}"\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(attachment)}--mix--\r\n"
    ).encode()


def raw_record(raw: bytes, number: int) -> bytes:
    mail = MailRaw(
        account_id="support", account_name="IT Support", protocol="IMAP", source_id=f"imap:1:{number}",
        poll_cycle=1, poll_interval_seconds=60, fetched_at=dt.datetime(2024, 12, 2, tzinfo=dt.UTC), size=len(raw),
        raw=raw, sender_identity=SenderIdentity(name="IT Support", address="support@helpdesk.example.org"),
        ticket_options=TicketOptions(auto_answer_template="ack"),
    )
    return encode_record("mail.raw", mail)


def _no_claim_check(check):  # noqa: ANN001, ANN202
    raise AssertionError("the corpus is inline")


CORPORA = {"typical": typical_mail, "plain-8bit": realistic_mail}


def throughput(mails: int, rounds: int, corpus_name: str = "typical") -> dict[str, float]:
    rng = random.Random(20241202)
    corpus = [CORPORA[corpus_name](rng, n) for n in range(mails)]
    records = [raw_record(raw, n) for n, raw in enumerate(corpus)]
    handle = record_handler(Classifier.from_settings(ClassifierSettings()), _no_claim_check)
    decode = raw_decoder()  # as the service's stream loop: the codec looked up once

    def bare() -> None:
        for raw in corpus:
            email.message_from_bytes(raw, policy=policy.default)

    def classify() -> None:
        for value in records:
            handle(decode(value), None)

    classify()  # warm caches (schema ids, codecs) before timing
    bare_rates, classify_rates = [], []
    for _ in range(rounds):
        for run, rates in ((bare, bare_rates), (classify, classify_rates)):
            started = time.perf_counter()
            run()
            rates.append(mails / (time.perf_counter() - started))
    sizes = sorted(len(raw) for raw in corpus)
    return {
        "mails": mails,
        "rounds": rounds,
        "size_min_kb": sizes[0] / 1024,
        "size_median_kb": statistics.median(sizes) / 1024,
        "size_max_kb": sizes[-1] / 1024,
        "bare_per_s": statistics.median(bare_rates),
        "classify_per_s": statistics.median(classify_rates),
        "ratio": statistics.median(c / b for c, b in zip(classify_rates, bare_rates)),
    }


_PEAK_PROBE = """
import re, sys, time
sys.path.insert(0, {root!r})
mode, path = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
if mode == "classify":
    import datetime as dt
    from mailintake.contracts.records import MailRaw, SenderIdentity, TicketOptions
    from services.classifier.core import Classifier, process
    from services.classifier.settings import ClassifierSettings
    classifier = Classifier.from_settings(ClassifierSettings())
    mail = MailRaw(account_id="a", account_name="a", protocol="IMAP", source_id="s", poll_cycle=1,
                   poll_interval_seconds=60, fetched_at=dt.datetime.now(dt.UTC), size=len(raw), raw=raw,
                   sender_identity=SenderIdentity(), ticket_options=TicketOptions())
    run = lambda: process(mail, classifier, None)
else:
    import email
    from email import policy
    run = lambda: email.message_from_bytes(raw, policy=policy.default)

def status(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

# Reset the peak (VmHWM) to the current RSS, so the peak read afterwards is the run's own.
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = status("VmRSS")
started = time.perf_counter()
run()
print(before, status("VmHWM"), time.perf_counter() - started)
"""


def peak_memory(big_mb: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.eml"
        attachment = _b64(random.Random(1).randbytes(big_mb * 1024 * 1024 * 3 // 4))
        path.write_bytes(
            b"From: Anna <anna@example.com>\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nlogs attached\r\n"
            b"--B\r\nContent-Type: application/zip; name=logs.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + attachment.encode() + b"--B--\r\n"
        )
        del attachment
        size_mb = path.stat().st_size / 1024 / 1024
        probe = _PEAK_PROBE.format(root=str(Path(__file__).resolve().parents[1]))
        result = {"mail_mb": size_mb}
        for mode in ("bare", "classify"):
            out = subprocess.run([sys.executable, "-c", probe, mode, str(path)], capture_output=True, text=True, check=True)
            before, peak, seconds = out.stdout.split()
            result[f"{mode}_before_mb"] = float(before)
            result[f"{mode}_peak_mb"] = float(peak)
            result[f"{mode}_seconds"] = float(seconds)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument(
        "--corpus",
        choices=sorted(CORPORA),
        default="typical",
        help="typical: 5-50 KB mixed mails (the default); plain-8bit: the end-to-end benchmark's mails",
    )
    args = parser.parse_args()
    speed = throughput(args.mails, args.rounds, args.corpus)
    memory = peak_memory(args.big_mb)
    print(f"date: {dt.date.today().isoformat()}  python {platform.python_version()}  {platform.machine()}")
    print(
        f"corpus ({args.corpus}): {speed['mails']} mails, {speed['size_min_kb']:.0f}-{speed['size_max_kb']:.0f} KB "
        f"(median {speed['size_median_kb']:.0f} KB), {speed['rounds']} alternating rounds, medians"
    )
    print(f"bare email.message_from_bytes(policy=default): {speed['bare_per_s']:8.0f} mails/s")
    print(f"classifier (decode, parse, decide, encode):    {speed['classify_per_s']:8.0f} mails/s")
    print(f"ratio classifier / bare:                       {speed['ratio']:8.2f}")
    print(f"{memory['mail_mb']:.1f} MB mail, peak RSS during the run (VmHWM reset just before it):")
    for mode, label in (("bare", "bare message_from_bytes"), ("classify", "classifier process()")):
        added = memory[mode + "_peak_mb"] - memory[mode + "_before_mb"]
        print(
            f"  {label:<24} {memory[mode + '_peak_mb']:5.0f} MB, {added:.0f} MB above the "
            f"{memory[mode + '_before_mb']:.0f} MB before it ({added / memory['mail_mb']:.1f} x the mail), "
            f"{memory[mode + '_seconds']:.2f} s"
        )

if __name__ == "__main__":
    main()
