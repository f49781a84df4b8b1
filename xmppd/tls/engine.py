"""A sans-IO TLS server connection: ciphertext in, plaintext out, and back.

Rules of this file: no sockets, no event loop, no clock of its own. The owner
feeds what arrived from the network (:meth:`TLSEngine.feed`), takes decrypted
data out (:meth:`TLSEngine.read`), hands over plaintext to send
(:meth:`TLSEngine.write`) and puts :meth:`TLSEngine.outgoing` on the wire
after every call. pyOpenSSL's ``Connection(ctx, None)`` works over two memory
BIOs, which is exactly that shape.

Memory: the context sets ``MODE_RELEASE_BUFFERS`` so an idle connection holds
no record buffers; the engine itself is a slotted object with a handful of
references (plaintext written before the handshake completes is the only
thing it buffers). Measured (glibc ``mallinfo2``, OpenSSL 4.0 bundled with
cryptography, idle server side after the handshake): Python objects ~0.7 KiB;
OpenSSL ~17 KiB before any handshake, ~23 KiB TLS 1.2, ~29 KiB TLS 1.3 with a
classical group, ~34 KiB with the X25519MLKEM768 hybrid group that OpenSSL
clients offer by default, plus ~10 KiB when a client certificate was
presented (the session keeps the parsed peer certificate).
"""

from __future__ import annotations

from OpenSSL import SSL

from xmppd_auth.base import CertFacts
from xmppd.tls.context import NO_CERT, UNPARSABLE, CertCheck, _Policy, _VerifyState, der_fingerprint
from xmppd.tls.identity import cert_facts

__all__ = ["TLSEngine", "TLSFailure", "TLS_EXPORTER_LABEL"]

#: RFC 9266 §2
TLS_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"

_CHUNK = 16384  # one TLS record of plaintext
#: ciphertext read from the outgoing memory BIO per call (the buffer is allocated per call)
_BIO_CHUNK = 17 * 1024

#: substrings of OpenSSL reason strings → stable failure codes (first match wins)
_FAILURE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("no application protocol", "alpn-mismatch"),
    ("no renegotiation", "renegotiation-refused"),
    ("renegotiat", "renegotiation-refused"),
    ("unsupported protocol", "protocol-version"),
    ("no protocols available", "protocol-version"),
    ("protocol version", "protocol-version"),
    ("version too low", "protocol-version"),
    ("wrong ssl version", "protocol-version"),
    ("http request", "not-tls"),
    ("https proxy request", "not-tls"),
    ("wrong version number", "not-tls"),
    ("unknown protocol", "not-tls"),
    ("packet length too long", "not-tls"),
    ("record layer failure", "not-tls"),
    ("no shared cipher", "no-shared-cipher"),
    ("no suitable signature algorithm", "no-shared-cipher"),
    ("no shared signature algorithms", "no-shared-cipher"),
    ("certificate verify failed", "bad-certificate"),
    ("bad certificate", "bad-certificate"),
    ("peer did not return a certificate", "no-cert"),
)


