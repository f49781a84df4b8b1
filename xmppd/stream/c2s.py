"""Sans-IO client-to-server stream negotiation (RFC 6120 §4–§7).

Rules of this file: no sockets, no event loop, no clock, no backend calls.
:class:`C2SMachine` takes parser events and answers from the shell, and
returns *actions* (dataclasses below) that the connection performs in order.
Peer errors end in a :class:`CloseStream` action whose ``<stream:error/>``
bytes have already been queued as a :class:`Send`.

Negotiation order (RFC 6120 §4.3.1, §5, §6, §7)::

    WAIT_HEADER --header--> [TLS?] features(starttls) --<starttls/>--> STARTTLS (shell upgrades)
    --header--> features(mechanisms) --<auth/>--> SASL ... <success/>
    --header--> features(bind, session) --bind iq--> BOUND --stanzas--> Deliver

XMPP here is TLS-only: nothing but STARTTLS is offered before TLS, whatever
``tls.mode`` says (``starttls`` is accepted for MongooseIM compatibility and
behaves as ``starttls_required``).
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass, field
from typing import Callable, Sequence
from xml.etree.ElementTree import Element

from ..errors import (
    NS_SASL,
    NS_STANZAS,
    SaslFailureCondition,
    StanzaErrorCondition,
    StreamErrorCondition,
)
from ..sasl.base import (
    Challenge,
    Failure,
    Mechanism,
    NeedCertAuthorization,
    NeedPasswordCheck,
    NeedScramCredentials,
    Success,
    authzid_failure,
)
from ..stanza import error_reply as iq_error  # the name modules have imported from here
from ..xml.parser import Stanza, StreamClose, StreamOpen
from ..xml.writer import STREAM_CLOSE, serialize, stream_error, stream_header

__all__ = [
    "State",
    "C2SSettings",
    "SaslOffer",
    "C2SMachine",
    "Send",
    "StartTLS",
    "RestartParser",
    "SaslNeed",
    "AuthFinished",
    "RequestBind",
    "RequestResume",
    "Deliver",
    "Established",
    "CloseStream",
    "NS_TLS",
    "NS_BIND",
    "NS_SESSION",
    "NS_CLIENT",
]

NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_SM = "urn:xmpp:sm:3"
NS_STREAM = "http://etherx.jabber.org/streams"
_STREAM_TAG = f"{{{NS_STREAM}}}stream"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

#: SASL messages larger than this (base64 text) are refused: RFC 6120 §13.9.4
MAX_SASL_MESSAGE_CHARS = 16_384


class State(enum.Enum):
    WAIT_HEADER = "wait-header"
    """Waiting for the client's stream header (first, after TLS or after SASL)."""
    WAIT_STARTTLS = "wait-starttls"
    """Features sent before TLS: only <starttls/> is acceptable."""
    TLS_UPGRADE = "tls-upgrade"
    """<proceed/> sent; the shell performs the handshake, then calls tls_established()."""
    WAIT_AUTH = "wait-auth"
    """TLS up, mechanisms offered: waiting for <auth/>."""
    SASL = "sasl"
    """A mechanism is running (challenge/response, or waiting for the backend)."""
    WAIT_BIND = "wait-bind"
    """Authenticated, stream restarted, bind offered."""
    BINDING = "binding"
    """Bind requested; waiting for the shell's bind_done()/bind_failed()."""
    BOUND = "bound"
    """A session: stanzas flow to the router."""
    CLOSED = "closed"
    """Stream closed or failed; every further input is ignored."""


# ---------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Upgrade the transport now (after <proceed/> has been flushed)."""


@dataclass(frozen=True, slots=True)
class RestartParser:
    """Start a fresh XML parser with this stanza limit (RFC 6120 §5.4.3.3, §6.4.6).

    The shell re-feeds whatever the client sent after the element that
    triggered the restart (for STARTTLS those bytes are TLS records).
    """

    max_stanza_bytes: int


@dataclass(frozen=True, slots=True)
class SaslNeed:
    """Ask the auth backend; answer with sasl_answer() or sasl_unavailable()."""

    need: NeedScramCredentials | NeedPasswordCheck | NeedCertAuthorization
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthFinished:
    """A SASL exchange ended: the shell writes the audit record."""

    mechanism: str
    ok: bool
    username: str | None
    domain: str
    reason: str | None
    condition: str | None
    strategy: str | None = None
    authzid: str | None = None
    #: the full failure text (for the audit log; may say more than the client is told)
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class RequestBind:
    """Create the session; answer with bind_done(full_jid) or bind_failed()."""

    username: str
    domain: str
    resource: str | None
    iq_id: str


