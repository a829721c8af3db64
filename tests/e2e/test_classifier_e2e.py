"""Real mails from a Dovecot mailbox through the running pipeline to mail.classified and mail.dlq.

Mirrors test_walking_skeleton.py (which checks tickets and the no-sender DLQ path) and
looks at what the classifier itself writes: the v2 fields of mail.classified for an
Outlook-shaped HTML mail with an attachment, a reply that names its ticket only through
In-Reply-To, and a mail over the classifier's size limit, which becomes a dead letter.

Other pipelines may share the stack (a developer's demo, another test run): this one's
classifier gets a consumer group of its own, starting at the current end of mail.raw,
and an instance id of its own, so its decisions can be told from theirs.
"""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import sys
import time

import pytest
from imapclient import IMAPClient
from kafka import KafkaConsumer

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import decode_record
from mailintake.outbound_mail import format_outbound_message_id
from mailintake.stack import add_mail_user

pytestmark = pytest.mark.stack

SIZE_LIMIT = 64 * 1024


def imap(stack, user):
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    client = IMAPClient(stack.host, port=stack.imaps_port, ssl=True, ssl_context=context, timeout=30)
    client.plain_login(user.name, user.password)
    return client


def write_accounts(path, stack, user, account_id):
    path.write_text(
        f"""accounts:
  - id: {account_id}
    name: E2E classifier {user.address}
    host: {stack.host}
    port: {stack.imaps_port}
    security: tls
    ca_file: {stack.ca_file}
    username: {user.name}
    password: {user.password}
    poll_interval_seconds: 5
"""
    )


def outlook_mail(unique: str, to: str) -> bytes:
    pdf = base64.encodebytes(b"%PDF-1.4 " + b"0" * 3000).decode().replace("\n", "\r\n")
    return f"""From: "Huber, Sabine" <Sabine.Huber@corp.example.com>
To: {to}
Subject: =?utf-8?q?Drucker_im_2=2E_OG_{unique}_=E2=80=93_Papierstau?=
Message-ID: <outlook-{unique}@corp.example.com>
Importance: high
Precedence: bulk
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mixed"

--mixed
Content-Type: text/html; charset="windows-1252"
Content-Transfer-Encoding: quoted-printable

<html><head><style>p{{color:red}}</style></head><body><p>Der Drucker zeigt =
=84Papierstau=93.</p><script>alert(1)</script></body></html>
--mixed
Content-Type: application/pdf; name="=?utf-8?q?Fehlerbericht_M=C3=A4rz.pdf?="
Content-Disposition: attachment; filename*=utf-8''Fehlerbericht%20M%C3%A4rz.pdf
Content-Transfer-Encoding: base64

{pdf}
--mixed--
""".replace("\n", "\r\n").encode("ascii")


def reply_mail(unique: str, to: str, instance: str) -> bytes:
    ours = format_outbound_message_id(instance, 777001, "helpdesk.example.org")
    return (
        f"From: max@example.com\r\nTo: {to}\r\nSubject: Re: Ihre Anfrage {unique}\r\n"
        f"Message-ID: <reply-{unique}@example.com>\r\nIn-Reply-To: {ours}\r\nReferences: {ours}\r\n\r\nDanke!\r\n"
    ).encode()


def oversized_mail(unique: str, to: str) -> bytes:
    return (f"From: big@example.com\r\nTo: {to}\r\nSubject: too big {unique}\r\n\r\n" + "x" * (2 * SIZE_LIMIT)).encode()


def start_group_at_the_end(bootstrap, group_id, topic="mail.raw"):
    """Commit the current end of ``topic`` for a new consumer group, so it reads only what comes next."""
    from kafka.structs import OffsetAndMetadata, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(partitions)
        consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
    finally:
        consumer.close()


