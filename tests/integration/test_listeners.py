"""Per-listener policy (allowed_auth_methods), keepalives, legacy session."""

from __future__ import annotations

import asyncio

from .rawclient import RawClient


def tls(pki, **extra):
    d = {"mode": "starttls_required", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
         "cacertfile": str(pki.ca_path), "disconnect_on_failure": False}
    d.update(extra)
    return d


async def features_after_tls(server, pki, index: int, cert=None) -> bytes:
    c = await RawClient.open(server.listener_port(index), ca=pki.ca_path, cert=cert)
    try:
        await c.starttls()
        return await c.open_stream()
    finally:
        await c.close()


async def test_a_cert_only_port_and_a_password_port_offer_only_their_methods(make_server, pki):
    server = await make_server(listeners=[
        {"port": 0, "ip_address": "127.0.0.1", "allowed_auth_methods": ["pki"], "tls": tls(pki)},
        {"port": 0, "ip_address": "127.0.0.1", "allowed_auth_methods": ["sql"], "tls": tls(pki)},
    ])
    cert = pki.client("ports-alice", xmpp_addrs=["alice@localhost"])
    cert_port = await features_after_tls(server, pki, 0, cert)
    assert b"<mechanism>EXTERNAL</mechanism>" in cert_port and b"SCRAM" not in cert_port
    password_port = await features_after_tls(server, pki, 1, cert)
    assert b"SCRAM-SHA-256" in password_port
    # sql serves EXTERNAL only for existing accounts; pki (a valid cert is the account) is not allowed here
    c = await RawClient.open(server.listener_port(1), ca=pki.ca_path, cert=cert)
    try:
        await c.starttls()
        await c.open_stream()
        out = await c.auth_external()
        assert b"no-account" in out
    finally:
        await c.close()


async def test_whitespace_keepalives_keep_an_idle_session_open(make_server, pki):
    server = await make_server(listeners=[
        {"port": 0, "ip_address": "127.0.0.1", "idle_timeout_s": 0.8, "tls": tls(pki)}])
    cert = pki.client("keepalive", xmpp_addrs=["keepalive@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await c.login_external()
        for _ in range(8):  # 2.4 s in all: three idle timeouts, survived by whitespace
            await c.send(b" ")
            await asyncio.sleep(0.3)
        await c.send(b"<iq type='get' id='k1'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert b"id='k1'" in await c.read_until(b"</iq>|/>")
        await asyncio.sleep(2.5)  # now silent: the idle timeout ends it
        data = await c.read_to_eof()
        assert b"connection-timeout" in data
    finally:
        await c.close()


async def test_legacy_session_iq_after_bind_is_answered(server, pki):
    cert = pki.client("legacy", xmpp_addrs=["legacy@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await c.login_external()
        await c.send(b"<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        out = await c.read_until(rb"id='s1'[^>]*/?>")
        assert b"type='result'" in out
    finally:
        await c.close()
