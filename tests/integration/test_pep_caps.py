"""Server-side entity capabilities (XEP-0115) and the PEP behaviour built on them:
access models, whitelist members, retract/delete notifications.  Real server."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from xmppd.jid import JID
from xmppd.modules.caps import compute_ver

from .harness import WAIT_S
from .pep_support import (DEVICELIST, config_form, devicelist, iq_error, items_of, next_event, no_event,
                          options, pep_login, subscribe_both)
from .roster_support import eventually
from .test_pep_errors import raw_login

A, B = "alice@localhost", "bob@localhost"
INFO = "http://jabber.org/protocol/disco#info"


def _query(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def test_verification_string_matches_the_xep0115_simple_example():
    q = _query(f"""<query xmlns='{INFO}'>
      <identity category='client' name='Exodus 0.9.1' type='pc'/>
      <feature var='http://jabber.org/protocol/caps'/>
      <feature var='http://jabber.org/protocol/disco#info'/>
      <feature var='http://jabber.org/protocol/disco#items'/>
      <feature var='http://jabber.org/protocol/muc'/></query>""")
    assert compute_ver(q, "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_verification_string_matches_the_xep0115_complex_example_with_a_form():
    q = _query(f"""<query xmlns='{INFO}'>
      <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
      <identity xml:lang='el' category='client' name='\u03a8 0.11' type='pc'/>
      <feature var='http://jabber.org/protocol/caps'/>
      <feature var='http://jabber.org/protocol/disco#info'/>
      <feature var='http://jabber.org/protocol/disco#items'/>
      <feature var='http://jabber.org/protocol/muc'/>
      <x xmlns='jabber:x:data' type='result'>
        <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
        <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
        <field var='os'><value>Mac</value></field>
        <field var='os_version'><value>10.5.1</value></field>
        <field var='software'><value>Psi</value></field>
        <field var='software_version'><value>0.11</value></field>
      </x></query>""")
    assert compute_ver(q, "sha-1") == "q07IKJEyjvHSyhy//CH0CxmKi8w="
    # §5.4: duplicate features make the answer unverifiable
    q.append(ET.Element(f"{{{INFO}}}feature", {"var": "http://jabber.org/protocol/muc"}))
    assert compute_ver(q, "sha-1") is None
    assert compute_ver(q, "sha-0") is None


def _session(server, c):
    return server.sessions.get(JID.parse(str(c.boundjid)))


async def test_caps_are_learned_once_per_ver_and_shared_by_sessions_with_the_same_ver(server, clients):
    asked = []
    real = server.router.request

    def counting(session, iq, **kw):
        asked.append(str(session.jid))
        return real(session, iq, **kw)

    server.router.request = counting
    a1 = await pep_login(server, clients, "alice", "one", notify=(DEVICELIST,))
    await eventually(lambda: _async(server.caps.wants(_session(server, a1), DEVICELIST + "+notify")))
    a2 = await pep_login(server, clients, "alice", "two", notify=(DEVICELIST,))
    await eventually(lambda: _async(server.caps.wants(_session(server, a2), DEVICELIST + "+notify")))
    assert asked == [str(a1.boundjid)]  # the second session's ver came from the cache
    ver = (await a1.plugin["xep_0115"].get_verstring(a1.boundjid))
    assert server.caps.cached("sha-1", ver) is not None


async def _async(value):
    return value


async def test_an_unverifiable_caps_answer_is_used_for_that_session_only_and_not_cached(server, pki, clients):
    alice = await pep_login(server, clients, "alice")
    raw = await raw_login(server, pki, "bob")
    try:
        await subscribe_raw(server, alice, raw)
        raw.mark()
        await raw.send("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                       "node='urn:example:client' ver='bogus+ver='/></presence>")
        out = await raw.read_until(r"<iq[^>]*type='get'[^>]*>.*?</iq>")
        m = re.search(rb"<iq[^>]*id='([^']+)'[^>]*>", out)
        await raw.send(f"<iq type='result' id='{m.group(1).decode()}' to='localhost'>"
                       f"<query xmlns='{INFO}' node='urn:example:client#bogus+ver='>"
                       f"<identity category='client' type='pc'/><feature var='{DEVICELIST}+notify'/>"
                       "</query></iq>")
        session = server.sessions.get(JID.parse(raw.jid))
        await eventually(lambda: _async(server.caps.wants(session, DEVICELIST + "+notify")))
        assert server.caps.cached("sha-1", "bogus+ver=") is None
        raw.mark()
        await alice.plugin["xep_0060"].publish(A, DEVICELIST, id="current", payload=devicelist(5),
                                               options=options(alice, access_model="open"), timeout=WAIT_S)
        out = await raw.read_until(r"<message[^>]*>.*?</message>")
        assert b"type='headline'" in out and b"<item id='current'>" in out
    finally:
        await raw.close()


async def subscribe_raw(server, alice, raw) -> None:
    """Mutual subscription between a slixmpp client and a raw client (bob)."""
    from .roster_support import presence_from, until_state

    raw.mark()
    await raw.send("<presence/>")
    await raw.send(f"<presence to='{A}' type='subscribe'/>")
    await presence_from(alice, B, "subscribe")
    alice.send_presence(pto=B, ptype="subscribed")
    alice.send_presence(pto=B, ptype="subscribe")
    await raw.read_until(r"type=['\"]subscribe['\"]")
    await raw.send(f"<presence to='{A}' type='subscribed'/>")
    await until_state(server, A, B, ("both", False, False))


async def test_presence_access_model_refuses_strangers_and_admits_subscribers(server, clients):
    alice = await pep_login(server, clients, "alice")
    bob = await pep_login(server, clients, "bob")
    await alice.plugin["xep_0060"].publish(A, "urn:xmpp:avatar:metadata", id="abc", payload=devicelist(1),
                                           timeout=WAIT_S)  # default access model: presence
    cond, app, text = await iq_error(items_of(bob, A, "urn:xmpp:avatar:metadata"))
    assert (cond, app) == ("not-authorized", "presence-subscription-required") and text
    await subscribe_both(server, alice, bob)
    got = await items_of(bob, A, "urn:xmpp:avatar:metadata")
    assert [i for i, _ in got] == ["abc"]


async def test_whitelist_members_added_by_the_owner_can_read_and_lose_access_when_removed(server, clients):
    alice = await pep_login(server, clients, "alice")
    bob = await pep_login(server, clients, "bob")
    ps = alice.plugin["xep_0060"]
    await ps.publish(A, "urn:example:shared", id="1", payload=devicelist(1),
                     options=options(alice, access_model="whitelist"), timeout=WAIT_S)
    assert (await iq_error(items_of(bob, A, "urn:example:shared")))[:2] == ("not-allowed", "closed-node")
    await ps.modify_affiliations(A, "urn:example:shared", [(B, "member")], timeout=WAIT_S)
    affs = await ps.get_node_affiliations(A, "urn:example:shared", timeout=WAIT_S)
    assert {(str(a["jid"]), a["affiliation"]) for a in affs["pubsub_owner"]["affiliations"]} == \
        {(A, "owner"), (B, "member")}
    assert len(await items_of(bob, A, "urn:example:shared")) == 1
    await ps.modify_affiliations(A, "urn:example:shared", [(B, "none")], timeout=WAIT_S)
    assert (await iq_error(items_of(bob, A, "urn:example:shared")))[:2] == ("not-allowed", "closed-node")
    # only the owner manages affiliations
    cond, _, _ = await iq_error(bob.plugin["xep_0060"].modify_affiliations(
        A, "urn:example:shared", [(B, "member")], timeout=WAIT_S))
    assert cond == "forbidden"


async def test_roster_access_model_admits_only_the_allowed_roster_groups(server, clients):
    alice = await pep_login(server, clients, "alice")
    bob = await pep_login(server, clients, "bob")
    carol = await pep_login(server, clients, "carol")
    ps = alice.plugin["xep_0060"]
    await ps.publish(A, "urn:example:family", id="1", payload=devicelist(1), timeout=WAIT_S)
    form = config_form(alice, access_model="roster")
    form.add_field(var="pubsub#roster_groups_allowed", ftype="list-multi", value=["Family"])
    await ps.set_node_config(A, "urn:example:family", form, timeout=WAIT_S)
    await alice.update_roster(B, groups=["Family"])
    await alice.update_roster("carol@localhost", groups=["Work"])
    assert len(await items_of(bob, A, "urn:example:family")) == 1
    assert (await iq_error(items_of(carol, A, "urn:example:family")))[:2] == \
        ("not-authorized", "not-in-roster-group")


async def test_retract_and_delete_notify_interested_contacts(server, clients):
    alice = await pep_login(server, clients, "alice")
    bob = await pep_login(server, clients, "bob", notify=("urn:xmpp:bookmarks:1",))
    await subscribe_both(server, alice, bob)
    ps = alice.plugin["xep_0060"]
    await ps.publish(A, "urn:xmpp:bookmarks:1", id="room@muc", payload=devicelist(1),
                     options=options(alice, access_model="open", max_items="max"), timeout=WAIT_S)
    msg = await next_event(bob, node="urn:xmpp:bookmarks:1")
    assert msg["pubsub_event"]["items"]["item"]["id"] == "room@muc"
    await ps.retract(A, "urn:xmpp:bookmarks:1", "room@muc", timeout=WAIT_S)
    msg = await next_event(bob, "pubsub_retract", node="urn:xmpp:bookmarks:1")
    assert msg["pubsub_event"]["items"]["retract"]["id"] == "room@muc"
    await ps.delete_node(A, "urn:xmpp:bookmarks:1", timeout=WAIT_S)
    await next_event(bob, "pubsub_delete", node="urn:xmpp:bookmarks:1")
    assert (await iq_error(items_of(alice, A, "urn:xmpp:bookmarks:1")))[0] == "item-not-found"


async def test_no_notification_across_a_block(server, clients):
    """XEP-0163 §4.3.3: never to a subscriber the owner has blocked."""
    alice = await pep_login(server, clients, "alice")
    alice.register_plugin("xep_0191")
    bob = await pep_login(server, clients, "bob", notify=(DEVICELIST,))
    await subscribe_both(server, alice, bob)
    await eventually(lambda: _async(server.caps.wants(_session(server, bob), DEVICELIST + "+notify")))
    await alice.plugin["xep_0191"].block(B, timeout=WAIT_S)
    await alice.plugin["xep_0060"].publish(A, DEVICELIST, id="current", payload=devicelist(9),
                                           options=options(alice, access_model="open"), timeout=WAIT_S)
    await no_event(bob)

