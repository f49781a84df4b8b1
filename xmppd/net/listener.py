"""A c2s listener: socket, TLS context, auth chain, the SASL offer, timeouts sweep.

Addresses: ``ip_address = "::"`` (the default) is one dual-stack socket — every IPv6
and IPv4 address on one port (IPv4 clients appear as ``::ffff:a.b.c.d``, shown and
counted as IPv4); on a host without IPv6 it falls back to ``0.0.0.0``.  Any other
address binds exactly that address (``0.0.0.0``: IPv4 only, ``::1``: IPv6 loopback).

Admission: ``max_connections`` bounds the listener, ``max_preauth_connections_per_ip``
the connections one client address (an IPv6 /64) may hold before authenticating.
Refusals are not logged one by one (a flood would flood the log): the first one of an
interval is logged at once, the rest as one summary line per REFUSAL_LOG_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from typing import TYPE_CHECKING

from xmppd_auth.base import SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM
from xmppd_auth.registry import AuthChain

from ..config import C2SListener as ListenerConfig
from ..sasl import ExternalPolicy, create_mechanism
from ..stream.c2s import AuthFinished, C2SSettings, SaslOffer
from ..tls.context import CertCheck, ServerTLS
from ..tls.ocsp import OCSPChecker
from .admission import RefusalLog
from .connection import C2SConnection

if TYPE_CHECKING:
    from ..server import Server

__all__ = ["C2SListener", "SWEEP_INTERVAL_S", "config_mechanism_name"]

log = logging.getLogger("xmppd.listener")

#: how often timeouts (negotiation, idle) are checked
SWEEP_INTERVAL_S = 1.0


def config_mechanism_name(name: str) -> str:
    """``scram_sha256_plus`` (TOML, MongooseIM style) → ``SCRAM-SHA-256-PLUS``."""
    if name.startswith("scram_sha"):
        bits = name[len("scram_sha"):]
        plus = bits.endswith("_plus")
        bits = bits.removesuffix("_plus")
        return f"SCRAM-SHA-{bits}" + ("-PLUS" if plus else "")
    return name.upper()


_FAMILY = {"EXTERNAL": SASL_EXTERNAL, "PLAIN": SASL_PASSWORD}


class C2SListener:
    def __init__(self, server: "Server", config: ListenerConfig, index: int) -> None:
        self.server = server
        self.config = config
        self.name = f"c2s[{index}]"
        t = config.tls
        self.tls = ServerTLS(certfile=t.certfile, keyfile=t.keyfile, cacertfile=t.cacertfile,
                             verify_mode=t.verify_mode, disconnect_on_failure=t.disconnect_on_failure,
                             crl_files=t.crl_files, versions=t.versions, ciphers=t.ciphers,
                             key_password=t.password)
        #: OCSP for client certificates (tls.ocsp), asked before the SASL offer
        self.ocsp = OCSPChecker(mode=t.ocsp, timeout_s=t.ocsp_timeout_s, url=t.ocsp_url or None,
                                cache_s=t.ocsp_cache_s) \
            if t.ocsp != "off" and self.tls.requests_client_cert else None
        self.auth_chain: AuthChain = server.auth_chain.restricted(config.allowed_auth_methods or None)
        auth = server.config.auth
        self.c2s_settings = C2SSettings(
            hosts=frozenset(server.config.general.hosts),
            default_domain=server.config.general.default_server_domain,
            direct_tls=t.mode == "tls",
            max_stanza_bytes=config.max_stanza_bytes,
            max_stanza_bytes_preauth=config.max_stanza_bytes_preauth,
            max_auth_attempts=config.max_auth_attempts,
            bind_features=tuple(server.hooks.stream_features),
        )
        self.mechanisms = tuple(config_mechanism_name(n) for n in auth.sasl_mechanisms)
        self.external_policy = ExternalPolicy(
            strategies=tuple(auth.sasl_external),
            cn_prefix=auth.sasl_external_common_name.prefix,
            cn_suffix=auth.sasl_external_common_name.suffix)
        self.connections: set[C2SConnection] = set()
        #: client_key → connections from there that have not authenticated yet
        self.preauth_by_client: dict[str, int] = {}
        self.refusals = RefusalLog(self.name)
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None
        self.port: int | None = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock, shown = listening_socket(self.config.ip_address, self.config.port)
        try:
            self._server = await loop.create_server(self._accept, sock=sock, backlog=self.config.backlog)
        except BaseException:
            sock.close()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self.name = self.refusals.name = f"c2s:{self.port}"
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("listening on %s port %s (%s)", shown, self.port, self.config.tls.mode)

    def _accept(self) -> asyncio.Protocol:
        if len(self.connections) >= self.config.max_connections:
            self.refusals.refused(f"max_connections ({self.config.max_connections})", None, time.monotonic())
            return _Refuse()
        return C2SConnection(self)

    def admit(self, key: str) -> bool:
        """A new connection from ``key`` (:func:`client_key`) before authentication:
        counted, or refused (False) over ``max_preauth_connections_per_ip``."""
        limit = self.config.max_preauth_connections_per_ip
        held = self.preauth_by_client.get(key, 0)
        if limit and held >= limit:
            self.refusals.refused(f"max_preauth_connections_per_ip ({limit})", key, time.monotonic())
            return False
        self.preauth_by_client[key] = held + 1
        return True

    def authenticated_or_gone(self, key: str) -> None:
        """A connection counted by :meth:`admit` authenticated or closed."""
        held = self.preauth_by_client.get(key, 0) - 1
        if held > 0:
            self.preauth_by_client[key] = held
        else:
            self.preauth_by_client.pop(key, None)

    async def stop(self, text: str = "server shutting down") -> None:
        from ..errors import StreamErrorCondition
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.refusals.flush(time.monotonic())
        for conn in list(self.connections):
            conn.close_stream(StreamErrorCondition.SYSTEM_SHUTDOWN, text)
        if self._server is not None:
            try:
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            except TimeoutError:
                pass
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_timeouts(now)
            conn = None  # the loop variable must not keep the last connection alive until next round
            self.refusals.flush(now, due_only=True)

    def established(self, conn: C2SConnection) -> None:
        """A session was bound on this listener."""

    # ------------------------------------------------------------ SASL offer
    def sasl_offer(self, conn: C2SConnection) -> SaslOffer:
        engine = conn.tls
        check = conn.cert_check
        bindings = {}
        for kind in ("tls-exporter", "tls-server-end-point"):
            data = engine.channel_binding(kind)
            if data:
                bindings[kind] = data
        cert_ok = bool(check is not None and check.ok and check.facts is not None)
        names: list[str] = []
        withheld: dict[str, str] = {}
        for name in self.mechanisms:
            family = _FAMILY.get(name, SASL_SCRAM)
            if not self.auth_chain.supports(family):
                continue
            if name == "EXTERNAL" and not cert_ok:
                withheld[name] = (check.reason if check is not None and check.reason else "no-cert")
                continue
            if name.endswith("-PLUS") and not bindings:
                continue
            names.append(name)
        offered = tuple(names)
        facts = check.facts if cert_ok else None
        policy = self.external_policy

        def factory(name: str, domain: str):
            return create_mechanism(name, offered=offered, channel_bindings=bindings,
                                    cert_facts=facts, stream_domain=domain, external_policy=policy)

        return SaslOffer(offered, factory, withheld)

    # ------------------------------------------------------------ OCSP
    async def ocsp_check(self, conn: C2SConnection, check: CertCheck) -> CertCheck:
        """The certificate check after OCSP; audits every answer but "good"."""
        assert self.ocsp is not None
        try:
            new, answer = await self.ocsp.judge(check, self.tls.issuer_of)
        except Exception:  # a bug of ours: fail the way the mode says
            log.exception("%s: OCSP check failed unexpectedly", self.name)
            if self.ocsp.mode == "soft":
                return check
            return CertCheck(presented=True, ok=False, reason="ocsp-unavailable", facts=check.facts)
        if answer.status not in ("good", "skipped"):
            rec = {"event": "ocsp", "listener": self.name, "peer": conn.peer, "mode": self.ocsp.mode,
                   "status": answer.status, "detail": answer.detail, "cached": answer.cached,
                   "result": "rejected" if not new.ok else "warning",
                   "reason": new.reason if not new.ok else "ocsp-unavailable"}
            rec.update(self._cert_fields(check))
            self.server.audit.write(rec)
            if new.ok:
                log.warning("%s: %s: OCSP %s (%s); accepted (tls.ocsp = soft)", self.name, conn.peer,
                            answer.status, answer.detail)
        return new

    # ------------------------------------------------------------ audit
    def _cert_fields(self, check) -> dict:
        if check is None:
            return {}
        if check.facts is None:  # an unparsable certificate: only its fingerprint is known
            return {"cert_fingerprint": check.fingerprint_sha256} if check.fingerprint_sha256 else {}
        f = check.facts
        return {"cert_fingerprint": f.fingerprint_sha256, "cert_serial": f.serial_hex,
                "cert_issuer": f.issuer, "cert_subject": f.subject}

    def audit_auth(self, conn: C2SConnection, a: AuthFinished, method: str | None) -> None:
        rec = {
            "event": "auth", "listener": self.name, "peer": conn.peer, "mechanism": a.mechanism,
            "result": "success" if a.ok else "failure",
            "jid": f"{a.username}@{a.domain}" if a.username else None,
            "reason": a.reason, "condition": a.condition, "auth_method": method if a.ok else None,
        }
        if not a.ok and a.detail:
            rec["detail"] = a.detail
        if not a.ok and conn.attempted:
            rec["attempted"] = conn.attempted
        conn.attempted = None
        if a.strategy:
            rec["strategy"] = a.strategy
        if a.authzid:
            rec["authzid"] = a.authzid
        if a.mechanism == "EXTERNAL" or (not a.ok and conn.cert_check is not None):
            rec.update(self._cert_fields(conn.cert_check))
        self.server.audit.write(rec)

    def audit_cert_rejected(self, conn: C2SConnection, check) -> None:
        rec = {"event": "client-cert", "listener": self.name, "peer": conn.peer,
               "result": "rejected", "reason": check.reason}
        rec.update(self._cert_fields(check))
        if check.facts is not None:
            rec["cert_xmpp_addrs"] = list(check.facts.xmpp_addrs)
        self.server.audit.write(rec)

    def audit_tls_failure(self, conn: C2SConnection, reason: str, facts=None,
                          fingerprint: str | None = None) -> None:
        rec = {"event": "tls", "listener": self.name, "peer": conn.peer, "result": "failure", "reason": reason}
        if facts is None and fingerprint:
            rec["cert_fingerprint"] = fingerprint
        if facts is not None:
            rec.update({"cert_fingerprint": facts.fingerprint_sha256, "cert_serial": facts.serial_hex,
                        "cert_issuer": facts.issuer, "cert_xmpp_addrs": list(facts.xmpp_addrs)})
        self.server.audit.write(rec)


def listening_socket(host: str, port: int) -> tuple[socket.socket, str]:
    """A bound, non-blocking TCP socket for ``host`` (an IP literal) and how to name it in logs.

    ``"::"`` is made dual-stack (IPV6_V6ONLY off: asyncio's create_server would set it
    on, leaving IPv4 clients out), falling back to ``0.0.0.0`` where IPv6 is missing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        if host != "::":
            raise
        log.info("no IPv6 on this host: listening on 0.0.0.0 instead of [::]")
        host, family, shown = "0.0.0.0", socket.AF_INET, "0.0.0.0"
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if hasattr(socket, "SO_REUSEADDR") and not _WINDOWS:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            dual = host == "::"
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
            if dual:
                shown = "[::] (IPv6 and IPv4)"
        try:
            sock.bind((host, port))
        except OSError as exc:  # name the address, as asyncio's create_server does
            raise OSError(exc.errno, f"error while attempting to bind on address ({host!r}, {port}): "
                                     f"{exc.strerror}") from None
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, shown


_WINDOWS = sys.platform == "win32"


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()
