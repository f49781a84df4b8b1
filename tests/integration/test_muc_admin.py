"""Affiliations, roles, member lists, members-only / non-anonymous / password / max users, persistence."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError, PresenceError

from .muc_support import WAIT_S, create_room, muc_client, raw_user, status_codes

MEMBERS_ONLY = {"muc#roomconfig_membersonly": True, "muc#roomconfig_whois": "anyone",
                "muc#roomconfig_persistentroom": True, "muc#roomconfig_publicroom": False}


async def test_members_only_room_refuses_non_members_with_registration_required(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "team", "Alice", MEMBERS_ONLY)
    with pytest.raises(PresenceError) as err:
        await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert err.value.condition == "registration-required"
    await alice.plugin["xep_0045"].set_affiliation(room, "member", jid="bob@localhost")
    pres, *_ = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert pres["muc"]["affiliation"] == "member"
    assert 100 in pres["muc"]["status_codes"]  # non-anonymous


async def test_member_list_is_readable_by_members_of_a_non_anonymous_members_only_room(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    carol = await muc_client(clients, pki, server, "carol")
    room = await create_room(alice, "omemo-team", "Alice", MEMBERS_ONLY)
    for who in ("bob@localhost", "carol@localhost"):
        await alice.plugin["xep_0045"].set_affiliation(room, "member", jid=who)
    members = await bob.plugin["xep_0045"].get_affiliation_list(room, "member")
    assert sorted(str(j) for j in members) == ["bob@localhost", "carol@localhost"]
    owners = await carol.plugin["xep_0045"].get_affiliation_list(room, "owner")
    assert [str(j) for j in owners] == ["alice@localhost"]
    with pytest.raises(IqError) as err:  # who is banned stays with the admins
        await bob.plugin["xep_0045"].get_affiliation_list(room, "outcast")
    assert err.value.condition == "forbidden"
    info = await bob.plugin["xep_0030"].get_info(jid=room, timeout=WAIT_S)
    assert {"muc_nonanonymous", "muc_membersonly", "http://jabber.org/protocol/muc#self-ping-optimization",
            "urn:xmpp:occupant-id:0", "urn:xmpp:mam:2"} <= set(info["disco_info"]["features"])


async def test_member_list_is_not_readable_by_members_of_a_semi_anonymous_room(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "semi", "Alice", {"muc#roomconfig_membersonly": True})
    await alice.plugin["xep_0045"].set_affiliation(room, "member", jid="bob@localhost")
    with pytest.raises(IqError) as err:
        await bob.plugin["xep_0045"].get_affiliation_list(room, "member")
    assert err.value.condition == "forbidden"


async def test_non_anonymous_room_shows_real_jids_to_participants(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "open-jids", "Alice", {"muc#roomconfig_whois": "anyone"})
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert str(bob.plugin["xep_0045"].get_jid_property(room, "Alice", "jid")).startswith("alice@localhost/")


async def test_semi_anonymous_room_hides_real_jids_from_participants(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "hidden-jids", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert not bob.plugin["xep_0045"].get_jid_property(room, "Alice", "jid")
    await asyncio.sleep(0.1)  # the moderator sees bob's real JID
    assert str(alice.plugin["xep_0045"].get_jid_property(room, "Bob", "jid")).startswith("bob@localhost/")


async def test_kick_sends_307_and_ban_sends_301_and_keeps_the_user_out(server, pki):
    alice = await raw_user(server, pki, "alice")
    bob = await raw_user(server, pki, "bob")
    room = "kb@conference.localhost"
    try:
        await alice.send(f"<presence to='{room}/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        await alice.read_until(b"<subject")
        await alice.send(f"<iq type='set' id='c1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
        await alice.read_until(b"id='c1'")
        await bob.send(f"<presence to='{room}/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        await bob.read_until(b"<subject")
        bob.mark()
        await alice.send(f"<iq type='set' id='k1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                         "<item nick='Bob' role='none'><reason>spam</reason></item></query></iq>")
        got = await bob.read_until(b"type='unavailable'.*?</presence>")
        assert {307, 110} <= status_codes(got) and b"<reason>spam</reason>" in got
        await bob.send(f"<presence to='{room}/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        await bob.read_until(b"<subject")
        bob.mark()
        await alice.send(f"<iq type='set' id='b1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                         "<item affiliation='outcast' jid='bob@localhost'/></query></iq>")
        got = await bob.read_until(b"type='unavailable'.*?</presence>")
        assert 301 in status_codes(got) and b"affiliation='outcast'" in got
        bob.mark()
        await bob.send(f"<presence to='{room}/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        got = await bob.read_until(b"type='error'.*?</presence>")
        assert b"<forbidden " in got and b"<text " in got
    finally:
        await alice.close()
        await bob.close()


async def test_voice_in_a_moderated_room(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "mod", "Alice", {"muc#roomconfig_moderatedroom": True})
    pres, *_ = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert pres["muc"]["role"] == "visitor"
    bob.send_message(mto=room, mbody="can I talk?", mtype="groupchat")
    from .muc_support import next_groupchat
    msg = await next_groupchat(bob)
    assert msg["type"] == "error" and msg["error"]["condition"] == "forbidden"
    await alice.plugin["xep_0045"].set_role(room, "Bob", "participant")
    await asyncio.sleep(0.1)
    bob.send_message(mto=room, mbody="now I can", mtype="groupchat")
    msg = await next_groupchat(alice)
    while msg["body"] != "now I can":
        msg = await next_groupchat(alice)


async def test_password_protected_room_needs_the_password(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "secret", "Alice", {"muc#roomconfig_passwordprotectedroom": True,
                                                        "muc#roomconfig_roomsecret": "s3cret"})
    with pytest.raises(PresenceError) as err:
        await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert err.value.condition == "not-authorized"
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", password="s3cret", timeout=WAIT_S)


async def test_full_room_refuses_with_service_unavailable(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "tiny", "Alice", {"muc#roomconfig_maxusers": "1"})
    with pytest.raises(PresenceError) as err:
        await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    assert err.value.condition == "service-unavailable"


async def test_the_last_owner_cannot_be_removed(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    room = await create_room(alice, "owned", "Alice")
    with pytest.raises(IqError) as err:
        await alice.plugin["xep_0045"].set_affiliation(room, "none", jid="alice@localhost")
    assert err.value.condition == "conflict"


async def test_participant_cannot_change_affiliations(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    bob = await muc_client(clients, pki, server, "bob")
    room = await create_room(alice, "perm", "Alice")
    await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
    with pytest.raises(IqError) as err:
        await bob.plugin["xep_0045"].set_affiliation(room, "outcast", jid="alice@localhost")
    assert err.value.condition == "forbidden"


async def test_persistent_room_config_and_members_survive_a_restart(make_server, clients, pki, tmp_path):
    from .harness import start_server

    d = tmp_path / "persist"
    d.mkdir()
    server = await start_server(d, pki)
    try:
        alice = await muc_client(clients, pki, server, "alice")
        room = await create_room(alice, "durable", "Alice", dict(MEMBERS_ONLY, **{
            "muc#roomconfig_roomname": "Durable team"}))
        await alice.plugin["xep_0045"].set_affiliation(room, "member", jid="bob@localhost")
        alice.plugin["xep_0045"].set_subject(room, "kept")
        await asyncio.sleep(0.3)
        await alice.close()
    finally:
        await server.stop()
    server = await start_server(d, pki)
    try:
        bob = await muc_client(clients, pki, server, "bob")
        pres, subject, _o, _h = await bob.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT_S)
        assert pres["muc"]["affiliation"] == "member"
        assert subject["subject"] == "kept"
        info = await bob.plugin["xep_0030"].get_info(jid=room, timeout=WAIT_S)
        assert "muc_persistent" in info["disco_info"]["features"]
        assert ("conference", "text", None, "Durable team") in info["disco_info"]["identities"]
        await bob.close()
    finally:
        await server.stop()


async def test_registering_with_an_open_room_makes_a_member_with_a_reserved_nick(server, pki):
    alice, bob, carol = [await raw_user(server, pki, u) for u in ("alice", "bob", "carol")]
    room = "reg@conference.localhost"
    muc = "http://jabber.org/protocol/muc"
    try:
        await alice.send(f"<presence to='{room}/Alice'><x xmlns='{muc}'/></presence>")
        await alice.read_until(b"<subject")
        await alice.send(f"<iq type='set' id='cfg' to='{room}'><query xmlns='{muc}#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
        await alice.read_until(b"id='cfg'")
        await bob.send(f"<iq type='get' id='r1' to='{room}'><query xmlns='jabber:iq:register'/></iq>")
        got = await bob.read_until(b"id='r1'.*?</iq>")
        assert b"var='muc#register_roomnick'" in got
        bob.mark()
        await bob.send(f"<iq type='set' id='r2' to='{room}'><query xmlns='jabber:iq:register'>"
                       "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                       "<value>http://jabber.org/protocol/muc#register</value></field>"
                       "<field var='muc#register_roomnick'><value>Bobby</value></field></x></query></iq>")
        assert b"type='result'" in await bob.read_until(b"id='r2'.*?>")
        bob.mark()
        await bob.send(f"<iq type='get' id='n1' to='{room}'><query xmlns='http://jabber.org/protocol/disco#info' "
                       "node='x-roomuser-item'/></iq>")
        assert b"name='Bobby'" in await bob.read_until(b"id='n1'.*?</iq>")
        # the nick is reserved: carol cannot take it
        await carol.send(f"<presence to='{room}/Bobby'><x xmlns='{muc}'/></presence>")
        got = await carol.read_until(b"type='error'.*?</presence>")
        assert b"<conflict " in got
    finally:
        for c in (alice, bob, carol):
            await c.close()


async def test_voice_request_reaches_the_moderator_and_approval_gives_voice(server, pki):
    alice, bob = [await raw_user(server, pki, u) for u in ("alice", "bob")]
    room = "vr@conference.localhost"
    muc = "http://jabber.org/protocol/muc"
    try:
        await alice.send(f"<presence to='{room}/Alice'><x xmlns='{muc}'/></presence>")
        await alice.read_until(b"<subject")
        await alice.send(f"<iq type='set' id='cfg' to='{room}'><query xmlns='{muc}#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_moderatedroom'>"
                         "<value>1</value></field></x></query></iq>")
        await alice.read_until(b"id='cfg'")
        await bob.send(f"<presence to='{room}/Bob'><x xmlns='{muc}'/></presence>")
        assert b"role='visitor'" in await bob.read_until(b"<subject")
        alice.mark()
        await bob.send(f"<message to='{room}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                       f"<value>{muc}#request</value></field><field var='muc#role'><value>participant</value>"
                       "</field></x></message>")
        got = await alice.read_until(b"muc#request_allow.*?</message>")
        assert b"<value>Bob</value>" in got
        bob.mark()
        await alice.send(f"<message to='{room}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                         f"<value>{muc}#request</value></field><field var='muc#role'><value>participant</value>"
                         "</field><field var='muc#roomnick'><value>Bob</value></field>"
                         "<field var='muc#request_allow'><value>true</value></field></x></message>")
        got = await bob.read_until(b"role='participant'.*?</presence>")
        assert f"from='{room}/Bob'".encode() in got
    finally:
        await alice.close()
        await bob.close()


async def test_the_role_follows_an_affiliation_change(server, pki):
    alice, bob = [await raw_user(server, pki, u) for u in ("alice", "bob")]
    room = "roles@conference.localhost"
    muc = "http://jabber.org/protocol/muc"
    try:
        await alice.send(f"<presence to='{room}/Alice'><x xmlns='{muc}'/></presence>")
        await alice.read_until(b"<subject")
        await alice.send(f"<iq type='set' id='cfg' to='{room}'><query xmlns='{muc}#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
        await alice.read_until(b"id='cfg'")
        await bob.send(f"<presence to='{room}/Bob'><x xmlns='{muc}'/></presence>")
        await bob.read_until(b"<subject")
        for aff, role in (("admin", "moderator"), ("member", "participant")):
            bob.mark()
            await alice.send(f"<iq type='set' id='a-{aff}' to='{room}'><query xmlns='{muc}#admin'>"
                             f"<item affiliation='{aff}' jid='bob@localhost'/></query></iq>")
            got = await bob.read_until(f"affiliation='{aff}' role='{role}'.*?</presence>")
            assert b"code='110'" in got
    finally:
        await alice.close()
        await bob.close()
