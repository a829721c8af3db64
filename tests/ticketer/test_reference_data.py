"""Reference data: the check account import and the admin API run, and `mailintake refdata`."""

import subprocess
import sys

import pytest
from sqlalchemy import insert

from mailintake.contracts.records import TicketOptions
from mailintake.database import engine_for
from services.ticketer.reference_data import (
    InvalidReferenceData,
    import_reference_data,
    list_reference_data,
    missing_reference_data,
    parse_reference_data,
)
from services.ticketer.tables import User

pytestmark = pytest.mark.stack


def write(tmp_path, text):
    path = tmp_path / "refdata.yaml"
    path.write_text(text)
    return path


def test_missing_reference_data_names_each_field_and_value(stack, unique, tmp_path):
    engine = engine_for(stack.database_url)
    data = parse_reference_data(
        write(tmp_path, f"resources:\n  - name: 1st-{unique}\ncategories:\n  - name: Hardware-{unique}\npriorities:\n  - name: high-{unique}\n")
    )
    with engine.begin() as connection:
        import_reference_data(connection, data)
        connection.execute(insert(User).values(login=f"hotline-{unique}", email=f"hotline-{unique}@desk.test"))
    good = TicketOptions(resource=f"1st-{unique}", category=f"Hardware-{unique}", priority=f"high-{unique}")
    bad = TicketOptions(resource=f"2nd-{unique}", category=f"Hardware-{unique}", priority=f"urgent-{unique}")
    with engine.connect() as connection:
        assert missing_reference_data(good, f"hotline-{unique}", connection) == []
        assert missing_reference_data(TicketOptions(), None, connection) == []
        problems = missing_reference_data(bad, f"nobody-{unique}", connection)
    assert len(problems) == 3
    assert problems[0].startswith(f"ticket_options.resource: resource '2nd-{unique}' does not exist (known: ")
    assert problems[1].startswith(f"ticket_options.priority: priority 'urgent-{unique}' does not exist")
    assert problems[2] == f"ticket_options.fallback_user: no user has the login 'nobody-{unique}'"


def test_import_updates_descriptions_and_deletes_nothing(stack, unique, tmp_path):
    engine = engine_for(stack.database_url)
    with engine.begin() as connection:
        import_reference_data(connection, parse_reference_data(write(tmp_path, f"categories:\n  - name: c-{unique}\n    description: old\n  - name: d-{unique}\n")))
        import_reference_data(connection, parse_reference_data(write(tmp_path, f"categories:\n  - name: c-{unique}\n    description: new\n")))
        categories = dict(list_reference_data(connection)["categories"])
    assert (categories[f"c-{unique}"], categories[f"d-{unique}"]) == ("new", None)


@pytest.mark.parametrize(
    "text, message",
    [
        ("resources:\n  - name: a\n  - name: a\n", "resources named twice: a"),
        ("colours:\n  - name: red\n", "colours"),
        ("resources:\n  - description: no name\n", "name"),
        ("resources: [", "refdata.yaml"),
    ],
)
def test_a_broken_file_is_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(InvalidReferenceData, match=message):
        parse_reference_data(write(tmp_path, text))


def test_refdata_cli_imports_and_lists(stack, unique, tmp_path):
    path = write(tmp_path, f"resources:\n  - name: desk-{unique}\n    description: The desk\n")
    imported = subprocess.run([sys.executable, "-m", "mailintake", "refdata", "import", str(path)], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert "1 resources, 0 categories, 0 priorities imported" in imported.stdout
    listed = subprocess.run([sys.executable, "-m", "mailintake", "refdata", "list"], capture_output=True, text=True, check=True)
    assert f"desk-{unique}  - The desk" in listed.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "mailintake", "refdata", "import", str(write(tmp_path, "resources: 3\n"))],
        capture_output=True, text=True,
    )
    assert broken.returncode == 1 and "refdata.yaml" in broken.stderr
