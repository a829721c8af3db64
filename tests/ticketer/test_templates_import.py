"""`mailintake templates import FILE` on the stack's database: checked first, all or nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from mailintake.database import engine_for
from services.ticketer.tables import AutoAnswerTemplate

pytestmark = pytest.mark.stack


def import_file(path):
    return subprocess.run(
        [sys.executable, "-m", "mailintake", "templates", "import", str(path)], capture_output=True, text=True
    )


def stored(stack, *names):
    with engine_for(stack.database_url).connect() as connection:
        rows = connection.execute(select(AutoAnswerTemplate).where(AutoAnswerTemplate.name.in_(names))).all()
    return {row.name: (row.subject_template, row.body_template) for row in rows}


def test_a_file_with_one_bad_template_imports_nothing_and_names_the_problem(stack, unique, tmp_path):
    path = tmp_path / "templates.yaml"
    path.write_text(
        f"templates:\n"
        f"  - name: good-{unique}\n    subject: 'Re: {{{{ subject }}}}'\n    body: 'Thanks.'\n"
        f"  - name: bad-{unique}\n    subject: 'Hi'\n    body: 'Dear {{{{ customer_name }}}}'\n"
    )
    result = import_file(path)
    assert result.returncode == 2
    assert f"template 'bad-{unique}', body: unknown variable(s) customer_name" in result.stderr
    assert stored(stack, f"good-{unique}", f"bad-{unique}") == {}


def test_a_good_file_is_stored_and_a_second_import_replaces_by_name(stack, unique, tmp_path):
    path = tmp_path / "templates.yaml"
    path.write_text(f"templates:\n  - name: t-{unique}\n    subject: 'v1 {{{{ subject }}}}'\n    body: 'one'\n")
    assert import_file(path).returncode == 0
    path.write_text(f"templates:\n  - name: t-{unique}\n    subject: 'v2 {{{{ subject }}}}'\n    body: 'two'\n")
    result = import_file(path)
    assert result.returncode == 0 and f"imported 1 template(s): t-{unique}" in result.stdout
    assert stored(stack, f"t-{unique}") == {f"t-{unique}": ("v2 {{ subject }}", "two")}
