"""Auto-answers of an OAuth2 mail account: the sender logs in to the stack's SMTP relay
with SASL XOAUTH2 (or OAUTHBEARER) and the account's token from the token layer; the
relay introspects it at the stack's OpenID Connect provider."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from services.fetcher.account import Account
from services.fetcher.account_store import AccountStore
from services.fetcher.password_cipher import cipher_from_settings
from services.fetcher.settings import AccountEncryptionSettings
from services.sender.core import ClaimedMail, Delivered, NotDelivered, outbound_message
from services.sender.service import OAuth2Senders, deliver_due
from services.sender.smtp_transport import SmtpTransport
from tests.peers.oidc_consent import sign_in_and_consent
from tests.sender.test_auto_answers_on_stack import customer_mail, read_inbox

pytestmark = pytest.mark.stack

REFUSED_TOKEN = "535 5.7.8 Authentication credentials invalid"


def oauth2_account(stack, account_id: str, mailbox: str, client_id: str = "mailintake-delegated") -> Account:
    """The desk's account as an oauth2_refresh_token account of ``mailbox``, consented at the provider."""
    consent = sign_in_and_consent(stack, mailbox, client_id=client_id)
    return Account.model_validate({
        "id": account_id, "name": "OAuth2 desk", "host": stack.host, "port": stack.imaps_port,
        "ca_file": str(stack.ca_file), "username": f"{mailbox}@{stack.mail_domain}",
        "authentication": "oauth2_refresh_token",
        "oauth2": {"provider": "microsoft", "authority": stack.oidc_issuer, "client_id": client_id,
                   "client_secret": stack.oidc_client(client_id).client_secret, "refresh_token": consent.refresh_token,
                   "scopes": ["mail", "email"], "ca_file": str(stack.ca_file)},
    })


def test_an_oauth2_accounts_auto_answer_logs_in_with_its_token(stack, desk, customer):
    store = AccountStore(desk.engine, cipher_from_settings(AccountEncryptionSettings()))
    account = oauth2_account(stack, desk.account_id, "helpdesk")
    first_refresh_token = account.oauth2.refresh_token.get_secret_value()
    store.upsert(account)
    desk.open_ticket(desk.receive(customer_mail(customer.address, desk.address, "Sent with a token")))
    # The service's own login is wrong: only the account's token can get the mail out.
    wrong_login = desk.sender.model_copy(update={"smtp_password": SecretStr("not-the-password")})
    senders = OAuth2Senders(desk.engine, wrong_login)
    assert deliver_due(desk.engine, wrong_login, SmtpTransport(wrong_login), oauth2_senders=senders) >= 1
    [row] = desk.outbox()
    assert (row.status, row.last_smtp_reply) == ("sent", "250 2.0.0 delivered")
    [(_, answer)] = read_inbox(stack, customer)
    assert answer["From"].addresses[0].addr_spec == desk.address
    # The provider rotated the refresh token when the sender used it; the new one is stored.
    stored = store.get(desk.account_id).oauth2.refresh_token.get_secret_value()
    assert stored and stored != first_refresh_token


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_an_expired_token_is_refused_with_the_servers_exact_reply(stack, desk, mechanism):
    consent = sign_in_and_consent(stack, "helpdesk", client_id="mailintake-short-lived")
    mail = ClaimedMail(
        id=0, attempts=1, kind="auto_answer", sender_name=None, sender_address=desk.address,
        recipient=desk.address, subject="expired", message_id="<expired@mailintake.test>", in_reply_to=None,
        body_text="x", account_id=desk.account_id,
    )
    message = outbound_message(mail, datetime.now(UTC), "mi")
    refused = []
    transport = SmtpTransport(
        desk.sender, bearer=lambda: ("helpdesk@mailintake.test", consent.access_token),
        on_bearer_refused=lambda: refused.append(True),
    )
    if mechanism == "OAUTHBEARER":
        # The relay offers both; make this transport see OAUTHBEARER only.
        original = transport._authenticate_bearer

        def only_oauthbearer(smtp, user, token):
            smtp.esmtp_features["auth"] = "OAUTHBEARER"
            return original(smtp, user, token)

        transport._authenticate_bearer = only_oauthbearer
    fresh = transport.send(mail, message)
    assert isinstance(fresh, Delivered), fresh
    transport.close()
    time.sleep(5)  # the short-lived client's tokens live 4 s
    expired = transport.send(mail, message)
    assert expired == NotDelivered(REFUSED_TOKEN, permanent=False)
    assert refused == [True], "the token cache is told to drop the refused token"
