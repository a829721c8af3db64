"""Turn raw RFC 5322 bytes into the fields the rules and the ticketer need. Pure.

The standard ``email`` parser reads the structure with the default policy. Header
values are read as they were on the wire and decoded in ``headers`` (charset fallbacks
the header registry cannot do). If the default policy's parser raises, ``compat32``,
the lenient legacy policy, is the fallback; if that raises too, the mail is
:class:`UnparseableMail` and goes to the DLQ.

Memory stays bounded by the hard size limit: the bytes are fed to the parser in
slices (``message_from_bytes`` would first copy the whole mail into one string), except
a single-part body, which is read as bytes where it can be and otherwise becomes its
payload in one decode (the string the parser would have joined from its lines at the
end); attachments are measured but never decoded, and text bodies are decoded to text
only as far as the decision can carry them (see ``ParseLimits``; a body under an
identity transfer encoding is first copied whole as bytes, as the parser holds it).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesFeedParser
from email.policy import Compat32, EmailPolicy

from mailintake.contracts import InvalidMessage
from services.classifier import transfer_encoding
from services.classifier.addresses import addresses
from services.classifier.charsets import codec_name, decode_text, storable_text, truncate_utf8
from services.classifier.delivery_reports import (
    DeliveryReport,
    is_delivery_report,
    is_disposition_report,
    read_delivery_report,
)
from services.classifier.header_block import message_from_header_block
from services.classifier.headers import MAX_HEADER_CHARS, decode_words, decoded_header, message_ids
from services.classifier.html_bodies import html_to_text, sanitise_html
from services.classifier.priority import declared_priority
from services.classifier.subjects import normalise_subject
from services.classifier.tnef_contents import MAX_TNEF_BYTES, read_tnef

_FEED_SLICE = 1 << 20
MAX_ATTACHMENTS = 500
"""Attachments listed per mail; the rest are counted in the defects, so the decision stays
within the topic's message size limit."""
MAX_DEFECTS = 20
MAX_REFERENCES = 50


class UnparseableMail(InvalidMessage):
    """Neither the default nor the compat32 policy could read the mail."""


class MailTooLarge(InvalidMessage):
    """The mail is larger than the classifier's hard limit."""


class _WireHeaderValues(EmailPolicy):
    """The default policy, except that reading a header returns its raw value.

    The header registry would replace undeclared 8-bit bytes by U+FFFD; ``headers``
    decodes them with charset fallbacks instead.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        return value


class _WireHeaderValuesCompat32(Compat32):
    """compat32 (the fallback), with header values raw as in ``_WireHeaderValues``."""

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        return value


DEFAULT_POLICY = _WireHeaderValues()
FALLBACK_POLICY = _WireHeaderValuesCompat32()


@dataclass(frozen=True)
class ParseLimits:
    """How much of a mail the classifier reads; set from ``ClassifierSettings``."""

    max_mail_bytes: int = 64 * 1024 * 1024
    max_body_text_bytes: int = 256 * 1024
    max_body_html_bytes: int = 512 * 1024


@dataclass(frozen=True)
class Attachment:
    """One attachment or inline part, measured, not decoded."""

    part: str
    """Where it is: the MIME part number (``2.1``), and for a file inside a winmail.dat
    the part number of the winmail.dat, a slash and the index inside it (``2/0``)."""
    filename: str | None
    content_type: str
    size: int
    """Bytes once decoded; for a forwarded message, the sum of its parts."""
    content_id: str | None = None
    inline: bool = False
    unpacked_from: str | None = None


@dataclass(frozen=True)
class ParsedMail:
    """What the decision rules and the ticketer need of one mail."""

    sender: str
    sender_name: str | None
    subject: str
    body_text: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Raw (undecoded, folded) values by lower-cased header name, in order."""
    raw_sha256: str = ""
    from_addresses: tuple[str, ...] = ()
    body_html: str | None = None
    body_truncated: bool = False
    attachments: tuple[Attachment, ...] = ()
    priority: str | None = None
    delivery_report: DeliveryReport | None = None
    disposition_report: bool = False
    defects: tuple[str, ...] = ()


