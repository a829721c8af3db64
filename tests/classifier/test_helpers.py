"""The classifier's small pure helpers, tested directly (in the manner of Zulip's email mirror)."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.classifier.addresses import domain, first_address, local_part, normalise_address
from services.classifier.subjects import normalise_subject


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" <Max.Mustermann@Example.COM> ", "max.mustermann@example.com"),
        ("a@b.c", "a@b.c"),
    ],
)
def test_normalise_address(raw, expected):
    assert normalise_address(raw) == expected


def test_first_address_takes_the_first_of_several_and_keeps_the_name():
    assert first_address('"Mustermann, Max" <Max@Example.com>, other@example.com') == (
        "Mustermann, Max",
        "max@example.com",
    )


def test_first_address_without_any_address():
    assert first_address("undisclosed-recipients:;") == (None, None)
    assert first_address(None) == (None, None)


def test_local_part_and_domain_split_at_the_last_at():
    assert local_part('"a@b"@Example.com') == '"a@b"'
    assert domain('"a@b"@Example.COM') == "example.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Printer\r\n broken\tagain  ", "Printer broken again"),
        ("Re: AW: Case Stays", "Re: AW: Case Stays"),
        (None, ""),
    ],
)
def test_normalise_subject_only_folds_whitespace(raw, expected):
    assert normalise_subject(raw) == expected


# ---------------------------------------------------------------- charsets

from services.classifier.charsets import codec_name, decode_text, storable_text, truncate_utf8  # noqa: E402


@pytest.mark.parametrize(
    ("data", "declared", "text", "codec"),
    [
        (b"plain", "utf-16", "plain", "ascii"),
        ("Grüße".encode(), "iso-8859-1", "Grüße", "utf-8"),  # declared latin-1, really UTF-8
        ("Grüße".encode("cp1252"), "utf-8", "Grüße", "cp1252"),  # declared UTF-8, really cp1252
        ("€ 5".encode("cp1252"), None, "€ 5", "cp1252"),
        (b"\x81\x8d", None, "\x81\x8d", "latin-1"),  # bytes cp1252 leaves undefined
        ("Печать".encode("koi8-r"), "koi8-r", "Печать", "koi8-r"),
        ("パス".encode("iso-2022-jp"), "ISO-2022-JP", "パス", "iso2022_jp"),  # 7-bit, yet not ASCII
        ("x€".encode(), "utf8mb4", "x€", "utf-8"),
        ("ä".encode(), "no-such-charset", "ä", "utf-8"),
    ],
)
def test_decode_text_tries_declared_then_falls_back(data, declared, text, codec):
    assert decode_text(data, declared) == (text, codec)


def test_codec_name_knows_mail_aliases_and_refuses_junk():
    assert codec_name("ks_c_5601-1987") == "cp949"
    assert codec_name("unknown-8bit") is None
    assert codec_name("utf\x00-8") is None


def test_storable_text_drops_nul_and_controls_and_lone_surrogates():
    assert storable_text("a\x00b\x07c\td\r\ne\udcff") == "abc\td\r\ne\ufffd"


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())))
def test_storable_text_removes_exactly_the_controls_and_replaces_exactly_the_surrogates(text):
    reference = "".join(
        "" if (ord(c) < 0x20 and c not in "\t\n\r") or c == "\x7f" else "\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c
        for c in text
    )
    assert storable_text(text) == reference


def test_truncate_utf8_never_splits_a_character():
    assert truncate_utf8("€€", 5) == ("€", True)
    assert truncate_utf8("€€", 6) == ("€€", False)


# ---------------------------------------------------------------- headers

from services.classifier.headers import decode_words, first_token, message_ids, unfold  # noqa: E402


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("=?utf-8?B?SsO8cmdlbg==?=", "Jürgen"),
        ("=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=", "ab"),  # whitespace between encoded words goes
        ("=?utf-8?q?a?= plain =?utf-8?q?b?=", "a plain b"),
        ("=?iso-8859-1?b?w7w=?=", "ü"),  # UTF-8 inside a latin-1 label
        ("=?x-unknown?q?=C3=BC?=", "ü"),
        ("=?utf-8?b?!!!not*base64?= rest", "=?utf-8?b?!!!not*base64?= rest"),  # undecodable: kept as written
        ("Gr\udcfc\udcdfe", "Grüße"),  # raw cp1252 bytes, surrogate-escaped by the parser
        ("=?utf-8?q?x?= \udce4", "x ä"),  # raw 8-bit next to an encoded word
        ("folded\r\n\tline", "folded\tline"),
    ],
)
def test_decode_words(raw, decoded):
    assert decode_words(raw) == decoded


def test_unfold_keeps_the_whitespace_that_follows_a_fold():
    assert unfold("a\r\n b\n\tc") == "a b\tc"


def test_message_ids_keeps_root_and_latest_when_trimming():
    value = " ".join(f"<{n}@x>" for n in range(10))
    assert message_ids(value, limit=3) == ["<0@x>", "<8@x>", "<9@x>"]
    assert message_ids("no ids here") == []


def test_first_token_lowercases_and_drops_parameters():
    assert first_token("Auto-Replied; owner-email=x@y") == "auto-replied"
    assert first_token(None) == ""


# ---------------------------------------------------------------- addresses

from email.utils import getaddresses  # noqa: E402

import hypothesis  # noqa: E402

from services.classifier.addresses import (  # noqa: E402
    addresses,
    normalise_local_part,
    plain_mailbox,
    raw_addresses,
    unicode_domain,
)


def test_idn_domains_become_unicode_whichever_form_they_came_in():
    assert normalise_address("Info@XN--MNCHEN-3YA.DE") == normalise_address("info@münchen.de") == "info@münchen.de"


def test_invalid_punycode_stays_as_written():
    assert unicode_domain("xn--a.example") == "xn--a.example"


@pytest.mark.parametrize(
    ("local", "normal"),
    [('"Max.M"', "max.m"), ('"max m"', '"max m"'), ('"a@b"', '"a@b"'), ("Plain", "plain")],
)
def test_quoted_local_parts_lose_only_unneeded_quotes(local, normal):
    assert normalise_local_part(local) == normal


def test_addresses_decodes_names_after_splitting_the_list():
    assert addresses("=?utf-8?q?M=C3=BCller=2C_J?= <J@x.de>, b@y.de") == [("Müller, J", "j@x.de"), (None, "b@y.de")]


def test_addresses_skips_groups_and_null_senders():
    assert addresses("undisclosed-recipients:;") == []
    assert addresses("<>") == []


_PLAIN_FORMS = [
    '"Kunde 0" <user0@customer0.example.com>',
    "Max   Mustermann <max.mustermann@example.com>",
    "Max\tMustermann<max@example.com>",
    '=?utf-8?q?M=C3=BCller?= <mueller@example.com>',
    '" Kunde\t7 " <k7@example.com>',
    '"" <a@b>',
    "  <o'brien+tag@ex-ample.co.uk>  ",
    "a@b.c",
]


@pytest.mark.parametrize("value", _PLAIN_FORMS)
def test_plain_mailboxes_are_read_without_the_parser_as_the_parser_reads_them(value):
    plain = plain_mailbox(value)
    assert plain is not None
    assert [plain] == getaddresses([value])


@pytest.mark.parametrize(
    "value",
    [
        "a@b.c (Max)", "Max <a@b.c> (x)", '"Max \\" M" <a@b>', "Dr. Max <a@b>", "a <b@c>, d <e@f>",
        '"a b"@c.d', "Max <a@[192.0.2.1]>", "Gruppe: a@b;", "<>", "Max <a@b", "Max <müller@b.de>", "Max <a..b@c>",
    ],
)
def test_other_forms_are_left_to_the_parser(value):
    assert plain_mailbox(value) is None


_NAME_PIECES = st.sampled_from(['"', "\\", " ", "\t", ".", ",", "(", ")", "<", ">", "@", ":", ";", "[", "]", "Max", "ü", "=?", "'"])
_WORDS = st.lists(st.sampled_from(["Max", "K7", "=?utf-8?q?M=C3=BC?=", "ü", "o'b", "a.b"]), min_size=1, max_size=4)
_NAMES = st.one_of(
    st.lists(_NAME_PIECES, max_size=8).map("".join),  # anything, mostly not plain
    st.builds(lambda words, gap: gap.join(words), _WORDS, st.sampled_from([" ", "\t", "  ", " \t", ",", ""])),
    st.text(alphabet=' \tMü,.<>@\\"();:\x00\x7f\u2028\udcfc', max_size=8).map(lambda inner: f'"{inner}"'),
)


@hypothesis.settings(max_examples=500, deadline=None)
@given(
    name=_NAMES,
    local=st.one_of(st.from_regex(r"[A-Za-z0-9+'-]{1,5}(\.[a-z0-9-]{1,4}){0,2}", fullmatch=True), st.text("ab.+-'\"\\ü", max_size=6)),
    domain_name=st.one_of(st.from_regex(r"[a-z0-9-]{1,5}(\.[a-z0-9]{1,4}){0,2}", fullmatch=True), st.text("cd.-[]1ü", max_size=6)),
    angled=st.booleans(),
    spaces=st.sampled_from(["", " ", "\t", "  "]),
)
def test_the_plain_mailbox_shortcut_agrees_with_the_stdlib_parser(name, local, domain_name, angled, spaces):
    value = f"{spaces}{name}{spaces}<{local}@{domain_name}>{spaces}" if angled else f"{spaces}{local}@{domain_name}{spaces}"
    plain = plain_mailbox(value)
    if plain is not None:
        assert [plain] == getaddresses([value])
    assert raw_addresses(value) == ([plain] if plain is not None else getaddresses([value]))


# ---------------------------------------------------------------- transfer encodings

from services.classifier.transfer_encoding import (  # noqa: E402
    base64_decoded_size,
    decode_prefix,
    quoted_printable_decoded_size,
)


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", bytes(range(256)) * 40])
def test_base64_size_is_counted_without_decoding(data):
    import base64

    assert base64_decoded_size(base64.encodebytes(data).decode().replace("\n", "\r\n")) == len(data)


def test_quoted_printable_size_counts_decoded_bytes():
    import quopri

    data = ("Grüße =\n" * 500).encode()
    assert quoted_printable_decoded_size(quopri.encodestring(data).decode()) == len(data)


def test_decode_prefix_cuts_and_says_so():
    assert decode_prefix("hello", "7bit", 3) == (b"hel", True)
    assert decode_prefix("caf=C3=A9", "quoted-printable", 100) == ("café".encode(), False)


# ---------------------------------------------------------------- priority and HTML

from services.classifier.html_bodies import html_to_text, sanitise_html  # noqa: E402
from services.classifier.priority import declared_priority  # noqa: E402


@pytest.mark.parametrize(
    ("headers", "priority"),
    [
        ({"x-priority": ["2 (High)"]}, "high"),
        ({"x-priority": ["3"]}, "normal"),
        ({"x-priority": ["9"], "importance": ["low"]}, "low"),  # nonsense X-Priority: next header
        ({"x-msmail-priority": ["High"]}, "high"),
        ({"priority": ["non-urgent"]}, "low"),
        ({"importance": ["whatever"]}, None),
    ],
)
def test_declared_priority(headers, priority):
    assert declared_priority(headers) == priority


def test_sanitised_html_keeps_cid_images_and_drops_active_content():
    html = sanitise_html('<img src="cid:a@b" onerror="x()"><a href="javascript:x()">j</a><iframe src="y"></iframe>')
    assert 'src="cid:a@b"' in html
    assert "onerror" not in html and "javascript" not in html and "iframe" not in html


def test_html_to_text_puts_blocks_on_lines_and_copes_with_nothing():
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>") == "a b\nc"
    assert html_to_text("<!-- only a comment -->") == ""
    assert html_to_text("   ") == ""


# ---------------------------------------------------------------- MIME parameters

from email.parser import BytesParser  # noqa: E402

from services.classifier.parsing import DEFAULT_POLICY, FALLBACK_POLICY, MimeParameters  # noqa: E402

_PARAMETER_NAMES = ["charset", "name", "filename", "boundary", "report-type", "format"]
_PARAMETER_PIECES = st.sampled_from(
    ["text/plain", "multipart/report", ";", " ", "\t", "=", '"', "\\", "'", "*", "*0", "*1", "%C3%BC", "%", "utf-8",
     "UTF-8", "ISO-8859-1", "x-unknown", "us-ascii''", "en", "ü", "Charset", "charset", "name", "filename", "NAME",
     "report-type", "delivery-status", "a b", ",", "(c)", "\r\n "]
)


@hypothesis.settings(max_examples=400, deadline=None)
@given(
    content_type=st.lists(_PARAMETER_PIECES, max_size=14).map("".join),
    disposition=st.one_of(st.none(), st.lists(_PARAMETER_PIECES, max_size=10).map(lambda p: "attachment" + "".join(p))),
    compat32=st.booleans(),
)
def test_mime_parameters_read_as_the_stdlib_reads_them(content_type, disposition, compat32):
    head = f"From: a@b.c\r\nContent-Type: {content_type}\r\n"
    if disposition is not None:
        head += f"Content-Disposition: {disposition}\r\n"
    part = BytesParser(policy=FALLBACK_POLICY if compat32 else DEFAULT_POLICY).parsebytes((head + "\r\nbody\r\n").encode())
    parameters = MimeParameters(part)
    for name in _PARAMETER_NAMES:
        assert parameters.get(name) == part.get_param(name, None)
        assert parameters.get(name, "content-disposition") == part.get_param(name, None, "content-disposition")
    assert parameters.charset() == part.get_content_charset()


@pytest.mark.parametrize(
    ("content_type", "charset"),
    [
        ("text/plain; charset=UTF-8", "utf-8"),
        ('text/plain; format=flowed; charset="iso-8859-1"; charset=utf-8', "iso-8859-1"),
        ("text/plain; charset*=us-ascii'en'ISO-8859-15", "iso-8859-15"),
        ("text/plain; charset*=utf-8''%C3%BC", None),
        ("text/plain", None),
    ],
)
def test_mime_parameters_charset(content_type, charset):
    part = BytesParser(policy=DEFAULT_POLICY).parsebytes(f"Content-Type: {content_type}\r\n\r\nx".encode())
    assert MimeParameters(part).charset() == charset == part.get_content_charset()


from services.classifier import parsing  # noqa: E402


def _structure(message):
    """Everything the parser builds for a message, nested parts included, as plain values."""
    try:
        payload = message.get_payload()
    except UnicodeError as error:  # the stdlib's own, for a charset parameter with 8-bit bytes
        payload = type(error).__name__
    return (
        message.get_unixfrom(),
        message.items(),
        [type(defect).__name__ for defect in message.defects],
        message.get_content_type(),
        [_structure(part) for part in payload] if isinstance(payload, list) else payload,
        _decoded_payload(message),
    )


def _decoded_payload(message):
    if message.is_multipart():
        return None
    try:
        return message.get_payload(decode=True)
    except UnicodeError as error:
        return type(error).__name__


_MAIL_PIECES = st.sampled_from(
    ["From: a@b.c", "From a@b.c Mon Dec  2 09:00:00 2024", "Subject: x", " folded", "\tfolded", "no header here",
     "Content-Type: text/plain", "Content-Type: text/html; charset=utf-8", "Content-Type: multipart/mixed; boundary=b",
     "Content-Type: message/rfc822", "Content-Type: message/delivery-status", "Content-Type: multipart/alternative",
     "Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: 8bit", "--b", "--b--", "aGVsbG8=", "body",
     "Grüße", "\xff\xfe", ":", "", "\r\n", "\n", "\r", "\r\n\r\n", "\n\n", "\n\r\n", "\r\n\n", "\r\r", "\n\r"]
)


@hypothesis.settings(max_examples=600, deadline=None)
@given(pieces=st.lists(_MAIL_PIECES, max_size=30), compat32=st.booleans())
def test_the_header_block_first_feed_builds_the_message_the_whole_feed_builds(pieces, compat32):
    raw = "".join(pieces).encode("latin-1", "replace")
    policy = FALLBACK_POLICY if compat32 else DEFAULT_POLICY
    assert _structure(parsing._feed(raw, policy)) == _structure(BytesParser(policy=policy).parsebytes(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b.c\r\nSubject: x\r\n\r\nbody\r\n\r\nmore \xc3\xbc\xff\r\n",
        b"From: a@b.c\nSubject: x\n\nbody\n",
        b"From: a@b.c\nSubject: x\n\r\nbody\n",
        b"From: a@b.c\r\n\r\n",
        b"From: a@b.c\r\nno header here\r\n\r\nbody\r\n",  # the parser ends the headers before the blank line
        b"From: a@b.c\rSubject: x\r\rbody\n\nmore\n",  # a blank line after a lone CR comes first
        b"From: a@b.c\r\nFrom x Mon Dec  2 09:00:00 2024\r\n\r\nbody\r\n",  # a trailing "From " line is body
        b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n",
        # A multipart type behind whitespace that str.strip() removes and the quick look does not know.
        b"From: a@b.c\r\nContent-Type: \x1cmultipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n",
        b"From: a@b.c\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.e\r\n\r\ninner\r\n",
        b"From: a@b.c\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nStatus: 5.0.0\r\n",
        b"body without any header",
        # 8-bit bytes in the charset and in the part of the header block that is body.
        b"Content-Type: text/html; charset=utf-8Gr\xc3\xbc\xc3\x9fe\r\nGr\xc3\xbc\xc3\x9fe\r\n\r\n",
    ],
)
def test_the_header_block_first_feed_on_edge_cases(raw):
    for policy in (DEFAULT_POLICY, FALLBACK_POLICY):
        assert _structure(parsing._feed(raw, policy)) == _structure(BytesParser(policy=policy).parsebytes(raw))


def test_a_single_part_body_is_not_fed_to_the_parser(monkeypatch):
    fed = []
    feed_all = parsing._feed_all
    monkeypatch.setattr(parsing, "_feed_all", lambda data, policy: fed.append(len(data)) or feed_all(data, policy))
    plain = b"From: a@b.c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    # The envelope line leaves the header block to the parser.
    enveloped = b"From a@b.c Mon Dec  2 09:00:00 2024\r\n" + plain
    for head, feeds in ((plain, []), (enveloped, [len(enveloped)])):
        fed.clear()
        message = parsing._feed(head + b"line\r\n" * 1000, DEFAULT_POLICY)
        assert fed == feeds
        assert message.get_payload() == "line\r\n" * 1000


def test_a_declared_multipart_mail_is_fed_once_whole(monkeypatch):
    fed = []
    feed_all = parsing._feed_all
    monkeypatch.setattr(parsing, "_feed_all", lambda data, policy: fed.append(len(data)) or feed_all(data, policy))
    raw = b"From: a@b.c\r\nContent-Type:\r\n multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n"
    assert parsing._feed(raw, DEFAULT_POLICY).is_multipart()
    assert fed == [len(raw)]


# What declares_container stands for: the expression it replaced, searched line by line.
_DECLARED_CONTAINER_EXPRESSION = re.compile(rb"^content-type:\s*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)
_HEADER_PIECES = st.sampled_from(
    [b"Content-Type:", b"CONTENT-TYPE:", b"content-type:", b"X-Content-Type:", b"Content-Type ", b" ", b"\t", b"\r\n",
     b"\n", b"\r", b"\x0b", b"\x1c", b"multipart/mixed", b"MULTIPART/", b"Message/rfc822", b"message", b"/", b"text/plain",
     b"multipart", b"From: a@b.c", b"\xc3\xbc", b"\xff"]
)


@hypothesis.settings(max_examples=1000, deadline=None)
@given(pieces=st.lists(_HEADER_PIECES, max_size=20))
def test_declares_container_finds_what_the_expression_finds(pieces):
    block = b"".join(pieces)
    assert parsing.declares_container(block) == bool(_DECLARED_CONTAINER_EXPRESSION.search(block))


@pytest.mark.parametrize(
    ("block", "declared"),
    [
        (b"Content-Type: multipart/mixed; boundary=b\r\n", True),
        (b"From: a@b.c\r\ncontent-type:\r\n\tMESSAGE/rfc822\r\n", True),
        (b"From: a@b.c\r\nX-Content-Type: multipart/mixed\r\n", False),
        (b"From: a@b.c\r\nContent-Type: text/plain\r\nX: multipart/mixed\r\n", False),
        (b"Content-Type: text/plain\r\nContent-Type: multipart/mixed\r\n", True),
    ],
)
def test_declares_container_on_examples(block, declared):
    assert parsing.declares_container(block) is declared


# ---------------------------------------------------------------- the header block without the feed parser

from services.classifier.header_block import message_from_header_block  # noqa: E402

_HEADER_LINES = st.sampled_from(
    ["From: a@b.c", "Subject: x", "Subject:", "Subject:   ", "Subject:\t x ", "X-A:b", "X-A:b:c", " folded", "\tfolded",
     " ", "\t", "Name :x", ":x", "no header here", "From a@b.c Mon Dec  2 09:00:00 2024", "Gr\xfc\xdfe: x", "X-8: Gr\xfc\xdfe",
     "Content-Type: text/plain", "Content-Type: multipart/mixed; boundary=b", "Content-Type: message/rfc822",
     "Received: from x", "x\ry", ""]
)
_LINE_ENDS = st.sampled_from(["\r\n", "\n", "\r"])


@hypothesis.settings(max_examples=600, deadline=None)
@given(
    lines=st.lists(st.tuples(_HEADER_LINES, _LINE_ENDS), max_size=12),
    blank=st.sampled_from(["\r\n", "\n", "\r", ""]),
    compat32=st.booleans(),
)
def test_a_header_block_read_without_the_feed_parser_is_the_message_the_parser_builds(lines, blank, compat32):
    block = ("".join(line + end for line, end in lines) + blank).encode("latin-1")
    policy = FALLBACK_POLICY if compat32 else DEFAULT_POLICY
    message = message_from_header_block(block, policy)
    if message is not None:
        assert _structure(message) == _structure(BytesParser(policy=policy).parsebytes(block))
        assert type(message) is type(BytesParser(policy=policy).parsebytes(block))


@pytest.mark.parametrize(
    "block",
    [
        b"From: a@b.c\r\nSubject: x\r\n\r\n",
        b"From: a@b.c\nSubject: x\n\n",
        b"From: a@b.c\nSubject: x\n\r\n",
        b"Received: from x\r\n\tby y\r\n\tfor <z>; Mon\r\nSubject:  \r\n  two\r\n\r\n",
        b"X-Empty:\r\nX-8: Gr\xc3\xbc\xc3\x9fe\r\n\r\n",
        b"Subject: x\r\n \r\n\r\n",  # a continuation of spaces alone
    ],
)
def test_a_plain_header_block_is_read_without_the_feed_parser(block):
    for policy in (DEFAULT_POLICY, FALLBACK_POLICY):
        message = message_from_header_block(block, policy)
        assert message is not None
        assert _structure(message) == _structure(BytesParser(policy=policy).parsebytes(block))


@pytest.mark.parametrize(
    "block",
    [
        b"From a@b.c Mon Dec  2 09:00:00 2024\r\nSubject: x\r\n\r\n",  # an envelope line
        b" folded first\r\nSubject: x\r\n\r\n",  # a continuation with no field before it
        b"Subject: x\r\nno header here\r\n\r\n",
        b"Subject : x\r\n\r\n",  # a space before the colon
        b":x\r\n\r\n",  # no name
        b"Subject: x\ry\r\n\r\n",  # a lone carriage return ends a line for the parser
        b"Gr\xfc\xdfe: x\r\n\r\n",  # 8-bit bytes in the name
        b"Subject: x\r\n",  # no blank line at the end
        b"\r\n",
    ],
)
def test_a_header_block_the_parser_reads_with_defects_or_otherwise_is_left_to_it(block):
    assert message_from_header_block(block, DEFAULT_POLICY) is None


def test_the_benchs_realistic_mails_take_the_quick_header_block(monkeypatch):
    import random

    from bench.fetcher_throughput import realistic_mail

    fed = []
    feed_all = parsing._feed_all
    monkeypatch.setattr(parsing, "_feed_all", lambda data, policy: fed.append(len(data)) or feed_all(data, policy))
    rng = random.Random(7)
    for number in range(20):
        raw = realistic_mail(rng, number)
        assert _structure(parsing._feed(raw, DEFAULT_POLICY)) == _structure(BytesParser(policy=DEFAULT_POLICY).parsebytes(raw))
    assert fed == []


# ---------------------------------------------------------------- a single-part body read as bytes

from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

_FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.eml"))


def _parsed_both_ways(raw):
    """parse_mail's result (or its error) with the single-part body deferred, and with it
    set as the payload at once, as the parser would."""

    deferring = parsing._feed_deferring_body

    def whole(data, policy):
        message, body = deferring(data, policy)
        if body is not None:
            parsing._set_body(message, body)
        return message, None

    def outcome():
        try:
            return parsing.parse_mail(raw, parsing.ParseLimits(max_body_text_bytes=300, max_body_html_bytes=600))
        except Exception as error:  # noqa: BLE001 - compared, not handled
            return type(error), str(error)

    deferred = outcome()
    with mock.patch.object(parsing, "_feed_deferring_body", whole):
        at_once = outcome()
    return deferred, at_once


@pytest.mark.parametrize("path", _FIXTURES, ids=lambda p: p.name)
def test_a_deferred_body_parses_as_one_set_at_once_on_every_fixture(path):
    deferred, at_once = _parsed_both_ways(path.read_bytes())
    assert deferred == at_once


@hypothesis.settings(max_examples=400, deadline=None)
@given(
    head=st.lists(st.sampled_from(
        ["From: a@b.c", "Subject: x", "Content-Type: text/plain; charset=utf-8", "Content-Type: text/plain; charset=latin-1",
         "Content-Type: text/html", "Content-Type: application/pdf; name=a.pdf", "Content-Type: application/ms-tnef",
         "Content-Disposition: attachment; filename=x.txt", "Content-Transfer-Encoding: 8bit",
         "Content-Transfer-Encoding: 7bit", "Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: quoted-printable",
         "Content-Transfer-Encoding: x-uuencode", "Content-Transfer-Encoding:  8BIT ", "Content-Type: text/plain; charset=\x00"]
    ), max_size=6),
    body=st.lists(st.sampled_from(["Gr\xfc\xdfe", "Gr\xc3\xbc\xc3\x9fe", "aGVsbG8=", "=C3=BC", "=\r\n", "x" * 200, "\r\n", "\n", "\x00"]),
                  max_size=12),
)
def test_a_deferred_body_parses_as_one_set_at_once(head, body):
    raw = ("\r\n".join(head) + "\r\n\r\n" + "".join(body)).encode("latin-1")
    deferred, at_once = _parsed_both_ways(raw)
    assert deferred == at_once


def test_a_german_plain_mail_is_parsed_without_its_body_as_payload(monkeypatch):
    set_bodies = []
    set_body = parsing._set_body
    monkeypatch.setattr(parsing, "_set_body", lambda message, body: set_bodies.append(len(body)) or set_body(message, body))
    parsed = parsing.parse_mail("From: a@b.c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n".encode())
    assert parsed.body_text == "Grüße\n"
    assert set_bodies == []
    # Under base64 the payload is needed as the parser keeps it.
    parsing.parse_mail(b"From: a@b.c\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n")
    assert set_bodies == [10]


def test_character_references_to_controls_leave_neither_body_with_them():
    parsed = parsing.parse_mail(b"From: a@b.c\r\nContent-Type: text/html\r\n\r\n<p>a&#1;b &#x7f; c\x01d &#0;e</p>")
    for body in (parsed.body_text, parsed.body_html):
        assert body == storable_text(body)
        assert not any(ord(c) < 32 and c not in "\t\n\r" for c in body)
    assert parsed.body_text.startswith("ab")
