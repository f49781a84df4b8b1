"""Integration harness: a real xmppd on 127.0.0.1 port 0 and slixmpp clients over real TLS."""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path
from typing import Any

import slixmpp

from xmppd.config import parse_config
from xmppd.server import Server

#: how long a test waits for a login or a stanza before failing
WAIT_S = 15.0

log = logging.getLogger("tests.harness")


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def base_config(tmp: Path, pki, *, disconnect_on_failure: bool = False) -> dict:
    tls = {"certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
           "cacertfile": str(pki.ca_path), "verify_mode": "peer",
           "disconnect_on_failure": disconnect_on_failure}
    return {
        "general": {"hosts": ["localhost"], "data_dir": str(tmp / "var")},
        "listen": {"c2s": [
            {"port": 0, "ip_address": "127.0.0.1", "tls": dict(tls, mode="starttls_required")},
            {"port": 0, "ip_address": "127.0.0.1", "tls": dict(tls, mode="tls")},
        ]},
        "auth": {"methods": ["pki", "sql"], "password": {"scram_iterations": 4096}},
        "storage": {"url": f"sqlite+aiosqlite:///{tmp}/xmppd.sqlite"},
    }


async def start_server(tmp: Path, pki, overrides: dict | None = None, *,
                       listeners: list[dict] | None = None) -> Server:
    data = base_config(tmp, pki)
    if overrides:
        data = deep_merge(data, overrides)
    if listeners is not None:
        data["listen"]["c2s"] = listeners
    server = Server(parse_config(data))
    await server.start()
    return server


class AuthFailed(Exception):
    def __init__(self, condition: str, text: str) -> None:
        super().__init__(f"{condition}: {text}")
        self.condition = condition
        self.text = text


class Client(slixmpp.ClientXMPP):
    """slixmpp client with certificate and/or password, against a local port."""

    def __init__(self, jid: str, password: str | None = None, *, ca: Path,
                 cert=None, direct_tls: bool = False, authzid: str | None = None,
                 mechanisms: list[str] | None = None) -> None:
        super().__init__(jid, password or "")
        self.ca_certs = Path(ca)
        if cert is not None:
            self.certfile = str(cert.cert)
            self.keyfile = str(cert.key)
        self.enable_plaintext = False
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.whitespace_keepalive = False
        if authzid is not None:
            self.credentials["authzid"] = authzid
        if mechanisms is not None:
            self.plugin["feature_mechanisms"].use_mechs = set(mechanisms)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0092")
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.failures: list[AuthFailed] = []
        self._started: asyncio.Future = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", self._on_failed)
        self.add_event_handler("failed_all_auth", self._on_all_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("message_error", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("stream_error", self._on_stream_error)
        self.stream_errors: list[Any] = []

    def _on_start(self, _event) -> None:
        if not self._started.done():
            self._started.set_result(True)

    def _on_failed(self, stanza) -> None:
        self.failures.append(AuthFailed(stanza["condition"], stanza["text"]))

    def _on_all_failed(self, _event) -> None:
        if not self._started.done():
            f = self.failures[-1] if self.failures else AuthFailed("no-mechanism", "no mechanism")
            self._started.set_exception(f)

    def _on_stream_error(self, err) -> None:
        self.stream_errors.append(err)

    def _on_disconnected(self, _event) -> None:
        if not self._started.done():
            if self.failures:
                self._started.set_exception(self.failures[-1])
            else:
                self._started.set_exception(ConnectionError("disconnected before session start"))

    async def login(self, port: int, *, timeout: float = WAIT_S) -> "Client":
        self.connect("127.0.0.1", port)
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except BaseException:
            self.abort_connection()
            raise
        return self

    def abort_connection(self) -> None:
        self.cancel_connection_attempt()
        if self.transport is not None:
            self.transport.abort()

    async def close(self) -> None:
        if self.transport is None:
            return
        done = asyncio.get_event_loop().create_future()
        self.add_event_handler("disconnected", lambda _e: done.done() or done.set_result(True))
        self.disconnect(wait=0.5)
        try:
            await asyncio.wait_for(done, 5)
        except TimeoutError:
            self.abort_connection()

    async def next_message(self, timeout: float = WAIT_S):
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def next_presence(self, timeout: float = WAIT_S):
        return await asyncio.wait_for(self.presences.get(), timeout)
