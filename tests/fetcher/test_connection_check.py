"""`mailintake accounts check` and ``check_account`` against the stack's Dovecot."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest
import yaml
from typer.testing import CliRunner

from mailintake.cli import app
from services.fetcher.account import Account
from services.fetcher.connection_check import REDACTED, CheckReport, check_account

STEPS = ["connect", "tls", "capabilities", "authentication", "select"]


def write_accounts(path, *accounts: Account):
    entries = [
        {**a.model_dump(mode="json", exclude={"sender", "ticket_options"}), "password": a.password.get_secret_value()}
        for a in accounts
    ]
    path.write_text(yaml.safe_dump({"accounts": entries}, allow_unicode=True))
    return path


def run_check(*args: str):
    return CliRunner().invoke(app, ["accounts", "check", *args], terminal_width=200)


@pytest.mark.stack
def test_a_good_account_passes_every_step_with_its_time(stack, tmp_path, account_for):
    imaps = account_for(stack.user("demo"))
    pop3 = account_for(stack.user("umlaut"), protocol="pop3", security="starttls")
    result = run_check("--file", str(write_accounts(tmp_path / "a.yaml", imaps, pop3)))
    assert result.exit_code == 0, result.output
    for account in (imaps, pop3):
        block = result.output.split(f"{account.id}: ")[1].split("\n  OK\n")[0]
        assert [re.match(r"  (\w+)\s+OK\s+[\d.]+ ms", line).group(1) for line in block.splitlines() if re.match(r"  \w+\s+OK ", line)] == STEPS
    assert "server: * CAPABILITY IMAP4rev1 " in result.output and " AUTH=PLAIN" in result.output
    assert "server: CAPA, TOP, UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, USER, SASL PLAIN LOGIN" in result.output
    assert re.search(r"INBOX: \d+ messages \(UIDVALIDITY \d+\)", result.output)
    assert "certificate of localhost verified against ca_file" in result.output
    assert "AUTH PLAIN as umlaut" in result.output
    assert stack.user("demo").password not in result.output and stack.user("umlaut").password not in result.output


@pytest.mark.stack
def test_a_wrong_password_shows_the_servers_reply_exactly_and_fails(stack, tmp_path, account_for, loopback_address):
    wrong = account_for(stack.user("demo"), id="wrong", password="not-the-password")
    other = account_for(stack.user("demo"), id="other")
    accounts = write_accounts(tmp_path / "a.yaml", other, wrong)
    result = run_check("wrong", "--file", str(accounts), "--source-address", loopback_address())
    assert result.exit_code == 1, result.output
    assert "other:" not in result.output, "only the named account is checked"
    assert re.search(r"  authentication  FAILED\s+[\d.]+ ms  the server refused\n\s+server: \[AUTHENTICATIONFAILED\] Authentication failed\.\n", result.output)
    assert result.output.rstrip().endswith("FAILED at authentication: [AUTHENTICATIONFAILED] Authentication failed.")
    assert "select" not in result.output, "the first failure ends the check"
    assert "not-the-password" not in result.output


@pytest.mark.stack
def test_an_untrusted_certificate_shows_the_verification_error(stack, tmp_path, account_for, untrusted_ca_file):
    account = account_for(stack.user("demo"), ca_file=untrusted_ca_file)
    result = run_check("--file", str(write_accounts(tmp_path / "a.yaml", account)))
    assert result.exit_code == 1, result.output
    assert re.search(r"  tls\s+FAILED\s+[\d.]+ ms  certificate verify failed: unable to get local issuer certificate\n", result.output)
    assert "FAILED at tls: certificate verify failed: unable to get local issuer certificate" in result.output


@pytest.mark.stack
def test_json_is_one_report_per_account_with_every_step(stack, tmp_path, account_for):
    account = account_for(stack.user("demo"), protocol="pop3")
    result = run_check("--json", "--file", str(write_accounts(tmp_path / "a.yaml", account)))
    assert result.exit_code == 0, result.output
    [report] = [CheckReport.model_validate(item) for item in json.loads(result.output)]
    assert report.ok and report.account_id == account.id and report.messages is not None
    assert [s.name for s in report.steps] == STEPS
    assert all(s.outcome.value == "ok" and s.milliseconds >= 0 for s in report.steps)
    assert report.authentication == "AUTH PLAIN (SASL, UTF-8)"
    assert stack.user("demo").password not in result.output


@pytest.mark.stack
def test_without_an_account_or_with_an_unknown_id_the_check_stops_with_status_2(stack, tmp_path, unique):
    result = run_check()
    assert result.exit_code == 2 and "name a stored ACCOUNT_ID, or pass --file" in result.output
    result = run_check(f"nope-{unique}")
    assert result.exit_code == 2 and f"no stored account 'nope-{unique}'" in result.output
    accounts = write_accounts(
        tmp_path / "a.yaml", Account(id="desk", name="d", host="127.0.0.1", port=1, username="u", password="p")
    )
    result = run_check("nope", "--file", str(accounts))
    assert result.exit_code == 2 and "no account with id 'nope'" in result.output


def test_a_server_that_echoes_the_password_does_not_get_it_into_the_report():
    """A POP3 peer that quotes the password back in its refusal (no real server should)."""
    password = "Geheim-Ä-42"
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as lines:
            connection.sendall(b"+OK ready\r\n")
            for line in lines:
                command = line.decode("utf-8").rstrip("\r\n")
                if command == "CAPA":
                    connection.sendall(b"+OK\r\nUSER\r\n.\r\n")
                elif command.startswith("USER "):
                    connection.sendall(b"+OK\r\n")
                elif command.startswith("PASS "):
                    connection.sendall(f"-ERR wrong password {command[5:]}\r\n".encode())
                else:
                    connection.sendall(b"+OK bye\r\n")
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    account = Account(
        id="echo", name="echo", protocol="pop3", host="127.0.0.1", port=listener.getsockname()[1],
        security="none", prevent_plaintext_login=False, username="u", password=password,
    )
    report = check_account(account, timeout=5)
    thread.join(5)
    listener.close()
    assert report.failure.server_reply == f"-ERR wrong password {REDACTED}"
    assert password not in report.model_dump_json()


@pytest.mark.stack
def test_a_stored_account_is_checked_by_its_id(stack, tmp_path, account_for, unique):
    account = account_for(stack.user("demo"), id=f"stored-{unique}")
    imported = CliRunner().invoke(app, ["accounts", "import", str(write_accounts(tmp_path / "a.yaml", account))])
    assert imported.exit_code == 0, imported.output
    result = run_check(account.id)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{account.id}: ") and result.output.rstrip().endswith("OK")
    assert stack.user("demo").password not in result.output
