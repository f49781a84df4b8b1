"""Whitespace around stream restarts (STARTTLS, SASL success, resumption after SASL).

go-xmpp (go-sendxmpp, and every tool built on it) ends each element it writes with a
newline: ``<starttls/>\\n``, ``</auth>\\n``.  Whitespace between top-level elements is
legal XML (RFC 6120 §4.6.1 keepalives are whitespace too), but after a restart element
those bytes belong to no stream: after ``<proceed/>`` the TLS handshake starts, after
``<success/>`` a new XML document whose declaration must come first.  The server drops
that whitespace; these tests send the exact bytes go-xmpp sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re

import pytest

from xmppd.net.connection import MAX_WHITESPACE_BEFORE_RESTART

from .rawclient import RawClient

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
SM = "urn:xmpp:sm:3"

#: go-xmpp's startStream(): note the newline after the header
GO_HEADER = ("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\n")


def go_plain(user: str, password: str) -> bytes:
    enc = base64.b64encode(b"\x00" + user.encode() + b"\x00" + password.encode()).decode()
    return f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{enc}</auth>\n".encode()


@pytest.fixture
async def plain_server(make_server):
    server = await make_server({"auth": {"sasl_mechanisms": ["external", "scram_sha256", "plain"]}})
    assert await server.auth_chain.register("gopher", "localhost", "go-pw")
    return server


async def go_starttls(server, pki, *, after_starttls: bytes = b"\n") -> RawClient:
    """go-xmpp's startTLSIfRequired(): header, <starttls/> + newline in one write, handshake."""
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path)
    await c.send(GO_HEADER)
    await c.read_until(b"</stream:features>")
    await c.send(f"<starttls xmlns='{NS_TLS}'/>".encode() + after_starttls)
    await c.read_until(b"<proceed")
    await c.writer.start_tls(c._ctx, server_hostname="localhost")
    c.mark()
    return c


async def go_login(c: RawClient, *, resource: str = "go") -> str:
    """go-xmpp's init() after TLS: PLAIN, restart, bind, session, presence — newline after each."""
    await c.send(GO_HEADER)
    feats = await c.read_until(b"</stream:features>")
    assert b"<mechanism>PLAIN</mechanism>" in feats, feats
    c.mark()
    await c.send(go_plain("gopher", "go-pw"))
    assert b"<success" in await c.read_until(b"<success|</failure>")
    c.mark()
    await c.send(GO_HEADER)
    feats = await c.read_until(b"</stream:features>")
    assert f"<bind xmlns='{NS_BIND}'/>".encode() in feats, feats
    c.mark()
    await c.send(f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>{resource}</resource>"
                 f"</bind></iq>\n")
    out = await c.read_until(b"</iq>")
    jid = re.search(rb"<jid>([^<]+)</jid>", out).group(1).decode()
    c.mark()
    await c.send(f"<iq to='localhost' type='set' id='s1'><session xmlns='{NS_SESSION}'/></iq>\n")
    await c.read_until(b"id='s1'")
    await c.send("<presence xml:lang='en'><show></show><status></status></presence>\n")
    c.mark()
    return jid


async def test_go_xmpp_starttls_newline_is_not_taken_for_the_tls_handshake(plain_server, pki):
    c = await go_starttls(plain_server, pki)
    try:
        await c.send(GO_HEADER)
        feats = await c.read_until(b"</stream:features>")
        assert b"<mechanism>PLAIN</mechanism>" in feats
    finally:
        await c.close()


async def test_go_xmpp_login_with_newlines_after_every_element_binds_and_sends(plain_server, pki, clients):
    alice_cert = pki.client("restart-alice", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=alice_cert).login(plain_server.listener_port(0))
    c = await go_starttls(plain_server, pki)
    try:
        jid = await go_login(c)
        assert jid == "gopher@localhost/go"
        await c.send("<message to='alice@localhost/" + alice.boundjid.resource
                     + "' type='chat' id='m1'><body>hello from go</body></message>\n")
        msg = await alice.next_message()
        assert msg["body"] == "hello from go"
        assert str(msg["from"]) == "gopher@localhost/go"
    finally:
        await c.close()