@dataclass
class _Bodies:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    truncated: bool = False


@dataclass
class _Walk:
    """What walking the MIME tree collects."""

    limits: ParseLimits
    attachments: list[Attachment] = field(default_factory=list)
    attachments_left_out: int = 0
    defects: list[str] = field(default_factory=list)
    tnef_plain: str | None = None
    tnef_html: str | None = None
    delivery_report: DeliveryReport | None = None
    disposition_report: bool = False

    def note(self, defect: str) -> None:
        if defect not in self.defects and len(self.defects) < MAX_DEFECTS:
            self.defects.append(defect)

    def attach(self, attachment: Attachment, at: int | None = None) -> None:
        if len(self.attachments) >= MAX_ATTACHMENTS:
            self.attachments_left_out += 1
            return
        # Every string here came off the wire (or out of a winmail.dat): make it storable.
        attachment = dataclasses.replace(
            attachment,
            filename=_storable_or_none(attachment.filename, 255),
            content_type=storable_text(attachment.content_type)[:255],
            content_id=_storable_or_none(attachment.content_id, MAX_HEADER_CHARS),
            unpacked_from=_storable_or_none(attachment.unpacked_from, 255),
        )
        self.attachments.insert(len(self.attachments) if at is None else at, attachment)


def _storable_or_none(text: str | None, limit: int) -> str | None:
    return (storable_text(text)[:limit] or None) if text is not None else None


def _header_map(message: Message) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for name, value in message.items():
        if isinstance(value, str):
            found.setdefault(name.strip().lower(), []).append(value)
    return {name: tuple(values) for name, values in found.items()}


class MimeParameters:
    """A part's MIME parameters, each header's list parsed at most once.

    ``Message.get_param`` reads and parses the whole header on every call (and
    ``get_content_charset`` calls it too): a text leaf's Content-Type was parsed twice and
    its Content-Disposition once. Here a header's list is parsed by the stdlib's own
    ``get_params`` once, and each look-up is what ``get_param`` and
    ``get_content_charset`` return. Measured interleaved on the end-to-end bench's plain
    mails: ~10 us less per mail, of a ~400 us parse.
    """

    def __init__(self, part: Message) -> None:
        self.part = part
        self._by_header: dict[str, dict[str, str | tuple[str | None, str | None, str]]] = {}

    def get(self, name: str, header: str = "content-type") -> str | tuple[str | None, str | None, str] | None:
        """``part.get_param(name, None, header)``: the first parameter of that name, unquoted."""
        found = self._by_header.get(header)
        if found is None:
            found = self._by_header[header] = {}
            for key, value in self.part.get_params([], header):
                found.setdefault(key.lower(), value)
        return found.get(name.lower())

    def charset(self) -> str | None:
        """``part.get_content_charset()``: the charset parameter, lower-cased; None when
        there is none or it is not ASCII."""
        charset = self.get("charset")
        if charset is None:
            return None
        if isinstance(charset, tuple):  # RFC 2231, decoded as the stdlib does
            try:
                charset = str(charset[2].encode("raw-unicode-escape"), charset[0] or "us-ascii")
            except (LookupError, UnicodeError):
                charset = charset[2]
        return charset.lower() if charset.isascii() else None


def _parameter(parameters: MimeParameters, name: str, header: str = "content-type") -> str | None:
    value = parameters.get(name, header)
    if isinstance(value, tuple):  # RFC 2231: (charset, language, text with one character per byte)
        charset, _, text = value
        decoded = decode_text(bytes(text or "", "raw-unicode-escape"), charset)[0]
        return storable_text(decoded).strip() or None
    if not isinstance(value, str):
        return None
    # Outlook writes RFC 2047 encoded words inside parameters; RFC 2231 is the standard.
    return decode_words(value).strip() or None


