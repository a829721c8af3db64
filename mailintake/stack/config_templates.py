"""Server configuration files, rendered from the templates in deploy/local/."""

from __future__ import annotations

from pathlib import Path

import jinja2

from .errors import StackError
from .layout import DEPLOY_DIR

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(DEPLOY_DIR)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    autoescape=False,
)


def render_to(template: str, destination: Path, mode: int = 0o644, **values: object) -> None:
    """Render ``template`` (a path below deploy/local) into ``destination``.

    Rewritten on every start so that changed settings (ports, paths) apply.
    """
    try:
        text = _ENV.get_template(template).render(**values)
    except jinja2.TemplateNotFound as exc:
        raise StackError(
            f"config template {template} not found in {DEPLOY_DIR}: "
            "the stack runs from a source checkout of mailintake"
        ) from exc
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(destination.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(destination)