class TLSFailure(Exception):
    """The TLS connection cannot continue; ``reason`` is a stable code.

    Handshake codes: the client-certificate codes of :class:`CertCheck`
    (``unknown-ca``, ``expired``, ``revoked``...) when verification aborted
    the handshake, else ``protocol-version``, ``no-shared-cipher``,
    ``not-tls``, ``bad-certificate``, ``renegotiation-refused``,
    ``alpn-mismatch`` (ALPN offered, but not ``xmpp-client``) or
    ``handshake-failure``. After the handshake: ``protocol-error``;
    :meth:`TLSEngine.write` after close: ``closed``. ``detail`` holds the
    OpenSSL text for logs (never key material).
    """

    def __init__(self, reason: str, detail: str | None = None,
                 facts: CertFacts | None = None, fingerprint_sha256: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        #: the rejected client certificate, when verification aborted the handshake
        self.facts = facts
        #: its fingerprint (also when it could not be parsed into ``facts``)
        self.fingerprint_sha256 = facts.fingerprint_sha256 if facts is not None else fingerprint_sha256


def _detail(exc: Exception) -> str:
    try:
        items = exc.args[0]
        if isinstance(items, list):
            return "; ".join(str(item[2]) for item in items if len(item) > 2)
    except Exception:
        pass
    return str(exc)


def _classify(detail: str, default: str) -> str:
    lowered = detail.lower()
    for needle, reason in _FAILURE_PATTERNS:
        if needle in lowered:
            return reason
    return default


class TLSEngine:
    """Server side of one TLS connection (created by ``ServerTLS.new_engine``)."""

    __slots__ = ("_conn", "_policy", "_state", "_pending", "_failure",
                 "_closed", "_dirty", "handshake_done", "peer_closed")

    def __init__(self, policy: _Policy) -> None:
        assert policy.context is not None
        self._policy = policy
        self._state = _VerifyState() if policy.requests_client_cert else None
        conn = SSL.Connection(policy.context, None)
        # the verify callback finds its per-connection state here; the state
        # does not point back at the engine, so there is no reference cycle
        conn.set_app_data(self._state)
        conn.set_accept_state()
        self._conn: SSL.Connection | None = conn
        self._pending: list[bytes] | None = None
        self._failure: TLSFailure | None = None
        self._closed = False
        #: something may have put ciphertext into the outgoing BIO since outgoing() drained it
        self._dirty = True
        self.handshake_done = False
        self.peer_closed = False

    def __repr__(self) -> str:
        return (f"<TLSEngine handshake_done={self.handshake_done} version={self.version!r} "
                f"peer_closed={self.peer_closed}>")

    # -- bytes in / out --------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Ciphertext received from the peer."""
        if data and self._conn is not None and self._failure is None:
            self._dirty = True  # handshake messages, alerts, tickets, key updates answer input
            self._conn.bio_write(data)

    def read(self) -> bytes:
        """Advance the handshake and return the plaintext available (maybe b"")."""
        if self._failure is not None:
            raise self._failure
        conn = self._conn
        if conn is None or self.peer_closed:
            return b""
        if not self.handshake_done:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                return b""
            except SSL.Error as exc:
                raise self._fail(exc, during_handshake=True) from None
            self.handshake_done = True
            if self._state is not None:
                self._state.leaf = self._state.leaf_cert = None
            pending, self._pending = self._pending, None
            if pending:
                self._send(b"".join(pending))
        chunks: list[bytes] = []
        while True:
            try:
                chunk = conn.recv(_CHUNK)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.peer_closed = True
                break
            except SSL.SysCallError:
                self.peer_closed = True
                break
            except SSL.Error as exc:
                if chunks:  # deliver what was decrypted; fail on the next call
                    self._failure = self._make_failure(exc, during_handshake=False)
                    break
                raise self._fail(exc, during_handshake=False) from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        """Plaintext to send; buffered until the handshake has completed."""
        if not data:
            return
        if self._closed or self._conn is None:
            raise TLSFailure("closed")
        if self._failure is not None:
            raise self._failure
        if not self.handshake_done:
            if self._pending is None:
                self._pending = []
            self._pending.append(bytes(data))
            return
        self._send(data)

    def outgoing(self) -> bytes:
        """Drain the ciphertext to put on the wire (b"" if none)."""
        conn = self._conn
        if conn is None or not self._dirty:
            return b""  # nothing was fed, sent or closed since the last drain: no exception to catch
        self._dirty = False
        out: list[bytes] = []
        while True:
            try:
                chunk = conn.bio_read(_BIO_CHUNK)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out.append(chunk)
            if len(chunk) < _BIO_CHUNK:
                break  # a memory BIO returns all it holds up to the size asked: drained
        return out[0] if len(out) == 1 else b"".join(out)

    def close(self) -> None:
        """Queue a close_notify alert into :meth:`outgoing`; later writes fail."""
        if self._closed or self._conn is None:
            return
        self._closed = True
        self._dirty = True
        self._pending = None
        if self._failure is not None:
            return
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass

    # -- state -------------------------------------------------------------------
    @property
    def version(self) -> str | None:
        """Negotiated protocol ("TLSv1.2", "TLSv1.3") once the handshake is done."""
        if not self.handshake_done or self._conn is None:
            return None
        return self._conn.get_protocol_version_name()

    @property
    def alpn_protocol(self) -> str | None:
        """The ALPN protocol selected in the handshake (``"xmpp-client"``), or None."""
        if not self.handshake_done or self._conn is None:
            return None
        selected = self._conn.get_alpn_proto_negotiated()
        return selected.decode("ascii") if selected else None

    @property
    def cipher(self) -> str | None:
        if not self.handshake_done or self._conn is None:
            return None
        return self._conn.get_cipher_name()

    def peer_cert_check(self) -> CertCheck:
        """What the client certificate verification found.

        Meaningful after the handshake, or after a handshake aborted by
        certificate verification (then ``ok`` is False and ``facts`` describe
        the rejected certificate when it was seen).
        """
        if self._conn is None or self._state is None:
            return NO_CERT
        if not self.handshake_done:
            if self._failure is not None and self._state.reason is not None:
                return CertCheck(presented=True, ok=False, reason=self._state.reason,
                                 facts=self._failure.facts,
                                 fingerprint_sha256=self._failure.fingerprint_sha256)
            return NO_CERT
        peer = self._conn.get_peer_certificate()
        if peer is None:
            return NO_CERT
        try:
            facts = cert_facts(peer.to_cryptography())
        except Exception:  # OpenSSL took it, cryptography cannot: no identity in it
            return CertCheck(presented=True, ok=False, reason=UNPARSABLE, facts=None,
                             fingerprint_sha256=der_fingerprint(peer))
        state = self._state
        if state.reason is not None:
            return CertCheck(presented=True, ok=False, reason=state.reason, facts=facts)
        if not state.leaf_checked:  # the callback never saw the leaf: do not trust it
            return CertCheck(presented=True, ok=False, reason="invalid-chain", facts=facts)
        return CertCheck(presented=True, ok=True, reason=None, facts=facts)

    def channel_binding(self, kind: str) -> bytes | None:
        """Channel-binding data for SCRAM-*-PLUS, or None when unavailable.

        ``tls-exporter`` (RFC 9266): 32 bytes exported with the label
        ``EXPORTER-Channel-Binding`` and no context, TLS 1.3 only.
        ``tls-server-end-point`` (RFC 5929 §4.1): hash of our certificate.
        """
        if not self.handshake_done or self._conn is None or self._failure is not None:
            return None
        if kind == "tls-exporter":
            if self._conn.get_protocol_version_name() != "TLSv1.3":
                return None
            try:
                return self._conn.export_keying_material(TLS_EXPORTER_LABEL, 32)
            except SSL.Error:
                return None
        if kind == "tls-server-end-point":
            return self._policy.server_end_point
        return None

    # -- internals -----------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        assert self._conn is not None
        self._dirty = True
        view = memoryview(data)
        try:
            while view:
                sent = self._conn.send(view[:_CHUNK])
                view = view[sent:]
        except SSL.Error as exc:
            raise self._fail(exc, during_handshake=False) from None

    def _make_failure(self, exc: Exception, *, during_handshake: bool) -> TLSFailure:
        detail = _detail(exc)
        facts = None
        fingerprint = None
        if during_handshake:
            state = self._state
            reason = state.reason if state is not None else None
            if reason is None:
                reason = _classify(detail, "handshake-failure")
            elif state is not None and state.leaf is not None:
                if state.leaf_cert is not None:
                    try:
                        facts = cert_facts(state.leaf_cert)
                    except Exception:  # pragma: no cover - facts are best effort here
                        facts = None
                if facts is None:
                    fingerprint = der_fingerprint(state.leaf)
            if state is not None:
                state.leaf = state.leaf_cert = None
        else:
            reason = _classify(detail, "protocol-error")
            if reason not in ("renegotiation-refused",):
                reason = "protocol-error"
        return TLSFailure(reason, detail, facts, fingerprint)

    def _fail(self, exc: Exception, *, during_handshake: bool) -> TLSFailure:
        self._failure = self._make_failure(exc, during_handshake=during_handshake)
        self._pending = None
        return self._failure
