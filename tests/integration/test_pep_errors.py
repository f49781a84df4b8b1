"""PEP payload bytes and error handling: what is published is served byte for byte;
malformed or forbidden requests get the XEP-0060 error (with <text/>) and store nothing.
Real server; a raw client for exact bytes."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from xmppd.jid import JID

from .pep_support import NS_PUBSUB
from .rawclient import RawClient

OWNER_NS = NS_PUBSUB + "#owner"


async def raw_login(server, pki, user: str, resource: str = "raw") -> RawClient:
    cert = pki.client(f"{user}-{resource}-pep", xmpp_addrs=[f"{user}@localhost"])
    raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    await raw.login_external(resource=resource)
    return raw


async def ask(raw: RawClient, iq_id: str, body: bytes | str) -> bytes:
    """Send ``body`` (an iq with id ``iq_id``) and return the bytes of its answer."""
    raw.mark()
    await raw.send(body)
    rx = rf"<iq[^>]*id='{iq_id}'[^>]*?(?:/>|>.*?</iq>)"
    out = await raw.read_until(rx)
    return re.search(rx.encode(), out, re.S).group(0)


def error_of(answer: bytes) -> tuple[str, str | None, str]:
    """(condition, pubsub#errors name or None, text) of an iq error answer."""
    el = ET.fromstring(answer.replace(b"<iq ", b"<iq xmlns='jabber:client' ", 1))
    assert el.get("type") == "error", answer
    err = el.find("{jabber:client}error")
    cond = app = None
    text = ""
    for child in err:
        ns, _, name = child.tag[1:].partition("}")
        if ns == "urn:ietf:params:xml:ns:xmpp-stanzas":
            if name == "text":
                text = child.text or ""
            else:
                cond = name
        elif ns == NS_PUBSUB + "#errors":
            app = name
    return cond, app, text


def publish(iq_id: str, node: str | None, item: str, *, to: str = "", extra: str = "") -> str:
    node_attr = f" node='{node}'" if node is not None else ""
    to_attr = f" to='{to}'" if to else ""
    return (f"<iq type='set' id='{iq_id}'{to_attr}><pubsub xmlns='{NS_PUBSUB}'>"
            f"<publish{node_attr}>{item}</publish>{extra}</pubsub></iq>")


def get_items(iq_id: str, node: str, *, to: str = "", attrs: str = "", inner: str = "") -> str:
    to_attr = f" to='{to}'" if to else ""
    return (f"<iq type='get' id='{iq_id}'{to_attr}><pubsub xmlns='{NS_PUBSUB}'>"
            f"<items node='{node}'{attrs}>{inner}</items></pubsub></iq>")


EXACT = ("<list xmlns=\"eu.siacs.conversations.axolotl\" >\n  <device id='1'   label=\"caf\u00e9 &amp; &#x41;\"/>"
         "<x xmlns='urn:example:unknown' b='2' a='1'> kept <p:y xmlns:p='urn:p' p:z='1'/></x>\t</list>").encode()


async def test_payload_bytes_are_stored_and_served_exactly_as_published(server, pki):
    alice = await raw_login(server, pki, "alice")
    try:
        item = b"<item id='dev'>" + EXACT + b"</item>"
        ans = await ask(alice, "p1", publish("p1", "urn:example:exact", item.decode()).encode())
        assert b"type='result'" in ans and b"<item id='dev'/>" in ans, ans
        node = await server.pep.store.node("alice", "localhost", "urn:example:exact")
        assert [i.payload for i in await server.pep.store.items(node.id)] == [EXACT]
        ans = await ask(alice, "g1", get_items("g1", "urn:example:exact", to="alice@localhost"))
        assert b"<item id='dev'>" + EXACT + b"</item>" in ans
    finally:
        await alice.close()


async def test_a_payload_using_a_prefix_declared_outside_it_is_stored_self_contained(server, pki):
    alice = await raw_login(server, pki, "alice")
    try:
        body = (f"<iq type='set' id='p2'><pubsub xmlns='{NS_PUBSUB}' xmlns:e='urn:example:e'>"
                "<publish node='n'><item id='i'><e:thing a='1'><e:sub/></e:thing></item></publish>"
                "</pubsub></iq>")
        ans = await ask(alice, "p2", body)
        assert b"type='result'" in ans, ans
        node = await server.pep.store.node("alice", "localhost", "n")
        (item,) = await server.pep.store.items(node.id)
        el = ET.fromstring(item.payload)  # parses on its own
        assert el.tag == "{urn:example:e}thing" and el[0].tag == "{urn:example:e}sub"
    finally:
        await alice.close()


@pytest.mark.parametrize("case, body, expected", [
    ("empty pubsub", f"<iq type='set' id='e'><pubsub xmlns='{NS_PUBSUB}'/></iq>", ("bad-request", None)),
    ("unknown request", f"<iq type='set' id='e'><pubsub xmlns='{NS_PUBSUB}'><frob node='n'/></pubsub></iq>",
     ("bad-request", None)),
    ("publish without node", publish("e", None, "<item><x xmlns='urn:x'/></item>"),
     ("bad-request", "nodeid-required")),
    ("publish without item", publish("e", "n", ""), ("bad-request", "item-required")),
    ("two items", publish("e", "n", "<item id='1'><x xmlns='urn:x'/></item><item id='2'><x xmlns='urn:x'/></item>"),
     ("bad-request", "invalid-payload")),
    ("item without payload", publish("e", "n", "<item id='1'/>"), ("bad-request", "payload-required")),
    ("two payloads", publish("e", "n", "<item id='1'><x xmlns='urn:x'/><y xmlns='urn:y'/></item>"),
     ("bad-request", "invalid-payload")),
    ("oversized item", publish("e", "n", "<item id='1'><x xmlns='urn:x'>" + "a" * 2000 + "</x></item>"),
     ("not-acceptable", "payload-too-big")),
    ("publish to another's PEP", publish("e", "n", "<item id='1'><x xmlns='urn:x'/></item>", to="bob@localhost"),
     ("forbidden", None)),
    ("unknown publish-options field on a new node",
     publish("e", "n", "<item id='1'><x xmlns='urn:x'/></item>", extra=(
         "<publish-options><x xmlns='jabber:x:data' type='submit'>"
         f"<field var='FORM_TYPE' type='hidden'><value>{NS_PUBSUB}#publish-options</value></field>"
         "<field var='pubsub#frobnicate'><value>1</value></field></x></publish-options>")),
     ("conflict", "precondition-not-met")),
    ("max_items beyond the limit",
     publish("e", "n", "<item id='1'><x xmlns='urn:x'/></item>", extra=(
         "<publish-options><x xmlns='jabber:x:data' type='submit'>"
         "<field var='pubsub#max_items'><value>5000</value></field></x></publish-options>")),
     ("conflict", "precondition-not-met")),
    ("items on a missing node", get_items("e", "nope"), ("item-not-found", None)),
    ("items with a bad max_items", get_items("e", "nope", attrs=" max_items='lots'"), ("bad-request", None)),
    ("retract on a missing node",
     f"<iq type='set' id='e'><pubsub xmlns='{NS_PUBSUB}'><retract node='nope'><item id='1'/></retract></pubsub></iq>",
     ("item-not-found", None)),
    ("configure a missing node",
     f"<iq type='get' id='e'><pubsub xmlns='{OWNER_NS}'><configure node='nope'/></pubsub></iq>",
     ("item-not-found", None)),
    ("explicit subscribe",
     f"<iq type='set' id='e' to='bob@localhost'><pubsub xmlns='{NS_PUBSUB}'><subscribe node='n' "
     "jid='alice@localhost'/></pubsub></iq>", ("feature-not-implemented", "unsupported")),
])
async def test_bad_requests_get_the_xep0060_error_with_text_and_nothing_is_stored(make_server, pki, case, body,
                                                                                expected):
    server = await make_server({"modules": {"pep": {"max_item_bytes": 1024}}})
    alice = await raw_login(server, pki, "alice")
    try:
        cond, app, text = error_of(await ask(alice, "e", body))
        assert (cond, app) == expected, case
        assert text, f"{case}: no <text/>"
        for owner in ("alice", "bob"):
            assert await server.pep.store.nodes(owner, "localhost") == []
    finally:
        await alice.close()


async def test_failed_reconfigure_and_retract_of_a_missing_item_change_nothing(server, pki):
    alice = await raw_login(server, pki, "alice")
    try:
        await ask(alice, "p", publish("p", "n", "<item id='1'><x xmlns='urn:x'/></item>"))
        bad_form = (f"<iq type='set' id='c'><pubsub xmlns='{OWNER_NS}'><configure node='n'>"
                    "<x xmlns='jabber:x:data' type='submit'>"
                    "<field var='pubsub#access_model'><value>open</value></field>"
                    "<field var='pubsub#max_items'><value>-3</value></field></x></configure></pubsub></iq>")
        cond, _, text = error_of(await ask(alice, "c", bad_form))
        assert cond == "not-acceptable" and "max_items" in text
        node = await server.pep.store.node("alice", "localhost", "n")
        assert node.config.access_model == "presence" and node.config.max_items == 1
        retract = (f"<iq type='set' id='r'><pubsub xmlns='{NS_PUBSUB}'><retract node='n'>"
                   "<item id='zzz'/></retract></pubsub></iq>")
        cond, _, text = error_of(await ask(alice, "r", retract))
        assert cond == "item-not-found" and text
        assert [i.item_id for i in await server.pep.store.items(node.id)] == ["1"]
        # retracting the real item works
        ans = await ask(alice, "r2", retract.replace("zzz", "1").replace("'r'", "'r2'"))
        assert b"type='result'" in ans
        assert await server.pep.store.items(node.id) == []
        assert JID.parse("alice@localhost") == server.sessions.resources(JID.parse("alice@localhost"))[0].jid.bare
    finally:
        await alice.close()


def payload(n: int) -> str:
    return f"<v xmlns='urn:v'>{'x' * n}</v>"


async def assert_quota_refused_and_session_goes_on(server, raw, other, answer: bytes, what: str,
                                                   refused_node: str) -> None:
    cond, app, text = error_of(answer)
    assert (cond, app) == ("policy-violation", None), answer
    assert what in text and "retract or purge items first" in text, text
    mod = next(m for m in server.modules if m.name == "pep")
    # nothing of the refused publish is stored: its node was not even auto-created
    assert await mod.store.node("alice", "localhost", refused_node) is None
    # re-publishing an existing item id does not add to the total: still accepted
    again = await ask(raw, "re", publish("re", "urn:a", f"<item id='i0'>{payload(10)}</item>"))
    assert b"type='result'" in again, again
    got = await ask(raw, "g1", get_items("g1", "urn:a"))
    assert payload(10).encode() in got
    # another account is not affected
    ok = await ask(other, "o1", publish("o1", "urn:a", f"<item id='j'>{payload(1500)}</item>"))
    assert b"type='result'" in ok, ok


async def test_a_publish_over_the_accounts_total_items_is_policy_violation_and_nothing_is_stored(
        make_server, pki):
    server = await make_server({"modules": {"pep": {"max_items_per_account": 3}}})
    raw = await raw_login(server, pki, "alice", "quota-n")
    other = await raw_login(server, pki, "bob", "quota-n")
    try:
        for i, node in enumerate(("urn:a", "urn:b", "urn:c")):  # the quota is per account, over its nodes
            ok = await ask(raw, f"p{i}", publish(f"p{i}", node, f"<item id='i{i}'>{payload(10)}</item>"))
            assert b"type='result'" in ok, ok
        answer = await ask(raw, "p3", publish("p3", "urn:d", f"<item id='i3'>{payload(10)}</item>"))
        await assert_quota_refused_and_session_goes_on(
            server, raw, other, answer, "at most 3 items over all its nodes", "urn:d")
    finally:
        await raw.close()
        await other.close()


async def test_a_publish_over_the_accounts_total_payload_bytes_is_policy_violation_and_nothing_is_stored(
        make_server, pki):
    server = await make_server({"modules": {"pep": {"max_bytes_per_account": 4096, "max_item_bytes": 2048}}})
    raw = await raw_login(server, pki, "alice", "quota-b")
    other = await raw_login(server, pki, "bob", "quota-b")
    try:
        for i, node in enumerate(("urn:a", "urn:b")):
            ok = await ask(raw, f"p{i}", publish(f"p{i}", node, f"<item id='i{i}'>{payload(1500)}</item>"))
            assert b"type='result'" in ok, ok
        answer = await ask(raw, "p2", publish("p2", "urn:c", f"<item id='i2'>{payload(1500)}</item>"))
        await assert_quota_refused_and_session_goes_on(
            server, raw, other, answer, "at most 4096 bytes of item payloads", "urn:c")
    finally:
        await raw.close()
        await other.close()
