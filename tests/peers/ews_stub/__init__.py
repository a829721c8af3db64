"""A stub of Exchange Web Services for the fetcher's tests: an HTTPS SOAP endpoint on
127.0.0.1 answering the handful of EWS operations the fetcher uses, written from
Microsoft's published EWS schema. It is a test peer, not an Exchange server, and no
product code imports it.
"""

from .https_server import EWS_PATH, EwsStub
from .mail_store import StubExchange, StubFolder, StubItem, StubMailbox, StubUser, received_sequence

__all__ = ["EWS_PATH", "EwsStub", "StubExchange", "StubFolder", "StubItem", "StubMailbox", "StubUser", "received_sequence"]
