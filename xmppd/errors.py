"""Error conditions of RFC 6120: stream (§4.9.3), stanza (§8.3.3), SASL (§6.5).

The enum values are the element names as they go on the wire.
"""

from __future__ import annotations

import enum

__all__ = [
    "NS_STREAMS",
    "NS_STANZAS",
    "NS_SASL",
    "StreamErrorCondition",
    "StanzaErrorCondition",
    "SaslFailureCondition",
    "StreamError",
    "STANZA_ERROR_TYPES",
]

NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class StreamErrorCondition(str, enum.Enum):
    BAD_FORMAT = "bad-format"
    BAD_NAMESPACE_PREFIX = "bad-namespace-prefix"
    CONFLICT = "conflict"
    CONNECTION_TIMEOUT = "connection-timeout"
    HOST_GONE = "host-gone"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    INVALID_FROM = "invalid-from"
    INVALID_NAMESPACE = "invalid-namespace"
    INVALID_XML = "invalid-xml"
    NOT_AUTHORIZED = "not-authorized"
    NOT_WELL_FORMED = "not-well-formed"
    POLICY_VIOLATION = "policy-violation"
    REMOTE_CONNECTION_FAILED = "remote-connection-failed"
    RESET = "reset"
    RESOURCE_CONSTRAINT = "resource-constraint"
    RESTRICTED_XML = "restricted-xml"
    SEE_OTHER_HOST = "see-other-host"
    SYSTEM_SHUTDOWN = "system-shutdown"
    UNDEFINED_CONDITION = "undefined-condition"
    UNSUPPORTED_ENCODING = "unsupported-encoding"
    UNSUPPORTED_FEATURE = "unsupported-feature"
    UNSUPPORTED_STANZA_TYPE = "unsupported-stanza-type"
    UNSUPPORTED_VERSION = "unsupported-version"


class StanzaErrorCondition(str, enum.Enum):
    BAD_REQUEST = "bad-request"
    CONFLICT = "conflict"
    FEATURE_NOT_IMPLEMENTED = "feature-not-implemented"
    FORBIDDEN = "forbidden"
    GONE = "gone"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    ITEM_NOT_FOUND = "item-not-found"
    JID_MALFORMED = "jid-malformed"
    NOT_ACCEPTABLE = "not-acceptable"
    NOT_ALLOWED = "not-allowed"
    NOT_AUTHORIZED = "not-authorized"
    POLICY_VIOLATION = "policy-violation"
    RECIPIENT_UNAVAILABLE = "recipient-unavailable"
    REDIRECT = "redirect"
    REGISTRATION_REQUIRED = "registration-required"
    REMOTE_SERVER_NOT_FOUND = "remote-server-not-found"
    REMOTE_SERVER_TIMEOUT = "remote-server-timeout"
    RESOURCE_CONSTRAINT = "resource-constraint"
    SERVICE_UNAVAILABLE = "service-unavailable"
    SUBSCRIPTION_REQUIRED = "subscription-required"
    UNDEFINED_CONDITION = "undefined-condition"
    UNEXPECTED_REQUEST = "unexpected-request"


#: default error type per condition (RFC 6120 §8.3.3)
STANZA_ERROR_TYPES: dict[StanzaErrorCondition, str] = {
    StanzaErrorCondition.BAD_REQUEST: "modify",
    StanzaErrorCondition.CONFLICT: "cancel",
    StanzaErrorCondition.FEATURE_NOT_IMPLEMENTED: "cancel",
    StanzaErrorCondition.FORBIDDEN: "auth",
    StanzaErrorCondition.GONE: "cancel",
    StanzaErrorCondition.INTERNAL_SERVER_ERROR: "wait",
    StanzaErrorCondition.ITEM_NOT_FOUND: "cancel",
    StanzaErrorCondition.JID_MALFORMED: "modify",
    StanzaErrorCondition.NOT_ACCEPTABLE: "modify",
    StanzaErrorCondition.NOT_ALLOWED: "cancel",
    StanzaErrorCondition.NOT_AUTHORIZED: "auth",
    StanzaErrorCondition.POLICY_VIOLATION: "modify",
    StanzaErrorCondition.RECIPIENT_UNAVAILABLE: "wait",
    StanzaErrorCondition.REDIRECT: "modify",
    StanzaErrorCondition.REGISTRATION_REQUIRED: "auth",
    StanzaErrorCondition.REMOTE_SERVER_NOT_FOUND: "cancel",
    StanzaErrorCondition.REMOTE_SERVER_TIMEOUT: "wait",
    StanzaErrorCondition.RESOURCE_CONSTRAINT: "wait",
    StanzaErrorCondition.SERVICE_UNAVAILABLE: "cancel",
    StanzaErrorCondition.SUBSCRIPTION_REQUIRED: "auth",
    StanzaErrorCondition.UNDEFINED_CONDITION: "cancel",
    StanzaErrorCondition.UNEXPECTED_REQUEST: "wait",
}


class SaslFailureCondition(str, enum.Enum):
    ABORTED = "aborted"
    ACCOUNT_DISABLED = "account-disabled"
    CREDENTIALS_EXPIRED = "credentials-expired"
    ENCRYPTION_REQUIRED = "encryption-required"
    INCORRECT_ENCODING = "incorrect-encoding"
    INVALID_AUTHZID = "invalid-authzid"
    INVALID_MECHANISM = "invalid-mechanism"
    MALFORMED_REQUEST = "malformed-request"
    MECHANISM_TOO_WEAK = "mechanism-too-weak"
    NOT_AUTHORIZED = "not-authorized"
    TEMPORARY_AUTH_FAILURE = "temporary-auth-failure"


class StreamError(Exception):
    """The peer sent something that ends the stream.

    Raised by sans-IO layers (parser, negotiation) for *peer* errors; the
    caller sends ``<stream:error>`` with ``condition`` and ``text`` and closes.
    Bugs in our own calls raise ordinary exceptions instead.
    """

    def __init__(self, condition: StreamErrorCondition, text: str = "") -> None:
        super().__init__(f"{condition.value}: {text}" if text else condition.value)
        self.condition = condition
        self.text = text