@dataclass(frozen=True, slots=True)
class RequestResume:
    """XEP-0198 ``<resume/>`` instead of bind: answer with resume_done() or resume_failed()."""

    username: str
    domain: str
    previd: str
    h: str


@dataclass(frozen=True, slots=True)
class Established:
    """The session is bound and may receive stanzas."""

    full_jid: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """A stanza from the bound client, for the router."""

    stanza: Stanza


@dataclass(frozen=True, slots=True)
class CloseStream:
    """Flush, then close the transport. ``condition`` None = clean close."""

    condition: StreamErrorCondition | None = None
    text: str = ""


Action = (Send | StartTLS | RestartParser | SaslNeed | AuthFinished | RequestBind | RequestResume | Established
          | Deliver | CloseStream)


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True, slots=True)
class C2SSettings:
    hosts: frozenset[str]
    default_domain: str
    direct_tls: bool
    max_stanza_bytes: int
    max_stanza_bytes_preauth: int
    max_auth_attempts: int = 3
    #: extra stream features offered with <bind/> (``Hooks.stream_features``, e.g. XEP-0352 <csi/>)
    bind_features: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class SaslOffer:
    """Mechanisms offered on this stream (in order) and how to make one.

    Computed by the shell after TLS, from the config, the listener's auth
    chain, the client certificate check and the channel bindings.
    """

    names: tuple[str, ...]
    factory: Callable[[str, str], Mechanism] = field(repr=False)  # (name, stream_domain) -> Mechanism
    #: mechanisms deliberately not offered, with the stable reason (e.g. EXTERNAL -> "expired")
    withheld: dict[str, str] = field(default_factory=dict)


def _b64(data: bytes | None) -> bytes:
    if not data:
        return b"="
    return base64.b64encode(data)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _sasl_failure(condition: SaslFailureCondition, text: str) -> bytes:
    body = f"<{condition.value}/>"
    if text:
        body += f"<text xml:lang='en'>{_escape(text)}</text>"
    return f"<failure xmlns='{NS_SASL}'>{body}</failure>".encode()


