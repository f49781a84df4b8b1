"""RFC 6121 rosters, subscriptions and presence; XEP-0237 roster versioning.
Real server, slixmpp clients (automatic subscription handling off)."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from .harness import WAIT_S
from .rawclient import RawClient
from .roster_support import login, no_presence_from, presence_from, until_state

A, B = "alice@localhost", "bob@localhost"


async def handshake(server, alice, bob) -> None:
    """alice subscribes to bob, bob approves and subscribes back, alice approves."""
    alice.send_presence(pto=B, ptype="subscribe")
    await presence_from(bob, A, "subscribe")
    bob.send_presence(pto=A, ptype="subscribed")
    await until_state(server, A, B, ("to", False, False))
    bob.send_presence(pto=A, ptype="subscribe")
    await presence_from(alice, B, "subscribe")
    alice.send_presence(pto=B, ptype="subscribed")
    await until_state(server, A, B, ("both", False, False))
    await until_state(server, B, A, ("both", False, False))


async def test_subscription_handshake_ends_in_both_and_each_sees_the_others_presence(server, clients):
    alice = await login(server, clients, "alice")
    bob = await login(server, clients, "bob")
    alice.send_presence(pto=B, ptype="subscribe")
    await until_state(server, A, B, ("none", True, False))  # ask=subscribe on alice's side
    await until_state(server, B, A, ("none", False, True))  # pending in on bob's side
    await presence_from(bob, A, "subscribe")
    bob.send_presence(pto=A, ptype="subscribed")
    await presence_from(alice, B, "subscribed")
    # §3.1.5: once approved, alice gets bob's current presence
    await presence_from(alice, B, "available")
    bob.send_presence(pto=A, ptype="subscribe")
    await presence_from(alice, B, "subscribe")
    alice.send_presence(pto=B, ptype="subscribed")
    await presence_from(bob, A, "available")
    await until_state(server, A, B, ("both", False, False))
    await until_state(server, B, A, ("both", False, False))
    # the clients' rosters were kept up to date by roster pushes
    assert alice.client_roster[B]["subscription"] == "both"
    assert bob.client_roster[A]["subscription"] == "both"
    # subsequent presence (§4.4) reaches the contact
    alice.send_presence(pshow="away", pstatus="lunch")
    p = await presence_from(bob, A, "away")
    assert p["status"] == "lunch"


async def test_presence_probe_at_login_delivers_the_contacts_current_presence(server, clients):
    alice = await login(server, clients, "alice")
    bob = await login(server, clients, "bob")
    await handshake(server, alice, bob)
    bob.send_presence(pshow="dnd", pstatus="busy coding")
    await presence_from(alice, B, "dnd")
    alice2 = await login(server, clients, "alice", "phone")
    p = await presence_from(alice2, B, "dnd")
    assert p["status"] == "busy coding" and str(p["from"]).startswith(B + "/")
    assert str(p["to"]) == str(alice2.boundjid)


async def test_session_end_sends_unavailable_to_subscribers(server, clients):
    alice = await login(server, clients, "alice")
    bob = await login(server, clients, "bob")
    await handshake(server, alice, bob)
    await bob.close()
    p = await presence_from(alice, B, "unavailable")
    assert str(p["from"]).startswith(B + "/")


async def test_unsubscribe_turns_both_into_from_and_to_and_sends_unavailable(server, clients):
    alice = await login(server, clients, "alice")
    bob = await login(server, clients, "bob")
    await handshake(server, alice, bob)
    # alice stops her subscription to bob (§3.3): alice both->from, bob both->to
    alice.send_presence(pto=B, ptype="unsubscribe")
    await presence_from(bob, A, "unsubscribe")
    await until_state(server, A, B, ("from", False, False))
    await until_state(server, B, A, ("to", False, False))
    # §3.3.3: bob's server tells alice bob is unavailable to her now
    await presence_from(alice, B, "unavailable")
    # bob cancels alice's... no: alice cancels bob's subscription to her (§3.2)
    alice.send_presence(pto=B, ptype="unsubscribed")
    await presence_from(bob, A, "unsubscribed")
    await presence_from(bob, A, "unavailable")
    await until_state(server, A, B, ("none", False, False))
    await until_state(server, B, A, ("none", False, False))
    # no subscription left: presence changes stay private
    alice.send_presence(pstatus="secret")
    await no_presence_from(bob, A)


async def test_denying_a_request_clears_pending_in_and_pending_out(server, clients):
    alice = await login(server, clients, "alice")
    bob = await login(server, clients, "bob")
    alice.send_presence(pto=B, ptype="subscribe")
    await presence_from(bob, A, "subscribe")
    bob.send_presence(pto=A, ptype="unsubscribed")
    await presence_from(alice, B, "unsubscribed")
    await until_state(server, A, B, ("none", False, False))
    await until_state(server, B, A, ("none", False, False))


async def test_subscribe_to_a_contact_already_subscribed_to_is_not_delivered_again(server, clients):
    alice = await login(server, clients, "alice")
    bob = await login(server, clients, "bob")
    await handshake(server, alice, bob)
    # §3.1.3: bob's server answers for bob (subscribed); App. A: no state change anywhere
    alice.send_presence(pto=B, ptype="subscribe")
    await no_presence_from(bob, A, "subscribe")
    await until_state(server, A, B, ("both", False, False))
    await until_state(server, B, A, ("both", False, False))


async def test_pending_subscription_request_is_delivered_at_next_login(server, clients):
    alice = await login(server, clients, "alice")
    await server.auth_chain.register("bob", "localhost", "pw-bob")
    alice.send_presence(pto=B, ptype="subscribe", pstatus="it's alice")
    await until_state(server, B, A, ("none", False, True))
    bob = await login(server, clients, "bob")
    p = await presence_from(bob, A, "subscribe")
    assert p["status"] == "it's alice"
    await bob.close()
    # unanswered: delivered again at the next login, and kept until answered
    bob = await login(server, clients, "bob", "again")
    await presence_from(bob, A, "subscribe")
    bob.send_presence(pto=A, ptype="subscribed")
    await until_state(server, B, A, ("from", False, False))
    await bob.close()
    bob = await login(server, clients, "bob", "third")
    await no_presence_from(bob, A, "subscribe")


async def test_roster_push_reaches_all_interested_resources(server, clients):
    a1 = await login(server, clients, "alice", "one")
    a2 = await login(server, clients, "alice", "two")
    a3 = await login(server, clients, "alice", "lazy", roster=False)
    pushed: asyncio.Queue = asyncio.Queue()
    a2.add_event_handler("roster_update", lambda iq: pushed.put_nowait(iq))
    a3.add_event_handler("roster_update", lambda iq: pushed.put_nowait(("lazy", iq)))
    await a1.update_roster("carol@localhost", name="Carol", groups=["Friends", "Work"])
    iq = await asyncio.wait_for(pushed.get(), WAIT_S)
    item = iq["roster"]["items"]["carol@localhost"]
    assert iq["type"] == "set" and item["name"] == "Carol" and sorted(item["groups"]) == ["Friends", "Work"]
    assert item["subscription"] == "none" and iq["roster"]["ver"]
    assert a1.client_roster["carol@localhost"]["name"] == "Carol"
    await asyncio.sleep(0.3)
    assert pushed.empty(), "a resource that never asked for the roster got a push (RFC 6121 §2.1.6)"


async def test_roster_versioning_returns_an_empty_result_when_ver_is_current(server, clients):
    alice = await login(server, clients, "alice")
    assert "rosterver" in alice.features  # <ver xmlns='urn:xmpp:features:rosterver'/>
    await alice.update_roster("carol@localhost", name="Carol")
    await asyncio.sleep(0.2)

    async def roster_get(ver):
        iq = alice.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        iq["roster"]["ver"] = ver
        return await iq.send()

    full = await roster_get("")
    ver = full["roster"]["ver"]
    assert ver and "carol@localhost" in full["roster"]["items"]
    empty = await roster_get(ver)
    assert empty["type"] == "result" and empty.xml.find("{jabber:iq:roster}query") is None
    stale = await roster_get("0")
    assert "carol@localhost" in stale["roster"]["items"] and stale["roster"]["ver"] == ver
    await alice.update_roster("dave@localhost")
    await asyncio.sleep(0.2)
    newer = await roster_get(ver)
    assert set(newer["roster"]["items"]) == {"carol@localhost", "dave@localhost"}
    assert int(newer["roster"]["ver"]) > int(ver)


async def test_removing_a_roster_item_cancels_subscriptions_both_ways(server, clients):
    alice = await login(server, clients, "alice")
    bob = await login(server, clients, "bob")
    await handshake(server, alice, bob)
    await alice.del_roster_item(B)
    await presence_from(bob, A, "unsubscribe")
    await presence_from(bob, A, "unsubscribed")
    await presence_from(bob, A, "unavailable")
    await until_state(server, B, A, ("none", False, False))
    assert await server.roster.store.item("alice", "localhost", B) is None
    alice_items = (await alice.get_roster())["roster"]["items"]
    assert B not in alice_items


async def test_removing_an_unknown_item_is_item_not_found(server, clients):
    alice = await login(server, clients, "alice")
    with pytest.raises(IqError) as err:
        await alice.del_roster_item("nobody@localhost")
    assert err.value.condition == "item-not-found" and err.value.text


async def test_roster_set_with_two_items_is_bad_request(server, clients):
    alice = await login(server, clients, "alice")
    iq = alice.Iq()
    iq["type"] = "set"
    iq["roster"].set_items({"carol@localhost": {"name": "C"}, "dave@localhost": {"name": "D"}})
    with pytest.raises(IqError) as err:
        await iq.send()
    assert err.value.condition == "bad-request" and "exactly one" in err.value.text


async def test_roster_set_with_a_malformed_jid_is_jid_malformed(server, clients):
    alice = await login(server, clients, "alice")
    raw = "<iq type='set' id='bad1'><query xmlns='jabber:iq:roster'><item jid='a@b@c'/></query></iq>"
    reply = await _raw_exchange(alice, raw, "bad1")
    assert 'type="error"' in reply or "type='error'" in reply
    assert "jid-malformed" in reply and "<text" in reply


async def test_roster_set_with_an_empty_group_is_not_acceptable(server, clients):
    alice = await login(server, clients, "alice")
    raw = ("<iq type='set' id='g1'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'>"
           "<group></group></item></query></iq>")
    reply = await _raw_exchange(alice, raw, "g1")
    assert "not-acceptable" in reply and "<text" in reply


async def test_max_roster_items_refuses_one_more_with_not_allowed_and_text(make_server, clients):
    server = await make_server({"modules": {"roster": {"max_roster_items": 2}}})
    alice = await login(server, clients, "alice")
    await alice.update_roster("c1@localhost")
    await alice.update_roster("c2@localhost")
    with pytest.raises(IqError) as err:
        await alice.update_roster("c3@localhost")
    assert err.value.condition == "not-allowed" and "max_roster_items" in err.value.text
    await alice.update_roster("c1@localhost", name="renaming still works")


async def test_broadcast_presence_payload_reaches_subscribers_byte_for_byte(server, pki):
    """RFC 6121 §4.2.2 broadcast on the routing fast path: only the start tag is rewritten."""
    raws = []
    try:
        for name in ("alice", "bob"):
            cert = pki.client(f"raw-{name}-roster", xmpp_addrs=[f"{name}@localhost"])
            raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
            raws.append(raw)
            await raw.login_external(resource="raw")
        alice, bob = raws
        await bob.send("<presence/>")
        await bob.send(f"<presence to='{A}' type='subscribe'/>")
        await alice.send("<presence><priority>1</priority></presence>")  # the request comes with it
        await alice.read_until(r"type=.subscribe.")
        await alice.send(f"<presence to='{B}' type='subscribed'/>")
        await until_state(server, B, A, ("to", False, False))
        bob.mark()
        payload = ("<status>caf\u00e9 &amp; cr\u00e8me</status>"
                   "<x xmlns='urn:example:x' b=\"2\"  a='1'><y/></x>")
        await alice.send(f"<presence>{payload}</presence>")
        got = await bob.read_until(r"</x></presence>")
        assert payload.encode() in got
        assert f"to='{B}'".encode() in got or f'to="{B}"'.encode() in got
    finally:
        for raw in raws:
            await raw.close()


async def _raw_exchange(client, xml: str, iq_id: str) -> str:
    """Send raw XML over a slixmpp client and return the raw reply to ``iq_id``."""
    fut: asyncio.Future = asyncio.get_running_loop().create_future()

    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath

    client.register_handler(Callback(f"raw-{iq_id}", MatchXPath("{jabber:client}iq"),
                                     lambda st: st["id"] == iq_id and not fut.done() and fut.set_result(str(st))))
    client.send_raw(xml)
    try:
        return await asyncio.wait_for(fut, WAIT_S)
    finally:
        client.remove_handler(f"raw-{iq_id}")