def _filename(parameters: MimeParameters) -> str | None:
    name = _parameter(parameters, "filename", "content-disposition") or _parameter(parameters, "name")
    return name[:255] if name else None


def _disposition(part: Message) -> str | None:
    value = part.get("content-disposition")
    if not isinstance(value, str):
        return None
    return value.split(";", 1)[0].strip().lower() or None


def _content_id(part: Message) -> str | None:
    value = part.get("content-id")
    if not isinstance(value, str):
        return None
    return storable_text(value.strip())[:MAX_HEADER_CHARS] or None


def _encoded_payload(part: Message) -> str | None:
    """The leaf's payload as the parser keeps it (still transfer-encoded), or None when
    it cannot be had as text.

    For a payload with 8-bit bytes, ``get_payload()`` decodes them with the declared
    charset and lets anything but LookupError escape (a charset name with a NUL raises
    ValueError); ``get_payload(decode=True)`` never looks at the charset, so callers
    fall back to it.
    """
    try:
        payload = part.get_payload()
    except (ValueError, TypeError):
        return None
    return payload if isinstance(payload, str) else ""


def _decoded_payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
"""Transfer encodings whose decoded bytes are the payload's own bytes."""


class _LeafPayload:
    """A leaf's payload, read from the parser at most once in each form.

    A text body is both measured and decoded, and ``get_payload()`` decodes 8-bit text by
    its charset on every call: read per use, a plain 8-bit mail's body was read four times.
    Under an identity transfer encoding the bytes are the payload itself, so a text body
    is read as bytes alone; ``get_payload()``'s decoding by charset was 6 % of the
    classifier's work on plain 8-bit mails. The encoded text is read where it is still
    needed: to measure attachments without copying them, and to cut a base64 or
    quoted-printable body before decoding it.
    """

    def __init__(
        self,
        part: Message,
        content_type: str | None = None,
        parameters: MimeParameters | None = None,
        unset_body: memoryview | None = None,
    ) -> None:
        self.part = part
        self.content_type = content_type or part.get_content_type()
        self.parameters = parameters or MimeParameters(part)
        self.encoding = transfer_encoding.normalised_encoding(part.get("content-transfer-encoding"))
        self._decoded: bytes | None = None
        self._unset_body = unset_body
        """A single-part mail's body that the parse left out of the payload (see ``_read``)."""

    def _with_payload(self) -> Message:
        if self._unset_body is not None:
            _set_body(self.part, self._unset_body)
            self._unset_body = None
        return self.part

    @functools.cached_property
    def encoded(self) -> str | None:
        """The payload as the parser keeps it, or None when it cannot be had as text (see
        :func:`_encoded_payload`)."""
        return _encoded_payload(self._with_payload())

    def decoded(self) -> bytes:
        if self._decoded is None:
            if self._unset_body is not None and self.encoding in _IDENTITY_ENCODINGS:
                # What get_payload(decode=True) gives back after the payload's round trip
                # through text with surrogate escapes: the bytes themselves.
                self._decoded = bytes(self._unset_body)
            else:
                self._decoded = _decoded_payload(self._with_payload())
        return self._decoded

    def body_bytes(self, max_encoded_chars: int) -> tuple[bytes, bool]:
        """The decoded bytes, or those of the first ``max_encoded_chars`` when it is longer."""
        # Under an identity encoding the payload's bytes are the decoded bytes. Its text,
        # for 8-bit content, is the stdlib's decoding by charset, so its prefix could
        # not be cut and decoded again as bytes.
        if self.encoding in _IDENTITY_ENCODINGS or self.encoded is None:
            data = self.decoded()
            return data[:max_encoded_chars], len(data) > max_encoded_chars
        if len(self.encoded) <= max_encoded_chars:
            return self.decoded(), False
        return transfer_encoding.decode_prefix(self.encoded, self.encoding, max_encoded_chars)

    def measured_size(self) -> int:
        """Bytes the leaf holds once decoded, measured on the encoded text where possible."""
        if self._decoded is not None and self.encoding in _IDENTITY_ENCODINGS:
            return len(self._decoded)
        if self.encoded is None:
            return len(self.decoded())
        if self.encoding == "base64":
            return transfer_encoding.base64_decoded_size(self.encoded)
        if self.encoding == "quoted-printable":
            return transfer_encoding.quoted_printable_decoded_size(self.encoded)
        if self.encoded.isascii():
            return len(self.encoded)
        # 8-bit content: the parser hands it back decoded by charset, so ask for the bytes.
        return len(self.decoded())