async def test_whitespace_after_sasl_success_in_its_own_packet_is_dropped(plain_server, pki):
    c = await go_starttls(plain_server, pki)
    try:
        await c.send(GO_HEADER)
        await c.read_until(b"</stream:features>")
        c.mark()
        await c.send(go_plain("gopher", "go-pw")[:-1])  # no newline yet
        await c.read_until(b"<success")
        await c.send(b"\r\n \t\n")  # arrives after the restart, before the new header
        await asyncio.sleep(0.1)
        c.mark()
        await c.send(GO_HEADER)
        feats = await c.read_until(b"</stream:features>")
        assert f"<bind xmlns='{NS_BIND}'/>".encode() in feats, feats
    finally:
        await c.close()


async def test_whitespace_after_starttls_in_its_own_packet_is_dropped(plain_server, pki):
    c = await RawClient.open(plain_server.listener_port(0), ca=pki.ca_path)
    try:
        await c.send(GO_HEADER)
        await c.read_until(b"</stream:features>")
        await c.send(f"<starttls xmlns='{NS_TLS}'/>")
        await c.read_until(b"<proceed")
        await c.send(b"\n \n")  # a separate TCP write, before the ClientHello
        await asyncio.sleep(0.1)
        await c.writer.start_tls(c._ctx, server_hostname="localhost")
        c.mark()
        await c.send(GO_HEADER)
        assert b"<mechanism>PLAIN</mechanism>" in await c.read_until(b"</stream:features>")
    finally:
        await c.close()


async def test_resumption_after_a_restart_with_go_xmpp_newlines_resumes_the_session(plain_server, pki):
    c = await go_starttls(plain_server, pki)
    await go_login(c, resource="sm")
    await c.send(f"<enable xmlns='{SM}' resume='true'/>\n")
    out = await c.read_until(rb"<enabled[^>]*/>")
    previd = re.search(rb"id='([^']+)'", out).group(1).decode()
    c.writer.transport.abort()  # the network goes away
    await asyncio.sleep(0.3)
    c2 = await go_starttls(plain_server, pki)
    try:
        await c2.send(GO_HEADER)
        await c2.read_until(b"</stream:features>")
        c2.mark()
        await c2.send(go_plain("gopher", "go-pw"))
        await c2.read_until(b"<success")
        c2.mark()
        await c2.send(GO_HEADER)
        await c2.read_until(b"</stream:features>")
        await c2.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>\n<r xmlns='{SM}'/>\n")
        out = await c2.read_until(rb"<a xmlns='urn:xmpp:sm:3' h='\d+'/>")
        assert b"<resumed" in out, out
    finally:
        await c2.close()


async def test_endless_whitespace_instead_of_a_tls_handshake_fails_as_not_tls(plain_server, pki):
    c = await RawClient.open(plain_server.listener_port(0), ca=pki.ca_path)
    try:
        await c.send(GO_HEADER)
        await c.read_until(b"</stream:features>")
        await c.send(f"<starttls xmlns='{NS_TLS}'/>".encode() + b" " * (MAX_WHITESPACE_BEFORE_RESTART + 100))
        await c.read_to_eof()  # the server gives up instead of waiting for a handshake forever
    finally:
        await c.close()
    records = [json.loads(line) for line in plain_server.config.audit.file.read_text().splitlines()]
    assert [r["reason"] for r in records if r["event"] == "tls"] == ["not-tls"]


async def test_endless_whitespace_before_a_restarted_stream_header_is_a_stream_error(plain_server, pki):
    c = await go_starttls(plain_server, pki)
    try:
        await c.send(GO_HEADER)
        await c.read_until(b"</stream:features>")
        c.mark()
        await c.send(go_plain("gopher", "go-pw"))
        await c.read_until(b"<success")
        c.mark()
        await c.send(b"\n" * (MAX_WHITESPACE_BEFORE_RESTART + 8192))
        data = await c.read_to_eof()
        assert b"<stream:error>" in data, data
    finally:
        await c.close()
