"""A raw XMPP client over real TLS: sends exact bytes, records exact bytes received.

For what slixmpp cannot show: byte-for-byte relay, hostile input, stream errors.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from pathlib import Path

WAIT_S = 10.0
HEADER = ("<?xml version='1.0'?><stream:stream to='{to}' xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")


def client_context(ca: Path, cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


class RawClient:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = bytearray()  # everything received since the last mark()
        self.jid: str | None = None

    @classmethod
    async def open(cls, port: int, *, ca: Path, cert=None, direct_tls: bool = False) -> "RawClient":
        self = cls()
        ctx = client_context(ca, cert) if direct_tls else None
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None)
        self._ctx = client_context(ca, cert)
        return self

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def read_until(self, pattern: bytes | str, timeout: float = WAIT_S) -> bytes:
        """Read until ``pattern`` (a regex) matches the buffer; return the buffer."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.S)
        async with asyncio.timeout(timeout):
            while not rx.search(self.buf):
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"closed; received so far: {bytes(self.buf)[-600:]!r}")
                self.buf += chunk
        return bytes(self.buf)

    async def read_to_eof(self, timeout: float = WAIT_S) -> bytes:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return bytes(self.buf)
                self.buf += chunk

    def mark(self) -> None:
        self.buf.clear()

    async def starttls(self, to: str = "localhost") -> None:
        await self.send(HEADER.format(to=to))
        await self.read_until(b"</stream:features>")
        await self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.read_until(b"<proceed")
        await self.writer.start_tls(self._ctx, server_hostname="localhost")
        self.mark()

    async def open_stream(self, to: str = "localhost") -> bytes:
        self.mark()
        await self.send(HEADER.format(to=to))
        return await self.read_until(b"</stream:features>")

    async def auth_external(self, authzid: str | None = None) -> bytes:
        data = base64.b64encode(authzid.encode()).decode() if authzid else "="
        self.mark()
        await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{data}</auth>")
        return await self.read_until(b"<success|</failure>")

    async def bind(self, resource: str = "raw") -> str:
        self.mark()
        await self.send(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                        f"<resource>{resource}</resource></bind></iq>")
        out = await self.read_until(b"</iq>")
        m = re.search(rb"<jid>([^<]+)</jid>", out)
        assert m, out
        self.jid = m.group(1).decode()
        self.mark()
        return self.jid

    async def login_external(self, *, direct_tls: bool = False, resource: str = "raw") -> str:
        if not direct_tls:
            await self.starttls()
        feats = await self.open_stream()
        assert b"<mechanism>EXTERNAL</mechanism>" in feats, feats
        out = await self.auth_external()
        assert b"<success" in out, out
        await self.open_stream()
        return await self.bind(resource)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
