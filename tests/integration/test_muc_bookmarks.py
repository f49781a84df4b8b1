"""Private XML storage (XEP-0049) and bookmarks: XEP-0402 on PEP and XEP-0048 over XEP-0049, one list."""

from __future__ import annotations

from .muc_support import raw_user

PRIV = "jabber:iq:private"
PUBSUB = "http://jabber.org/protocol/pubsub"


async def test_private_storage_stores_and_returns_an_element_and_empty_when_unknown(server, pki):
    alice = await raw_user(server, pki, "alice")
    try:
        await alice.send(f"<iq type='set' id='s1'><query xmlns='{PRIV}'><exodus xmlns='exodus:prefs'>"
                         "<defaultnick>Hamlet</defaultnick></exodus></query></iq>")
        assert b"type='result'" in await alice.read_until(b"id='s1'.*?>")
        alice.mark()
        await alice.send(f"<iq type='get' id='g1'><query xmlns='{PRIV}'><exodus xmlns='exodus:prefs'/></query></iq>")
        got = await alice.read_until(b"id='g1'.*?</iq>")
        assert b"<defaultnick>Hamlet</defaultnick>" in got
        alice.mark()
        await alice.send(f"<iq type='get' id='g2'><query xmlns='{PRIV}'><other xmlns='x:y'/></query></iq>")
        got = await alice.read_until(b"id='g2'.*?</iq>")
        assert b"type='result'" in got and b"<other xmlns='x:y'/>" in got
    finally:
        await alice.close()


async def test_private_storage_refuses_reserved_namespaces_and_other_accounts(server, pki):
    alice = await raw_user(server, pki, "alice")
    try:
        await alice.send(f"<iq type='set' id='s2'><query xmlns='{PRIV}'><x xmlns='jabber:client'/></query></iq>")
        got = await alice.read_until(b"id='s2'.*?</iq>")
        assert b"<not-acceptable " in got and b"<text " in got
        alice.mark()
        await alice.send(f"<iq type='get' id='g3' to='bob@localhost'><query xmlns='{PRIV}'>"
                         "<exodus xmlns='exodus:prefs'/></query></iq>")
        got = await alice.read_until(b"id='g3'.*?</iq>")
        assert b"type='error'" in got
    finally:
        await alice.close()


async def test_xep0402_bookmark_is_seen_through_xep0048_private_storage(server, pki):
    alice = await raw_user(server, pki, "alice")
    try:
        await alice.send(
            f"<iq type='set' id='p1'><pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:bookmarks:1'>"
            "<item id='team@conference.localhost'><conference xmlns='urn:xmpp:bookmarks:1' name='Team' "
            "autojoin='true'><nick>al</nick></conference></item></publish><publish-options>"
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{PUBSUB}#publish-options</value></field>"
            "<field var='pubsub#persist_items'><value>true</value></field>"
            "<field var='pubsub#max_items'><value>max</value></field>"
            "<field var='pubsub#send_last_published_item'><value>never</value></field>"
            "<field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options>"
            "</pubsub></iq>")
        assert b"type='result'" in await alice.read_until(b"id='p1'.*?>")
        alice.mark()
        await alice.send(f"<iq type='get' id='g4'><query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'/>"
                         "</query></iq>")
        got = await alice.read_until(b"id='g4'.*?</iq>")
        assert b"jid='team@conference.localhost'" in got and b"name='Team'" in got
        assert b"autojoin='true'" in got and b"<nick>al</nick>" in got
    finally:
        await alice.close()


async def test_xep0048_bookmarks_set_in_private_storage_appear_as_xep0402_items(server, pki):
    alice = await raw_user(server, pki, "alice")
    try:
        await alice.send(f"<iq type='set' id='s3'><query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'>"
                         "<conference jid='old@conference.localhost' name='Old' autojoin='1'><nick>al</nick>"
                         "</conference><url name='site' url='https://example.org/'/></storage></query></iq>")
        assert b"type='result'" in await alice.read_until(b"id='s3'.*?>")
        alice.mark()
        await alice.send(f"<iq type='get' id='i1'><pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:bookmarks:1'/>"
                         "</pubsub></iq>")
        got = await alice.read_until(b"id='i1'.*?</iq>")
        assert b"<item id='old@conference.localhost'>" in got
        assert b"<conference xmlns='urn:xmpp:bookmarks:1' name='Old' autojoin='true'><nick>al</nick>" in got
        # removing it from the legacy list retracts the PEP item; the <url/> entry is kept
        alice.mark()
        await alice.send(f"<iq type='set' id='s4'><query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'>"
                         "<url name='site' url='https://example.org/'/></storage></query></iq>")
        await alice.read_until(b"id='s4'.*?>")
        alice.mark()
        await alice.send(f"<iq type='get' id='i2'><pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:bookmarks:1'/>"
                         "</pubsub></iq>")
        got = await alice.read_until(b"id='i2'.*?</iq>")
        assert b"old@conference.localhost" not in got
        alice.mark()
        await alice.send(f"<iq type='get' id='g5'><query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'/>"
                         "</query></iq>")
        got = await alice.read_until(b"id='g5'.*?</iq>")
        assert b"url='https://example.org/'" in got and b"<conference" not in got
    finally:
        await alice.close()


async def test_account_disco_announces_bookmarks_compat(server, pki):
    alice = await raw_user(server, pki, "alice")
    try:
        await alice.send(f"<iq type='get' id='d1' to='alice@localhost'>"
                         "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        got = await alice.read_until(b"id='d1'.*?</iq>")
        assert b"urn:xmpp:bookmarks:1#compat" in got
    finally:
        await alice.close()


async def test_a_legacy_bookmarks_change_notifies_the_accounts_xep0402_clients(server, clients, pki):
    import asyncio

    from xmppd.jid import JID

    from .pep_support import pep_login

    modern = await pep_login(server, clients, "dana", "modern", notify=("urn:xmpp:bookmarks:1",))
    session = server.sessions.get(JID.parse(str(modern.boundjid)))
    for _ in range(200):
        if server.caps.wants(session, "urn:xmpp:bookmarks:1+notify"):
            break
        await asyncio.sleep(0.05)
    legacy = await raw_user(server, pki, "dana", "legacy")
    try:
        await legacy.send(f"<iq type='set' id='s5'><query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'>"
                          "<conference jid='n@conference.localhost' autojoin='true'/></storage></query></iq>")
        await legacy.read_until(b"id='s5'.*?>")
        ev, msg = await asyncio.wait_for(modern.events.get(), 15)
        assert ev == "pubsub_publish"
        assert msg["pubsub_event"]["items"]["item"]["id"] == "n@conference.localhost"
    finally:
        await legacy.close()
