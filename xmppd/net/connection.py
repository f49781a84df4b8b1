"""The thin shell of a client connection: bytes <-> TLS engine <-> XML parser <-> C2SMachine.

Idle connections own no task and no timer: timeouts are enforced by the
listener's sweep, and a task exists only while the auth backend is being
asked (reading is paused meanwhile, so events are handled strictly in order).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from xmppd_auth.base import AuthUnavailable, CertDecision

from ..errors import StanzaErrorCondition, StreamError, StreamErrorCondition
from ..jid import JID, InvalidJID
from ..sasl.base import NeedCertAuthorization, NeedPasswordCheck, NeedScramCredentials
from ..stream.c2s import (
    AuthFinished,
    C2SMachine,
    CloseStream,
    Deliver,
    Established,
    RequestBind,
    RequestResume,
    RestartParser,
    SaslNeed,
    Send,
    StartTLS,
    State,
)
from ..tls.engine import TLSFailure
from ..xml.parser import StreamParser
from .admission import client_key

if TYPE_CHECKING:
    from .listener import C2SListener

__all__ = ["C2SConnection", "MAX_PREAUTH_BUFFER", "MAX_SEND_BUFFER", "AUTH_BACKEND_TIMEOUT_S",
           "OUTPUT_COALESCE_BYTES", "MAX_WHITESPACE_BEFORE_RESTART"]

log = logging.getLogger("xmppd.c2s")

#: bytes kept from the current pre-authentication parser (to re-feed after a restart)
MAX_PREAUTH_BUFFER = 64 * 1024
#: a peer that does not read makes us buffer; beyond this it is disconnected
MAX_SEND_BUFFER = 8 * 1024 * 1024
#: output is buffered as plaintext and flushed (one TLS write, one send()) once per
#: event-loop iteration; a connection with this many bytes buffered is flushed at once
OUTPUT_COALESCE_BYTES = 64 * 1024
#: safety net over the whole auth-chain call; each method has its own, shorter timeout
#: (auth.http request_timeout, auth.ldap request_timeout, the database's command timeout)
AUTH_BACKEND_TIMEOUT_S = 65.0
#: how long a closing stream may take to flush before the transport is aborted
CLOSE_GRACE_S = 5.0
#: resources one account may bind at once
MAX_RESOURCES_PER_ACCOUNT = 64
#: whitespace accepted (and dropped) before a stream header and, after <proceed/>, before the
#: TLS ClientHello.  Whitespace between top-level elements is legal XML, and clients send it
#: right after the element that restarts the stream (go-xmpp: "<starttls/>\n", "</auth>\n"),
#: but it belongs to no stream: the next stream starts with its XML declaration, which may not
#: be preceded by anything (XML 1.0 §2.8), and TLS records never start with whitespace.
MAX_WHITESPACE_BEFORE_RESTART = 4096
_WS = b" \t\r\n"
#: a bound session that received nothing for this long drops its XML parser's expat state
#: between stanzas (~15 KiB); the next data rebuilds it (~7 us). Checked by the listener sweep.
PARSER_IDLE_RELEASE_S = 1.0


class C2SConnection(asyncio.Protocol):
    """One client connection; also the router's ``Session`` once bound.

    Slotted (per-connection memory is a goal).  ``__dict__`` stays available for
    what modules attach at run time (the CSI module shadows ``send_bytes`` with a
    per-session filter); it is only allocated for sessions that use it.
    ``__weakref__``: modules key per-session data by weak reference (caps).
    """

    __slots__ = ("listener", "server", "transport", "peer", "machine", "parser", "tls", "_tls_ready",
                 "cert_check", "auth_method", "_preauth", "_current_end", "_queue", "_busy", "_out",
                 "_out_len", "_input_held", "_closing", "_task", "_held_plain", "started", "last_rx",
                 "jid", "available", "priority", "last_presence", "directed", "bound", "login_cert", "sm",
                 "_stream_ended", "attempted", "_gap", "_gap_ws", "client_key", "_counted", "__dict__",
                 "__weakref__")

    def __init__(self, listener: "C2SListener") -> None:
        self.listener = listener
        self.server = listener.server
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.machine = C2SMachine(listener.c2s_settings, stream_id_factory=_stream_id)
        self.parser: StreamParser | None = StreamParser(
            max_stanza_bytes=listener.c2s_settings.max_stanza_bytes_preauth,
            max_depth=listener.config.max_xml_depth)
        self.tls = None
        self._tls_ready = False
        self.cert_check = None
        self.auth_method: str | None = None
        self._preauth = bytearray()
        self._current_end = 0
        self._queue: list = []  # events parsed, not yet handled (short: one read's worth)
        self._busy = False
        #: plaintext waiting for the end of this loop iteration (see write_raw), and its size
        self._out: list[bytes] | None = None
        self._out_len = 0
        #: reading stopped by a module's backpressure (pause_input / resume_input)
        self._input_held = False
        self._closing = False
        self._task: asyncio.Task | None = None
        #: plaintext that arrived while OCSP runs (the parser restarts only after the offer)
        self._held_plain: bytearray | None = None
        self.started = self.last_rx = time.monotonic()
        # Session (router) view
        self.jid: JID | None = None
        self.available = False
        self.priority = 0
        self.last_presence = None
        self.directed: set[JID] = set()
        self.bound = False
        #: the certificate this session logged in with (EXTERNAL), for revocation
        self.login_cert = None
        #: XEP-0198 state (xmppd.modules.sm.SMState) once the client enabled it
        self.sm = None
        self._stream_ended = False
        #: the account the current SASL exchange is for (audit of failures)
        self.attempted: str | None = None
        #: between two streams (see MAX_WHITESPACE_BEFORE_RESTART): None = inside a stream or a
        #: TLS session, "xml" = before a stream header, "tls" = after <proceed/>, before the
        #: ClientHello; ``_gap_ws`` counts the whitespace dropped there
        self._gap: str | None = "xml"
        self._gap_ws = 0
        #: the client address limits count by (listener.client_key); ``_counted`` while
        #: this connection holds one of its max_preauth_connections_per_ip places
        self.client_key = "?"
        self._counted = False

    def __repr__(self) -> str:
        return f"<C2SConnection {self.peer} {self.jid or self.machine.state.value}>"

    # ------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # duck-typed: uvloop's transports are not asyncio.Transport subclasses
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_key = client_key(peer[0])
            host = _display_host(peer[0])
            self.peer = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
        if not self.listener.admit(self.client_key):
            self._refuse_preauth()
            return
        self._counted = True
        self.listener.connections.add(self)
        if self.listener.c2s_settings.direct_tls:
            self.tls = self.listener.tls.new_engine()

    def _refuse_preauth(self) -> None:
        """Over max_preauth_connections_per_ip (counted by the listener's refusal log)."""
        if self.listener.c2s_settings.direct_tls:
            self._closing = True  # no TLS for it: a stream error would cost a handshake
            self.transport.close()
            return
        self._perform(self.machine.stream_error(
            StreamErrorCondition.POLICY_VIOLATION,
            "too many connections from your address are still negotiating; try again later"))

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        if self._closing:
            return
        if self.tls is None:
            self._feed_plain(data)
            return
        if self._gap == "tls":
            data = self._drop_gap_whitespace(data)
            if not data:
                return
        try:
            self.tls.feed(data)
            plain = self.tls.read()
        except TLSFailure as exc:
            self._tls_failed(exc)
            return
        self._flush_tls()
        if not self._tls_ready and self.tls.handshake_done:
            self._on_handshake()
        if plain and not self._closing:
            self._feed_plain(plain)
        if self.tls is not None and self.tls.peer_closed and not self._closing:
            self._closing = True  # TLS close_notify: like EOF, the connection is gone
            if self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool | None:
        # TCP FIN without </stream:stream>: the connection is lost, the stream did not end
        # (a stream-management session stays resumable); the transport closes itself
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._out = None
        if self.parser is not None:
            self.parser.close()  # its expat tables go now, whenever this object is collected
        self.listener.connections.discard(self)
        self._leave_preauth()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.transport = None
        if not self.bound:
            return
        sm = getattr(self.server, "sm", None)
        if not self._stream_ended and sm is not None and sm.detach(self):
            return  # XEP-0198: the session waits for a resumption
        self._end_session()

    def _leave_preauth(self) -> None:
        if self._counted:
            self._counted = False
            self.listener.authenticated_or_gone(self.client_key)

    def _end_session(self) -> None:
        """The session is over (connection gone for good, or resumption window over)."""
        self.bound = False
        removed = self.server.sessions.remove(self)
        sm = getattr(self.server, "sm", None)
        if sm is not None and self.sm is not None:
            sm.ended(self)  # unacknowledged messages go to other resources or offline
        if removed:
            self.server.router.session_ended(self)
        for handler in self.server.hooks.handlers("session_closed"):
            handler(self)

    def end_detached(self) -> None:
        """Stream management: the resumption window of this detached session is over."""
        if self.bound and self.transport is None:
            self._end_session()

    def hand_over_to(self, new: "C2SConnection") -> None:
        """Stream management resumption: ``new`` takes over this session."""
        for attr in ("jid", "available", "priority", "last_presence", "directed", "login_cert"):
            setattr(new, attr, getattr(self, attr))
        new.bound = True
        self.bound = False
        self.sm = None
        self.server.sessions.add(new)  # replaces this one under the same full JID
        if self.transport is not None:  # the client came back before we noticed it had gone
            self._closing = True
            self.transport.abort()

    # ------------------------------------------------------------- output
    @property
    def writable(self) -> bool:
        """Router view: what is sent now reaches the client (see ``sessions.Session``)."""
        return self.bound and self.transport is not None and not self._closing

    def send_bytes(self, data: bytes) -> None:
        """A stanza for the client (counted and kept for re-sending under XEP-0198)."""
        if self.sm is not None:
            if not self.server.sm.sent(self, data):
                self.close_stream(StreamErrorCondition.RESOURCE_CONSTRAINT,
                                  "too many unacknowledged stanzas")
                return
            if self.transport is None:
                return  # detached: kept until the session resumes or expires
        self.write_raw(data)

    def write_raw(self, data: bytes) -> None:
        """Bytes for the client that are not counted stanzas (negotiation, nonzas, errors).

        Buffered: everything written during one event-loop iteration goes out as one
        TLS write and one send() (:meth:`flush_output`, scheduled once per burst), or
        at once beyond OUTPUT_COALESCE_BYTES.  Closing the stream flushes first."""
        if self.transport is None or self._closing or not data:
            return
        out = self._out
        if out is None:
            self._out = [data]
            self._out_len = len(data)
            asyncio.get_running_loop().call_soon(self.flush_output)
        else:
            out.append(data)
            self._out_len += len(data)
            if self._out_len >= OUTPUT_COALESCE_BYTES:
                self.flush_output()

    def flush_output(self) -> None:
        """Put the buffered output on the wire now."""
        out = self._out
        if out is None:
            return
        self._out = None
        self._out_len = 0
        tr = self.transport
        if tr is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        if self.tls is not None:
            try:
                self.tls.write(data)
            except TLSFailure as exc:  # the TLS layer already failed or was closed: nothing to send
                log.info("%s: output dropped, TLS is %s", self.peer, exc.reason)
                return
            data = self.tls.outgoing()
        tr.write(data)
        if tr.get_write_buffer_size() > MAX_SEND_BUFFER and not self._closing:
            log.warning("%r: peer does not read, disconnecting", self)
            self._closing = True
            tr.abort()

    def _flush_tls(self) -> None:
        if self.tls is not None and self.transport is not None:
            out = self.tls.outgoing()
            if out:
                self.transport.write(out)

    def close_stream(self, condition: StreamErrorCondition | None, text: str = "") -> None:
        """Server side: end this stream (with an error if ``condition`` is set)."""
        if condition is None:
            self._perform(self.machine.close())
        else:
            self._perform(self.machine.stream_error(condition, text))

    # ------------------------------------------------------------- input
    def _feed_plain(self, data: bytes) -> None:
        if self._held_plain is not None:
            self._held_plain += data
            return
        if self.parser is None:
            return
        if self._gap == "xml":
            data = self._drop_gap_whitespace(data)
            if not data:
                return
        if not self.machine.authenticated or self.machine.state is not State.BOUND:
            self._preauth += data
            if len(self._preauth) > MAX_PREAUTH_BUFFER:
                self._perform(self.machine.stream_error(
                    StreamErrorCondition.POLICY_VIOLATION, "too much data before the session started"))
                return
        parser = self.parser
        try:
            events = parser.feed(data)
        except StreamError as exc:
            self._queue.clear()
            self._perform(self.machine.stream_error(exc.condition, exc.text))
            return
        if events:
            self._queue.extend(events)
            self._pump()
            # the parser holds back an error that followed good events in the same
            # chunk; surface it now unless a restart replaced the parser meanwhile
            if self.parser is parser and not self._closing and not self._busy:
                try:
                    parser.feed(b"")
                except StreamError as exc:
                    self._perform(self.machine.stream_error(exc.condition, exc.text))

    def _drop_gap_whitespace(self, data: bytes) -> bytes:
        """Between two streams: drop leading whitespace (bounded), return what follows it.

        Once anything else arrives, or MAX_WHITESPACE_BEFORE_RESTART is used up, the
        bytes go to the next layer as they are (the TLS engine, or the new parser with
        its own header limit)."""
        n = len(data) - len(data.lstrip(_WS))
        allowed = MAX_WHITESPACE_BEFORE_RESTART - self._gap_ws
        if n > allowed:
            self._gap = None
            return data[allowed:]
        self._gap_ws += n
        if n < len(data):
            self._gap = None
            return data[n:]
        return b""

    def _pump(self) -> None:
        while self._queue and not self._busy and not self._closing:
            ev = self._queue.pop(0)
            self._current_end = ev.end
            try:
                actions = self.machine.receive(ev)
                self._perform(actions)
            except Exception:  # a bug of ours must not take the server down
                log.exception("%r: internal error handling %r", self, type(ev).__name__)
                self._perform(self.machine.stream_error(StreamErrorCondition.INTERNAL_SERVER_ERROR,
                                                        "internal error"))

    def _perform(self, actions: list) -> None:
        for a in actions:
            kind = type(a)
            if kind is Deliver:
                if self.sm is None:
                    self.server.router.from_client(self, a.stanza)
                else:  # XEP-0198: h counts it once settled (delivered / committed)
                    sm, router = self.server.sm, self.server.router
                    seq = sm.counted_in(self, a.stanza.element.tag)
                    router.collect()
                    try:
                        router.from_client(self, a.stanza)
                    finally:
                        futures = router.settled()
                    sm.settle(self, seq, futures)
            elif kind is Send:
                self.write_raw(a.data)
            elif kind is SaslNeed:
                self._start_task(self._answer_need(a))
            elif kind is AuthFinished:
                self._auth_finished(a)
            elif kind is RestartParser:
                self._restart_parser(a.max_stanza_bytes)
            elif kind is StartTLS:
                self._start_tls()
            elif kind is RequestBind:
                self._bind(a)
            elif kind is RequestResume:
                self._resume_session(a)
            elif kind is Established:
                self.listener.established(self)
            elif kind is CloseStream:
                self._close(a)
                return

    def _start_task(self, coro: Any) -> None:
        self._busy = True
        if self.transport is not None:
            self.transport.pause_reading()
        self._task = asyncio.ensure_future(coro)

    def _resume(self) -> None:
        self._busy = False
        self._task = None
        if self.transport is not None and not self._closing:
            if not self._input_held:
                self.transport.resume_reading()
            self._pump()

    def pause_input(self) -> None:
        """Backpressure (e.g. the archive writer is behind): stop reading from this
        client until :meth:`resume_input`; stanzas already parsed are still handled."""
        self._input_held = True
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()

    def resume_input(self) -> None:
        self._input_held = False
        if self.transport is not None and not self._closing and not self._busy:
            self.transport.resume_reading()

    # ------------------------------------------------------------- TLS
    def _start_tls(self) -> None:
        self.flush_output()  # <proceed/> goes out in plaintext, before the engine exists
        leftover = bytes(self._preauth[self._current_end:])
        self._preauth = bytearray()
        self._queue.clear()
        self.parser = None
        self.tls = self.listener.tls.new_engine()
        # RFC 6120 §5.4.3.3: TLS starts right after <starttls/>; only whitespace may sit between
        self._gap, self._gap_ws = "tls", 0
        if leftover:
            self.data_received(leftover)

    def _on_handshake(self) -> None:
        self._tls_ready = True
        self.cert_check = check = self.tls.peer_cert_check()
        if check.ok and self.listener.ocsp is not None:
            self._held_plain = bytearray()
            self._start_task(self._ocsp_then_offer())  # reading paused: nothing runs before the offer
            return
        self._offer_sasl()

    async def _ocsp_then_offer(self) -> None:
        self.cert_check = await self.listener.ocsp_check(self, self.cert_check)
        held, self._held_plain = self._held_plain, None
        self._offer_sasl()
        if held and not self._closing:
            self._feed_plain(bytes(held))
        self._resume()

    def _offer_sasl(self) -> None:
        check = self.cert_check
        if check.presented and not check.ok:
            self.listener.audit_cert_rejected(self, check)
        self._perform(self.machine.tls_established(self.listener.sasl_offer(self)))

    def _tls_failed(self, exc: TLSFailure) -> None:
        self._out = None
        self._flush_tls()  # the alert
        self.listener.audit_tls_failure(self, exc.reason, exc.facts, exc.fingerprint_sha256)
        log.info("%s: TLS failed: %s", self.peer, exc.reason)
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _restart_parser(self, max_stanza_bytes: int) -> None:
        leftover = bytes(self._preauth[self._current_end:]) if self.parser is not None else b""
        self._preauth = bytearray()
        self._queue.clear()
        self._current_end = 0
        self.parser = StreamParser(max_stanza_bytes=max_stanza_bytes,
                                   max_depth=self.listener.config.max_xml_depth)
        # RFC 6120 §4.3.3: the client's next bytes are a new stream header (whitespace dropped)
        self._gap, self._gap_ws = "xml", 0
        if leftover:
            self._feed_plain(leftover)

    # ------------------------------------------------------------- SASL
    async def _answer_need(self, a: SaslNeed) -> None:
        chain = self.listener.auth_chain
        need = a.need
        domain = self.machine.domain
        self.attempted = f"{need.username}@{need.domain if isinstance(need, NeedCertAuthorization) else domain}"
        try:
            async with asyncio.timeout(AUTH_BACKEND_TIMEOUT_S):
                if isinstance(need, NeedScramCredentials):
                    found = await chain.get_scram(need.username, domain, need.hash_name)
                    answer: Any = found[0] if found else None
                    self.auth_method = found[1] if found else None
                elif isinstance(need, NeedPasswordCheck):
                    method = await chain.check_password(need.username, domain, need.password)
                    answer = method is not None
                    self.auth_method = method
                elif isinstance(need, NeedCertAuthorization):
                    facts = self.cert_check.facts
                    decision, method = await chain.authorize_cert(need.username, need.domain, facts)
                    if decision.ok:  # modules may still refuse (certificate registry policy...)
                        for hook in self.server.hooks.handlers("authorize_cert"):
                            verdict = await hook(need.username, need.domain, facts)
                            if verdict is not None and not verdict.ok:
                                decision = verdict
                                break
                    answer = decision
                    self.auth_method = method
                else:  # pragma: no cover - a new Need kind without a handler is a bug
                    raise TypeError(need)
            actions = self.machine.sasl_answer(answer)
        except AuthUnavailable as exc:
            actions = self.machine.sasl_unavailable(exc.reason)
        except TimeoutError:
            actions = self.machine.sasl_unavailable("auth backend timed out")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%r: auth backend error", self)
            actions = self.machine.sasl_unavailable("auth backend error")
        self._perform(actions)
        self._resume()

    def _auth_finished(self, a: AuthFinished) -> None:
        self.listener.audit_auth(self, a, self.auth_method)
        if a.ok and a.mechanism == "EXTERNAL":
            self.login_cert = self.cert_check.facts
        if a.ok:
            self._leave_preauth()
            if a.strategy == "auth_id":
                log.warning("%s logged in as %s@%s via the auth_id rule: the certificate has no "
                            "xmppAddr and the client chose its own identity", self.peer, a.username, a.domain)
            self.server.note_login(a.username, a.domain, self.auth_method or a.mechanism)

    # ------------------------------------------------------------- bind
    def _bind(self, a: RequestBind) -> None:
        resource = a.resource
        if resource is not None:
            try:
                JID(a.username, a.domain, resource)
            except InvalidJID:
                resource = None  # RFC 6120 §7.7.2.1: the server may generate one instead
        if resource is None:
            resource = "xmppd-" + secrets.token_hex(6)
        jid = JID(a.username, a.domain, resource)
        sessions = self.server.sessions
        if (len(sessions.resources(jid.bare)) >= MAX_RESOURCES_PER_ACCOUNT
                and sessions.get(jid) is None):
            self._perform(self.machine.bind_failed(a.iq_id, StanzaErrorCondition.RESOURCE_CONSTRAINT,
                                                   "too many resources bound for this account"))
            return
        self.jid = jid
        self._preauth = bytearray()  # nothing is re-fed after binding: release it
        old = sessions.add(self)
        self.bound = True
        if old is not None:
            old.bound = False  # its removal must not undo our registration
            old.close_stream(StreamErrorCondition.CONFLICT, "replaced by a new session for this resource")
        self._perform(self.machine.bind_done(str(jid), a.iq_id))
        for handler in self.server.hooks.handlers("session_bound"):
            handler(self)

    def _resume_session(self, a: RequestResume) -> None:
        sm = getattr(self.server, "sm", None)
        if sm is None:
            self.write_raw(b"<failed xmlns='urn:xmpp:sm:3'><feature-not-implemented "
                           b"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")
            self._perform(self.machine.resume_failed())
            return
        self._preauth = bytearray()
        if sm.resume(self, a.username, a.domain, a.previd, a.h):
            self._perform(self.machine.resume_done(str(self.jid)))
        else:
            self._perform(self.machine.resume_failed())

    # ------------------------------------------------------------- close
    def _close(self, a: CloseStream) -> None:
        self.flush_output()  # the stream error / </stream:stream> before close_notify
        if a.condition is not None and a.condition is not StreamErrorCondition.CONFLICT:
            log.info("%s: stream error %s: %s", self.peer, a.condition.value, a.text)
        self._queue.clear()
        self._closing = True
        self._stream_ended = True  # a closed stream (either side) is not resumable
        tr = self.transport
        if tr is None:
            return
        if self.tls is not None and self._tls_ready:
            try:
                self.tls.close()
            except Exception:  # noqa: BLE001 - nothing more to say to this peer
                pass
            self._flush_tls()
        tr.close()
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, tr.abort)

    def check_timeouts(self, now: float) -> None:
        """Called by the listener's sweep."""
        if self._closing:
            return
        cfg = self.listener.config
        if not self.bound and now - self.started > cfg.negotiation_timeout_s:
            self._perform(self.machine.stream_error(StreamErrorCondition.CONNECTION_TIMEOUT,
                                                    "stream negotiation took too long"))
        elif now - self.last_rx > cfg.idle_timeout_s:
            self._perform(self.machine.stream_error(StreamErrorCondition.CONNECTION_TIMEOUT,
                                                    "no data received for too long"))
        elif self.parser is not None and self.parser.incomplete_for(
                now, paused=self._busy or self._input_held) > cfg.stanza_timeout_s:
            self._perform(self.machine.stream_error(StreamErrorCondition.CONNECTION_TIMEOUT,
                                                    "stanza incomplete for too long"))
        elif self.bound and self.parser is not None and now - self.last_rx > PARSER_IDLE_RELEASE_S:
            self.parser.release_idle()


def _display_host(host: str) -> str:
    """A peer address for logs: IPv4-mapped IPv6 (dual-stack sockets) shown as IPv4."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _stream_id() -> str:
    return secrets.token_hex(8)
