"""Encrypted group chat: per-room E2EE policy, and three real OMEMO clients in a members-only room.

* Three slixmpp-omemo clients in a members-only, non-anonymous room (what OMEMO
  group chats need: real JIDs and a member list members can read) exchange a
  message that each of them decrypts; the plaintext is in no database file,
  log record or archive row, while a plaintext control in an unencrypted room is.
* Under the room policy ``require`` a plaintext body bounces to its sender with
  policy-violation and a <text>; OMEMO, chat states, markers and receipts pass.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from .muc_support import WAIT_S, create_room, muc_client, next_groupchat, raw_user, room_jid, submit_config
from .test_omemo_relay import _omemo_plugin, found_in, server_root, unique, xmppd_log_text

REQUIRE = {"xmppd#e2ee_policy": "require"}
OMEMO_BODY = ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>a2V5</key>"
              "<iv>aXY=</iv></header><payload>cGF5bG9hZA==</payload></encrypted>"
              "<body>I sent you an OMEMO encrypted message.</body>")


async def _raw_room(server, pki, config: str = "") -> tuple:
    alice = await raw_user(server, pki, "alice")
    bob = await raw_user(server, pki, "bob")
    room = "crypt@conference.localhost"
    await alice.send(f"<presence to='{room}/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    await alice.read_until(b"<subject")
    await alice.send(f"<iq type='set' id='c1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                     f"<x xmlns='jabber:x:data' type='submit'>{config}</x></query></iq>")
    await alice.read_until(b"id='c1'")
    await bob.send(f"<presence to='{room}/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    await bob.read_until(b"<subject")
    alice.mark()
    bob.mark()
    return alice, bob, room


REQUIRE_FIELD = "<field var='xmppd#e2ee_policy'><value>require</value></field>"


async def test_require_room_bounces_plaintext_with_policy_violation(server, pki):
    alice, bob, room = await _raw_room(server, pki, REQUIRE_FIELD)
    try:
        await bob.send(f"<message to='{room}' type='groupchat' id='p1'><body>plain secret</body></message>")
        got = await bob.read_until(b"id='p1'.*?</message>")
        assert b"type='error'" in got and b"<policy-violation " in got
        assert b"requires end-to-end encryption" in got
        await bob.send(f"<message to='{room}' type='groupchat' id='o1'>{OMEMO_BODY}</message>")
        got = await alice.read_until(b"id='o1'.*?</message>")
        assert OMEMO_BODY.encode() in got  # relayed byte for byte
        assert b"plain secret" not in got
        for extra, ident in (("<active xmlns='http://jabber.org/protocol/chatstates'/>", "cs"),
                             ("<displayed xmlns='urn:xmpp:chat-markers:0' id='o1'/>", "mk"),
                             ("<received xmlns='urn:xmpp:receipts' id='o1'/>", "rc")):
            await bob.send(f"<message to='{room}' type='groupchat' id='{ident}'>{extra}</message>")
            got = await alice.read_until(f"id='{ident}'.*?</message>")
            assert extra.encode() in got
    finally:
        await alice.close()
        await bob.close()


async def test_room_disco_info_shows_the_encryption_level(server, clients, pki):
    alice = await muc_client(clients, pki, server, "alice")
    room = await create_room(alice, "lvl", "Alice", REQUIRE)
    info = await alice.plugin["xep_0030"].get_info(jid=room, timeout=WAIT_S)
    form = info["disco_info"]["form"]
    assert form.get_values()["xmppd#e2ee_policy"] == "require"
    plain = await create_room(alice, "lvl2", "Alice")
    info = await alice.plugin["xep_0030"].get_info(jid=plain, timeout=WAIT_S)
    assert info["disco_info"]["form"].get_values()["xmppd#e2ee_policy"] == "none"


async def test_owner_cannot_lower_the_room_level_below_the_service_floor(make_server, clients, pki):
    server = await make_server({"modules": {"muc": {"e2ee_policy": "require"}}})
    alice = await muc_client(clients, pki, server, "alice")
    room = room_jid("floor")
    await alice.plugin["xep_0045"].join_muc_wait(room, "Alice", timeout=WAIT_S)
    with pytest.raises(IqError) as err:
        await submit_config(alice, room, {"xmppd#e2ee_policy": "none"})
    assert err.value.condition == "not-acceptable" and "requires" in err.value.text
    await submit_config(alice, room)  # instant room: the floor applies
    info = await alice.plugin["xep_0030"].get_info(jid=room, timeout=WAIT_S)
    assert info["disco_info"]["form"].get_values()["xmppd#e2ee_policy"] == "require"


async def test_domain_at_require_is_a_floor_for_its_rooms(make_server, clients, pki):
    server = await make_server({"modules": {"e2ee_policy": {"domains": {"localhost": "require"}}}})
    alice = await muc_client(clients, pki, server, "alice")
    room = room_jid("dom")
    await alice.plugin["xep_0045"].join_muc_wait(room, "Alice", timeout=WAIT_S)
    with pytest.raises(IqError) as err:
        await submit_config(alice, room, {"xmppd#e2ee_policy": "warn"})
    assert err.value.condition == "not-acceptable" and "localhost" in err.value.text


async def test_create_encrypted_only_rooms_start_at_require_and_stay_there(make_server, clients, pki):
    server = await make_server({"modules": {"muc": {"create_encrypted_only": True}}})
    alice = await muc_client(clients, pki, server, "alice")
    room = await create_room(alice, "enc", "Alice")
    info = await alice.plugin["xep_0030"].get_info(jid=room, timeout=WAIT_S)
    assert info["disco_info"]["form"].get_values()["xmppd#e2ee_policy"] == "require"
    with pytest.raises(IqError) as err:
        await submit_config(alice, room, {"xmppd#e2ee_policy": "none"})
    assert err.value.condition == "not-acceptable" and "created encrypted-only" in err.value.text


async def test_warn_room_delivers_plaintext_and_tells_the_sender_once(server, pki):
    alice, bob, room = await _raw_room(server, pki, "<field var='xmppd#e2ee_policy'><value>warn</value></field>")
    try:
        await bob.send(f"<message to='{room}' type='groupchat' id='w1'><body>hi</body></message>")
        await alice.read_until(b"id='w1'.*?</message>")
        got = await bob.read_until(b"type='headline'.*?</message>")
        assert b"not end-to-end encrypted" in got
    finally:
        await alice.close()
        await bob.close()


# ------------------------------------------------------------------ three real OMEMO clients
async def _omemo_member(clients, pki, server, user: str):
    c = await muc_client(clients, pki, server, user)
    ready = asyncio.get_running_loop().create_future()
    c.add_event_handler("omemo_initialized", lambda _e, f=ready: f.done() or f.set_result(True))
    c.register_plugin("xep_0384")
    await asyncio.wait_for(ready, WAIT_S * 2)
    return c


@pytest.mark.parametrize("policy", ["none", "require"])
async def test_three_omemo_clients_in_a_members_only_room_decrypt_what_the_server_never_sees(
        make_server, clients, pki, caplog, policy):
    pytest.importorskip("slixmpp_omemo")
    caplog.set_level(logging.DEBUG)
    _omemo_plugin()
    server = await make_server()
    root = server_root(server)
    secret, control = unique("OMEMO-GROUP-SECRET"), unique("PLAINTEXT-GROUP-CONTROL")
    users = ("alice", "bob", "carol")
    made = {u: await _omemo_member(clients, pki, server, u) for u in users}
    alice = made["alice"]
    room = await create_room(alice, "omemo", "alice", {
        "muc#roomconfig_membersonly": True, "muc#roomconfig_whois": "anyone",
        "muc#roomconfig_persistentroom": True, "xmppd#e2ee_policy": policy})
    for u in ("bob", "carol"):
        await alice.plugin["xep_0045"].set_affiliation(room, "member", jid=f"{u}@localhost")
    for u in ("bob", "carol"):
        await made[u].plugin["xep_0045"].join_muc_wait(room, u, timeout=WAIT_S)
    # every client knows every member's real JID (non-anonymous room) and reads the member list
    members = await made["bob"].plugin["xep_0045"].get_affiliation_list(room, "member")
    assert {str(j) for j in members} == {"bob@localhost", "carol@localhost"}
    await asyncio.sleep(0.2)

    msg = alice.make_message(mto=room, mtype="groupchat")
    msg["body"] = secret
    recipients = {JID(f"{u}@localhost") for u in ("bob", "carol")}
    encrypted, errors = await alice.plugin["xep_0384"].encrypt_message(msg, recipients)
    assert encrypted is not None and not errors, errors
    encrypted.send()
    for u in users:
        c = made[u]
        while True:
            got = await next_groupchat(c)
            if c.plugin["xep_0384"].is_encrypted(got):
                break
        assert secret not in str(got)
        decrypted, _device = await c.plugin["xep_0384"].decrypt_message(got)
        assert decrypted["body"] == secret, u  # the sender's reflection too (plugin cache)

    if policy == "require":  # the same room refuses a plaintext, with the reason
        alice.send_message(mto=room, mbody=unique("REFUSED"), mtype="groupchat")
        while True:
            got = await next_groupchat(alice)
            if got["type"] == "error":
                break
        # slixmpp 1.17's Error.conditions lacks RFC 6120's policy-violation: read the XML
        assert got.xml.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}policy-violation") \
            is not None, str(got)
        assert "requires end-to-end encryption" in got["error"]["text"]

    # control: a plaintext in an unencrypted room is archived where the scan can see it
    plain_room = await create_room(alice, "plain", "alice", {"muc#roomconfig_persistentroom": True})
    alice.send_message(mto=plain_room, mbody=control, mtype="groupchat")
    await next_groupchat(alice)
    muc = next(m for m in server.modules if m.name == "muc")
    await asyncio.sleep(0.2)
    page = await muc.store.query("conference.localhost", "plain", max_items=10)
    assert any(control.encode() in i.data for i in page.items)
    page = await muc.store.query("conference.localhost", "omemo", max_items=10)
    assert page.items and all(secret.encode() not in i.data for i in page.items)
    for c in made.values():
        await c.close()
    await server.stop()
    assert found_in(root, control), "the scan must see the plaintext control"
    assert found_in(root, secret) == []
    assert secret not in xmppd_log_text(caplog)