class C2SMachine:
    """One client stream's negotiation. Feed events, perform the returned actions."""

    def __init__(self, settings: C2SSettings, *, stream_id_factory: Callable[[], str]) -> None:
        self.settings = settings
        self._new_id = stream_id_factory
        self.state = State.WAIT_HEADER
        self.tls = settings.direct_tls
        self.domain: str | None = None
        self.lang = "en"
        self.username: str | None = None
        self.authzid: str | None = None
        self.auth_strategy: str | None = None
        self.full_jid: str | None = None
        self.failed_auths = 0
        self._offer: SaslOffer | None = None
        self._mech: Mechanism | None = None
        self._mech_name = ""

    # ----------------------------------------------------------- helpers
    @property
    def authenticated(self) -> bool:
        return self.username is not None

    def _fail(self, condition: StreamErrorCondition, text: str, *, header: bool = False) -> list[Action]:
        """Stream error: queue the bytes and close (RFC 6120 §4.9.1.1)."""
        out: list[Action] = []
        if header:  # error before the server sent its header: open a stream first
            out.append(Send(stream_header(from_=self.domain or self.settings.default_domain,
                                          id_=self._new_id())))
        self.state = State.CLOSED
        out.append(Send(stream_error(condition, text) + STREAM_CLOSE))
        out.append(CloseStream(condition, text))
        return out

    def stream_error(self, condition: StreamErrorCondition, text: str = "") -> list[Action]:
        """The shell reports a peer error (parser, TLS, timeout, conflict...)."""
        if self.state is State.CLOSED:
            return []
        return self._fail(condition, text, header=self.state is State.WAIT_HEADER)

    def close(self) -> list[Action]:
        """Server-initiated clean close."""
        if self.state is State.CLOSED:
            return []
        self.state = State.CLOSED
        return [Send(STREAM_CLOSE), CloseStream()]

    # ----------------------------------------------------------- events
    def receive(self, event: StreamOpen | Stanza | StreamClose) -> list[Action]:
        if self.state is State.CLOSED:
            return []
        if isinstance(event, StreamClose):
            self.state = State.CLOSED
            return [Send(STREAM_CLOSE), CloseStream()]
        if isinstance(event, StreamOpen):
            if self.state is not State.WAIT_HEADER:
                return self._fail(StreamErrorCondition.INVALID_XML, "unexpected stream header")
            return self._on_header(event)
        # a stanza / nonza
        if self.state is State.BOUND:
            return [Deliver(event)]
        return self._on_negotiation_element(event)

    def _on_header(self, ev: StreamOpen) -> list[Action]:
        if ev.tag != _STREAM_TAG:
            return self._fail(StreamErrorCondition.INVALID_NAMESPACE, "stream namespace must be " + NS_STREAM, header=True)
        if ev.default_ns != NS_CLIENT:
            return self._fail(StreamErrorCondition.INVALID_NAMESPACE,
                              f"content namespace must be {NS_CLIENT}", header=True)
        to = (ev.attrs.get("to") or "").strip().lower().rstrip(".")
        if not to:
            to = self.domain or self.settings.default_domain
        if to not in self.settings.hosts:
            return self._fail(StreamErrorCondition.HOST_UNKNOWN, f"this server does not serve {to}", header=True)
        if self.domain is not None and to != self.domain:
            return self._fail(StreamErrorCondition.INVALID_FROM, "stream restarted for another domain", header=True)
        self.domain = to
        version = ev.attrs.get("version", "0.9")
        try:
            major = int(version.split(".", 1)[0])
        except ValueError:
            major = 0
        if major < 1:
            return self._fail(StreamErrorCondition.UNSUPPORTED_VERSION, "XMPP 1.0 streams only", header=True)
        self.lang = ev.attrs.get(_XML_LANG, self.lang) or "en"
        header = stream_header(from_=to, to=None, id_=self._new_id(), lang="en")
        if not self.tls:
            self.state = State.WAIT_STARTTLS
            feats = f"<starttls xmlns='{NS_TLS}'><required/></starttls>"
        elif not self.authenticated:
            self.state = State.WAIT_AUTH
            names = self._offer.names if self._offer else ()
            mechs = "".join(f"<mechanism>{n}</mechanism>" for n in names)
            feats = f"<mechanisms xmlns='{NS_SASL}'>{mechs}</mechanisms>"
        else:
            self.state = State.WAIT_BIND
            feats = (f"<bind xmlns='{NS_BIND}'/>"
                     f"<session xmlns='{NS_SESSION}'><optional/></session>"
                     + b"".join(self.settings.bind_features).decode())
        return [Send(header + f"<stream:features>{feats}</stream:features>".encode())]

    def _on_negotiation_element(self, st: Stanza) -> list[Action]:
        el = st.element
        tag = el.tag
        if self.state is State.WAIT_STARTTLS:
            if tag == f"{{{NS_TLS}}}starttls":
                self.state = State.TLS_UPGRADE
                return [Send(f"<proceed xmlns='{NS_TLS}'/>".encode()), StartTLS()]
            return self._not_authorized_before_auth(tag, tls_needed=True)
        if self.state is State.WAIT_AUTH:
            if tag == f"{{{NS_SASL}}}auth":
                return self._on_auth(el)
            if tag == f"{{{NS_TLS}}}starttls":
                return self._fail(StreamErrorCondition.POLICY_VIOLATION, "TLS is already established")
            return self._not_authorized_before_auth(tag)
        if self.state is State.SASL:
            if tag == f"{{{NS_SASL}}}response":
                return self._on_response(el)
            if tag == f"{{{NS_SASL}}}abort":
                return self._auth_failed(SaslFailureCondition.ABORTED, "aborted",
                                         "aborted: the client aborted the exchange")
            return self._fail(StreamErrorCondition.POLICY_VIOLATION,
                              "only <response/> or <abort/> may be sent during SASL")
        if self.state is State.WAIT_BIND:
            return self._on_bind_phase(st)
        if self.state is State.BINDING:
            return self._fail(StreamErrorCondition.POLICY_VIOLATION, "wait for the bind result")
        if self.state is State.TLS_UPGRADE:
            return self._fail(StreamErrorCondition.POLICY_VIOLATION, "data received during the TLS upgrade")
        return self._fail(StreamErrorCondition.NOT_AUTHORIZED, "unexpected element")

    def _not_authorized_before_auth(self, tag: str, *, tls_needed: bool = False) -> list[Action]:
        if tls_needed and tag == f"{{{NS_SASL}}}auth":
            return self._fail(StreamErrorCondition.POLICY_VIOLATION,
                              "STARTTLS is required before authentication")
        return self._fail(StreamErrorCondition.NOT_AUTHORIZED,
                          "authenticate before sending stanzas" if not tls_needed
                          else "STARTTLS and authentication are required before sending stanzas")

    # ----------------------------------------------------------- TLS
    def tls_established(self, offer: SaslOffer) -> list[Action]:
        """The shell finished the TLS handshake (STARTTLS or direct TLS)."""
        self._offer = offer
        if self.state is State.TLS_UPGRADE:
            self.tls = True
            self.state = State.WAIT_HEADER
            return [RestartParser(self.settings.max_stanza_bytes_preauth)]
        if self.state is State.WAIT_HEADER and self.settings.direct_tls:
            return []
        raise RuntimeError(f"tls_established in state {self.state}")

    # ----------------------------------------------------------- SASL
    def _on_auth(self, el: Element) -> list[Action]:
        name = el.get("mechanism", "")
        assert self._offer is not None
        text = (el.text or "").strip()
        if len(text) > MAX_SASL_MESSAGE_CHARS:
            return self._fail(StreamErrorCondition.POLICY_VIOLATION, "SASL message too large")
        if name not in self._offer.names and name in self._offer.withheld:
            why = self._offer.withheld[name]
            return self._auth_failed(SaslFailureCondition.INVALID_MECHANISM, why,
                                     f"{why}: {name} is not offered on this stream ({why})",
                                     mechanism=name)
        if name not in self._offer.names:
            return self._auth_failed(SaslFailureCondition.INVALID_MECHANISM, "invalid-mechanism",
                                     f"invalid-mechanism: {name or '(none)'} is not offered here",
                                     mechanism=name or "?")
        if not text:
            initial = None
        elif text == "=":
            initial = b""
        else:
            try:
                initial = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                return self._auth_failed(SaslFailureCondition.INCORRECT_ENCODING, "incorrect-encoding",
                                         "incorrect-encoding: initial response is not base64", mechanism=name)
        self._mech = self._offer.factory(name, self.domain or self.settings.default_domain)
        self._mech_name = name
        self.state = State.SASL
        return self._step(self._mech.start(initial))

    def _on_response(self, el: Element) -> list[Action]:
        assert self._mech is not None
        text = (el.text or "").strip()
        if len(text) > MAX_SASL_MESSAGE_CHARS:
            return self._fail(StreamErrorCondition.POLICY_VIOLATION, "SASL message too large")
        if text in ("", "="):
            data = b""
        else:
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                return self._auth_failed(SaslFailureCondition.INCORRECT_ENCODING, "incorrect-encoding",
                                         "incorrect-encoding: response is not base64")
        return self._step(self._mech.respond(data))

    def sasl_answer(self, answer: object) -> list[Action]:
        """The backend answered the last SaslNeed."""
        if self.state is not State.SASL or self._mech is None:
            return []
        return self._step(self._mech.provide(answer))

    def sasl_unavailable(self, reason: str) -> list[Action]:
        """The backend could not answer (timeout, down)."""
        if self.state is not State.SASL:
            return []
        # the client learns that it may retry; the audit log gets the backend's own words
        return self._auth_failed(SaslFailureCondition.TEMPORARY_AUTH_FAILURE, "backend-unavailable",
                                 "backend-unavailable: the authentication service did not answer; try again later",
                                 detail=reason)

    def _step(self, step: object) -> list[Action]:
        if isinstance(step, Challenge):
            return [Send(f"<challenge xmlns='{NS_SASL}'>".encode() + _b64(step.data) + b"</challenge>")]
        if isinstance(step, (NeedScramCredentials, NeedPasswordCheck, NeedCertAuthorization)):
            return [SaslNeed(step, self._mech_name)]
        if isinstance(step, Failure):
            return self._auth_failed(step.condition, step.reason, step.text)
        if isinstance(step, Success):
            domain = self.domain or self.settings.default_domain
            authzid = step.authzid or None
            if self._mech_name != "EXTERNAL":
                # RFC 6120 §6.4.6: an authzid other than the user's own bare JID is not allowed here
                refused = authzid_failure(authzid, step.username, domain)
                if refused is not None:
                    return self._auth_failed(refused.condition, refused.reason, refused.text)
            self.username = step.username
            self.authzid = authzid
            self.auth_strategy = step.strategy
            self._mech = None
            self.state = State.WAIT_HEADER
            data = step.additional_data
            ok = (f"<success xmlns='{NS_SASL}'>".encode() + base64.b64encode(data) + b"</success>"
                  if data else f"<success xmlns='{NS_SASL}'/>".encode())
            return [
                AuthFinished(self._mech_name, True, step.username, domain, None, None, step.strategy, authzid),
                Send(ok),
                RestartParser(self.settings.max_stanza_bytes),
            ]
        raise TypeError(f"unexpected SASL step {step!r}")

    def _auth_failed(self, condition: SaslFailureCondition, reason: str, text: str,
                     *, mechanism: str | None = None, detail: str | None = None) -> list[Action]:
        self.failed_auths += 1
        self._mech = None
        self.state = State.WAIT_AUTH
        domain = self.domain or self.settings.default_domain
        out: list[Action] = [
            AuthFinished(mechanism or self._mech_name, False, None, domain, reason, condition.value,
                         detail=detail or text),
            Send(_sasl_failure(condition, text)),
        ]
        if self.failed_auths >= self.settings.max_auth_attempts:
            out += self._fail(StreamErrorCondition.POLICY_VIOLATION,
                              f"too many failed authentication attempts ({self.failed_auths})")
        return out

    # ----------------------------------------------------------- bind
    def _on_bind_phase(self, st: Stanza) -> list[Action]:
        el = st.element
        if el.tag == f"{{{NS_SM}}}resume":  # XEP-0198 §5: resumption takes the place of bind
            self.state = State.BINDING
            assert self.username is not None and self.domain is not None
            return [RequestResume(self.username, self.domain, el.get("previd", ""), el.get("h", ""))]
        if el.tag == f"{{{NS_SM}}}enable":
            return [Send(f"<failed xmlns='{NS_SM}'><unexpected-request xmlns='{NS_STANZAS}'/>"
                         f"<text xmlns='{NS_STANZAS}'>bind a resource before enabling stream management"
                         f"</text></failed>".encode())]
        if el.tag != f"{{{NS_CLIENT}}}iq":
            return self._fail(StreamErrorCondition.NOT_AUTHORIZED, "bind a resource before sending stanzas")
        iq_id = el.get("id", "")
        child = el.find(f"{{{NS_BIND}}}bind")
        if el.get("type") == "set" and child is not None:
            res_el = child.find(f"{{{NS_BIND}}}resource")
            resource = (res_el.text or "").strip() if res_el is not None else ""
            self.state = State.BINDING
            assert self.username is not None and self.domain is not None
            return [RequestBind(self.username, self.domain, resource or None, iq_id)]
        if el.get("type") == "set" and el.find(f"{{{NS_SESSION}}}session") is not None:
            return [Send(f"<iq type='result' id='{_attr(iq_id)}'/>".encode())]
        return [Send(serialize(iq_error(el, StanzaErrorCondition.NOT_AUTHORIZED,
                                        "bind a resource first", from_=self.domain)))]

    def bind_done(self, full_jid: str, iq_id: str) -> list[Action]:
        if self.state is not State.BINDING:
            return []
        self.state = State.BOUND
        self.full_jid = full_jid
        reply = (f"<iq type='result' id='{_attr(iq_id)}'><bind xmlns='{NS_BIND}'>"
                 f"<jid>{_escape(full_jid)}</jid></bind></iq>")
        return [Send(reply.encode()), Established(full_jid)]

    def resume_done(self, full_jid: str) -> list[Action]:
        if self.state is not State.BINDING:
            return []
        self.state = State.BOUND
        self.full_jid = full_jid
        return [Established(full_jid)]

    def resume_failed(self) -> list[Action]:
        if self.state is State.BINDING:
            self.state = State.WAIT_BIND
        return []

    def bind_failed(self, iq_id: str, condition: StanzaErrorCondition, text: str) -> list[Action]:
        if self.state is not State.BINDING:
            return []
        self.state = State.WAIT_BIND
        err = Element("{jabber:client}iq", {"id": iq_id, "type": "set"})
        return [Send(serialize(iq_error(err, condition, text)))]


def _attr(value: str) -> str:
    return _escape(value).replace("'", "&apos;").replace('"', "&quot;")
