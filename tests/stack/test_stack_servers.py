"""The running default stack: every server answers like the services will use it."""

from __future__ import annotations

import poplib
import random
import smtplib
import socket
import ssl
import uuid
import warnings
from email.message import EmailMessage

import pytest
import sqlalchemy
from imapclient import IMAPClient

from mailintake.stack import Stack
from mailintake.stack.tls import create_ca, write_ca

pytestmark = pytest.mark.stack


def tls_context(stack: Stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.endpoints.ca_file))


def test_status_reports_every_component_running(local_stack: Stack):
    states = {item.name: item.state for item in local_stack.status()}
    assert states == {"postgres": "running", "kafka": "running", "oidc": "running", "dovecot": "running", "smtp": "running"}


def test_up_again_keeps_the_processes(local_stack: Stack):
    before = {name: c.running() for name, c in local_stack.components.items()}
    local_stack.up()
    assert {name: c.running() for name, c in local_stack.components.items()} == before


def test_imaps_login_verifies_the_stack_ca(local_stack: Stack):
    e = local_stack.endpoints
    demo = e.user("demo")
    with IMAPClient(e.host, port=e.imaps_port, ssl=True, ssl_context=tls_context(local_stack)) as client:
        client.login(demo.name, demo.password)
        assert b"INBOX" in [name.encode() for _, _, name in client.list_folders()]


