"""Router details: server-originated iq, account disco, iq to unknown full JIDs."""

from __future__ import annotations

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