def _decoded_text(part: Message, max_bytes: int, walk: _Walk, leaf: _LeafPayload | None = None) -> tuple[str, bool]:
    """The text of a text part, decoded with charset fallbacks, cut to ``max_bytes`` of UTF-8."""
    leaf = leaf or _LeafPayload(part)
    # Four encoded characters per output byte is more than any transfer encoding needs.
    data, cut = leaf.body_bytes(4 * max_bytes + 4)
    declared = leaf.parameters.charset()
    if declared is None and leaf.content_type.split("/")[1] == "html":
        declared = _meta_charset(data)
    text, used = decode_text(data, declared, cut=cut)
    if declared and used not in ("ascii", codec_name(declared)):
        walk.note(f"charset {declared} decoded as {used}")
    elif declared is None and used not in ("ascii", "utf-8"):
        walk.note(f"undeclared charset decoded as {used}")
    text = storable_text(text.replace("\r\n", "\n").replace("\r", "\n"))
    text, cut_here = truncate_utf8(text, max_bytes)
    return text, cut or cut_here


def _meta_charset(data: bytes) -> str | None:
    """The charset an HTML part declares in its own ``<meta>``, when the MIME header names none."""
    head = data[:2048].lower()
    at = head.find(b"charset=")
    if at == -1:
        return None
    value = head[at + 8 : at + 48].lstrip(b"\"' ")
    name = bytearray()
    for byte in value:
        if chr(byte).isalnum() or byte in b"-_:.":
            name.append(byte)
        else:
            break
    return name.decode("ascii") or None


def _is_body_candidate(content_type: str, disposition: str | None, filename: str | None) -> bool:
    return content_type in ("text/plain", "text/html") and disposition != "attachment" and filename is None


