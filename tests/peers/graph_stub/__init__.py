"""A stub of the Microsoft Graph mail endpoints for the fetcher's tests: HTTPS on
127.0.0.1 answering the handful of requests the fetcher sends, written from
Microsoft's published Graph API description. It is a test peer, not Microsoft 365, and
no product code imports it.
"""

from .access_tokens import IntrospectedTokens, RegisteredTokens, TokenRefusal, TokenValidator
from .https_server import Action, GraphStub, RequestRecord
from .mailboxes import Grant, StubMailbox, StubMailFolder, StubMessage, StubTenant, received_sequence

__all__ = [
    "Action",
    "Grant",
    "GraphStub",
    "IntrospectedTokens",
    "RegisteredTokens",
    "RequestRecord",
    "StubMailFolder",
    "StubMailbox",
    "StubMessage",
    "StubTenant",
    "TokenRefusal",
    "TokenValidator",
    "received_sequence",
]
