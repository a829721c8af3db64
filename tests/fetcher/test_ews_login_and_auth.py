"""The pure decisions of the EWS mailbox: who logs in, which auth method, which folder, what is new."""

from __future__ import annotations

import pytest
from exchangelib import BASIC, GSSAPI, NTLM

from services.fetcher.account import Account
from services.fetcher.ews_mailbox import (
    EwsAuthUnavailable,
    EwsLogin,
    FolderRoute,
    choose_auth,
    folder_route,
    item_id_of,
    offered_auth_schemes,
    parse_ews_username,
    password_principal,
    plan_pending,
    service_endpoint,
    source_id,
)


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("Domain\\Max.Mustermann\\Shared.MailboxAlias", EwsLogin("Domain\\Max.Mustermann", "Shared.MailboxAlias")),
        ("EXAMPLE\\max\\helpdesk@example.com", EwsLogin("EXAMPLE\\max", "helpdesk@example.com")),
        ("EXAMPLE\\max", EwsLogin("EXAMPLE\\max", None)),
        ("max@example.com", EwsLogin("max@example.com", None)),
        ("max", EwsLogin("max", None)),
    ],
)
def test_shared_mailbox_form_means_delegate_access(username, expected):
    assert parse_ews_username(username) == expected


@pytest.mark.parametrize("username", ["Domain\\\\Alias", "\\max", "a\\b\\c\\d", "Domain\\max\\ "])
def test_malformed_user_names_are_refused(username):
    with pytest.raises(ValueError, match="is not User, Domain"):
        parse_ews_username(username)


def test_user_part_is_what_a_kerberos_principal_is_compared_with():
    assert parse_ews_username("EXAMPLE\\max\\desk").user_part == "max"
    assert parse_ews_username("max@example.com").user_part == "max"


@pytest.mark.parametrize(
    ("username", "principal"),
    [
        ("EXAMPLE\\max", "max"),
        ("EXAMPLE\\max\\helpdesk@example.com", "max"),
        ("max", "max"),
        ("max@corp.example.com", "max@CORP.EXAMPLE.COM"),
        ("EXAMPLE\\max@corp.example.com\\desk", "max@CORP.EXAMPLE.COM"),
    ],
)
def test_the_password_is_for_the_user_in_the_default_realm_or_the_upn_domains_realm(username, principal):
    assert password_principal(parse_ews_username(username)) == principal


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["Negotiate", "NTLM"], ["negotiate", "ntlm"]),
        (['Basic realm="EWS, the mail", charset="UTF-8"'], ["basic"]),
        (['Negotiate, NTLM, Basic realm="x"'], ["negotiate", "ntlm", "basic"]),
        (["Negotiate oYG3MIG0oAMKAQChCwYJKoZIgvcSAQICooGfBIGc=="], ["negotiate"]),
        ([], []),
    ],
)
def test_offered_schemes_are_read_from_the_challenges(headers, expected):
    assert offered_auth_schemes(headers) == expected


@pytest.mark.parametrize(
    ("offered", "prevent_ntlm", "principal", "expected"),
    [
        (["negotiate", "ntlm"], True, "max@R", GSSAPI),
        (["negotiate", "ntlm"], False, "max@R", GSSAPI),
        (["negotiate", "ntlm"], False, None, NTLM),
        (["ntlm", "basic"], False, None, NTLM),
        (["basic"], False, None, BASIC),
    ],
)
def test_kerberos_first_then_ntlm_then_basic_when_allowed(offered, prevent_ntlm, principal, expected):
    assert choose_auth(offered, prevent_ntlm, principal) == expected


@pytest.mark.parametrize(
    ("offered", "principal", "message"),
    [
        (["ntlm"], "max@R", "the server offers ntlm; with prevent_ntlm only Kerberos (Negotiate) is used"),
        (["basic", "ntlm"], None, "the server offers basic, ntlm; with prevent_ntlm only Kerberos"),
        (["negotiate", "ntlm"], None, "the server offers Negotiate, but there is no Kerberos ticket for the account's user"),
        ([], None, "the server offers nothing"),
    ],
)
def test_prevent_ntlm_failure_names_what_was_offered(offered, principal, message):
    with pytest.raises(EwsAuthUnavailable) as error:
        choose_auth(offered, True, principal)
    assert error.value.step == "authentication" and message in str(error.value)


def test_without_prevent_ntlm_an_unusable_offer_is_still_an_error():
    with pytest.raises(EwsAuthUnavailable, match="offers digest"):
        choose_auth(["digest"], False, None)
    with pytest.raises(EwsAuthUnavailable, match="offers negotiate, and there is no Kerberos ticket for the account's user"):
        choose_auth(["negotiate"], False, None)


@pytest.mark.parametrize(
    ("folder", "route"),
    [
        ("INBOX", FolderRoute("inbox", ())),
        ("Inbox/Done/2026", FolderRoute("inbox", ("Done", "2026"))),
        ("Support/Queue", FolderRoute("msgfolderroot", ("Support", "Queue"))),
        ("/Archive/", FolderRoute("msgfolderroot", ("Archive",))),
    ],
)
def test_folder_routes(folder, route):
    assert folder_route(folder) == route


def test_pending_is_listing_minus_marks_and_vanished_marks_are_reported():
    pending, vanished = plan_pending(["a", "b", "c"], {"b", "gone"})
    assert pending == ["a", "c"] and vanished == {"gone"}


def test_source_ids_round_trip_and_refuse_other_protocols():
    assert item_id_of(source_id("AAMkAD=")) == "AAMkAD="
    with pytest.raises(ValueError):
        item_id_of("imap:1:2")


def test_service_endpoint_is_https_on_the_account_port():
    account = Account(id="x", name="x", protocol="ews", host="mail.example.com", port=8443, username="u", password="p")
    assert service_endpoint(account) == "https://mail.example.com:8443/EWS/Exchange.asmx"
    v6 = account.model_copy(update={"host": "::1"})
    assert service_endpoint(v6) == "https://[::1]:8443/EWS/Exchange.asmx"
