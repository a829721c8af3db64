"""A plain header block read into a message without the stdlib's feed parser. Pure.

The feed parser takes a header block line by line: each line is split off its buffer,
matched against its header pattern, collected, and the lines of a field joined again.
On the end-to-end bench's mails (some twenty fields, the Received and DKIM ones folded)
that was a fifth of the classifier's parse. :func:`message_from_header_block` builds the
same message with one regular expression match a field, for a block whose every line
the feed parser would take the plain way: a field's first line (a name of visible ASCII
but the colon, then the colon) or its continuation (a leading space or tab), each ended
by a line feed, with no carriage return but before a line feed. For anything else (an
envelope ``From `` line, a line that is no header, a field without a name, a lone
carriage return, a block that does not end in a blank line) and for a multipart or
message type (whose body the parser reads on into) it returns None, and the caller
feeds the mail to the parser, which notes the defects such blocks carry.
``tests/classifier`` checks the two against each other on generated blocks.
"""

from __future__ import annotations

import re
from email.message import Message
from email.policy import Compat32, EmailPolicy

# The feed parser's own split of a field (``EmailPolicy.header_source_parse``, and
# compat32's alike): the name is all before the first colon; the value is the rest of
# the first line without leading spaces and tabs, then its continuation lines, without
# the line ends that close it.
_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*([^\n]*\n(?:[ \t][^\n]*\n)*)")


def message_from_header_block(block: bytes, policy: EmailPolicy | Compat32) -> Message | None:
    """The message the feed parser builds from ``block`` (a header block and the blank
    line that ends it, nothing after), or None when the block is not plain enough to
    read without it or declares a multipart or message type. Its payload is empty, as
    the parser leaves it."""
    text = str(block, "ascii", "surrogateescape")
    if text.count("\r") != text.count("\r\n"):
        return None
    if text.endswith("\n\r\n"):
        end = len(text) - 2
    elif text.endswith("\n\n"):
        end = len(text) - 1
    else:
        return None
    fields: list[tuple[str, str]] = []
    at = 0
    match = _FIELD.match
    while at < end:
        found = match(text, at)
        if found is None:
            return None
        fields.append((found[1], found[2].rstrip("\r\n")))
        at = found.end()
    if at != end:
        return None
    factory = policy.message_factory or Message
    message = factory(policy=policy)
    for name, value in fields:
        message.set_raw(name, value)
    # The parser reads on into the body of these, and notes defects when it is missing.
    if message.get_content_maintype() in ("multipart", "message"):
        return None
    message.set_payload("")
    return message