def _visit(part: Message, path: str, walk: _Walk, bodies: _Bodies | None, unset_body: memoryview | None = None) -> int:
    """Collect ``part`` and what it holds; return its decoded size.

    ``bodies`` is None inside a forwarded message: its text is not this mail's body.
    ``unset_body``: the body of a single-part mail, not yet its payload (see ``_read``);
    only a leaf's body is ever deferred.
    """
    for defect in getattr(part, "defects", ()):
        walk.note(type(defect).__name__)
    content_type = part.get_content_type()
    maintype = content_type.split("/")[0]
    # Only a container's payload is needed here; a leaf's is read by the helpers above.
    payload = part.get_payload() if part.is_multipart() else None
    disposition = _disposition(part)
    parameters = MimeParameters(part)
    filename = _filename(parameters)

    if content_type in ("message/rfc822", "message/global") and isinstance(payload, list):
        index = len(walk.attachments)
        inner = next((p for p in payload if isinstance(p, Message)), None)
        size = _visit(inner, f"{path}.1" if path else "1", walk, None) if inner is not None else 0
        if filename is None and inner is not None:
            subject = decoded_header(list(inner.get_all("subject") or []), 200)
            filename = f"{subject or 'forwarded message'}.eml"
        # Listed before the files it holds, as a reader sees it.
        walk.attach(Attachment(path or "1", filename, content_type, size, _content_id(part), disposition == "inline"), at=index)
        return size

    if content_type == "message/delivery-status":
        size = _LeafPayload(part, content_type).measured_size() if not isinstance(payload, list) else sum(
            len(name) + len(value) + 4 for block in payload if isinstance(block, Message)
            for name, value in block.items() if isinstance(value, str)
        )
        walk.attach(Attachment(path or "1", filename, content_type, size, None, disposition == "inline"))
        return size

    if isinstance(payload, list):  # multipart/*
        if is_delivery_report(part) and walk.delivery_report is None:
            walk.delivery_report = read_delivery_report(
                part, lambda p: _decoded_text(p, walk.limits.max_body_text_bytes, walk)[0]
            )
        if is_disposition_report(part):
            walk.disposition_report = True
        children = [p for p in payload if isinstance(p, Message)]
        prefix = f"{path}." if path else ""
        if content_type == "multipart/alternative" and bodies is not None:
            return _visit_alternatives(children, prefix, walk, bodies)
        return sum(_visit(child, f"{prefix}{n}", walk, bodies) for n, child in enumerate(children, 1))

    if maintype == "multipart":
        # A multipart whose boundary never appears: the parser keeps its content as text.
        walk.note("multipart without its boundary, read as text")
        leaf = _LeafPayload(part, content_type, parameters)
        if bodies is not None:
            text, cut = _decoded_text(part, walk.limits.max_body_text_bytes, walk, leaf)
            bodies.plain.append(text)
            bodies.truncated |= cut
        return leaf.measured_size()

    leaf = _LeafPayload(part, content_type, parameters, unset_body)
    if _is_body_candidate(content_type, disposition, filename):
        if bodies is None:
            # The text of a forwarded message: part of that message, not a file.
            return leaf.measured_size()
        # Decoded before it is measured, so the measure can use the decoded bytes.
        if content_type == "text/html":
            text, cut = _decoded_text(part, walk.limits.max_body_html_bytes, walk, leaf)
            bodies.html.append(text)
        else:
            text, cut = _decoded_text(part, walk.limits.max_body_text_bytes, walk, leaf)
            bodies.plain.append(text)
        bodies.truncated |= cut
        return leaf.measured_size()
    size = leaf.measured_size()

    here = path or "1"
    walk.attach(Attachment(here, filename, content_type, size, _content_id(part), disposition == "inline"))
    if content_type == "application/ms-tnef" or (filename or "").lower() == "winmail.dat":
        _unpack_tnef(leaf, here, filename or "winmail.dat", size, walk)
    return size


def _visit_alternatives(children: list[Message], prefix: str, walk: _Walk, bodies: _Bodies) -> int:
    """multipart/alternative: plain text from the first alternative that has it, HTML from
    the last (alternatives come in rising order of preference, RFC 2046 5.1.4)."""
    size = 0
    found: list[_Bodies] = []
    for n, child in enumerate(children, 1):
        alternative = _Bodies()
        size += _visit(child, f"{prefix}{n}", walk, alternative)
        found.append(alternative)
    plain = next((b for b in found if any(t.strip() for t in b.plain)), None)
    html = next((b for b in reversed(found) if b.html), None)
    if plain is not None:
        bodies.plain.extend(plain.plain)
        bodies.truncated |= plain.truncated
    if html is not None:
        bodies.html.extend(html.html)
        bodies.truncated |= html.truncated
    return size


def _unpack_tnef(leaf: _LeafPayload, path: str, container: str, size: int, walk: _Walk) -> None:
    if size > MAX_TNEF_BYTES:
        walk.note(f"{container} larger than {MAX_TNEF_BYTES} bytes, not unpacked")
        return
    data = leaf.decoded()
    try:
        contents = read_tnef(data)
    except ValueError as error:
        walk.note(str(error)[:200])
        return
    for index, member in enumerate(contents.members):
        walk.attach(Attachment(f"{path}/{index}", member.filename, member.content_type, member.size, None, False, container))
    if contents.defect:
        walk.note(f"{container}: {contents.defect}"[:200])
    if contents.body_text and walk.tnef_plain is None:
        walk.tnef_plain = storable_text(contents.body_text.replace("\r\n", "\n"))
    if contents.body_html and walk.tnef_html is None:
        walk.tnef_html = storable_text(contents.body_html)


