"""Which scopes an OAuth2 account's SMTP token asks for. Pure; the admin's consent asks for them too."""

from __future__ import annotations

from services.fetcher.account import Account, Authentication, OAuth2Provider

#: Exchange Online's SMTP scopes, for an OAuth2 account that names none of its own.
MICROSOFT_SMTP_SCOPES = {
    Authentication.OAUTH2_REFRESH_TOKEN: ("https://outlook.office.com/SMTP.Send",),
    Authentication.OAUTH2_CLIENT_CREDENTIALS: ("https://outlook.office365.com/.default",),
}


def smtp_scopes(account: Account) -> tuple[str, ...] | None:
    """The scopes of an SMTP token: the account's own, else Exchange Online's SMTP scope
    (Microsoft), else None (the token layer's default for the provider)."""
    assert account.oauth2 is not None
    if account.oauth2.scopes:
        return account.oauth2.scopes
    if account.oauth2.provider is OAuth2Provider.MICROSOFT:
        return MICROSOFT_SMTP_SCOPES[account.authentication]
    return None
