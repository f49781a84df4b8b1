"""SASL PLAIN (RFC 4616), sans-IO.

Message: ``[authzid] NUL authcid NUL passwd`` in UTF-8.  ``authcid`` is the
XMPP localpart (RFC 6120 §6.3.8 "simple user name"), prepared with PRECIS
UsernameCaseMapped; the password is prepared with OpaqueString before the
backend sees it.  Offer PLAIN only on encrypted streams.
"""

from __future__ import annotations

from typing import Any

from xmppd.errors import SaslFailureCondition

from .base import (
    Challenge,
    Mechanism,
    Need,
    NeedPasswordCheck,
    Step,
    Success,
    failure,
    prepare_password,
    prepare_username,
)

__all__ = ["PlainMechanism", "MAX_PLAIN_MESSAGE_BYTES"]

#: longest PLAIN message accepted (RFC 4616 asks for at least 255 octets per
#: field; a bare-JID authzid can reach 2047 octets, a localpart 1023).
MAX_PLAIN_MESSAGE_BYTES = 4096

_MALFORMED = SaslFailureCondition.MALFORMED_REQUEST


class PlainMechanism(Mechanism):
    name = "PLAIN"

    def __init__(self) -> None:
        super().__init__()
        self._username: str | None = None
        self._authzid: str | None = None

    def _on_start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(b"")  # RFC 4616 §2: empty challenge, then the message
        return self._handle(initial_response)

    def _on_response(self, data: bytes) -> Step:
        return self._handle(data)

    def _handle(self, data: bytes) -> Step:
        if len(data) > MAX_PLAIN_MESSAGE_BYTES:
            return failure(_MALFORMED, "malformed-request",
                           f"PLAIN message longer than {MAX_PLAIN_MESSAGE_BYTES} octets")
        fields = data.split(b"\x00")
        if len(fields) != 3:
            return failure(_MALFORMED, "malformed-request",
                           "PLAIN message must be [authzid] NUL authcid NUL password")
        try:
            authzid, authcid, password = (f.decode("utf-8") for f in fields)
        except UnicodeDecodeError:
            return failure(_MALFORMED, "malformed-request", "PLAIN message is not valid UTF-8")
        if not authcid:
            return failure(_MALFORMED, "malformed-request", "empty authentication identity")
        if not password:
            return failure(_MALFORMED, "malformed-request", "empty password")
        try:
            username = prepare_username(authcid)
        except ValueError:
            return failure(SaslFailureCondition.NOT_AUTHORIZED, "bad-username",
                           "the authentication identity is not a valid username")
        try:
            prepared = prepare_password(password)
        except ValueError:
            # Such a password can never have been stored: plain bad credentials.
            return failure(SaslFailureCondition.NOT_AUTHORIZED, "bad-credentials",
                           "wrong username or password")
        self._username = username
        self._authzid = authzid or None
        return NeedPasswordCheck(username, prepared)

    def _on_answer(self, need: Need, answer: Any) -> Step:
        assert self._username is not None
        if answer is True:
            return Success(self._username, self._authzid, None)
        return failure(SaslFailureCondition.NOT_AUTHORIZED, "bad-credentials",
                       "wrong username or password")
