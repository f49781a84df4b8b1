"""Discussion history on join, the room archive (XEP-0313 on the room JID), stanza ids, occupant ids, self-ping."""

from __future__ import annotations

import datetime as _dt
import re

from .muc_support import raw_user

MUC = "http://jabber.org/protocol/muc"
ROOM = "hist@conference.localhost"


async def _room_with_messages(server, pki, n: int):
    alice = await raw_user(server, pki, "alice")
    await alice.send(f"<presence to='{ROOM}/Alice'><x xmlns='{MUC}'/></presence>")
    await alice.read_until(b"<subject")
    await alice.send(f"<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                     "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
    await alice.read_until(b"id='cfg'")
    for i in range(n):
        await alice.send(f"<message to='{ROOM}' type='groupchat' id='m{i}'><body>msg {i}</body></message>")
        await alice.read_until(f"id='m{i}'.*?</message>")
    return alice


async def test_history_on_join_respects_maxstanzas_with_delay_from_the_room(server, pki):
    alice = await _room_with_messages(server, pki, 5)
    bob = await raw_user(server, pki, "bob")
    try:
        await bob.send(f"<presence to='{ROOM}/Bob'><x xmlns='{MUC}'><history maxstanzas='2'/></x></presence>")
        got = await bob.read_until(b"<subject")
        bodies = re.findall(rb"<body>(msg \d)</body>", got)
        assert bodies == [b"msg 3", b"msg 4"]
        assert f"<delay xmlns='urn:xmpp:delay' from='{ROOM}'".encode() in got
        assert got.index(b"msg 4") < got.index(b"<subject")  # history before the subject (§7.2.15)
    finally:
        await alice.close()
        await bob.close()


async def test_history_maxstanzas_zero_and_since_in_the_future_send_none(server, pki):
    alice = await _room_with_messages(server, pki, 2)
    bob = await raw_user(server, pki, "bob")
    carol = await raw_user(server, pki, "carol")
    try:
        await bob.send(f"<presence to='{ROOM}/Bob'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>")
        assert b"<body>" not in await bob.read_until(b"<subject")
        future = (_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        await carol.send(f"<presence to='{ROOM}/Carol'><x xmlns='{MUC}'><history since='{future}'/></x></presence>")
        assert b"<body>" not in await carol.read_until(b"<subject")
    finally:
        await alice.close()
        await bob.close()
        await carol.close()


async def test_history_seconds_limits_by_age(server, pki):
    alice = await _room_with_messages(server, pki, 2)
    bob = await raw_user(server, pki, "bob")
    try:
        await bob.send(f"<presence to='{ROOM}/Bob'><x xmlns='{MUC}'><history seconds='3600'/></x></presence>")
        assert len(re.findall(rb"<body>msg", await bob.read_until(b"<subject"))) == 2
    finally:
        await alice.close()
        await bob.close()


async def test_room_archive_query_returns_the_messages_with_the_stanza_id_occupants_got(server, pki):
    alice = await _room_with_messages(server, pki, 3)
    try:
        alice.mark()
        await alice.send(f"<message to='{ROOM}' type='groupchat' id='last'><body>archived</body></message>")
        got = await alice.read_until(b"id='last'.*?</message>")
        sid = re.search(rf"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='([^']+)'/>".encode(), got).group(1)
        alice.mark()
        await alice.send(f"<iq type='set' id='q1' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='x'>"
                         "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max></set></query></iq>")
        got = await alice.read_until(b"id='q1'.*?</iq>")
        assert re.findall(rb"<body>([^<]+)</body>", got) == [b"msg 0", b"msg 1", b"msg 2", b"archived"]
        assert f"<result xmlns='urn:xmpp:mam:2' queryid='x' id='{sid.decode()}'>".encode() in got
        assert f"from='{ROOM}'".encode() in got and b"<fin xmlns='urn:xmpp:mam:2' complete='true'" in got
        assert f"from='{ROOM}/Alice'".encode() in got  # the archived message as the room sent it
    finally:
        await alice.close()


async def test_room_archive_pages_backwards_with_before(server, pki):
    alice = await _room_with_messages(server, pki, 4)
    try:
        alice.mark()
        await alice.send(f"<iq type='set' id='q2' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'>"
                         "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set></query></iq>")
        got = await alice.read_until(b"id='q2'.*?</iq>")
        assert re.findall(rb"<body>([^<]+)</body>", got) == [b"msg 2", b"msg 3"]
        assert b"<count>4</count>" in got
    finally:
        await alice.close()


async def test_members_only_archive_is_closed_to_outsiders(server, pki):
    alice = await raw_user(server, pki, "alice")
    bob = await raw_user(server, pki, "bob")
    room = "closedarch@conference.localhost"
    try:
        await alice.send(f"<presence to='{room}/Alice'><x xmlns='{MUC}'/></presence>")
        await alice.read_until(b"<subject")
        await alice.send(f"<iq type='set' id='cfg' to='{room}'><query xmlns='{MUC}#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_membersonly'>"
                         "<value>1</value></field></x></query></iq>")
        await alice.read_until(b"id='cfg'")
        await bob.send(f"<iq type='set' id='q3' to='{room}'><query xmlns='urn:xmpp:mam:2'/></iq>")
        got = await bob.read_until(b"id='q3'.*?</iq>")
        assert b"<forbidden " in got
    finally:
        await alice.close()
        await bob.close()


async def test_archive_and_history_survive_a_restart(make_server, pki, tmp_path):
    from .harness import start_server

    d = tmp_path / "arch"
    d.mkdir()
    server = await start_server(d, pki)
    alice = await raw_user(server, pki, "alice")
    await alice.send(f"<presence to='{ROOM}/Alice'><x xmlns='{MUC}'/></presence>")
    await alice.read_until(b"<subject")
    await alice.send(f"<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                     "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'>"
                     "<value>1</value></field></x></query></iq>")
    await alice.read_until(b"id='cfg'")
    await alice.send(f"<message to='{ROOM}' type='groupchat' id='k'><body>before restart</body></message>")
    await alice.read_until(b"id='k'.*?</message>")
    await alice.close()
    await server.stop()
    server = await start_server(d, pki)
    bob = await raw_user(server, pki, "bob")
    try:
        await bob.send(f"<presence to='{ROOM}/Bob'><x xmlns='{MUC}'/></presence>")
        assert b"<body>before restart</body>" in await bob.read_until(b"<subject")
    finally:
        await bob.close()
        await server.stop()


async def test_occupant_id_is_stable_across_rejoins_and_forged_ids_are_replaced(server, pki):
    alice = await _room_with_messages(server, pki, 0)
    try:
        alice.mark()
        await alice.send(f"<message to='{ROOM}' type='groupchat' id='f1'><body>x</body>"
                         "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>")
        got = await alice.read_until(b"id='f1'.*?</message>")
        assert b"id='forged'" not in got
        first = re.search(rb"<occupant-id xmlns='urn:xmpp:occupant-id:0' id='([^']+)'/>", got).group(1)
        await alice.send(f"<presence to='{ROOM}/Alice' type='unavailable'/>")
        alice.mark()
        await alice.send(f"<presence to='{ROOM}/Alice2'><x xmlns='{MUC}'/></presence>")
        got = await alice.read_until(b"<subject")
        assert first in got
    finally:
        await alice.close()


async def test_self_ping_answers_result_when_joined_and_not_acceptable_when_not(server, pki):
    alice = await _room_with_messages(server, pki, 0)
    bob = await raw_user(server, pki, "bob")
    try:
        alice.mark()
        await alice.send(f"<iq type='get' id='sp1' to='{ROOM}/Alice'><ping xmlns='urn:xmpp:ping'/></iq>")
        got = await alice.read_until(b"id='sp1'.*?(/>|</iq>)")
        assert b"type='result'" in got
        await bob.send(f"<iq type='get' id='sp2' to='{ROOM}/Bob'><ping xmlns='urn:xmpp:ping'/></iq>")
        got = await bob.read_until(b"id='sp2'.*?</iq>")
        assert b"type='error'" in got and b"<not-acceptable " in got
    finally:
        await alice.close()
        await bob.close()


async def test_groupchat_is_acknowledged_only_after_the_archive_row_is_committed(server, pki):
    alice = await _room_with_messages(server, pki, 0)
    try:
        await alice.send("<enable xmlns='urn:xmpp:sm:3'/>")
        await alice.read_until(b"<enabled")
        muc = next(m for m in server.modules if m.name == "muc")
        committed_before = muc.archive.writer.rows_committed
        alice.mark()
        await alice.send(f"<message to='{ROOM}' type='groupchat' id='ack'><body>durable</body></message>"
                         "<r xmlns='urn:xmpp:sm:3'/>")
        got = await alice.read_until(b"<a xmlns='urn:xmpp:sm:3' h='1'")
        assert muc.archive.writer.rows_committed == committed_before + 1
        assert got.index(b"<body>durable</body>") < got.index(b"<a xmlns")
    finally:
        await alice.close()