def read_topic(bootstrap, topic, wanted, timeout=120):
    """Records of ``topic`` named by ``wanted(record)``, a list per name, until every name has one."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000)
    found, deadline = {}, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for message in consumer:
                try:
                    record = decode_record(topic, message.value)
                except InvalidMessage:  # other tests put broken records on purpose
                    continue
                name = wanted(record)
                if name:
                    found.setdefault(name, []).append(record)
            if len(found) >= wanted.count:
                break
    finally:
        consumer.close()
    return found


def test_mails_from_imap_reach_mail_classified_with_their_parsed_fields_or_mail_dlq(stack, unique, tmp_path):
    user = add_mail_user(f"cls{unique}", f"pw-{unique}")
    account_id = f"cls-{unique}"
    instance = f"e{unique}"
    group_id = f"e2e-classifier-{unique}"
    accounts = tmp_path / "accounts.yaml"
    write_accounts(accounts, stack, user, account_id)
    start_group_at_the_end(stack.kafka_bootstrap, group_id)
    with imap(stack, user) as client:
        for mail in (
            outlook_mail(unique, user.address),
            reply_mail(unique, user.address, instance),
            oversized_mail(unique, user.address),
        ):
            client.append("INBOX", mail)
    pipeline = subprocess.Popen(
        [sys.executable, "-m", "mailintake", "run", "all", "--accounts", str(accounts)],
        env={
            **os.environ,
            "MAILINTAKE_CLASSIFIER_INSTANCE_ID": instance,
            "MAILINTAKE_CLASSIFIER_GROUP_ID": group_id,
            "MAILINTAKE_CLASSIFIER_MAX_MAIL_BYTES": str(SIZE_LIMIT),
        },
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def ours(decision):
            if decision.account_id != account_id:
                return None
            if decision.message_id == f"<reply-{unique}@example.com>":
                return "reply" if decision.ticket_reference == f"[#{instance}-777001]" else None
            return "outlook" if decision.message_id == f"<outlook-{unique}@corp.example.com>" else None
        ours.count = 2
        decisions = read_topic(stack.kafka_bootstrap, "mail.classified", ours)

        def too_big(letter):
            return "big" if letter.original_value and f"too big {unique}".encode() in letter.original_value else None
        too_big.count = 1
        letters = read_topic(stack.kafka_bootstrap, "mail.dlq", too_big, timeout=60)
    finally:
        pipeline.send_signal(signal.SIGTERM)
        pipeline.wait(timeout=60)

    # Every decision on the Outlook mail (this pipeline's, and any other current classifier's).
    assert decisions.get("outlook"), "the Outlook mail never reached mail.classified"
    for outlook in decisions["outlook"]:
        assert outlook.decision.value == "NEW_TICKET"
        assert outlook.rules_fired == ("precedence-bulk", "new-ticket")
        assert (outlook.bulk, outlook.suppress_auto_answer, outlook.loop) == (True, True, False)
        assert outlook.sender == "sabine.huber@corp.example.com" and outlook.sender_name == "Huber, Sabine"
        assert outlook.subject == f"Drucker im 2. OG {unique} – Papierstau"
        assert outlook.priority == "high"
        assert outlook.body_text.strip() == "Der Drucker zeigt „Papierstau“."
        assert "<script" not in outlook.body_html and "<p>Der Drucker zeigt „Papierstau“.</p>" in outlook.body_html
        (attachment,) = outlook.attachments
        assert (attachment.filename, attachment.content_type, attachment.size) == (
            "Fehlerbericht März.pdf", "application/pdf", 3009
        )

    assert decisions.get("reply"), "the reply never became a follow-up by its In-Reply-To"
    (reply,) = decisions["reply"]
    assert reply.decision.value == "FOLLOW_UP"
    assert reply.rules_fired == ("reply-to-our-message-id",)

    assert letters.get("big"), "the oversized mail never reached mail.dlq"
    letter = letters["big"][0]
    assert (letter.service, letter.source_topic) == ("classifier", "mail.raw")
    assert letter.exception_type == "services.classifier.parsing.MailTooLarge"
    assert f"larger than the limit of {SIZE_LIMIT} bytes" in letter.reason
