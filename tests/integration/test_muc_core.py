"""XEP-0045 core over real TLS with slixmpp's xep_0045 plugin: create, join, talk, nick, leave, subject."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import PresenceError

from .muc_support import SERVICE, WAIT_S, create_room, muc_client, next_groupchat, room_jid


async def test_first_join_creates_a_locked_room_and_an_instant_config_opens_it(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = room_jid("lobby")
    pres, subject, _occ, _hist = await alice.plugin["xep_0045"].join_muc_wait(room, "Alice", timeout=WAIT_S)
    assert {110, 201} <= set(pres["muc"]["status_codes"])
    assert pres["muc"]["affiliation"] == "owner" and pres["muc"]["role"] == "moderator"
    # locked until configured (XEP-0045 §10.1.1): others get item-not-found
    with pytest.raises(PresenceError) as err:
        await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert err.value.condition == "item-not-found"
    from .muc_support import submit_config
    await submit_config(alice, room)
    pres, _s, occupants, _h = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert 110 in pres["muc"]["status_codes"] and 201 not in pres["muc"]["status_codes"]
    assert [o["from"].resource for o in occupants] == ["Alice", "Bob"]  # others first, self last
    assert pres["muc"]["role"] == "participant" and pres["muc"]["affiliation"] == "none"


async def test_groupchat_reaches_every_occupant_from_the_senders_occupant_jid(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "talk", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    bob.send_message(mto=room, mbody="hello room", mtype="groupchat")
    for c in (alice, bob):  # the sender gets its own message back (reflection)
        msg = await next_groupchat(c)
        assert msg["body"] == "hello room"
        assert str(msg["from"]) == f"{room}/Bob"
        assert msg.xml.find("{urn:xmpp:occupant-id:0}occupant-id") is not None


async def test_message_from_a_non_occupant_is_refused_not_acceptable(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "closed", "Alice")
    bob.send_message(mto=room, mbody="let me in", mtype="groupchat")
    msg = await next_groupchat(bob)
    assert msg["type"] == "error" and msg["error"]["condition"] == "not-acceptable"
    assert msg["error"]["text"]


async def test_nick_conflict_is_refused_with_conflict(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "nicks", "Alice")
    with pytest.raises(PresenceError) as err:
        await bob.plugin["xep_0045"].join_muc_wait(room, "Alice", timeout=WAIT_S)
    assert err.value.condition == "conflict"


async def test_private_message_goes_to_one_occupant_from_the_senders_occupant_jid(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "pm", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    bob.send_message(mto=f"{room}/Alice", mbody="psst", mtype="chat")
    while True:
        msg = await alice.next_message(WAIT_S)
        if msg["type"] == "chat":
            break
    assert msg["body"] == "psst" and str(msg["from"]) == f"{room}/Bob"


async def test_subject_change_by_moderator_reaches_everyone_and_new_joiners(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "subj", "Alice")
    alice.plugin["xep_0045"].set_subject(room, "Release planning")
    await asyncio.sleep(0.2)
    _p, subject, _o, _h = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert subject["subject"] == "Release planning"
    assert str(subject["from"]) == f"{room}/Alice"


async def test_participant_cannot_change_subject_by_default(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "subj2", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    bob.plugin["xep_0045"].set_subject(room, "mine now")
    msg = await next_groupchat(bob)
    while msg["type"] != "error":
        msg = await next_groupchat(bob)
    assert msg["error"]["condition"] == "forbidden"


async def test_leaving_sends_unavailable_to_the_others_and_a_temporary_room_ends(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "temp", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    gone = asyncio.get_running_loop().create_future()
    alice.add_event_handler(f"muc::{room}::got_offline", lambda p: gone.done() or gone.set_result(p))
    bob.plugin["xep_0045"].leave_muc(room, "Bob")
    pres = await asyncio.wait_for(gone, WAIT_S)
    assert str(pres["from"]) == f"{room}/Bob" and pres["type"] == "unavailable"
    alice.plugin["xep_0045"].leave_muc(room, "Alice")
    muc = next(m for m in server.modules if m.name == "muc")
    for _ in range(100):
        if room.bare not in {str(j) for j in muc.rooms}:
            break
        await asyncio.sleep(0.05)
    assert str(room) not in {str(j) for j in muc.rooms}


async def test_disconnect_removes_the_occupant(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "drop", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    gone = asyncio.get_running_loop().create_future()
    alice.add_event_handler(f"muc::{room}::got_offline", lambda p: gone.done() or gone.set_result(p))
    bob.abort_connection()
    pres = await asyncio.wait_for(gone, WAIT_S)
    assert str(pres["from"]) == f"{room}/Bob"


async def test_service_is_listed_in_server_disco_items_and_answers_disco_info(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    items = await alice.plugin["xep_0030"].get_items(jid="localhost", timeout=WAIT_S)
    assert SERVICE in {i[0] for i in items["disco_items"]["items"]}
    info = await alice.plugin["xep_0030"].get_info(jid=SERVICE, timeout=WAIT_S)
    assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
    assert ("conference", "text") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}


async def test_two_sessions_of_one_account_share_a_nick_and_both_get_the_messages(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    phone = await muc_client(clients, pki, server, "bob", resource="phone")
    laptop = await muc_client(clients, pki, server, "bob", resource="laptop")
    room = await create_room(alice, "multi", "Alice")
    await phone.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    await laptop.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    alice.send_message(mto=room, mbody="to both", mtype="groupchat")
    for c in (phone, laptop):
        msg = await next_groupchat(c)
        while msg["body"] != "to both":
            msg = await next_groupchat(c)
    # one session leaves: the nick stays for the others
    seen = []
    alice.add_event_handler(f"muc::{room}::got_offline", lambda p: seen.append(p))
    laptop.plugin["xep_0045"].leave_muc(room, "Bob")
    await asyncio.sleep(0.3)
    assert seen == []
    muc = next(m for m in server.modules if m.name == "muc")
    assert "Bob" in next(r for j, r in muc.rooms.items() if str(j) == str(room)).occupants
    phone.plugin["xep_0045"].leave_muc(room, "Bob")
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.05)
    assert seen and str(seen[0]["from"]) == f"{room}/Bob"


async def test_a_new_temporary_room_does_not_inherit_the_archive_of_an_ended_one(server, pki):
    from .muc_support import raw_user

    alice = await raw_user(server, pki, "alice")
    room = "again@conference.localhost"
    try:
        for round_ in ("first", "second"):
            alice.mark()
            await alice.send(f"<presence to='{room}/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
            await alice.read_until(b"<subject")
            await alice.send(f"<iq type='set' id='c-{round_}' to='{room}'><query "
                             "xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/>"
                             f"</query></iq>")
            await alice.read_until(f"id='c-{round_}'")
            await alice.send(f"<message to='{room}' type='groupchat' id='m-{round_}'><body>{round_} life</body>"
                             "</message>")
            await alice.read_until(f"id='m-{round_}'.*?</message>")
            if round_ == "first":
                await alice.send(f"<presence to='{room}/Alice' type='unavailable'/>")
                await alice.read_until(b"type='unavailable'")
        alice.mark()
        await alice.send(f"<iq type='set' id='q' to='{room}'><query xmlns='urn:xmpp:mam:2'/></iq>")
        got = await alice.read_until(b"id='q'.*?</iq>")
        assert b"second life" in got and b"first life" not in got
    finally:
        await alice.close()


async def test_nick_change_with_slixmpp(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "rename", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    await bob.plugin["xep_0045"].set_self_nick(room, "Robert", timeout=WAIT_S)
    await asyncio.sleep(0.2)
    assert set(alice.plugin["xep_0045"].get_roster(room)) == {"Alice", "Robert"}


async def test_history_on_join_with_slixmpp(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "histo", "Alice")
    for i in range(3):
        alice.send_message(mto=room, mbody=f"line {i}", mtype="groupchat")
        await next_groupchat(alice)
    _p, _s, _o, history = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", maxstanzas=2, timeout=WAIT_S)
    assert [m["body"] for m in history] == ["line 1", "line 2"]


async def test_destroy_with_slixmpp_removes_everyone_and_the_room(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "doomed", "Alice", {"muc#roomconfig_persistentroom": True})
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    gone = asyncio.get_running_loop().create_future()
    bob.add_event_handler(f"muc::{room}::self-presence",
                          lambda p: p["type"] == "unavailable" and not gone.done() and gone.set_result(p))
    await alice.plugin["xep_0045"].destroy(room, reason="project over")
    pres = await asyncio.wait_for(gone, WAIT_S)
    assert pres["muc"]["destroy"]["reason"] == "project over"
    muc = next(m for m in server.modules if m.name == "muc")
    assert [r for r in await muc.store.load_rooms(SERVICE) if r.name == "doomed"] == []


async def test_a_join_presence_while_joined_gets_the_room_state_again(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "rejoin", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    # the client forgot it was in the room (as after a reconnect) and joins again
    pres, subject, occupants, _h = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert 110 in pres["muc"]["status_codes"]
    assert {o["from"].resource for o in occupants} == {"Alice", "Bob"}