def test_imaps_fails_verification_with_another_ca(local_stack: Stack, tmp_path):
    other = create_ca("some other CA")
    write_ca(other, tmp_path / "other-ca.pem", tmp_path / "other-ca.key")
    context = ssl.create_default_context(cafile=str(tmp_path / "other-ca.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(local_stack.endpoints.host, port=local_stack.endpoints.imaps_port, ssl=True, ssl_context=context)


def test_imap_starttls_then_login(local_stack: Stack):
    e = local_stack.endpoints
    alice = e.user("alice")
    with IMAPClient(e.host, port=e.imap_port, ssl=False) as client:
        client.starttls(tls_context(local_stack))
        client.login(alice.address, alice.password)
        assert client.select_folder("INBOX")[b"EXISTS"] >= 0


def test_non_ascii_password_authenticates_with_plain(local_stack: Stack):
    e = local_stack.endpoints
    umlaut = e.user("umlaut")
    assert not umlaut.password.isascii()
    with IMAPClient(e.host, port=e.imaps_port, ssl=True, ssl_context=tls_context(local_stack)) as client:
        client.plain_login(umlaut.name, umlaut.password)
        client.select_folder("INBOX")


def test_pop3s_login(local_stack: Stack):
    e = local_stack.endpoints
    bob = e.user("bob")
    pop = poplib.POP3_SSL(e.host, e.pop3s_port, context=tls_context(local_stack), timeout=10)
    try:
        pop.user(bob.name)
        pop.pass_(bob.password)
        pop.stat()
    finally:
        pop.quit()


def test_smtp_mail_arrives_in_the_imap_inbox(local_stack: Stack):
    e = local_stack.endpoints
    alice, demo = e.user("alice"), e.user("demo")
    subject = f"stack test {uuid.uuid4().hex}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = alice.address, demo.address, subject
    message.set_content("Grüße aus dem Test.\n")
    with smtplib.SMTP(e.host, e.smtp_port, local_hostname="localhost", timeout=10) as smtp:
        smtp.starttls(context=tls_context(local_stack))
        smtp.login(alice.name, alice.password)
        assert smtp.send_message(message) == {}
    with IMAPClient(e.host, port=e.imaps_port, ssl=True, ssl_context=tls_context(local_stack)) as client:
        client.login(demo.name, demo.password)
        client.select_folder("INBOX", readonly=True)
        found = client.search(["HEADER", "Subject", subject])
        assert len(found) == 1
        body = client.fetch(found, ["RFC822"])[found[0]][b"RFC822"]
        assert "Grüße".encode() in body or b"Gr=C3=BC=C3=9Fe" in body


def test_smtp_refuses_auth_before_tls_and_foreign_recipients(local_stack: Stack):
    e = local_stack.endpoints
    alice = e.user("alice")
    with smtplib.SMTP(e.host, e.smtp_port, local_hostname="localhost", timeout=10) as smtp:
        code, _ = smtp.docmd("AUTH", "PLAIN")
        assert code == 530  # must issue STARTTLS first
        smtp.starttls(context=tls_context(local_stack))
        smtp.login(alice.name, alice.password)
        smtp.mail(alice.address)
        assert smtp.rcpt("someone@example.org")[0] == 550
        assert smtp.rcpt(f"nobody-{uuid.uuid4().hex[:8]}@{e.mail_domain}")[0] == 550


def test_added_mail_user_can_log_in(local_stack: Stack):
    name = f"user-{uuid.uuid4().hex[:8]}"
    user = local_stack.add_mail_user(name, "Neu-Pässwort-2")
    e = local_stack.endpoints
    with IMAPClient(e.host, port=e.imaps_port, ssl=True, ssl_context=tls_context(local_stack)) as client:
        client.plain_login(user.address, user.password)
        client.select_folder("INBOX")


def _fresh_loopback_address() -> str:
    # Dovecot delays logins after failures per client address, growing with
    # each one; a random 127.x address keeps that away from every other test.
    return f"127.{random.randint(2, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}"


def _imap_exchange(sock, command: bytes) -> bytes:
    reader = sock.makefile("rb")
    sock.sendall(command)
    while True:
        line = reader.readline()
        if not line or line.startswith(command.split(b" ", 1)[0] + b" "):
            return line


def test_wrong_password_is_refused(local_stack: Stack):
    e = local_stack.endpoints
    raw = socket.create_connection((e.host, e.imaps_port), timeout=15, source_address=(_fresh_loopback_address(), 0))
    with tls_context(local_stack).wrap_socket(raw, server_hostname=e.tls_server_name) as sock:
        assert sock.makefile("rb").readline().startswith(b"* OK")
        reply = _imap_exchange(sock, b"a1 LOGIN demo not-the-password\r\n")
    assert b"[AUTHENTICATIONFAILED]" in reply


def test_plaintext_login_is_refused_before_starttls(local_stack: Stack):
    # From 127.0.0.1 Dovecot counts the connection as secure; from another
    # loopback address it must insist on TLS.
    e = local_stack.endpoints
    with socket.create_connection(
        (e.host, e.imap_port), timeout=15, source_address=(_fresh_loopback_address(), 0)
    ) as sock:
        greeting = sock.makefile("rb").readline()
        assert b"LOGINDISABLED" in greeting or b"STARTTLS" in greeting
        demo = e.user("demo")
        reply = _imap_exchange(sock, f"a1 LOGIN {demo.name} {demo.password}\r\n".encode())
    assert b"[PRIVACYREQUIRED]" in reply or b"LOGINDISABLED" in reply


def test_postgres_url_logs_in_as_the_application(local_stack: Stack):
    engine = sqlalchemy.create_engine(local_stack.endpoints.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select current_user, current_database()")).one() == (
                "mailintake",
                "mailintake",
            )
    finally:
        engine.dispose()


def test_kafka_transactions_commit(local_stack: Stack):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
        from kafka.admin import NewTopic

    bootstrap = local_stack.endpoints.kafka_bootstrap
    topic = f"stack-test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"committed")
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send(topic, b"aborted")
        producer.abort_transaction()
        producer.close()
        consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000,
        )
        values = [record.value for record in consumer]
        consumer.close()
        assert values == [b"committed"]
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_oidc_provider_serves_its_discovery_document_over_verified_tls(local_stack: Stack):
    import json
    import urllib.request

    e = local_stack.endpoints
    with urllib.request.urlopen(f"{e.oidc_issuer}/.well-known/openid-configuration", context=tls_context(local_stack), timeout=10) as answer:
        document = json.load(answer)
    assert document["issuer"] == e.oidc_issuer
    assert {"client_credentials", "authorization_code", "refresh_token"} <= set(document["grant_types_supported"])
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["introspection_endpoint"] == f"{e.oidc_issuer}/token/introspection"
    assert document["revocation_endpoint"] == f"{e.oidc_issuer}/token/revocation"
    assert {c.client_id for c in e.oidc_clients} == {
        "mailintake-app", "mailintake-app-certificate", "mailintake-delegated", "mailintake-short-lived", "dovecot",
    }
    assert e.oidc_app_certificate.is_file()


def _app_token(e, mailbox: str, client_id: str = "mailintake-app") -> str:
    import requests

    client = e.oidc_client(client_id)
    answer = requests.post(
        f"{e.oidc_issuer}/token", data={"grant_type": "client_credentials", "scope": f"mailbox:{mailbox}"},
        auth=(client.client_id, client.client_secret), verify=str(e.ca_file), timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def _xoauth2(user: str, token: str):
    answers = iter([f"user={user}\x01auth=Bearer {token}\x01\x01", ""])
    return lambda challenge=None: next(answers)


def test_smtp_takes_an_oauth2_token_of_the_stacks_provider(local_stack: Stack):
    import base64
    import json

    e = local_stack.endpoints
    helpdesk, demo = e.user("helpdesk"), e.user("demo")
    subject = f"xoauth2 test {uuid.uuid4().hex}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = helpdesk.address, demo.address, subject
    message.set_content("Sent with a bearer token.\n")
    with smtplib.SMTP(e.host, e.smtp_port, local_hostname="localhost", timeout=10) as smtp:
        smtp.starttls(context=tls_context(local_stack))
        smtp.ehlo()
        assert "XOAUTH2" in smtp.esmtp_features["auth"].split()
        code, _ = smtp.auth("XOAUTH2", _xoauth2(helpdesk.address, _app_token(e, helpdesk.address)), initial_response_ok=True)
        assert code == 235
        assert smtp.send_message(message) == {}
    with IMAPClient(e.host, port=e.imaps_port, ssl=True, ssl_context=tls_context(local_stack)) as client:
        client.login(demo.name, demo.password)
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["HEADER", "Subject", subject])) == 1

    # A token for another mailbox is refused after the error challenge (as Dovecot sends it).
    with smtplib.SMTP(e.host, e.smtp_port, local_hostname="localhost", timeout=10) as smtp:
        smtp.starttls(context=tls_context(local_stack))
        smtp.ehlo()
        code, challenge = smtp.docmd("AUTH", "XOAUTH2 " + base64.b64encode(
            f"user={helpdesk.address}\x01auth=Bearer {_app_token(e, demo.address)}\x01\x01".encode()).decode())
        assert code == 334 and json.loads(base64.b64decode(challenge))["status"] == "401"
        assert smtp.docmd("") == (535, b"5.7.8 Authentication credentials invalid")
