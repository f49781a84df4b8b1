"""Client State Indication (XEP-0352): raw client as the (in)active session."""

from __future__ import annotations

import asyncio

from .rawclient import RawClient


async def raw_session(server, pki, user: str, resource: str) -> RawClient:
    cert = pki.client(f"csi-{user}-{resource}", xmpp_addrs=[f"{user}@localhost"])
    raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    await raw.starttls()
    await raw.open_stream()
    await raw.auth_external()
    raw.features = await raw.open_stream()
    await raw.bind(resource)
    await raw.send("<presence/>")
    await asyncio.sleep(0.2)
    raw.mark()
    return raw


async def test_csi_is_offered_with_bind_and_slixmpp_enables_it(server, clients, pki):
    raw = await raw_session(server, pki, "alice", "r")
    try:
        assert b"<csi xmlns='urn:xmpp:csi:0'/>" in raw.features and b"urn:ietf:params:xml:ns:xmpp-bind" in raw.features
    finally:
        await raw.close()
    c = clients("bob@localhost", cert=pki.client("csi-bob-sx", xmpp_addrs=["bob@localhost"]))
    c.register_plugin("xep_0352")
    await c.login(server.listener_port(0))
    assert c.plugin["xep_0352"].enabled
    c.plugin["xep_0352"].send_inactive()
    c.plugin["xep_0352"].send_active()
    assert await c.plugin["xep_0199"].ping(jid="localhost", timeout=10) >= 0  # the stream survived


async def test_csi_holds_presence_while_inactive_and_flushes_on_active(server, clients, pki):
    alice = await raw_session(server, pki, "alice", "phone")
    try:
        other = await raw_session(server, pki, "alice", "desktop")  # own presence goes to alice/phone
        await alice.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.1)
        alice.mark()
        await other.send("<presence><status>one</status></presence>")
        await other.send("<presence><status>two</status></presence>")
        await other.send("<message to='alice@localhost/phone' type='chat'>"
                         "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        await asyncio.sleep(0.4)
        assert b"<presence" not in alice.buf and b"composing" not in alice.buf
        await alice.send("<active xmlns='urn:xmpp:csi:0'/>")
        got = await alice.read_until(b"composing")
        assert b"<status>two</status>" in got and b"<status>one</status>" not in got  # newest only
        await other.close()
    finally:
        await alice.close()


async def test_csi_flushes_held_items_before_a_message_with_a_body(server, clients, pki):
    alice = await raw_session(server, pki, "alice", "phone")
    try:
        other = await raw_session(server, pki, "alice", "desktop")
        await alice.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.1)
        alice.mark()
        await other.send("<presence><status>away</status></presence>")
        await asyncio.sleep(0.2)
        assert b"<presence" not in alice.buf
        await other.send("<message to='alice@localhost/phone' type='chat'><body>urgent</body></message>")
        got = await alice.read_until(b"urgent")
        assert got.index(b"<status>away</status>") < got.index(b"urgent")  # order kept
        await other.close()
    finally:
        await alice.close()
