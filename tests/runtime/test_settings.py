import pytest
from pydantic import ValidationError

from mailintake.runtime.settings import InvalidSettings, load_settings
from mailintake.runtime.settings_reference import settings_classes, settings_reference
from services.classifier.settings import ClassifierSettings
from services.fetcher.settings import FetcherSettings


def test_bad_setting_names_the_variable_and_the_reason(monkeypatch):
    monkeypatch.setenv("MAILINTAKE_FETCHER_FETCH_CHUNK", "lots")
    with pytest.raises(InvalidSettings) as error:
        load_settings(FetcherSettings)
    assert "MAILINTAKE_FETCHER_FETCH_CHUNK (FetcherSettings.fetch_chunk)" in str(error.value)
    assert "valid integer" in str(error.value)


def test_secret_input_is_not_echoed_in_the_error(monkeypatch):
    monkeypatch.setenv("MAILINTAKE_CLASSIFIER_HTTP_PORT", "hunter2")
    with pytest.raises(InvalidSettings) as error:
        load_settings(ClassifierSettings)
    assert "hunter2" not in str(error.value)


def test_reference_pattern_must_name_its_groups(monkeypatch):
    monkeypatch.setenv("MAILINTAKE_CLASSIFIER_REFERENCE_PATTERN", r"\[#(\d+)\]")
    with pytest.raises(InvalidSettings, match="named groups"):
        load_settings(ClassifierSettings)


def test_settings_are_frozen():
    settings = load_settings(FetcherSettings)
    with pytest.raises(ValidationError):
        settings.fetch_chunk = 5


@pytest.mark.parametrize("cls", settings_classes(), ids=lambda c: c.__name__)
def test_every_field_has_a_docstring_and_secrets_are_secret(cls):
    for name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{name} has no docstring"
        if any(word in name for word in ("password", "secret", "database_url")):
            assert "SecretStr" in str(field.annotation), f"{cls.__name__}.{name} must be a SecretStr"


def test_readme_configuration_reference_is_current():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert settings_reference().strip() in readme, "README's configuration reference is stale: paste `mailintake config reference`"
