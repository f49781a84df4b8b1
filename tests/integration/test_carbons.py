"""Message Carbons (XEP-0280) with slixmpp xep_0280; raw client for byte-exact copies."""

from __future__ import annotations

import asyncio
import re

from .rawclient import RawClient

OMEMO_KT = ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='7'>"
            "<key rid='9' prekey=\"true\">AAEC</key><iv>BQYH</iv>"
            "<odd xmlns='urn:example:unknown'  z='1' a='2'> keep &amp; me </odd></header></encrypted>")


async def carbon_client(clients, pki, server, jid: str, *, enable: bool = True):
    user, _, resource = jid.partition("/")
    c = clients(jid, cert=pki.client(f"cc-{user}-{resource}", xmpp_addrs=[user]))
    c.register_plugin("xep_0280")
    c.received_carbons = asyncio.Queue()
    c.sent_carbons = asyncio.Queue()
    c.add_event_handler("carbon_received", lambda m: c.received_carbons.put_nowait(m))
    c.add_event_handler("carbon_sent", lambda m: c.sent_carbons.put_nowait(m))
    await c.login(server.listener_port(0))
    c.send_presence()
    if enable:
        await c.plugin["xep_0280"].enable(timeout=10)
    return c


async def settle() -> None:
    await asyncio.sleep(0.3)


async def test_server_advertises_carbons(server, clients, pki):
    alice = await carbon_client(clients, pki, server, "alice@localhost/a", enable=False)
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
    assert "urn:xmpp:carbons:2" in info["disco_info"]["features"]


async def test_received_copy_goes_to_the_recipients_other_carbons_enabled_resource(server, clients, pki):
    alice = await carbon_client(clients, pki, server, "alice@localhost/a")
    bob1 = await carbon_client(clients, pki, server, "bob@localhost/one")
    bob2 = await carbon_client(clients, pki, server, "bob@localhost/two")
    await settle()
    alice.send_message(mto="bob@localhost/one", mbody="hi one", mtype="chat")
    assert (await bob1.next_message())["body"] == "hi one"
    carbon = await asyncio.wait_for(bob2.received_carbons.get(), 10)
    assert carbon["from"] == "bob@localhost" and carbon["to"] == bob2.boundjid
    inner = carbon["carbon_received"]
    assert inner["body"] == "hi one"
    assert inner["from"] == alice.boundjid and inner["to"] == "bob@localhost/one"
    assert bob1.received_carbons.empty()  # the recipient itself gets no copy


async def test_sent_copy_goes_to_the_senders_other_carbons_enabled_resources(server, clients, pki):
    alice1 = await carbon_client(clients, pki, server, "alice@localhost/one")
    alice2 = await carbon_client(clients, pki, server, "alice@localhost/two")
    bob = await carbon_client(clients, pki, server, "bob@localhost/b", enable=False)
    await settle()
    alice1.send_message(mto="bob@localhost", mbody="from my phone", mtype="chat")
    assert (await bob.next_message())["body"] == "from my phone"
    carbon = await asyncio.wait_for(alice2.sent_carbons.get(), 10)
    inner = carbon["carbon_sent"]
    assert inner["body"] == "from my phone"
    assert inner["from"] == alice1.boundjid and inner["to"] == "bob@localhost"
    await settle()
    assert alice1.sent_carbons.empty()  # never to the sending resource


async def test_private_messages_are_not_copied(server, clients, pki):
    alice1 = await carbon_client(clients, pki, server, "alice@localhost/one")
    alice2 = await carbon_client(clients, pki, server, "alice@localhost/two")
    bob1 = await carbon_client(clients, pki, server, "bob@localhost/one")
    bob2 = await carbon_client(clients, pki, server, "bob@localhost/two")
    await settle()
    alice1.send_raw("<message to='bob@localhost/one' type='chat'><body>secret</body>"
                    "<private xmlns='urn:xmpp:carbons:2'/></message>")
    alice1.send_raw("<message to='bob@localhost/one' type='chat'><body>no copy hint</body>"
                    "<no-copy xmlns='urn:xmpp:hints'/></message>")
    assert (await bob1.next_message())["body"] == "secret"
    assert (await bob1.next_message())["body"] == "no copy hint"
    await settle()
    assert bob2.received_carbons.empty() and alice2.sent_carbons.empty()


async def test_groupchat_and_headline_are_not_copied_but_normal_with_body_is(server, clients, pki):
    alice = await carbon_client(clients, pki, server, "alice@localhost/a")
    bob1 = await carbon_client(clients, pki, server, "bob@localhost/one")
    bob2 = await carbon_client(clients, pki, server, "bob@localhost/two")
    await settle()
    alice.send_raw("<message to='bob@localhost/one' type='headline'><body>news</body></message>")
    alice.send_raw("<message to='bob@localhost/one'><body>normal with body</body></message>")
    assert (await bob1.next_message())["body"] == "news"
    assert (await bob1.next_message())["body"] == "normal with body"
    carbon = await asyncio.wait_for(bob2.received_carbons.get(), 10)
    assert carbon["carbon_received"]["body"] == "normal with body"
    await settle()
    assert bob2.received_carbons.empty()


async def test_a_client_that_disabled_carbons_gets_none(server, clients, pki):
    alice = await carbon_client(clients, pki, server, "alice@localhost/a")
    bob1 = await carbon_client(clients, pki, server, "bob@localhost/one")
    bob2 = await carbon_client(clients, pki, server, "bob@localhost/two")
    bob3 = await carbon_client(clients, pki, server, "bob@localhost/three", enable=False)
    await bob2.plugin["xep_0280"].disable(timeout=10)
    await settle()
    alice.send_message(mto="bob@localhost/one", mbody="only for one", mtype="chat")
    assert (await bob1.next_message())["body"] == "only for one"
    await settle()
    assert bob2.received_carbons.empty() and bob2.messages.empty()
    assert bob3.received_carbons.empty() and bob3.messages.empty()


async def test_omemo_key_transport_without_body_is_copied_byte_for_byte(server, clients, pki):
    alice = await carbon_client(clients, pki, server, "alice@localhost/a")
    bob1 = await carbon_client(clients, pki, server, "bob@localhost/one")
    cert = pki.client("cc-bob-raw", xmpp_addrs=["bob@localhost"])
    raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await raw.login_external(resource="raw")
        await raw.send("<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        await raw.read_until(b"id='c1'")
        raw.mark()
        alice.send_raw(f"<message to='bob@localhost/one' id='kt1' type='chat'>{OMEMO_KT}</message>")
        got = await raw.read_until(b"</received></message>")
        assert b"<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message " in got
        # the payload byte-for-byte; MAM (when on) adds its <stanza-id/> after it
        assert re.search(re.escape(OMEMO_KT.encode()) + rb"(<stanza-id [^>]*/>)?</message></forwarded></received></message>",
                         got), got
        assert b"xmlns='jabber:client'" in got and f"from='{alice.boundjid.full}'".encode() in got
    finally:
        await raw.close()
