"""IPv6: a listener on ::1, and "::" (the default) as one dual-stack socket for IPv6 and IPv4.

Binding "::" means every address of the machine (on an ephemeral port, for the test's
few seconds): it is the only way to show the default is dual-stack.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from .rawclient import HEADER, RawClient, client_context


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")


def listener(pki, **extra) -> dict:
    tls = {"mode": "starttls_required", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
           "cacertfile": str(pki.ca_path)}
    return dict({"port": 0, "tls": tls}, **extra)


async def features_over(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(HEADER.format(to="localhost").encode())
        return await asyncio.wait_for(reader.readuntil(b"</stream:features>"), 10)
    finally:
        writer.close()


async def test_a_listener_on_the_ipv6_loopback_serves_clients_over_ipv6(make_server, pki):
    server = await make_server(listeners=[listener(pki, ip_address="::1")])
    assert b"<starttls" in await features_over("::1", server.listener_port(0))
    with pytest.raises(OSError):  # exactly that address: not IPv4
        await features_over("127.0.0.1", server.listener_port(0))


async def test_a_certificate_login_over_ipv6_is_audited_with_the_ipv6_peer(make_server, pki):
    server = await make_server(listeners=[listener(pki, ip_address="::1")])
    cert = pki.client("v6-alice", xmpp_addrs=["alice@localhost"])
    c = RawClient()
    c.reader, c.writer = await asyncio.open_connection("::1", server.listener_port(0))
    c._ctx = client_context(pki.ca_path, cert)
    try:
        assert (await c.login_external()).startswith("alice@localhost/")
    finally:
        await c.close()
    records = [json.loads(line) for line in server.config.audit.file.read_text().splitlines()]
    auth = [r for r in records if r["event"] == "auth"][-1]
    assert auth["result"] == "success" and auth["peer"].startswith("[::1]:")


@pytest.mark.parametrize("configured", [{"ip_address": "::"}, {}], ids=["ip_address=::", "default"])
async def test_the_unspecified_ipv6_address_is_dual_stack(make_server, pki, configured):
    server = await make_server(listeners=[listener(pki, **configured)])
    assert server.config.listeners[0].ip_address == "::"
    port = server.listener_port(0)
    assert b"<starttls" in await features_over("::1", port)
    assert b"<starttls" in await features_over("127.0.0.1", port)  # IPv4 on the same socket
