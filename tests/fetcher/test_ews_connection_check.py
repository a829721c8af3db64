"""The connection check of EWS accounts, against the EWS stub (tests/peers/ews_stub) over
HTTPS with the stack's CA, and a real MIT KDC on loopback for Kerberos."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mailintake.cli import app
from services.fetcher.account import Account
from services.fetcher.connection_check import StepOutcome, check_account
from tests.peers.ews_stub import EwsStub, StubExchange
from tests.peers.kerberos_kdc import LocalKdc

EWS_STEPS = ["connect", "tls", "authentication", "folder"]


@pytest.fixture
def exchange():
    org = StubExchange()
    org.add_user("max", "Max-Pw-1", "max@example.test", principal="max@MAILINTAKE.TEST")
    return org


@pytest.fixture
def start_stub(exchange, stack_tls):
    stubs = []

    def start(schemes, keytab=None):
        stub = EwsStub(exchange, stack_tls.server_cert, stack_tls.server_key, schemes, keytab=keytab).start()
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        stub.stop()


def ews_account(stub, stack_tls, **changes) -> Account:
    values = dict(
        id="desk-ews", name="Desk (EWS)", protocol="ews", host="localhost", port=stub.port,
        username="EXAMPLE\\max", password="Max-Pw-1", ca_file=stack_tls.ca_cert, prevent_ntlm=False,
    )
    return Account(**{**values, **changes})


def mime(number: int) -> bytes:
    return f"From: a@example.test\r\nSubject: mail {number}\r\nMessage-ID: <{number}@example.test>\r\n\r\nbody\r\n".encode()


@pytest.fixture(scope="module")
def kdc():
    directory = Path(tempfile.mkdtemp(prefix="mi-kdc-"))
    kdc = LocalKdc(directory).start()
    kdc.add_user("max", "Max-Kerberos-Pw")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in kdc.environment().items():
            patch.setenv(name, value)
        patch.delenv("KRB5_CLIENT_KTNAME", raising=False)
        try:
            yield kdc
        finally:
            kdc.stop()
            shutil.rmtree(directory, ignore_errors=True)


def test_kerberos_success_passes_every_step_and_counts_the_folder(kdc, exchange, start_stub, stack_tls):
    for number in range(3):
        exchange.mailbox("max@example.test").deliver(mime(number))
    # NTLM is offered too, as Exchange does: the check must pick Kerberos, as the fetcher does.
    stub = start_stub(("Negotiate", "NTLM"), keytab=kdc.service_keytab)
    kdc.kinit("max", "Max-Kerberos-Pw")
    try:
        report = check_account(ews_account(stub, stack_tls, username="MAILINTAKE\\max", password="not-sent", prevent_ntlm=True), timeout=10)
    finally:
        kdc.kdestroy()

    assert report.ok, report.failure
    assert [s.name for s in report.steps] == EWS_STEPS and {s.outcome for s in report.steps} == {StepOutcome.OK}
    steps = {s.name: s for s in report.steps}
    assert "certificate of localhost verified against ca_file" in steps["tls"].detail
    assert steps["authentication"].detail.startswith("Kerberos (Negotiate) as max@MAILINTAKE.TEST")
    assert report.messages == 3 and "INBOX: 3 items" in steps["folder"].detail
    assert report.authentication == "Kerberos (Negotiate) only"
    assert set(stub.logins) == {("Negotiate", "max@MAILINTAKE.TEST")}, "nothing but Kerberos was tried"


def test_prevent_ntlm_with_an_ntlm_only_server_fails_naming_the_offer(start_stub, stack_tls):
    stub = start_stub(("NTLM",))
    report = check_account(ews_account(stub, stack_tls, prevent_ntlm=True), timeout=10)

    assert not report.ok
    assert [(s.name, s.outcome) for s in report.steps] == [
        ("connect", StepOutcome.OK), ("tls", StepOutcome.OK), ("authentication", StepOutcome.FAILED)
    ]
    failure = report.failure
    assert "the server offers ntlm; with prevent_ntlm only Kerberos (Negotiate) is used" in failure.detail
    assert failure.server_reply == "HTTP 401 Unauthorized; WWW-Authenticate: NTLM", "the server's answer as sent"
    assert stub.logins == [] and stub.calls == [], "no NTLM message, no password, was sent"


def test_an_untrusted_certificate_fails_the_tls_step(start_stub, stack_tls, untrusted_ca_file):
    stub = start_stub(("Basic",))
    report = check_account(ews_account(stub, stack_tls, ca_file=untrusted_ca_file), timeout=10)

    assert [s.name for s in report.steps] == ["connect", "tls"] and report.failure.name == "tls"
    assert "certificate verify failed" in report.failure.detail
    assert stub.calls == [] and stub.logins == []


def test_a_wrong_password_fails_authentication_without_showing_it(start_stub, stack_tls):
    stub = start_stub(("Basic",))
    report = check_account(ews_account(stub, stack_tls, password="Wrong-Secret-9"), timeout=10)

    assert report.failure is not None and report.failure.name == "authentication"
    assert "refused the credentials" in report.failure.detail
    assert 'WWW-Authenticate: Basic realm="mailintake EWS stub"' in report.failure.server_reply
    assert "Wrong-Secret-9" not in report.model_dump_json()


def test_json_output_of_the_cli(exchange, start_stub, stack_tls, tmp_path):
    exchange.mailbox("max@example.test").deliver(mime(1))
    stub = start_stub(("Basic",))
    account = ews_account(stub, stack_tls)
    entry = {**account.model_dump(mode="json", exclude={"sender", "ticket_options"}), "password": "Max-Pw-1"}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"accounts": [entry]}))

    result = CliRunner().invoke(app, ["accounts", "check", "--file", str(tmp_path / "a.yaml"), "--json"])

    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)
    assert report["protocol"] == "ews" and report["ok"] is True and report["messages"] == 1
    assert [s["name"] for s in report["steps"]] == EWS_STEPS
    assert report["steps"][2]["detail"] == "Basic as EXAMPLE\\max; mailbox max@example.test"
    assert "Max-Pw-1" not in result.output