def _feed_all(data: memoryview, policy: EmailPolicy | Compat32) -> Message:
    parser = BytesFeedParser(policy=policy)
    for start in range(0, len(data), _FEED_SLICE):
        parser.feed(bytes(data[start : start + _FEED_SLICE]))
    return parser.close()


_LINE_END_THEN_BLANK_LINE = re.compile(rb"\n(?:\r\n|\n)")
_CONTAINER_TYPE = re.compile(rb"\s*(?:multipart|message)/")


def declares_container(header_block: bytes) -> bool:
    """Whether a ``Content-Type:`` field of ``header_block`` starts with a multipart or
    message type: ``^content-type:\\s*(?:multipart|message)/`` matched per line, any case.

    That expression searched the block position by position (no literal prefix survives
    ignoring case): ~7 us of a plain mail's ~180 us pass. Lower-casing the block and
    finding the field name are C loops.
    """
    lowered = header_block.lower()
    at = lowered.find(b"content-type:")
    while at >= 0:
        if (at == 0 or lowered[at - 1] == 0x0A) and _CONTAINER_TYPE.match(lowered, at + 13):
            return True
        at = lowered.find(b"content-type:", at + 13)
    return False


def _feed(raw: bytes, policy: EmailPolicy | Compat32) -> Message:
    """The parser's message for ``raw``, as ``BytesFeedParser`` builds it from all of it
    (:func:`_feed_deferring_body` with the body set)."""
    message, body = _feed_deferring_body(raw, policy)
    if body is not None:
        _set_body(message, body)
    return message


def _set_body(message: Message, body: memoryview) -> None:
    # Decoded as the parser decodes what it is fed.
    message.set_payload(str(body, "ascii", "surrogateescape"))


def _feed_deferring_body(raw: bytes, policy: EmailPolicy | Compat32) -> tuple[Message, memoryview | None]:
    """The parser's message for ``raw``, and the body of a single-part mail that is still
    to be set as its payload (else None, and the message is whole).

    The feed parser takes a body line by line, even one it keeps whole: ~25 us of a
    plain mail's ~100 us feed. So only the header block is read at first (without the
    parser where ``header_block`` can, else fed to it). When that gives a message whose
    body the parser would not look into (not multipart/* or message/*), the rest of the
    bytes is that body; :func:`_set_body` makes it the payload the parser would have
    made (ASCII with surrogate escapes), and the message is then the same.

    The header block is taken to end at the first blank line after a line feed. Were
    the parser to end it earlier (at a line that is no header, a blank line after a lone
    CR, or a trailing "From " line), what follows would already be in the payload; a
    payload that is not empty, or a multipart or message type, sends the mail through
    the whole feed instead. A header block that plainly declares a multipart or message
    type goes there first, so that its headers are not parsed twice.
    """
    view = memoryview(raw)
    found = _LINE_END_THEN_BLANK_LINE.search(raw)
    if found is None:
        return _feed_all(view, policy), None
    block = raw[: found.end()]
    if declares_container(block):
        return _feed_all(view, policy), None
    message = message_from_header_block(block, policy) or _feed_all(view[: found.end()], policy)
    if message.get_content_maintype() in ("multipart", "message") or not _payload_is_empty(message):
        return _feed_all(view, policy), None
    return message, view[found.end() :]


def _payload_is_empty(message: Message) -> bool:
    # get_payload() decodes a payload with escaped 8-bit bytes by the charset parameter,
    # and raises when that parameter holds such bytes too. An empty payload returns first.
    try:
        return message.get_payload() == ""
    except ValueError:
        return False


