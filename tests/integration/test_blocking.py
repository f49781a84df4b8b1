"""XEP-0191 blocking command: real server, slixmpp clients with xep_0191."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from .harness import WAIT_S
from .roster_support import login, no_presence_from, presence_from, until_state

A, B = "alice@localhost", "bob@localhost"
BLOCKED_ERR = "{jabber:client}error/{urn:xmpp:blocking:errors}blocked"


async def next_message(c, *, typ: str | None = None, timeout: float = WAIT_S):
    async with asyncio.timeout(timeout):
        while True:
            m = await c.messages.get()
            if typ is None or m["type"] == typ:
                return m


async def no_message(c, wait: float = 0.7) -> None:
    try:
        m = await asyncio.wait_for(c.messages.get(), wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {m}")


async def test_server_advertises_urn_xmpp_blocking(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    info = await alice.plugin["xep_0030"].get_info(jid="localhost")
    assert "urn:xmpp:blocking" in info["disco_info"]["features"]


async def test_blocking_drops_messages_from_a_blocked_jid_and_the_sender_sees_unavailable(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    bob = await login(server, clients, "bob")
    await alice.plugin["xep_0191"].block(B)
    assert await alice.plugin["xep_0191"].get_blocked_jids() == {bob.boundjid.bare}
    bob.send_message(mto=A, mbody="let me in", mtype="chat")
    err = await next_message(bob, typ="error")
    assert err["error"]["condition"] == "service-unavailable" and err["error"]["text"]
    assert err.xml.find(BLOCKED_ERR) is None  # the block itself is not revealed
    await no_message(alice)


async def test_iq_get_from_a_blocked_jid_gets_service_unavailable(server, clients):
    alice = await login(server, clients, "alice", "desk", blocking=True)
    bob = await login(server, clients, "bob")
    await alice.plugin["xep_0191"].block(B)
    with pytest.raises(IqError) as err:
        await bob.plugin["xep_0199"].send_ping(str(alice.boundjid), timeout=WAIT_S)
    assert err.value.condition == "service-unavailable"


async def test_sending_to_a_blocked_jid_bounces_with_not_acceptable_and_blocked(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    bob = await login(server, clients, "bob")
    await alice.plugin["xep_0191"].block(B)
    alice.send_message(mto=B, mbody="hi?", mtype="chat")
    err = await next_message(alice, typ="error")
    assert err["error"]["condition"] == "not-acceptable" and err["error"]["text"]
    assert err.xml.find(BLOCKED_ERR) is not None
    await no_message(bob)


async def test_unblock_restores_delivery_both_ways(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    bob = await login(server, clients, "bob")
    await alice.plugin["xep_0191"].block([B, "spam@localhost"])
    await alice.plugin["xep_0191"].unblock(B)
    assert await alice.plugin["xep_0191"].get_blocked_jids() == {"spam@localhost"}
    bob.send_message(mto=A, mbody="back", mtype="chat")
    assert (await next_message(alice, typ="chat"))["body"] == "back"
    alice.send_message(mto=B, mbody="hello again", mtype="chat")
    assert (await next_message(bob, typ="chat"))["body"] == "hello again"


async def test_unblock_all_with_an_empty_unblock(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    await alice.plugin["xep_0191"].block(["x@localhost", "example.net", "y@localhost/r"])
    iq = alice.Iq()
    iq["type"] = "set"
    iq.enable("unblock")
    await iq.send()
    assert await alice.plugin["xep_0191"].get_blocked_jids() == set()


async def test_a_blocked_domain_matches_every_jid_of_it(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    bob = await login(server, clients, "bob")
    await alice.plugin["xep_0191"].block("localhost")
    bob.send_message(mto=A, mbody="domain", mtype="chat")
    await next_message(bob, typ="error")
    await no_message(alice)


async def test_block_is_pushed_to_every_resource_that_asked_for_the_blocklist(server, clients):
    a1 = await login(server, clients, "alice", "one", blocking=True)
    a2 = await login(server, clients, "alice", "two", blocking=True)
    a3 = await login(server, clients, "alice", "three", blocking=True)
    await a2.plugin["xep_0191"].get_blocked_jids()
    pushes: asyncio.Queue = asyncio.Queue()
    a2.add_event_handler("blocked", lambda iq: pushes.put_nowait(("two", iq)))
    a3.add_event_handler("blocked", lambda iq: pushes.put_nowait(("three", iq)))
    await a1.plugin["xep_0191"].block("spam@localhost")
    who, iq = await asyncio.wait_for(pushes.get(), WAIT_S)
    assert who == "two" and [i["jid"] for i in iq["block"]] == ["spam@localhost"]
    await asyncio.sleep(0.3)
    assert pushes.empty()


async def test_blocking_a_subscriber_sends_it_unavailable_and_stops_presence(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    bob = await login(server, clients, "bob")
    bob.send_presence(pto=A, ptype="subscribe")
    await presence_from(alice, B, "subscribe")
    alice.send_presence(pto=B, ptype="subscribed")
    await presence_from(bob, A, "available")
    await alice.plugin["xep_0191"].block(B)
    await presence_from(bob, A, "unavailable")
    alice.send_presence(pstatus="still here")
    await no_presence_from(bob, A)
    await alice.plugin["xep_0191"].unblock(B)
    await presence_from(bob, A, "available")  # XEP-0191 §3.4: presence again after unblock


async def test_subscription_request_from_a_blocked_jid_is_dropped(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    bob = await login(server, clients, "bob")
    await alice.plugin["xep_0191"].block(B)
    bob.send_presence(pto=A, ptype="subscribe")
    await no_presence_from(alice, B)
    await until_state(server, A, B, ("none", False, False))


async def test_block_without_items_is_bad_request_and_a_bad_jid_is_jid_malformed(server, clients):
    alice = await login(server, clients, "alice", blocking=True)
    iq = alice.Iq()
    iq["type"] = "set"
    iq.enable("block")
    with pytest.raises(IqError) as err:
        await iq.send()
    assert err.value.condition == "bad-request" and err.value.text
    with pytest.raises(IqError) as err:
        await alice.plugin["xep_0191"].block("a@b@c")
    assert err.value.condition == "jid-malformed" and err.value.text


async def test_max_blocklist_refuses_more_with_not_allowed_and_text(make_server, clients):
    server = await make_server({"modules": {"blocking": {"max_blocklist": 2}}})
    alice = await login(server, clients, "alice", blocking=True)
    await alice.plugin["xep_0191"].block(["a@localhost", "b@localhost"])
    with pytest.raises(IqError) as err:
        await alice.plugin["xep_0191"].block("c@localhost")
    assert err.value.condition == "not-allowed" and "max_blocklist" in err.value.text
    assert len(await alice.plugin["xep_0191"].get_blocked_jids()) == 2


async def test_blocklist_survives_a_restart(make_server, clients, tmp_path):
    server = await make_server()
    alice = await login(server, clients, "alice", blocking=True)
    await alice.plugin["xep_0191"].block(B)
    await alice.close()
    await server.stop()
    await server.start()
    alice = await login(server, clients, "alice", "again", blocking=True)
    bob = await login(server, clients, "bob")
    assert await alice.plugin["xep_0191"].get_blocked_jids() == {bob.boundjid.bare}
    bob.send_message(mto=A, mbody="after restart", mtype="chat")
    await next_message(bob, typ="error")
