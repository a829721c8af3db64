"""Auto-answer templates: the file format, the check at import, and rendering. Pure.

A template is a subject and a plain-text body in Jinja2, rendered in a sandbox with
autoescaping off (the output is text/plain, not HTML). The sandbox sees only the
strings and numbers of :data:`TEMPLATE_VARIABLES`, never a database row or a record,
so a template cannot reach anything else through attribute access. Values such as a
customer's subject are inserted as text and never evaluated as template code.

The file ``mailintake templates import FILE`` reads::

    templates:
      - name: default-en
        subject: "We received your request: {{ subject }}"
        body: |
          Hello {{ requester_name or requester }},

          your request is ticket {{ reference }}. ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_VARIABLES: dict[str, str] = {
    "number": "ticket number, e.g. 10042",
    "reference": "ticket reference as written into subjects, e.g. [#mi-10042]",
    "subject": "ticket subject (the customer's subject)",
    "requester": "requester's mail address",
    "requester_name": "requester's display name from the From header, or ''",
    "account_id": "id of the mail account the request came in on",
    "account_name": "the account's sender name, or its id when it has none",
    "sender_address": "the account's sender address (what the answer is sent from)",
    "category": "ticket category, or ''",
    "priority": "ticket priority, or ''",
    "resource": "resource the ticket is assigned to, or ''",
}
"""Every name a template may use, with what it holds. All are strings except ``number``."""

SAMPLE_VARIABLES: dict[str, Any] = {
    "number": 10042,
    "reference": "[#mi-10042]",
    "subject": "Printer on floor 3 is jammed",
    "requester": "max.mustermann@example.com",
    "requester_name": "Max Mustermann",
    "account_id": "support",
    "account_name": "Support desk",
    "sender_address": "support@example.com",
    "category": "Hardware",
    "priority": "high",
    "resource": "1st level",
}
"""Values for the trial render at import, so errors that only show when rendering
(a filter on the wrong type, a blocked attribute) are found then, not at the first mail."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")

# Immutable: a template cannot even change a list it builds itself; it has no reason to.
_ENVIRONMENT = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)


class InvalidTemplate(ValueError):
    """A template or template file that cannot be used; the message names the template and the problem."""


@dataclass(frozen=True)
class TemplateText:
    """One named template, as written by its author."""

    name: str
    subject: str
    body: str


@dataclass(frozen=True)
class RenderedTemplate:
    """A template's output, before it is made safe for a mail header."""

    subject: str
    body: str


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    return _ENVIRONMENT.from_string(source)


def _check_part(name: str, part: str, source: str) -> None:
    try:
        tree = _ENVIRONMENT.parse(source)
    except TemplateSyntaxError as error:
        raise InvalidTemplate(f"template {name!r}, {part}, line {error.lineno}: {error.message}") from None
    unknown = meta.find_undeclared_variables(tree) - TEMPLATE_VARIABLES.keys() - _ENVIRONMENT.globals.keys()
    if unknown:
        raise InvalidTemplate(
            f"template {name!r}, {part}: unknown variable(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(TEMPLATE_VARIABLES)}"
        )


def check_template(template: TemplateText) -> None:
    """Raise :class:`InvalidTemplate` unless ``template`` parses, uses only known
    variables, and renders with sample values."""
    if not _NAME.match(template.name):
        raise InvalidTemplate(f"template name {template.name!r}: use letters, digits, '.', '_', '-' (at most 200)")
    _check_part(template.name, "subject", template.subject)
    _check_part(template.name, "body", template.body)
    try:
        render_template(template, SAMPLE_VARIABLES)
    except Exception as error:  # noqa: BLE001 - template code can raise anything (TypeError, ...)
        raise InvalidTemplate(f"template {template.name!r} fails with sample values: {error}") from None


def render_template(template: TemplateText, variables: dict[str, Any]) -> RenderedTemplate:
    """Render subject and body. Raises what the template raises: jinja2's ``TemplateError``
    (e.g. ``SecurityError``), but also ``TypeError`` and the like from its expressions."""
    return RenderedTemplate(
        subject=_compiled(template.subject).render(variables),
        body=_compiled(template.body).render(variables),
    )


def parse_template_file(text: str) -> list[TemplateText]:
    """The templates of a YAML template file, each checked; raise :class:`InvalidTemplate`
    naming the first problem, so a file imports completely or not at all."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise InvalidTemplate(f"not YAML: {error}") from None
    entries = document.get("templates") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidTemplate("expected a top-level 'templates:' list")
    templates, seen = [], set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"name", "subject", "body"}:
            raise InvalidTemplate(f"entry #{index + 1}: needs exactly the keys name, subject and body")
        if not all(isinstance(entry[key], str) for key in ("name", "subject", "body")):
            raise InvalidTemplate(f"entry #{index + 1}: name, subject and body must be strings")
        template = TemplateText(entry["name"], entry["subject"], entry["body"])
        if template.name in seen:
            raise InvalidTemplate(f"template {template.name!r} appears twice")
        seen.add(template.name)
        check_template(template)
        templates.append(template)
    return templates
