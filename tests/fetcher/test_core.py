import random
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from mailintake.contracts.records import ClaimCheck
from services.fetcher.account import Account
from services.fetcher.core import (
    Cursor,
    backoff_seconds,
    chunks_by_size,
    header_block,
    imap_bodies,
    imap_quoted,
    imap_sizes,
    imap_source_id,
    imap_uid,
    mail_record,
    message_id_of,
    parse_uidl_listing,
    plan_fetch,
    plan_pop3,
    pop3_source_id,
    sasl_plain,
    without_comments,
)


def test_only_uids_above_the_mark_are_fetched_even_when_the_server_returns_the_last_one():
    # 'UID 11:*' on a folder whose highest UID is 10 answers 10.
    plan = plan_fetch(Cursor(uidvalidity=5, last_uid=10, poll_cycle=3), 5, [10])
    assert plan.uids == ()
    assert not plan.uidvalidity_changed


def test_new_uids_come_oldest_first():
    plan = plan_fetch(Cursor(5, 10, 3), 5, [13, 11, 12])
    assert plan.uids == (11, 12, 13)


def test_uidvalidity_change_fetches_the_whole_folder_again():
    plan = plan_fetch(Cursor(5, 10, 3), 6, [1, 2])
    assert plan.uidvalidity_changed
    assert plan.uids == (1, 2)


def test_first_poll_has_no_uidvalidity_to_compare():
    plan = plan_fetch(Cursor(None, 0, 0), 6, [1, 2])
    assert not plan.uidvalidity_changed and plan.uids == (1, 2)


def account() -> Account:
    return Account(id="desk", name="Desk", host="h", port=993, username="u", password=SecretStr("p"))


def test_record_carries_the_bytes_inline_or_the_claim_check():
    raw = b"Message-ID: <a@b>\r\nSubject: x\r\n\r\nbody"
    now = datetime(2026, 11, 29, tzinfo=UTC)
    inline = mail_record(account(), source_id="imap:5:11", raw=raw, poll_cycle=4, fetched_at=now, claim_check=None)
    assert inline.raw == raw and inline.size == len(raw) and inline.message_id == "<a@b>"
    check = ClaimCheck(store="postgres", sha256="0" * 64, size=len(raw))
    claimed = mail_record(account(), source_id="imap:5:11", raw=raw, poll_cycle=4, fetched_at=now, claim_check=check)
    assert claimed.raw is None and claimed.claim_check == check


def test_the_record_encodes_to_the_bytes_the_field_by_field_checked_encoder_writes():
    from mailintake.contracts import encode, encode_record

    now = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    record = mail_record(account(), source_id="imap:5:11", raw=b"Message-ID: <a@b>\r\n\r\nx", poll_cycle=4, fetched_at=now, claim_check=None)
    assert encode_record("mail.raw", record) == encode("mail.raw", record.to_avro())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe garbage",
        b"Subject: no id\r\n\r\n",
        b"Subject: no id\r\n\r\nMessage-ID: <in@body>\r\n",
        b"X-Message-ID: <a@b>\r\nOriginal-Message-ID: <c@d>\r\nResent-Message-ID: <e@f>\r\n\r\n",
        b"Message-IDs: <a@b>\r\n\r\n",
        b"References: <x@y>\r\n Message-ID: <continuation@of-references>\r\n\r\n",
        b"Message-ID:\r\n\r\n",
        b"Message-ID: <>\r\n\r\n",
        b"Message-ID: none given\r\n\r\n",
        b"Message-ID: (only a comment <a@b>)\r\n\r\n",
    ],
)
def test_message_id_absent_or_unusable_is_none(raw):
    assert message_id_of(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Message-ID: <a@b>\r\n\r\nbody", "<a@b>"),
        (b"Subject: x\r\nmessage-id: <lower@case>\r\n\r\n", "<lower@case>"),
        (b"MESSAGE-ID: <upper@case>\r\n\r\n", "<upper@case>"),
        (b"Message-Id: <first@one>\r\nMessage-ID: <second@one>\r\n\r\n", "<first@one>"),
        (b"Message-ID:\r\n <folded@once>\r\n\r\n", "<folded@once>"),
        (b"Message-ID:\r\n\t\r\n  <folded@twice>\r\nSubject: x\r\n\r\n", "<folded@twice>"),
        (b"Message-ID:\n <lf@only>\n\nbody", "<lf@only>"),
        (b"Message-ID :  <obsolete@blank-before-colon>\r\n\r\n", "<obsolete@blank-before-colon>"),
        (b"Message-ID: (client (v2) \\) <x@y>) <a@b> (trailing)\r\n\r\n", "<a@b>"),
        (b"Message-ID: <a(b)@c>\r\n\r\n", "<a(b)@c>"),
        (b"Message-ID: bare.id@host.example\r\n\r\n", "<bare.id@host.example>"),
        (b"Message-ID: <8bit-\xff\xfe@junk>\r\nSubject: \xe4\xf6\r\n\r\n", "<8bit-\ufffd\ufffd@junk>"),
        (b"Message-ID: junk\x00 <after@junk> <second@id>\r\n\r\n", "<after@junk>"),
        (b"Message-ID: <no-blank-line@at-all>", "<no-blank-line@at-all>"),
    ],
)
def test_message_id_is_the_first_headers_token_unfolded_and_without_comments(raw, expected):
    assert message_id_of(raw) == expected


