"""Invitations (mediated XEP-0045 §7.8.2 and direct XEP-0249), room listing, config form, limits."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import PresenceError

from .muc_support import SERVICE, WAIT_S, create_room, muc_client, next_groupchat, raw_user, room_jid

MUC = "http://jabber.org/protocol/muc"


async def test_mediated_invite_to_a_members_only_room_makes_the_invitee_a_member(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "inv", "Alice", {"muc#roomconfig_membersonly": True,
                                                     "muc#roomconfig_persistentroom": True})
    got = asyncio.get_running_loop().create_future()
    bob.add_event_handler("groupchat_invite", lambda m: got.done() or got.set_result(m))
    alice.plugin["xep_0045"].invite(room, "bob@localhost", reason="join us")
    inv = await asyncio.wait_for(got, WAIT_S)
    assert str(inv["from"]) == str(room)
    assert str(inv["muc"]["invite"]["from"]).startswith("alice@localhost/")
    assert inv["muc"]["invite"]["reason"] == "join us"
    pres, *_ = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert pres["muc"]["affiliation"] == "member"
    muc = next(m for m in server.modules if m.name == "muc")
    [stored] = [r for r in await muc.store.load_rooms(SERVICE) if r.name == "inv"]
    assert stored.affiliations["bob@localhost"][0] == "member"  # committed


async def test_member_cannot_invite_unless_the_room_allows_it(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "inv2", "Alice", {"muc#roomconfig_membersonly": True})
    await alice.plugin["xep_0045"].set_affiliation(room, "member", jid="bob@localhost")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    bob.plugin["xep_0045"].invite(room, "carol@localhost")
    while True:
        msg = await bob.next_message(WAIT_S)
        if msg["type"] == "error":
            break
    assert msg["error"]["condition"] == "forbidden"


async def test_decline_reaches_the_inviter(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    room = "dec@conference.localhost"
    try:
        await alice.send(f"<presence to='{room}/Alice'><x xmlns='{MUC}'/></presence>")
        await alice.read_until(b"<subject")
        alice.mark()
        await bob.send(f"<message to='{room}'><x xmlns='{MUC}#user'><decline to='{alice.jid}'>"
                       "<reason>busy</reason></decline></x></message>")
        got = await alice.read_until(b"</message>")
        assert b"<decline from='bob@localhost'><reason>busy</reason></decline>" in got
    finally:
        await alice.close()
        await bob.close()


async def test_direct_invitation_xep0249_is_relayed_untouched(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    try:
        await bob.send("<presence/>")
        await asyncio.sleep(0.1)
        bob.mark()
        x = "<x xmlns='jabber:x:conference' jid='team@conference.localhost' reason='come'/>"
        await alice.send(f"<message to='{bob.jid}' id='d1'>{x}</message>")
        got = await bob.read_until(b"id='d1'.*?</message>")
        assert x.encode() in got
    finally:
        await alice.close()
        await bob.close()


async def test_public_rooms_are_listed_and_hidden_ones_are_not(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    await create_room(alice, "visible", "Alice", {"muc#roomconfig_roomname": "Visible room"})
    await create_room(alice, "secretroom", "Alice", {"muc#roomconfig_publicroom": False})
    items = await alice.plugin["xep_0030"].get_items(jid=SERVICE, timeout=WAIT_S)
    listed = {i[0]: i[2] for i in items["disco_items"]["items"]}
    assert listed == {f"visible@{SERVICE}": "Visible room"}
    info = await alice.plugin["xep_0030"].get_info(jid=room_jid("secretroom"), timeout=WAIT_S)
    assert "muc_hidden" in info["disco_info"]["features"]


async def test_owner_reads_the_config_form_with_the_encryption_field(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    room = await create_room(alice, "form", "Alice", {"muc#roomconfig_roomdesc": "about"})
    form = await alice.plugin["xep_0045"].get_room_config(room)
    values = form.get_values()
    assert values["muc#roomconfig_roomdesc"] == "about"
    assert values["xmppd#e2ee_policy"] == "none"
    assert set(form.get_fields()["xmppd#e2ee_policy"].get_options()[i]["value"] for i in range(3)) == \
        {"none", "warn", "require"}


async def test_rooms_per_owner_limit(make_server, clients, pki):
    server = await make_server({"modules": {"muc": {"max_rooms_per_owner": 1}}})
    alice = await muc_client(clients, pki, server, "alice")
    await create_room(alice, "one", "Alice")
    with pytest.raises(PresenceError) as err:
        await alice.plugin["xep_0045"].join_muc_wait(room_jid("two"), "Alice", timeout=WAIT_S)
    assert err.value.condition == "not-allowed" and "max_rooms_per_owner" in err.value.text


async def test_joins_per_user_limit(make_server, clients, pki):
    server = await make_server({"modules": {"muc": {"max_joins_per_user": 1}}})
    alice = await muc_client(clients, pki, server, "alice")
    await create_room(alice, "first", "Alice")
    with pytest.raises(PresenceError) as err:
        await alice.plugin["xep_0045"].join_muc_wait(room_jid("second"), "Alice", timeout=WAIT_S)
    assert err.value.condition == "resource-constraint"


async def test_message_rate_per_occupant(make_server, clients, pki):
    server = await make_server({"modules": {"muc": {"message_rate": 0.1, "message_burst": 2}}})
    alice = await muc_client(clients, pki, server, "alice")
    room = await create_room(alice, "fast", "Alice")
    for i in range(3):
        alice.send_message(mto=room, mbody=f"m{i}", mtype="groupchat")
    kinds = [(await next_groupchat(alice))["type"] for _ in range(3)]
    assert kinds == ["groupchat", "groupchat", "error"]


async def test_iq_to_an_occupant_is_forwarded_and_the_answer_comes_back(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    room = "fw@conference.localhost"
    try:
        await alice.send(f"<presence to='{room}/Alice'><x xmlns='{MUC}'/></presence>")
        await alice.read_until(b"<subject")
        await alice.send(f"<iq type='set' id='cfg' to='{room}'><query xmlns='{MUC}#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
        await alice.read_until(b"id='cfg'")
        await bob.send(f"<presence to='{room}/Bob'><x xmlns='{MUC}'/></presence>")
        await bob.read_until(b"<subject")
        alice.mark()
        await bob.send(f"<iq type='get' id='v1' to='{room}/Alice'><query xmlns='jabber:iq:version'/></iq>")
        got = await alice.read_until(b"id='v1'.*?</iq>")
        assert f"from='{room}/Bob'".encode() in got
        bob.mark()
        await alice.send(f"<iq type='result' id='v1' to='{room}/Bob'><query xmlns='jabber:iq:version'>"
                         "<name>raw</name></query></iq>")
        got = await bob.read_until(b"id='v1'.*?</iq>")
        assert f"from='{room}/Alice'".encode() in got and b"<name>raw</name>" in got
    finally:
        await alice.close()
        await bob.close()


def test_a_service_host_that_is_a_served_domain_is_refused(tmp_path, pki):
    from xmppd.config import ConfigError, parse_config
    from xmppd.server import Server

    from .harness import base_config, deep_merge

    data = deep_merge(base_config(tmp_path, pki), {"modules": {"muc": {"host": "@HOST@"}}})
    with pytest.raises(ConfigError) as err:
        Server(parse_config(data))
    assert "modules.muc.host" in str(err.value)
