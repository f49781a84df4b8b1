"""ALPN (RFC 7301) on both c2s ports: ``xmpp-client`` is selected (XEP-0368 §3).

The peer is the standard library's TLS client offering ALPN, as a real client would.
"""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest

from .rawclient import HEADER, RawClient, client_context

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"


def audit_records(server) -> list[dict]:
    return [json.loads(line) for line in server.config.audit.file.read_text().splitlines()]


def alpn_context(ca, protocols: list[str]) -> ssl.SSLContext:
    ctx = client_context(ca)
    ctx.set_alpn_protocols(protocols)
    return ctx


async def direct_tls(server, ctx):
    return await asyncio.open_connection("127.0.0.1", server.listener_port(1), ssl=ctx,
                                         server_hostname="localhost")


@pytest.mark.parametrize("offered", [["xmpp-client"], ["h2", "xmpp-client", "http/1.1"]])
async def test_direct_tls_selects_xmpp_client_when_the_client_offers_it(server, pki, offered):
    reader, writer = await direct_tls(server, alpn_context(pki.ca_path, offered))
    try:
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "xmpp-client"
        writer.write(HEADER.format(to="localhost").encode())  # and the stream works on top
        data = await asyncio.wait_for(reader.readuntil(b"</stream:features>"), 10)
        assert b"<mechanisms" in data
    finally:
        writer.close()


async def test_starttls_selects_xmpp_client_when_the_client_offers_it(server, pki):
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path)
    try:
        await c.send(HEADER.format(to="localhost"))
        await c.read_until(b"</stream:features>")
        await c.send(f"<starttls xmlns='{NS_TLS}'/>")
        await c.read_until(b"<proceed")
        await c.writer.start_tls(alpn_context(pki.ca_path, ["xmpp-client"]), server_hostname="localhost")
        assert c.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "xmpp-client"
        c.mark()
        assert b"<mechanisms" in await c.open_stream()
    finally:
        await c.close()


async def test_a_client_without_alpn_is_served_without_it(server, pki):
    reader, writer = await direct_tls(server, client_context(pki.ca_path))
    try:
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
        writer.write(HEADER.format(to="localhost").encode())
        assert b"<mechanisms" in await asyncio.wait_for(reader.readuntil(b"</stream:features>"), 10)
    finally:
        writer.close()


async def test_a_client_offering_only_other_protocols_gets_no_application_protocol(server, pki):
    # RFC 7301 §3.2: no protocol in common → fatal no_application_protocol alert
    with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
        await direct_tls(server, alpn_context(pki.ca_path, ["http/1.1", "h2"]))
    await asyncio.sleep(0.1)
    failures = [r for r in audit_records(server) if r["event"] == "tls"]
    assert failures and failures[-1]["reason"] == "alpn-mismatch"