def test_message_id_is_found_past_a_long_header_block_and_not_in_an_lf_body():
    raw = b"".join(b"Received: from hop%d\r\n\tby mx; Mon, 2 Dec 2024\r\n" % n for n in range(200))
    assert message_id_of(raw + b"Message-ID: <late@header>\r\n\r\nbody\n\nmore") == "<late@header>"
    assert message_id_of(b"Subject: x\r\n\r\nbody\n\nMessage-ID: <in@body>\n") is None


@pytest.mark.parametrize(
    ("raw", "block"),
    [
        (b"", b""),
        (b"A: 1\r\n\r\nbody\n\nmore", b"A: 1\r\n\r\n"),
        (b"A: 1\n\nbody\r\n\r\nmore", b"A: 1\n\n"),
        (b"A: 1\r\n\nbody", b"A: 1\r\n\n"),
        (b"A: 1\r\nno blank line", b"A: 1\r\nno blank line"),
    ],
)
def test_header_block_ends_at_the_first_blank_line_of_either_kind(raw, block):
    assert header_block(raw) == block


def test_without_comments_drops_nested_and_escaped_comments_but_not_inside_angle_brackets():
    assert without_comments("(a (b) \\) c) <x(y)@z> (d)") == " <x(y)@z> "
    assert without_comments("no comment") == "no comment"
    assert without_comments("(unclosed <a@b>") == ""


def test_sasl_plain_is_utf8_with_the_user_name_intact():
    message = sasl_plain("Domain\\Max.Mustermann\\Shared.MailboxAlias", "Pässwörd")
    assert message == b"\0Domain\\Max.Mustermann\\Shared.MailboxAlias\0P\xc3\xa4ssw\xc3\xb6rd"


def test_imap_quoted_escapes_backslash_and_quote():
    assert imap_quoted('Domain\\Max "M"') == '"Domain\\\\Max \\"M\\""'


def test_source_ids_round_trip():
    assert imap_source_id(5, 11) == "imap:5:11" and imap_uid("imap:5:11") == 11
    assert pop3_source_id("000000014ab0") == "pop3:000000014ab0"


def test_uidl_listing_is_parsed_and_junk_lines_skipped():
    lines = [b"1 000000014ab0", b"2 00000002abc1 ", b"garbage", b"3 "]
    assert parse_uidl_listing(lines) == [(1, "000000014ab0"), (2, "00000002abc1")]


def test_pop3_plan_splits_new_from_produced_and_finds_vanished_uidls():
    plan = plan_pop3([(2, "b"), (1, "a"), (3, "c"), (4, "a")], seen={"b", "gone"})
    assert plan.pending == ((1, "a"), (3, "c")), "oldest first; a UIDL listed twice is taken once"
    assert plan.leftovers == ((2, "b"),)
    assert plan.vanished == {"gone"}


