"""Presence among one account's own resources (RFC 6121 §4.2.2, §4.4.2, §4.5.2).

Available presence, initial or subsequent, goes to every available resource of
the account *including the one that sent it* (clients wait for that echo);
unavailable presence goes to the other available resources; a resource that
has not sent initial presence gets no broadcasts.
"""

from __future__ import annotations

import asyncio

from xmppd.jid import JID

from .harness import WAIT_S
from .rawclient import RawClient


def cert_for(pki, account: str):
    name = f"pres-{account}"
    try:
        return pki.get(name)
    except KeyError:
        return pki.client(name, xmpp_addrs=[f"{account}@localhost"])


async def presence_from(client, jid: str, *, typ: str = "available", timeout: float = WAIT_S):
    """The next presence ``client`` gets from ``jid`` (others are skipped).
    ``typ`` "available" also matches a <show/> (slixmpp reports the show as the type)."""
    kinds = {"available", "away", "chat", "dnd", "xa"} if typ == "available" else {typ}
    async with asyncio.timeout(timeout):
        while True:
            p = await client.presences.get()
            if p["from"].full == jid and p["type"] in kinds:
                return p


async def nothing_more(raw: RawClient, settle: float = 0.7) -> bytes:
    try:
        await raw.read_until(rb"(?!)", timeout=settle)  # matches nothing: read until the timeout
    except TimeoutError:
        pass
    return bytes(raw.buf)


async def test_initial_presence_comes_back_to_the_resource_that_sent_it(server, pki, clients):
    alice = await clients("alice@localhost/only", cert=cert_for(pki, "alice")).login(server.listener_port(0))
    alice.send_presence(pstatus="here")
    echo = await presence_from(alice, alice.boundjid.full, timeout=5)
    assert echo["status"] == "here"
    assert echo["to"].full == alice.boundjid.full


async def test_available_presence_reaches_every_available_resource_including_the_sender(server, pki, clients):
    cert = cert_for(pki, "bea")
    laptop = await clients("bea@localhost/laptop", cert=cert).login(server.listener_port(0))
    phone = await clients("bea@localhost/phone", cert=cert).login(server.listener_port(0))
    laptop.send_presence()
    await presence_from(laptop, laptop.boundjid.full)
    phone.send_presence()  # initial presence of the second resource: to both, and the others' to it
    await presence_from(phone, phone.boundjid.full)
    await presence_from(laptop, phone.boundjid.full)
    await presence_from(phone, laptop.boundjid.full)

    laptop.send_presence(pshow="away", pstatus="lunch")  # subsequent presence (§4.4.2)
    for receiver in (laptop, phone):
        p = await presence_from(receiver, laptop.boundjid.full)
        assert (p["show"], p["status"]) == ("away", "lunch")


async def test_unavailable_presence_goes_to_the_other_available_resources_only(server, pki, clients):
    cert = cert_for(pki, "cyd")
    desk = await clients("cyd@localhost/desk", cert=cert).login(server.listener_port(0))
    desk.send_presence()
    await presence_from(desk, desk.boundjid.full)
    raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        jid = await raw.login_external(resource="raw")
        await raw.send("<presence/>")
        await raw.read_until(f"<presence from='{jid}' to='{jid}'".encode())
        await presence_from(desk, jid)
        raw.mark()
        await raw.send("<presence type='unavailable'/>")
        await presence_from(desk, jid, typ="unavailable")
        assert b"unavailable" not in await nothing_more(raw)  # not echoed to the resource going away
        await raw.send("<presence/>")
        await presence_from(desk, jid)
    finally:
        await raw.close()
    await presence_from(desk, jid, typ="unavailable")  # the stream ended: §4.5.2 says it for the client


async def test_a_resource_without_initial_presence_gets_no_presence_broadcast(server, pki, clients):
    cert = cert_for(pki, "dan")
    quiet = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await quiet.login_external(resource="quiet")
        talker = await clients("dan@localhost/talker", cert=cert).login(server.listener_port(0))
        talker.send_presence()
        talker.send_presence(pstatus="again")
        session = server.sessions.get(JID.parse(talker.boundjid.full))
        async with asyncio.timeout(WAIT_S):
            while session.last_presence is None or b"again" not in session.last_presence.raw:
                await asyncio.sleep(0.05)
        assert b"<presence" not in await nothing_more(quiet)
        assert not server.sessions.get(JID.parse("dan@localhost/quiet")).available
    finally:
        await quiet.close()


async def test_an_account_subscribed_to_itself_gets_each_presence_once_per_resource(server, pki):
    cert = cert_for(pki, "sue")
    a = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    b = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await a.login_external(resource="a")
        await b.login_external(resource="b")
        await b.send("<presence/>")
        await a.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq><presence/>")
        for _ in range(2):  # both directions: subscription 'both' with itself
            for typ in ("subscribe", "subscribed"):
                await a.send(f"<presence type='{typ}' to='sue@localhost'/>")
                await asyncio.sleep(0.3)
        own = JID.parse("sue@localhost")
        async with asyncio.timeout(WAIT_S):
            while await server.roster.subscription(own, own) != "both":
                await asyncio.sleep(0.05)
        await nothing_more(b)
        b.mark()
        await a.send("<presence><status>once</status></presence>")
        assert (await nothing_more(b)).count(b"<status>once</status>") == 1  # not again as a "contact"
    finally:
        await a.close()
        await b.close()
