"""A minimal XMPP client for the benchmark: asyncio streams + stdlib ``ssl``.

Only what the benchmark needs: direct TLS or STARTTLS, SASL EXTERNAL and
SCRAM-SHA-256 (RFC 5802 / RFC 7677, client side), resource binding, sending
raw stanzas and splitting received ``<message>`` stanzas.  Every read is
bounded by a timeout; every unexpected answer raises :class:`BenchError`.

Self-contained on purpose: nothing here imports ``xmppd`` or ``tests``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import ssl
from pathlib import Path

__all__ = ["BenchError", "XmppClient", "ScramSha256", "client_context", "READ_TIMEOUT_S"]

#: longest wait for any single answer from the server
READ_TIMEOUT_S = 20.0
_NS_STREAM = "http://etherx.jabber.org/streams"
HEADER = ("<?xml version='1.0'?><stream:stream to='{to}' xmlns='jabber:client' "
          f"xmlns:stream='{_NS_STREAM}' version='1.0'>").format
_JID_RE = re.compile(rb"<jid>([^<]+)</jid>")
_CHALLENGE_RE = re.compile(rb"<challenge[^>]*>([^<]*)</challenge>")
_SUCCESS_RE = re.compile(rb"<success[^>]*(?:/>|>([^<]*)</success>)")
_MECH_RE = re.compile(rb"<mechanism>([^<]+)</mechanism>")


class BenchError(Exception):
    """A login or delivery that did not happen as it must: the benchmark fails."""


def client_context(ca: Path, certfile: Path | None = None, *, tls13_only: bool = True) -> ssl.SSLContext:
    """A client context trusting only ``ca`` (not the system store: loading that costs ~50 ms)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    if certfile is not None:
        ctx.load_cert_chain(str(certfile))  # key and certificate in one PEM file
    if tls13_only:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class ScramSha256:
    """Client side of SCRAM-SHA-256 without channel binding (gs2 header ``n,,``).

    The salted password is cached per (password, salt, iterations), so a user
    logging in again costs the client no PBKDF2: the benchmark measures the server.
    """

    _salted_cache: dict[tuple[str, bytes, int], bytes] = {}

    def __init__(self, username: str, password: str) -> None:
        if "," in username or "=" in username:
            raise ValueError("username needs SCRAM escaping; the benchmark's names never do")
        self.username = username
        self.password = password
        self.cnonce = base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self.client_first_bare = f"n={username},r={self.cnonce}"
        self._auth_message = ""
        self._salted = b""

    def first(self) -> bytes:
        return ("n,," + self.client_first_bare).encode("ascii")

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("ascii")
        attrs = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.cnonce) or len(nonce) == len(self.cnonce):
            raise BenchError(f"SCRAM: server nonce does not extend ours: {text!r}")
        key = (self.password, salt, iterations)
        salted = self._salted_cache.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha256", self.password.encode("utf-8"), salt, iterations)
            self._salted_cache[key] = salted
        self._salted = salted
        without_proof = f"c=biws,r={nonce}"  # biws = base64("n,,")
        self._auth_message = f"{self.client_first_bare},{text},{without_proof}"
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        signature = hmac.digest(stored_key, self._auth_message.encode("ascii"), "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        text = server_final.decode("ascii")
        if not text.startswith("v="):
            raise BenchError(f"SCRAM: bad server-final {text!r}")
        server_key = hmac.digest(self._salted, b"Server Key", "sha256")
        expected = hmac.digest(server_key, self._auth_message.encode("ascii"), "sha256")
        if not hmac.compare_digest(base64.b64decode(text[2:]), expected):
            raise BenchError("SCRAM: server signature does not verify")


class XmppClient:
    """One client connection. Not thread-safe; one coroutine reads at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.jid: str | None = None

    # ------------------------------------------------------------ connect
    @classmethod
    async def direct_tls(cls, port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1") -> "XmppClient":
        async with asyncio.timeout(READ_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname="localhost", limit=1 << 20)
        self = cls(reader, writer)
        self._check_tls13()
        return self

    @classmethod
    async def plain(cls, port: int, host: str = "127.0.0.1") -> "XmppClient":
        async with asyncio.timeout(READ_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    def _check_tls13(self) -> None:
        sslobj = self.writer.get_extra_info("ssl_object")
        if sslobj is None or sslobj.version() != "TLSv1.3":
            raise BenchError(f"expected TLS 1.3, got {sslobj.version() if sslobj else 'no TLS'}")

    async def starttls(self, ctx: ssl.SSLContext, domain: str = "localhost") -> None:
        await self.open_stream(domain)
        self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        out = await self.read_until(b"<proceed", b"<failure")
        if b"<proceed" not in out:
            raise BenchError(f"STARTTLS refused: {out[-300:]!r}")
        self.buf.clear()
        async with asyncio.timeout(READ_TIMEOUT_S):
            await self.writer.start_tls(ctx, server_hostname="localhost")
        self._check_tls13()

    # ------------------------------------------------------------ I/O
    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_until(self, *markers: bytes, timeout: float = READ_TIMEOUT_S) -> bytes:
        """Read until one of ``markers`` is in the buffer; return and clear the buffer."""
        async with asyncio.timeout(timeout):
            while not any(m in self.buf for m in markers):
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise BenchError(f"server closed the connection; last bytes: {bytes(self.buf[-300:])!r}")
                self.buf += chunk
        out = bytes(self.buf)
        self.buf.clear()
        return out

    async def open_stream(self, domain: str = "localhost") -> bytes:
        self.send(HEADER(to=domain).encode("ascii"))
        return await self.read_until(b"</stream:features>")

    # ------------------------------------------------------------ SASL
    async def auth_external(self) -> None:
        feats = await self.open_stream()
        if b"<mechanism>EXTERNAL</mechanism>" not in feats:
            raise BenchError(f"EXTERNAL not offered (certificate not accepted?): {feats[-400:]!r}")
        self.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
        out = await self.read_until(b"<success", b"</failure>")
        if b"<success" not in out:
            raise BenchError(f"EXTERNAL failed: {out[-300:]!r}")

    async def auth_scram(self, username: str, password: str) -> None:
        feats = await self.open_stream()
        mechs = _MECH_RE.findall(feats)
        if b"SCRAM-SHA-256" not in mechs:
            raise BenchError(f"SCRAM-SHA-256 not offered: {mechs!r}")
        scram = ScramSha256(username, password)
        first = base64.b64encode(scram.first()).decode("ascii")
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>"
                  .encode("ascii"))
        out = await self.read_until(b"</challenge>", b"</failure>")
        m = _CHALLENGE_RE.search(out)
        if m is None:
            raise BenchError(f"SCRAM: no challenge: {out[-300:]!r}")
        final = base64.b64encode(scram.final(base64.b64decode(m.group(1)))).decode("ascii")
        self.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>".encode("ascii"))
        out = await self.read_until(b"</success>", b"</failure>", b"<success/>")
        m = _SUCCESS_RE.search(out)
        if m is None:
            raise BenchError(f"SCRAM failed: {out[-300:]!r}")
        if not m.group(1):
            raise BenchError("SCRAM: success without server signature")
        scram.verify(base64.b64decode(m.group(1)))

    # ------------------------------------------------------------ bind
    async def bind(self, resource: str) -> str:
        feats = await self.open_stream()  # the restart after SASL success
        if b"urn:ietf:params:xml:ns:xmpp-bind" not in feats:
            raise BenchError(f"bind not offered: {feats[-300:]!r}")
        self.send(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>".encode("ascii"))
        out = await self.read_until(b"</iq>")
        m = _JID_RE.search(out)
        if m is None or b"type='result'" not in out and b'type="result"' not in out:
            raise BenchError(f"bind failed: {out[-300:]!r}")
        self.jid = m.group(1).decode()
        return self.jid

    # ------------------------------------------------------------ close
    async def close(self, timeout: float = 5.0) -> None:
        """Close the stream politely: ``</stream:stream>``, wait for the server's, then EOF/close."""
        try:
            self.send(b"</stream:stream>")
            await self.read_until(b"</stream:stream>", timeout=timeout)
        except (BenchError, OSError, ssl.SSLError, TimeoutError):
            pass
        self.writer.close()
        try:
            async with asyncio.timeout(timeout):
                await self.writer.wait_closed()
        except (OSError, ssl.SSLError, TimeoutError):
            self.writer.transport.abort()

    def abort(self) -> None:
        self.writer.transport.abort()
