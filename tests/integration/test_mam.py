"""Message Archive Management (XEP-0313): real server; the archive owner is a raw
client (byte-exact results), peers are slixmpp clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from xml.etree import ElementTree as ET

from .rawclient import RawClient

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
OMEMO = ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27183'>"
         "<key rid='31415' prekey=\"true\">AAECAwQ=</key><iv>BQYHCAkK</iv>"
         "<future-thing xmlns='urn:example:unknown'  b='2' a='1'>  spaced &amp; kept  </future-thing>"
         "</header><payload>CwwNDg8Q</payload></encrypted>")


class Owner:
    """An archive owner on a raw client."""

    def __init__(self, raw: RawClient, jid: str) -> None:
        self.raw, self.jid = raw, jid
        self._n = 0

    async def query(self, inner: str = "", *, kind: str = "set") -> tuple[list[ET.Element], ET.Element, bytes]:
        self._n += 1
        qid = f"q{self._n}"
        self.raw.mark()
        body = f"<query xmlns='{MAM}' queryid='{qid}'>{inner}</query>" if kind == "set" else f"<query xmlns='{MAM}'/>"
        await self.raw.send(f"<iq type='{kind}' id='{qid}'>{body}</iq>")
        data = await self.raw.read_until(rf"<iq[^>]*id=['\"]{qid}['\"].*?</iq>")
        tree = ET.fromstring(b"<r xmlns='jabber:client'>" + data + b"</r>")
        results = [m.find(f"{{{MAM}}}result") for m in tree.findall("{jabber:client}message")]
        results = [r for r in results if r is not None and r.get("queryid") == qid]
        iq = [i for i in tree.findall("{jabber:client}iq") if i.get("id") == qid][0]
        return results, iq, data


def form(**fields: str) -> str:
    out = [f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"]
    for k, v in fields.items():
        out.append(f"<field var='{k.replace('_', '-')}'><value>{v}</value></field>")
    return "".join(out) + "</x>"


def rsm(max_: int | None = None, after: str | None = None, before: str | None = None) -> str:
    s = f"<set xmlns='{RSM}'>"
    if max_ is not None:
        s += f"<max>{max_}</max>"
    if after is not None:
        s += f"<after>{after}</after>"
    if before is not None:
        s += f"<before>{before}</before>" if before else "<before/>"
    return s + "</set>"


def bodies(results) -> list[str]:
    return [r.find(".//{jabber:client}body").text for r in results]


def fin_set(iq: ET.Element) -> dict:
    fin = iq.find(f"{{{MAM}}}fin")
    s = fin.find(f"{{{RSM}}}set")
    first = s.find(f"{{{RSM}}}first")
    return {"complete": fin.get("complete") == "true", "count": int(s.findtext(f"{{{RSM}}}count")),
            "first": first.text if first is not None else None,
            "index": int(first.get("index")) if first is not None else None,
            "last": s.findtext(f"{{{RSM}}}last")}


async def owner_login(server, pki, user: str = "alice") -> Owner:
    cert = pki.client(f"mam-{user}", xmpp_addrs=[f"{user}@localhost"])
    raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    jid = await raw.login_external(resource="raw")
    await raw.send("<presence/>")
    await asyncio.sleep(0.1)
    return Owner(raw, jid)


async def peer(clients, pki, server, user: str):
    c = await clients(f"{user}@localhost", cert=pki.client(f"mam-peer-{user}", xmpp_addrs=[f"{user}@localhost"])
                      ).login(server.listener_port(0))
    c.send_presence()
    return c


async def test_mam_archives_both_directions_and_the_recipient_gets_the_stanza_id(server, clients, pki):
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        alice.raw.mark()
        bob.send_message(mto="alice@localhost", mbody="hello alice", mtype="chat")
        got = await alice.raw.read_until(b"</message>")
        m = re.search(rb"<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='([^']+)'/></message>", got)
        assert m, got
        await alice.raw.send(f"<message to='bob@localhost' type='chat'><body>hello bob</body></message>")
        reply = await bob.next_message()
        assert reply["body"] == "hello bob"
        results, iq, _ = await alice.query()
        assert bodies(results) == ["hello alice", "hello bob"]
        assert results[0].get("id") == m.group(1).decode()  # stanza-id = archive id
        fwd = results[1].find("{urn:xmpp:forward:0}forwarded")
        assert fwd.find("{urn:xmpp:delay}delay").get("stamp").endswith("Z")
        inner = fwd.find("{jabber:client}message")
        assert inner.get("from") == alice.jid and inner.get("to") == "bob@localhost"
        assert fin_set(iq) == {"complete": True, "count": 2, "first": results[0].get("id"), "index": 0,
                               "last": results[1].get("id")}
        # bob's own archive has both too
        bob.register_plugin("xep_0313")
        res = await bob.plugin["xep_0313"].retrieve(timeout=10)
        assert [r["mam_result"]["forwarded"]["stanza"]["body"] for r in res["mam"]["results"]] == \
            ["hello alice", "hello bob"]
    finally:
        await alice.raw.close()


async def test_mam_query_by_with_and_by_time(server, clients, pki):
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        carol = await peer(clients, pki, server, "carol")
        bob.send_message(mto=alice.jid, mbody="b1", mtype="chat")
        carol.send_message(mto=alice.jid, mbody="c1", mtype="chat")
        await alice.raw.read_until(rb"c1</body>.*?</message>")
        await asyncio.sleep(0.05)
        mid = dt.datetime.now(dt.timezone.utc)
        await asyncio.sleep(0.05)
        bob.send_message(mto=alice.jid, mbody="b2", mtype="chat")
        await alice.raw.read_until(rb"b2</body>.*?</message>")
        results, iq, _ = await alice.query(form(**{"with": "bob@localhost"}))
        assert bodies(results) == ["b1", "b2"] and fin_set(iq)["count"] == 2
        results, _, _ = await alice.query(form(**{"with": str(bob.boundjid.full)}))
        assert bodies(results) == ["b1", "b2"]  # full JID: that resource only
        results, _, _ = await alice.query(form(start=mid.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
        assert bodies(results) == ["b2"]
        results, _, _ = await alice.query(form(end=mid.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
        assert sorted(bodies(results)) == ["b1", "c1"]  # two senders: either order
    finally:
        await alice.raw.close()


async def test_mam_rsm_paging_forward_and_backward_with_counts(server, clients, pki):
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        for i in range(5):
            bob.send_message(mto=alice.jid, mbody=f"m{i}", mtype="chat")
        await alice.raw.read_until(rb"m4</body>.*?</message>")
        r1, iq1, _ = await alice.query(rsm(2))
        s1 = fin_set(iq1)
        assert bodies(r1) == ["m0", "m1"] and s1["count"] == 5 and s1["index"] == 0 and not s1["complete"]
        r2, iq2, _ = await alice.query(rsm(2, after=s1["last"]))
        assert bodies(r2) == ["m2", "m3"] and fin_set(iq2)["index"] == 2
        r3, iq3, _ = await alice.query(rsm(2, after=fin_set(iq2)["last"]))
        assert bodies(r3) == ["m4"] and fin_set(iq3)["complete"] and fin_set(iq3)["index"] == 4
        # backward: the last page first, each page oldest first
        b1, ibq1, _ = await alice.query(rsm(2, before=""))
        sb1 = fin_set(ibq1)
        assert bodies(b1) == ["m3", "m4"] and sb1["index"] == 3 and sb1["count"] == 5 and not sb1["complete"]
        b2, ibq2, _ = await alice.query(rsm(2, before=sb1["first"]))
        assert bodies(b2) == ["m1", "m2"] and fin_set(ibq2)["index"] == 1
        b3, ibq3, _ = await alice.query(rsm(2, before=fin_set(ibq2)["first"]))
        assert bodies(b3) == ["m0"] and fin_set(ibq3)["complete"]
    finally:
        await alice.raw.close()


async def test_bad_rsm_is_bad_request_and_unknown_id_is_item_not_found(server, clients, pki):
    alice = await owner_login(server, pki)
    try:
        for inner, condition, text in [
            (rsm(-1), "bad-request", "must not be negative"),
            (rsm(251), "bad-request", "limit of 250"),
            (rsm(2, after="no-such-id"), "item-not-found", "no-such-id"),
            (form(after_id="nope"), "item-not-found", "nope"),
            (form(start="yesterday"), "bad-request", "XEP-0082"),
        ]:
            results, iq, data = await alice.query(inner)
            assert iq.get("type") == "error" and not results, data
            err = iq.find("{jabber:client}error")
            assert err.find(f"{{urn:ietf:params:xml:ns:xmpp-stanzas}}{condition}") is not None, data
            assert text in err.findtext("{urn:ietf:params:xml:ns:xmpp-stanzas}text"), data
    finally:
        await alice.raw.close()


async def test_archived_omemo_payload_is_byte_identical_to_the_original(server, clients, pki):
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        bob.send_raw(f"<message to='alice@localhost' id='om1' type='chat'>{OMEMO}</message>")
        live = await alice.raw.read_until(b"</message>")
        assert OMEMO.encode() + b"<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost'" in live
        results, _, data = await alice.query()
        assert len(results) == 1
        assert b"<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='" in data
        assert (OMEMO + "</message></forwarded></result></message>").encode() in data
        assert b"id='om1'" in data and b"xmlns='jabber:client'" in data
    finally:
        await alice.raw.close()


async def test_forged_stanza_id_from_a_client_is_removed(server, clients, pki):
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        bob.send_raw("<message to='alice@localhost' type='chat'><body>x</body>"
                     "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='forged'/></message>")
        live = await alice.raw.read_until(b"</message>")
        assert b"forged" not in live and live.count(b"urn:xmpp:sid:0") == 1
    finally:
        await alice.raw.close()


async def test_preferences_never_stops_archiving_and_roster_is_treated_as_always(server, clients, pki):
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        alice.raw.mark()
        await alice.raw.send(f"<iq type='set' id='p1'><prefs xmlns='{MAM}' default='never'/></iq>")
        got = await alice.raw.read_until(rb"id=['\"]p1['\"].*?</iq>")
        assert b"default=\"never\"" in got or b"default='never'" in got
        bob.send_message(mto=alice.jid, mbody="not archived", mtype="chat")
        live = await alice.raw.read_until(b"not archived</body>.*?</message>")
        assert b"stanza-id" not in live
        await alice.raw.send(f"<iq type='set' id='p2'><prefs xmlns='{MAM}' default='roster'/></iq>")
        await alice.raw.read_until(rb"id=['\"]p2['\"].*?</iq>")
        bob.send_message(mto=alice.jid, mbody="archived", mtype="chat")
        await alice.raw.read_until(b">archived</body>.*?</message>")
        results, _, _ = await alice.query()
        assert bodies(results) == ["archived"]
    finally:
        await alice.raw.close()


async def test_retention_purge_removes_old_messages(make_server, clients, pki):
    server = await make_server({"modules": {"mam": {"retention_days": 1}}})
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        bob.send_message(mto=alice.jid, mbody="old soon", mtype="chat")
        await alice.raw.read_until(b"</message>")
        mod = next(m for m in server.modules if m.name == "mam")
        await alice.query()  # waits for the archive write
        assert await mod.purge_once(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)) >= 1
        results, iq, _ = await alice.query()
        assert results == [] and fin_set(iq)["count"] == 0
    finally:
        await alice.raw.close()


async def test_account_disco_advertises_mam(server, clients, pki):
    bob = await peer(clients, pki, server, "bob")
    info = await bob.plugin["xep_0030"].get_info(jid="bob@localhost", timeout=10)
    feats = info["disco_info"]["features"]
    assert MAM in feats and "urn:xmpp:sid:0" in feats


async def test_a_burst_beyond_the_write_queue_limit_is_archived_completely(server, clients, pki, monkeypatch):
    """The single archive writer batches rows; a full queue pauses the sender
    (backpressure) instead of dropping archive entries."""
    from xmppd.modules import mam as mam_module

    monkeypatch.setattr(mam_module, "MAX_PENDING_WRITES", 10)
    monkeypatch.setattr(mam_module, "WRITE_BATCH_ROWS", 7)
    from xmppd.net.connection import C2SConnection

    paused = []
    original = C2SConnection.pause_input
    monkeypatch.setattr(C2SConnection, "pause_input", lambda self: (paused.append(self), original(self)))
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        n = 300
        burst = "".join(f"<message to='bob@localhost' type='chat' id='b{i}'><body>burst {i}</body></message>"
                        for i in range(n))
        await alice.raw.send(burst)
        for i in range(n):
            assert (await bob.next_message())["body"] == f"burst {i}"
        results, iq, _ = await alice.query(rsm(max_=250))
        assert fin_set(iq)["count"] == n
        assert bodies(results) == [f"burst {i}" for i in range(250)]
        assert paused  # the sender was paused at least once, and resumed (all 300 were relayed)
    finally:
        await alice.raw.close()


async def test_max_per_user_is_enforced_at_write_the_oldest_messages_are_dropped_like_a_ring(
        make_server, clients, pki):
    server = await make_server({"modules": {"mam": {"max_per_user": 5}}})
    alice = await owner_login(server, pki)
    try:
        bob = await peer(clients, pki, server, "bob")
        carol = await peer(clients, pki, server, "carol")
        for i in range(12):
            await alice.raw.send(f"<message to='bob@localhost' type='chat' id='r{i}'><body>ring {i}</body></message>")
        for i in range(12):  # every message is still delivered: the quota only concerns the archive
            assert (await bob.next_message())["body"] == f"ring {i}"
        results, iq, _ = await alice.query(rsm(max_=50))
        assert bodies(results) == [f"ring {i}" for i in range(7, 12)]
        assert fin_set(iq)["count"] == 5
        # bob's copy of the same conversation is limited the same way, in his own archive
        bob.register_plugin("xep_0313")
        res = await bob.plugin["xep_0313"].retrieve(timeout=10)
        assert [r["mam_result"]["forwarded"]["stanza"]["body"] for r in res["mam"]["results"]] == \
            [f"ring {i}" for i in range(7, 12)]
        # another account is untouched, and archiving goes on for alice
        carol.send_message(mto="alice@localhost", mbody="hi from carol", mtype="chat")
        await alice.raw.read_until(b"hi from carol")
        results, iq, _ = await alice.query(rsm(max_=50))
        assert bodies(results) == [f"ring {i}" for i in range(8, 12)] + ["hi from carol"]
        carol.register_plugin("xep_0313")
        res = await carol.plugin["xep_0313"].retrieve(timeout=10)
        assert [r["mam_result"]["forwarded"]["stanza"]["body"] for r in res["mam"]["results"]] == \
            ["hi from carol"]
    finally:
        await alice.raw.close()
