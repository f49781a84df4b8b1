"""Connection admission: max_preauth_connections_per_ip, max_connections, and a log that a flood cannot flood."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from .harness import deep_merge
from .rawclient import HEADER, RawClient

FLOOD = 400


def listeners(pki, **extra) -> list[dict]:
    tls = {"certfile": str(pki.server.cert), "keyfile": str(pki.server.key), "cacertfile": str(pki.ca_path),
           "disconnect_on_failure": False}
    return [deep_merge({"port": 0, "ip_address": "127.0.0.1", "tls": dict(tls, mode="starttls_required")}, extra),
            deep_merge({"port": 0, "ip_address": "127.0.0.1", "tls": dict(tls, mode="tls")}, extra)]


async def tcp(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_all(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    out = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            out += chunk
    return out


def refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "xmppd.listener" and "refus" in r.getMessage()]


def refused_total(lines: list[str]) -> int:
    return sum(int(m.group(1)) for line in lines if (m := re.search(r"refused (\d+) connection", line)))


async def test_connections_over_the_per_ip_preauth_cap_get_policy_violation(make_server, pki):
    server = await make_server(listeners=listeners(pki, max_preauth_connections_per_ip=3))
    port = server.listener_port(0)
    held = [await tcp(port) for _ in range(3)]
    await asyncio.sleep(0.1)
    reader, writer = await tcp(port)
    data = await read_all(reader)
    writer.close()
    assert b"<stream:error><policy-violation" in data, data
    assert b"<text" in data and b"too many connections" in data
    # a held connection goes away: its place is free again
    held[0][1].close()
    await asyncio.sleep(0.2)
    c = await RawClient.open(port, ca=pki.ca_path)
    try:
        await c.send(HEADER.format(to="localhost"))
        assert b"<starttls" in await c.read_until(b"</stream:features>")
    finally:
        await c.close()
        for _r, w in held[1:]:
            w.close()


async def test_the_direct_tls_port_closes_connections_over_the_per_ip_cap(make_server, pki):
    server = await make_server(listeners=listeners(pki, max_preauth_connections_per_ip=2))
    port = server.listener_port(1)
    held = [await tcp(port) for _ in range(2)]
    await asyncio.sleep(0.1)
    reader, writer = await tcp(port)
    assert await read_all(reader) == b""  # closed without a word (no TLS spent on it)
    writer.close()
    for _r, w in held:
        w.close()


async def test_authenticated_sessions_do_not_count_against_the_preauth_cap(make_server, pki, clients):
    server = await make_server(listeners=listeners(pki, max_preauth_connections_per_ip=2))
    logged_in = []
    for i in range(4):
        cert = pki.client(f"cap{i}", xmpp_addrs=[f"cap{i}@localhost"])
        logged_in.append(await clients(f"cap{i}@localhost", cert=cert).login(server.listener_port(0)))
    assert len(logged_in) == 4
    assert server.listeners[0].preauth_by_client == {}


@pytest.mark.parametrize("limit", ["max_preauth_connections_per_ip", "max_connections"])
async def test_a_flood_of_refused_connections_is_logged_in_a_constant_number_of_lines(
        make_server, pki, caplog, limit):
    caplog.set_level(logging.INFO, logger="xmppd.listener")
    server = await make_server(listeners=listeners(pki, **{limit: 2}))
    port = server.listener_port(0)
    held = [await tcp(port) for _ in range(2)]
    await asyncio.sleep(0.1)
    flood = []
    for _ in range(FLOOD):
        flood.append(await tcp(port))
    for reader, writer in flood:
        try:
            await read_all(reader)
        except (ConnectionError, OSError):
            pass  # max_connections refusals are reset
        writer.close()
    for listener in server.listeners:
        listener.refusals.flush(time.monotonic())
    lines = refusal_lines(caplog)
    assert 1 <= len(lines) <= 2, lines  # the first at once, the rest in one summary
    assert refused_total(lines) == FLOOD
    assert limit in lines[-1]
    for _r, w in held:
        w.close()