@pytest.mark.parametrize(("failures", "low", "high"), [(1, 60, 72), (2, 96, 144), (3, 192, 288), (20, 720, 1080)])
def test_backoff_doubles_per_failure_with_jitter_and_a_cap(failures, low, high):
    rng = random.Random(7)
    delays = [backoff_seconds(60, failures, rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) / 4, "jitter spreads retries"


def test_backoff_is_never_shorter_than_the_interval():
    assert all(backoff_seconds(600, 1, random.Random(i)) >= 600 for i in range(100))


def test_imap_bodies_reads_the_usual_fetch_shape():
    data = [(b"1 (UID 7 BODY[] {3}", b"abc"), b")", (b"2 (UID 9 BODY[] {0}", b""), b")"]
    assert imap_bodies(data) == {7: b"abc", 9: b""}
    assert imap_bodies([None]) == {}, "imaplib's answer when there was no FETCH response"


@pytest.mark.parametrize(
    "data",
    [
        [b"3 (FLAGS (\\Seen) UID 4)", (b"1 (UID 7 BODY[] {3}", b"abc"), b")"],
        [(b"1 (UID 7 FLAGS (\\Seen) BODY[] {3}", b"abc"), b")"],
        [(b"1 (BODY[] {3}", b"abc"), b" UID 7)"],
        [(b"1 (UID 7 BODY[] {4}", b"abc"), b")"],
        [(b"1 (UID 7 BODY[] {3}", b"abc")],
        [(b"1 (UID 7 BODY[] {3}", b"abc"), b" FLAGS (\\Seen))"],
        [b'1 (UID 7 BODY[] "abc")'],
    ],
)
def test_imap_bodies_leaves_every_other_shape_to_the_full_parser(data):
    assert imap_bodies(data) is None


def test_imap_sizes_reads_the_usual_listing_and_leaves_other_shapes_to_the_full_parser():
    assert imap_sizes([b"1 (UID 7 RFC822.SIZE 4863)", b"2 (UID 9 RFC822.SIZE 0)"]) == {7: 4863, 9: 0}
    assert imap_sizes([None]) == {}
    assert imap_sizes([b"1 (RFC822.SIZE 4863 UID 7)"]) is None
    assert imap_sizes([b"1 (UID 7 RFC822.SIZE 4863 FLAGS (\\Seen))"]) is None


def test_chunks_by_size_keep_the_order_and_stay_within_the_budget():
    sizes = {"a": 3, "b": 3, "c": 4, "d": 10, "e": 1, "f": 25, "g": 2}
    chunks = list(chunks_by_size(list("abcdefg"), sizes, 10))
    assert chunks == [["a", "b", "c"], ["d"], ["e"], ["f"], ["g"]]
    assert [item for chunk in chunks for item in chunk] == list("abcdefg")
    assert list(chunks_by_size([], sizes, 10)) == []


def test_chunks_by_size_put_a_mail_of_unknown_size_alone():
    assert list(chunks_by_size(["a", "x", "b"], {"a": 1, "b": 1}, 10)) == [["a"], ["x"], ["b"]]


def test_bearer_sasl_messages_name_the_shared_mailbox_and_carry_the_delegates_token():
    from services.fetcher.core import choose_bearer_mechanism, sasl_bearer, sasl_bearer_abort

    # A shared mailbox: its own address as the user, the delegate's token.
    assert sasl_bearer("XOAUTH2", "shared@example.com", "tok-of-delegate", "imap.example.com", 993) == (
        b"user=shared@example.com\x01auth=Bearer tok-of-delegate\x01\x01"
    )
    # RFC 7628: ',' and '=' in the authorization identity are escaped in the GS2 header.
    assert sasl_bearer("OAUTHBEARER", "a=b,c@example.com", "tok", "imap.example.com", 993) == (
        b"n,a=a=3Db=2Cc@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01"
    )
    assert sasl_bearer_abort("OAUTHBEARER") == b"\x01" and sasl_bearer_abort("XOAUTH2") == b""
    assert choose_bearer_mechanism({"PLAIN", "OAUTHBEARER", "XOAUTH2"}) == "XOAUTH2"
    assert choose_bearer_mechanism({"PLAIN", "OAUTHBEARER"}) == "OAUTHBEARER"
    assert choose_bearer_mechanism({"PLAIN", "LOGIN"}) is None
    with pytest.raises(ValueError, match="not a bearer-token mechanism"):
        sasl_bearer("PLAIN", "u", "t", "h", 1)


def test_refresh_is_due_within_the_margin_or_half_the_lifetime():
    from services.fetcher.oauth_tokens import AccessToken, refresh_due

    hour = AccessToken("t", expires_at=1000.0 + 3600, lifetime=3600)
    assert not refresh_due(hour, now=1000.0 + 3600 - 301, margin=300)
    assert refresh_due(hour, now=1000.0 + 3600 - 299, margin=300)
    short = AccessToken("t", expires_at=1000.0 + 4, lifetime=4)
    assert not refresh_due(short, now=1001.9, margin=300)
    assert refresh_due(short, now=1002.1, margin=300)


def test_refusal_code_is_the_aadsts_code_or_the_oauth_error():
    from services.fetcher.oauth_tokens import provider_error_text, refusal_code

    answer = {
        "error": "invalid_grant",
        "error_description": "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.",
    }
    assert refusal_code(answer) == "AADSTS70008"
    assert provider_error_text(answer) == (
        "invalid_grant: AADSTS70008: The provided authorization code or refresh token has expired due to inactivity."
    )
    assert refusal_code({"error": "invalid_client"}) == "invalid_client"
    assert refusal_code({"error": "a label with spaces and more"}) == "unrecognised"
