"""Exact status codes and stanza shapes on the wire (raw XML over real TLS)."""

from __future__ import annotations

import re

from .muc_support import raw_user, status_codes

MUC = "http://jabber.org/protocol/muc"
ROOM = "codes@conference.localhost"


async def _join(c, nick: str, room: str = ROOM, extra: str = "") -> bytes:
    c.mark()
    await c.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>{extra}</x></presence>")
    return await c.read_until(b"<subject")


def _self_presence(data: bytes, room: str, nick: str) -> bytes:
    for m in re.finditer(rb"<presence[^>]*>.*?</presence>", data, re.S):
        p = m.group(0)
        if f"from='{room}/{nick}'".encode() in p and b"code='110'" in p:
            return p
    raise AssertionError(f"no self-presence in {data!r}")


async def _instant(c, room: str = ROOM, fields: str = "") -> None:
    c.mark()
    await c.send(f"<iq type='set' id='cfg' to='{room}'><query xmlns='{MUC}#owner'>"
                 f"<x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>")
    got = await c.read_until(b"id='cfg'.*?(</iq>|/>)")
    assert b"type='result'" in got, got


async def test_creating_a_room_self_presence_has_110_and_201_and_170(server, pki):
    alice = await raw_user(server, pki, "alice")
    try:
        got = _self_presence(await _join(alice, "Alice"), ROOM, "Alice")
        assert status_codes(got) == {110, 201, 170}
        assert b"affiliation='owner'" in got and b"role='moderator'" in got
        assert b"<occupant-id xmlns='urn:xmpp:occupant-id:0'" in got
    finally:
        await alice.close()


async def test_entering_a_non_anonymous_room_gives_100_and_the_real_jid(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    try:
        await _join(alice, "Alice")
        await _instant(alice, fields="<field var='muc#roomconfig_whois'><value>anyone</value></field>")
        got = await _join(bob, "Bob")
        me = _self_presence(got, ROOM, "Bob")
        assert status_codes(me) == {100, 110, 170}
        assert f"jid='{bob.jid}'".encode() in me
        # alice's presence came first, with her real JID (non-anonymous)
        assert got.index(f"from='{ROOM}/Alice'".encode()) < got.index(f"from='{ROOM}/Bob'".encode())
        assert f"jid='{alice.jid}'".encode() in got
    finally:
        await alice.close()
        await bob.close()


async def test_nick_normalised_by_the_service_gives_210(server, pki):
    alice = await raw_user(server, pki, "alice")
    try:
        # "Ａlice" (fullwidth A) is mapped to "Alice" by PRECIS width mapping
        got = await _join(alice, "\uff21lice")
        me = _self_presence(got, ROOM, "Alice")
        assert 210 in status_codes(me)
    finally:
        await alice.close()


async def test_nick_change_sends_303_unavailable_with_the_new_nick_then_available(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    try:
        await _join(alice, "Alice")
        await _instant(alice)
        await _join(bob, "Bob")
        alice.mark()
        await bob.send(f"<presence to='{ROOM}/Robert'/>")
        got = await alice.read_until(f"from='{ROOM}/Robert'.*?</presence>")
        unavailable = re.search(rb"<presence[^>]*type='unavailable'[^>]*>.*?</presence>", got, re.S).group(0)
        assert f"from='{ROOM}/Bob'".encode() in unavailable
        assert 303 in status_codes(unavailable) and b"nick='Robert'" in unavailable
        mine = await bob.read_until(f"from='{ROOM}/Robert'.*?</presence>")
        assert {303, 110} <= status_codes(mine)
    finally:
        await alice.close()
        await bob.close()


async def test_presence_without_nick_is_jid_malformed(server, pki):
    alice = await raw_user(server, pki, "alice")
    try:
        alice.mark()
        await alice.send(f"<presence to='{ROOM}'><x xmlns='{MUC}'/></presence>")
        got = await alice.read_until(b"</presence>")
        assert b"type='error'" in got and b"<jid-malformed " in got and b"<x xmlns='" + MUC.encode() + b"'/>" in got
    finally:
        await alice.close()


async def test_making_a_room_members_only_removes_non_members_with_322(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    try:
        await _join(alice, "Alice")
        await _instant(alice)
        await _join(bob, "Bob")
        bob.mark()
        await _instant(alice, fields="<field var='muc#roomconfig_membersonly'><value>1</value></field>")
        got = await bob.read_until(b"type='unavailable'.*?</presence>")
        assert {322, 110} <= status_codes(got)
    finally:
        await alice.close()
        await bob.close()


async def test_removing_a_member_of_a_members_only_room_removes_the_occupant_with_321(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    try:
        await _join(alice, "Alice")
        await _instant(alice, fields="<field var='muc#roomconfig_membersonly'><value>1</value></field>")
        await alice.send(f"<iq type='set' id='m1' to='{ROOM}'><query xmlns='{MUC}#admin'>"
                         "<item affiliation='member' jid='bob@localhost'/></query></iq>")
        await alice.read_until(b"id='m1'")
        await _join(bob, "Bob")
        bob.mark()
        await alice.send(f"<iq type='set' id='m2' to='{ROOM}'><query xmlns='{MUC}#admin'>"
                         "<item affiliation='none' jid='bob@localhost'/></query></iq>")
        got = await bob.read_until(b"type='unavailable'.*?</presence>")
        assert 321 in status_codes(got)
    finally:
        await alice.close()
        await bob.close()


async def test_config_change_is_announced_with_104_and_172(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    try:
        await _join(alice, "Alice")
        await _instant(alice)
        await _join(bob, "Bob")
        bob.mark()
        await _instant(alice, fields="<field var='muc#roomconfig_whois'><value>anyone</value></field>")
        got = await bob.read_until(b"<message.*?</message>")
        assert {104, 172} <= status_codes(got)
    finally:
        await alice.close()
        await bob.close()


async def test_destroy_sends_the_reason_and_alternate_venue_to_every_occupant(server, pki):
    alice, bob = await raw_user(server, pki, "alice"), await raw_user(server, pki, "bob")
    try:
        await _join(alice, "Alice")
        await _instant(alice)
        await _join(bob, "Bob")
        bob.mark()
        await alice.send(f"<iq type='set' id='d1' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                         "<destroy jid='new@conference.localhost'><reason>moved</reason></destroy></query></iq>")
        got = await bob.read_until(b"type='unavailable'.*?</presence>")
        assert b"<destroy jid='new@conference.localhost'><reason>moved</reason></destroy>" in got
        await alice.read_until(b"id='d1'")
        muc = next(m for m in server.modules if m.name == "muc")
        assert not muc.rooms
    finally:
        await alice.close()
        await bob.close()


async def test_server_shutdown_tells_occupants_332(make_server, pki):
    server = await make_server()
    alice = await raw_user(server, pki, "alice")
    try:
        await _join(alice, "Alice")
        alice.mark()
        await server.stop()
        got = await alice.read_to_eof()
        assert 332 in status_codes(got)
    finally:
        await alice.close()
