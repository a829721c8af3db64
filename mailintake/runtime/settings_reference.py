"""The configuration reference, generated from the settings classes so it cannot go stale."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from mailintake.runtime.settings import env_name


def settings_classes() -> list[type[BaseSettings]]:
    from mailintake.stack.settings import StackSettings
    from services.admin.settings import AdminSettings
    from services.classifier.settings import ClassifierSettings
    from services.fetcher.settings import AccountEncryptionSettings, FetcherSettings
    from services.sender.settings import SenderSettings
    from services.ticketer.settings import TicketerSettings

    return [
        FetcherSettings,
        AccountEncryptionSettings,
        ClassifierSettings,
        TicketerSettings,
        SenderSettings,
        AdminSettings,
        StackSettings,
    ]


def _default(field) -> str:  # noqa: ANN001 - pydantic FieldInfo
    default = field.get_default(call_default_factory=True)
    if isinstance(default, SecretStr):
        return "(secret)"
    return f"`{default}`" if default not in (None, "") else ""


def settings_reference() -> str:
    """Markdown: one table per settings class, a row per environment variable."""
    parts = []
    for cls in settings_classes():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        parts.append(f"### `{cls.__name__}`\n\n{doc}\n")
        parts.append("| Variable | Default | Meaning |\n|---|---|---|")
        for name, field in cls.model_fields.items():
            meaning = " ".join((field.description or "").split()).replace("|", "\\|")
            parts.append(f"| `{env_name(cls, name)}` | {_default(field)} | {meaning} |")
        parts.append("")
    return "\n".join(parts)
