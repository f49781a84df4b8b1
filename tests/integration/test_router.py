"""Router details: server-originated iq, account disco, iq to unknown full JIDs, error addressing."""

from __future__ import annotations

import re
import time
from xml.etree.ElementTree import Element, SubElement

import pytest

from xmppd.jid import JID


async def test_server_iq_request_resolves_with_the_clients_answer(server, clients, pki):
    cert = pki.client("req-alice", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    session = server.sessions.get(JID.parse(alice.boundjid.full))
    iq = Element("{jabber:client}iq", {"type": "get"})
    SubElement(iq, "{http://jabber.org/protocol/disco#info}query")
    answer = await server.router.request(session, iq, from_="localhost", timeout=10)
    assert answer.get("type") == "result"
    feats = {f.get("var") for f in answer.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert "http://jabber.org/protocol/disco#info" in feats


async def test_server_iq_request_times_out_when_nobody_answers(server, pki):
    from .rawclient import RawClient
    cert = pki.client("req-silent", xmpp_addrs=["silent@localhost"])
    raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        jid = await raw.login_external()
        session = server.sessions.get(JID.parse(jid))
        iq = Element("{jabber:client}iq", {"type": "get"})
        SubElement(iq, "{urn:xmpp:ping}ping")
        with pytest.raises(TimeoutError):
            await server.router.request(session, iq, from_="localhost", timeout=0.3)
        assert not server.router._pending
    finally:
        await raw.close()


async def test_iq_to_an_offline_full_jid_is_service_unavailable(server, clients, pki):
    cert = pki.client("iq-alice", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    with pytest.raises(Exception) as err:
        await alice.plugin["xep_0030"].get_info(jid="bob@localhost/gone", timeout=10)
    assert "service-unavailable" in str(err.value) or getattr(err.value, "condition", "") == "service-unavailable"


async def test_account_disco_lists_the_account_identity(server, clients, pki):
    cert = pki.client("disco-acc", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    info = await alice.plugin["xep_0030"].get_info(jid="alice@localhost", timeout=10)
    assert any(i[0] == "account" for i in info["disco_info"]["identities"])


# ---------------------------------------------------------------- RFC 6120 §8.3.1: errors come from the original 'to'
async def test_iq_to_a_domain_this_server_does_not_serve_fails_at_once_from_the_original_to(server, clients, pki):
    from slixmpp.exceptions import IqError

    cert = pki.client("rsnf-alice", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    target = "someone@elsewhere.example/laptop"
    started = time.monotonic()
    with pytest.raises(IqError) as err:
        await alice.plugin["xep_0030"].get_info(jid=target, timeout=10)
    assert time.monotonic() - started < 3  # an answer, not a timeout
    assert err.value.iq["error"]["condition"] == "remote-server-not-found"
    assert err.value.iq["from"].full == target
    assert err.value.iq["to"].full == alice.boundjid.full


async def test_message_to_a_domain_this_server_does_not_serve_bounces_from_the_original_to(server, clients, pki):
    cert = pki.client("rsnf-msg", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    alice.send_message(mto="someone@elsewhere.example", mbody="hello?", mtype="chat")
    err = await alice.next_message(timeout=5)
    assert err["type"] == "error" and err["error"]["condition"] == "remote-server-not-found"
    assert err["from"].full == "someone@elsewhere.example"


_ERRORS = [
    # (stanza sent, expected condition) — each reply must come from the 'to' exactly as written
    ("<iq type='get' id='e1' to='x@Nowhere.Example/Res'><ping xmlns='urn:xmpp:ping'/></iq>",
     "remote-server-not-found"),
    ("<message id='e2' to='x@nowhere.example/r'><body>hi</body></message>", "remote-server-not-found"),
    ("<presence id='e3' to='x@nowhere.example'/>", "remote-server-not-found"),
    ("<iq type='get' id='e4' to='Bob@localhost/gone'><ping xmlns='urn:xmpp:ping'/></iq>", "service-unavailable"),
    ("<iq type='get' id='e5' to='bob@localhost'><nothing xmlns='urn:example:none'/></iq>", "service-unavailable"),
    ("<iq type='get' id='e6' to='localhost/res'><ping xmlns='urn:xmpp:ping'/></iq>", "service-unavailable"),
    ("<iq type='bogus' id='e7' to='bob@localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "bad-request"),
    ("<iq type='get' id='e8' to='bob@localhost'/>", "bad-request"),
    ("<presence type='bogus' id='e9' to='bob@localhost'/>", "bad-request"),
    ("<message type='groupchat' id='e10' to='bob@localhost'><body>x</body></message>", "service-unavailable"),
    ("<message id='e11' to='nobody-at-all@localhost/res'><body>x</body></message>", "service-unavailable"),
    ("<iq type='get' id='e12' to='a@@b'><ping xmlns='urn:xmpp:ping'/></iq>", "jid-malformed"),
]


@pytest.mark.parametrize("sent,condition", _ERRORS, ids=[f"{c}-" + re.search(r"to='([^']+)'", s).group(1) for s, c in _ERRORS])
async def test_every_error_the_server_returns_comes_from_the_original_to(server, pki, sent, condition):
    from .rawclient import RawClient

    cert = pki.client("err-from", xmpp_addrs=["erra@localhost"])
    raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        jid = await raw.login_external(resource="r")
        stanza_id = re.search(r"id='([^']+)'", sent).group(1)
        original_to = re.search(r"to='([^']+)'", sent).group(1)
        await raw.send(sent)
        out = await raw.read_until(rf"<\w+ [^>]*id='{stanza_id}'[^>]*>.*?</(iq|message|presence)>")
        reply = re.search(rf"<\w+ [^>]*id='{stanza_id}'[^>]*>".encode(), out).group(0).decode()
        attrs = dict(re.findall(r"(\w+)='([^']*)'", reply))
        assert attrs["type"] == "error"
        assert attrs["from"] == original_to, reply
        assert attrs["to"] == jid
        assert f"<{condition} ".encode() in out
    finally:
        await raw.close()
