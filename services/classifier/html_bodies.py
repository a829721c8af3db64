"""HTML bodies: sanitised for display with ``nh3``, turned into text with ``html-text``. Pure.

No regular expression touches the markup: ``nh3`` (the Ammonia sanitiser, an HTML5
parser) keeps a safe allow-list of tags and attributes and drops ``<script>`` and
``<style>`` with their content; the text is then extracted from the *sanitised*
HTML by ``html_text`` on an lxml tree, which knows block from inline elements, so
paragraphs, list items and table rows become lines. Converting the sanitised rather
than the original markup skips html-text's own (slower) cleaning pass and means the
text can hold nothing the display could not.
"""

from __future__ import annotations

import html_text
import lxml.etree
import lxml.html
import nh3

# ``cid:`` links inline images to their MIME parts (Content-ID); the display resolves
# them. Remote http(s) images stay as links: blocking them is the display's choice.
_URL_SCHEMES = nh3.ALLOWED_URL_SCHEMES | {"cid"}

# The content of these goes with the tag: a <title> is no part of the message text.
_DROPPED_WITH_CONTENT = {"script", "style", "title"}

_CLEANER = nh3.Cleaner(url_schemes=_URL_SCHEMES, clean_content_tags=_DROPPED_WITH_CONTENT)


def sanitise_html(markup: str) -> str:
    """``markup`` reduced to what is safe to show in a browser: no scripts, styles,
    titles, event handlers, forms or frames; links get ``rel="noopener noreferrer"``.

    >>> sanitise_html('<p onclick="x()">Hi<script>alert(1)</script></p>')
    '<p>Hi</p>'
    """
    return _CLEANER.clean(markup)


def html_to_text(sanitised: str) -> str:
    """The readable text of sanitised HTML, blocks on their own lines.

    >>> html_to_text("<p>Hello <b>Anna</b>,</p><ul><li>one</li><li>two</li></ul>")
    'Hello Anna,\\n\\none\\ntwo'
    """
    if not sanitised.strip():
        return ""
    try:
        tree = lxml.html.document_fromstring(sanitised)
    except (lxml.etree.ParserError, ValueError):
        # lxml refuses documents that are empty after parsing (only comments, say).
        return ""
    return html_text.etree_to_text(tree)
