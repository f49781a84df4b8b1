"""The parser's bounds through the real server: real TLS, a raw client as the peer.

Work is counted (the server-side parser's ``ParserStats``), never timed.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import psutil
import pytest

from .rawclient import HEADER, RawClient

WAIT_S = 15.0


def _tls(pki) -> dict:
    return {"mode": "starttls_required", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
            "cacertfile": str(pki.ca_path), "verify_mode": "peer", "disconnect_on_failure": False}


def _server_side(server):
    (conn,) = server.listeners[0].connections
    return conn


async def _until(predicate, what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_stanza_trickled_one_byte_at_a_time_is_closed_with_connection_timeout(make_server, pki):
    server = await make_server(listeners=[{"port": 0, "ip_address": "127.0.0.1", "idle_timeout_s": 5.0,
                                           "stanza_timeout_s": 1.5, "tls": _tls(pki)}])
    cert = pki.client("trickler", xmpp_addrs=["trickler@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    sent = 0

    async def trickle() -> None:
        nonlocal sent
        await c.send(b"<message to='trickler@localhost'><body>")
        while True:  # one byte every 0.3 s: never idle, never finished
            await asyncio.sleep(0.3)
            c.writer.write(b"x")
            sent += 1

    try:
        await c.login_external()
        task = asyncio.ensure_future(trickle())
        try:
            data = await c.read_to_eof(timeout=WAIT_S)
        finally:
            task.cancel()
        assert b"<connection-timeout" in data and b"stanza incomplete" in data, data[-300:]
        assert sent >= 4  # bytes kept arriving while the stanza stayed unfinished
    finally:
        await c.close()


async def test_fresh_element_and_attribute_names_do_not_grow_server_memory(make_server, pki):
    server = await make_server(listeners=[{"port": 0, "ip_address": "127.0.0.1", "tls": _tls(pki)}])
    cert = pki.client("namer", xmpp_addrs=["namer@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    proc = psutil.Process()
    try:
        await c.login_external()
        conn = _server_side(server)

        async def flood(start: int, n: int) -> None:
            for batch in range(start, start + n, 500):
                c.writer.write(b"".join(
                    b"<iq type='result' id='r%d' to='localhost'><e%d f%d='1' xmlns='urn:fresh:%d'/></iq>"
                    % (i, i, i, i) for i in range(batch, batch + 500)))
                await c.writer.drain()
            c.mark()
            await c.send(b"<iq type='get' id='done%d'><ping xmlns='urn:xmpp:ping'/></iq>" % start)
            await c.read_until(b"id='done%d'" % start, timeout=60)

        await flood(0, 5_000)  # warm-up: buffers, allocator pools
        gc.collect()
        rss = proc.memory_info().rss
        await flood(5_000, 60_000)  # ~4.5 MB of stanzas, 180 000 fresh names
        grown = proc.memory_info().rss - rss
        stats = conn.parser.stats()
        assert stats.name_rebuilds > 100 and stats.names < 600, stats
        # measured: unbounded tables grew RSS by ~30 MB here, bounded ones by < 1 MB
        assert grown < 10_000_000, grown
        parser = weakref.ref(conn.parser)
    finally:
        await c.close()
    # the session's expat tables are released when the connection goes, whoever still
    # holds the connection object (the listener's sweep keeps the last one it looked at)
    await _until(lambda: not server.listeners[0].connections, "connection gone")
    del conn
    gc.disable()
    try:
        await _until(lambda: parser() is None or parser().stats().names == 0, "expat released")
        assert parser() is None or parser().stats().buffered == 0
    finally:
        gc.enable()


@pytest.mark.parametrize("after_starttls", [False, True])
async def test_start_tag_trickled_in_tiny_records_costs_linear_parser_work(make_server, pki, after_starttls):
    server = await make_server(listeners=[{"port": 0, "ip_address": "127.0.0.1", "tls": _tls(pki)}])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path)
    try:
        if after_starttls:
            await c.starttls()
            await c.open_stream()
            record = 4  # each write is one TLS record
        else:
            await c.send(HEADER.format(to="localhost"))
            await c.read_until(b"</stream:features>")
            record = 1  # one byte per TCP segment
        parser = _server_side(server).parser
        before = parser.stats().bytes_scanned
        fed = parser.bytes_fed
        tag = b"<message to='a@localhost' pad='" + b"p>" * 6000  # 12 KB, never closed
        for i in range(0, len(tag), record):
            c.writer.write(tag[i : i + record])
            await c.writer.drain()
        await _until(lambda: parser.bytes_fed - fed == len(tag), "all bytes parsed")
        scanned = parser.stats().bytes_scanned - before
        # re-scanning the incomplete tag on every record: ~len^2/(2*record), 18M-72M bytes
        assert scanned <= 4 * len(tag), scanned
    finally:
        await c.close()
