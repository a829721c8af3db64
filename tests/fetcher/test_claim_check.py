"""A mail over the fetcher's inline limit travels as a claim check: its bytes go to
PostgreSQL, the ``mail.raw`` record carries only the reference, and the classifier
resolves it to the same decision as the same mail inline."""

from __future__ import annotations

import hashlib
from email import policy
from email.message import EmailMessage

import pytest

from mailintake.claim_check import STORE_NAME, ClaimCheckStore
from mailintake.contracts.records import decode_record
from mailintake.database import engine_for
from services.classifier.core import OUTPUT_TOPIC, Classifier
from services.classifier.service import record_handler
from services.classifier.settings import ClassifierSettings

pytestmark = pytest.mark.stack

INLINE_LIMIT = 4096


def mail_with_attachment(unique: str, to: str, attachment_size: int) -> bytes:
    message = EmailMessage()
    message["From"] = "Erika Muster <erika@example.org>"
    message["To"] = to
    message["Subject"] = f"Scanner {unique}: log attached"
    message["Message-ID"] = f"<claim-{unique}-{attachment_size}@example.org>"
    message.set_content("The scanner stops after two pages; the log is attached.\n")
    message.add_attachment(
        bytes(range(256)) * (attachment_size // 256), maintype="application", subtype="octet-stream", filename="scan.log"
    )
    # CRLF line ends, as the IMAP server stores and returns them.
    return message.as_bytes(policy=policy.SMTP)


def test_a_mail_over_the_inline_limit_goes_through_the_claim_check_store(
    stack, unique, account_for, imap_client, imap_user, imap_folder, fetcher_for, mail_raw
):
    big = mail_with_attachment(unique, imap_user.address, 16 * 1024)
    small = mail_with_attachment(unique, imap_user.address, 512)
    assert len(small) <= INLINE_LIMIT < len(big)
    with imap_client(imap_user) as client:
        client.append(imap_folder, big)
        client.append(imap_folder, small)
    account = account_for(imap_user, id=f"claim-{unique}", folder=imap_folder)

    assert fetcher_for(account, inline_limit_bytes=INLINE_LIMIT).poll(account) == 2

    big_record, small_record = mail_raw.records(account.id)
    assert big_record.raw is None and big_record.size == len(big)
    check = big_record.claim_check
    assert check is not None and check.store == STORE_NAME and check.size == len(big)
    assert check.sha256 == hashlib.sha256(big).hexdigest()
    store = ClaimCheckStore(engine_for(stack.database_url))
    assert store.get(check) == big, "the bytes in PostgreSQL are the mail's, unchanged"
    assert small_record.raw == small and small_record.claim_check is None, "under the limit stays inline"

    loaded = []

    def load_claim_check(reference):
        loaded.append(reference.sha256)
        return store.get(reference)

    handle = record_handler(Classifier.from_settings(ClassifierSettings()), load_claim_check)
    [by_claim_check] = handle(big_record, None)
    assert loaded == [check.sha256], "the classifier read the bytes from the store"
    inline_record = big_record.model_copy(update={"raw": big, "claim_check": None})
    [inline] = handle(inline_record, None)
    assert loaded == [check.sha256], "the inline record needed no store"

    assert by_claim_check.topic == inline.topic == OUTPUT_TOPIC
    assert by_claim_check.key == inline.key
    assert decode_record(OUTPUT_TOPIC, by_claim_check.value) == decode_record(OUTPUT_TOPIC, inline.value)
