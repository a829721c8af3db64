"""The classifier's small pure helpers, tested directly (in the manner of Zulip's email mirror)."""

import pytest

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