def _sender(headers: Mapping[str, tuple[str, ...]]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(display name, address, every From address): From first, then Sender, then Return-Path."""
    from_all = [a for value in headers.get("from", ()) for a in addresses(value)]
    if from_all:
        return from_all[0][0], from_all[0][1], tuple(a for _, a in from_all)
    for fallback in ("sender", "return-path"):
        for value in headers.get(fallback, ())[:1]:
            found = addresses(value)
            if found:
                return found[0][0], found[0][1], ()
    return None, None, ()


def _read(raw: bytes, policy: EmailPolicy | Compat32, limits: ParseLimits) -> ParsedMail:
    # A single-part body becomes the payload only where the walk needs it as the parser
    # keeps it. A text body under an identity transfer encoding is read as bytes, which
    # it already is here: the payload's round trip through text with surrogate escapes
    # (decoded for the payload, encoded again by get_payload) was a tenth of the parse of
    # a German mail. The message goes nowhere else.
    message, unset_body = _feed_deferring_body(raw, policy)
    headers = _header_map(message)
    sender_name, sender, from_addresses = _sender(headers)
    if sender is None:
        raise InvalidMessage("mail has no sender address in From, Sender or Return-Path")
    walk = _Walk(limits)
    bodies = _Bodies()
    _visit(message, "", walk, bodies, unset_body)
    if walk.attachments_left_out:
        walk.note(f"{walk.attachments_left_out} further attachments not listed")

    plain = "\n".join(t for t in bodies.plain if t.strip())
    html_source = "\n".join(bodies.html) or walk.tnef_html
    if not plain.strip() and not html_source and walk.tnef_plain:
        plain = walk.tnef_plain
    body_html = storable_text(sanitise_html(html_source)) if html_source else None
    truncated = bodies.truncated
    if body_html is not None:
        body_html, cut = truncate_utf8(body_html, limits.max_body_html_bytes)
        truncated |= cut
    if not plain.strip() and body_html:
        # Every other source of the text is storable already (_decoded_text, the
        # winmail.dat's); the HTML's character references are decoded here.
        plain = storable_text(html_to_text(body_html))
    body_text, cut = truncate_utf8(plain, limits.max_body_text_bytes)

    message_id = message_ids(headers.get("message-id", ("",))[0], limit=1)
    in_reply_to = message_ids(headers.get("in-reply-to", ("",))[0], limit=1)
    return ParsedMail(
        sender=sender,
        sender_name=sender_name,
        subject=normalise_subject(decoded_header(list(headers.get("subject", ())))),
        body_text=body_text,
        message_id=message_id[0] if message_id else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(message_ids(" ".join(headers.get("references", ())), limit=MAX_REFERENCES)),
        headers=headers,
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        from_addresses=from_addresses,
        body_html=body_html,
        body_truncated=truncated or cut,
        attachments=tuple(walk.attachments),
        priority=declared_priority(headers),
        delivery_report=walk.delivery_report,
        disposition_report=walk.disposition_report,
        defects=tuple(walk.defects),
    )


def parse_mail(raw: bytes, limits: ParseLimits = ParseLimits()) -> ParsedMail:
    """Parse ``raw``.

    Raises :class:`MailTooLarge` beyond the hard limit, :class:`InvalidMessage` when no
    sender can be found at all, and :class:`UnparseableMail` when neither policy can read it.
    """
    if len(raw) > limits.max_mail_bytes:
        raise MailTooLarge(f"mail of {len(raw)} bytes is larger than the limit of {limits.max_mail_bytes} bytes")
    try:
        return _read(raw, DEFAULT_POLICY, limits)
    except InvalidMessage:
        raise
    except Exception as first:  # noqa: BLE001 - hostile input reaches deep into the email package
        try:
            return _read(raw, FALLBACK_POLICY, limits)
        except InvalidMessage:
            raise
        except Exception as second:  # noqa: BLE001
            raise UnparseableMail(
                f"mail cannot be parsed: {type(first).__name__}: {first}; "
                f"compat32 fallback: {type(second).__name__}: {second}"[:1000]
            ) from second
