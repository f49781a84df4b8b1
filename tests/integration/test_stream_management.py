"""XEP-0198: acks, resumption after a killed transport, nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import re

import pytest

from xmppd.jid import JID

from .rawclient import RawClient

SM = "urn:xmpp:sm:3"


async def sm_client(server, pki, name: str, *, resume: bool = True) -> tuple[RawClient, str, str | None]:
    cert = pki.client(f"sm-{name}", xmpp_addrs=[f"{name}@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    await c.starttls()
    feats = await c.open_stream()
    assert b"EXTERNAL" in feats
    assert b"<success" in await c.auth_external()
    feats = await c.open_stream()
    assert f"<sm xmlns='{SM}'/>".encode() in feats
    jid = await c.bind(name)
    resume_attr = " resume='true'" if resume else ""
    await c.send(f"<enable xmlns='{SM}'{resume_attr}/>")
    out = await c.read_until(rb"<enabled[^>]*/>")
    m = re.search(rb"id='([^']+)'", out)
    c.mark()
    return c, jid, m.group(1).decode() if m else None


async def authenticated_unbound(server, pki, cert) -> RawClient:
    """TLS + SASL EXTERNAL + stream restart, stopping where bind (or resume) would come."""
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    await c.starttls()
    await c.open_stream()
    assert b"<success" in await c.auth_external()
    await c.open_stream()
    return c


async def reconnect_and_resume(server, pki, name: str, previd: str, h: int) -> tuple[RawClient, bytes]:
    c = await authenticated_unbound(server, pki, pki.get(f"sm-{name}"))
    await c.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
    out = await c.read_until(rb"<resumed[^>]*/>|</failed>")
    return c, out


def bodies(data: bytes) -> list[str]:
    return [b.decode() for b in re.findall(rb"<body>([^<]*)</body>", data)]


async def test_request_gets_an_answer_with_the_handled_count(server, pki):
    c, jid, _ = await sm_client(server, pki, "counter", resume=False)
    try:
        await c.send(f"<presence/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='{SM}'/>")
        out = await c.read_until(rb"<a xmlns='urn:xmpp:sm:3' h='\d+'/>")
        assert b"h='2'" in out
    finally:
        await c.close()


async def test_killed_transport_then_resume_resends_only_unacknowledged_stanzas_in_order(server, pki, clients):
    alice, alice_jid, previd = await sm_client(server, pki, "alice")
    assert previd
    bob_cert = pki.client("sm-bob-sender", xmpp_addrs=["bob@localhost"])
    bob = await clients("bob@localhost", cert=bob_cert).login(server.listener_port(0))
    for i in range(3):
        bob.send_message(mto=alice_jid, mbody=f"m{i}", mtype="chat")
    await alice.read_until(rb"m2</body>")
    await alice.send(f"<a xmlns='{SM}' h='1'/>")  # alice processed only m0
    await asyncio.sleep(0.2)
    alice.writer.transport.abort()  # the network goes away, no </stream:stream>
    await asyncio.sleep(0.3)
    bob.send_message(mto=alice_jid, mbody="m3", mtype="chat")  # arrives while detached
    await asyncio.sleep(0.3)

    alice2, out = await reconnect_and_resume(server, pki, "alice", previd, 1)
    try:
        assert b"<resumed" in out and f"previd='{previd}'".encode() in out
        data = await alice2.read_until(rb"m3</body>")
        assert bodies(data) == ["m1", "m2", "m3"]  # m0 was acknowledged: not sent again
        # the resumed session is the live one: new messages arrive on it
        bob.send_message(mto=alice_jid, mbody="m4", mtype="chat")
        data = await alice2.read_until(rb"m4</body>")
        assert bodies(data).count("m4") == 1
    finally:
        await alice2.close()


async def test_unknown_previd_fails_and_the_client_can_still_bind(server, pki):
    c = await authenticated_unbound(server, pki, pki.client("sm-nobody", xmpp_addrs=["nobody@localhost"]))
    try:
        await c.send(f"<resume xmlns='{SM}' previd='made-up' h='0'/>")
        out = await c.read_until(rb"</failed>")
        assert b"item-not-found" in out
        assert (await c.bind("after-fail")).startswith("nobody@localhost/")
    finally:
        await c.close()


async def test_another_account_cannot_resume_my_session(server, pki):
    alice, _, previd = await sm_client(server, pki, "victim")
    try:
        mallory = pki.client("sm-mallory", xmpp_addrs=["mallory@localhost"])
        c = await authenticated_unbound(server, pki, mallory)
        await c.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
        assert b"item-not-found" in await c.read_until(rb"</failed>")
        await c.close()
    finally:
        await alice.close()


async def test_acknowledging_more_than_was_sent_is_a_stream_error(server, pki):
    c, _, _ = await sm_client(server, pki, "liar", resume=False)
    await c.send(f"<a xmlns='{SM}' h='5'/>")
    data = await c.read_to_eof()
    assert b"undefined-condition" in data and b"handled-count-too-high" in data


async def test_unacknowledged_messages_go_offline_when_the_resumption_window_ends(make_server, pki, clients):
    server = await make_server({"modules": {"stream_management": {"resume_timeout_s": 0.5}}})
    alice, alice_jid, previd = await sm_client(server, pki, "carol")
    bob_cert = pki.client("sm-bob2", xmpp_addrs=["bob@localhost"])
    bob = await clients("bob@localhost", cert=bob_cert).login(server.listener_port(0))
    bob.send_message(mto=alice_jid, mbody="keep me safe", mtype="chat")
    await alice.read_until(rb"keep me safe")
    alice.writer.transport.abort()  # never acknowledged
    await asyncio.sleep(2.5)  # window (0.5 s) + sweep
    assert server.sessions.get(JID.parse(alice_jid)) is None

    cert = pki.get("sm-carol")
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await c.login_external(resource="back")
        await c.send("<presence/>")
        data = await c.read_until(rb"keep me safe")
        assert b"urn:xmpp:delay" in data
    finally:
        await c.close()


async def test_enable_before_bind_is_refused(server, pki):
    c = await authenticated_unbound(server, pki, pki.client("sm-early", xmpp_addrs=["early@localhost"]))
    try:
        await c.send(f"<enable xmlns='{SM}'/>")
        assert b"unexpected-request" in await c.read_until(rb"</failed>")
    finally:
        await c.close()


@pytest.mark.parametrize("ack_every", [1])
async def test_server_requests_acks_and_forgets_acknowledged_stanzas(make_server, pki, clients, ack_every):
    server = await make_server({"modules": {"stream_management": {"ack_every": ack_every}}})
    c, jid, _ = await sm_client(server, pki, "acker")
    try:
        bob_cert = pki.client("sm-bob3", xmpp_addrs=["bob@localhost"])
        bob = await clients("bob@localhost", cert=bob_cert).login(server.listener_port(0))
        bob.send_message(mto=jid, mbody="one", mtype="chat")
        out = await c.read_until(rb"<r xmlns='urn:xmpp:sm:3'/>")
        assert b"one" in out
        session = server.sessions.get(JID.parse(jid))
        assert len(session.sm.unacked) == 1
        await c.send(f"<a xmlns='{SM}' h='1'/>")
        for _ in range(50):
            if not session.sm.unacked:
                break
            await asyncio.sleep(0.05)
        assert not session.sm.unacked
    finally:
        await c.close()


async def test_slixmpp_resumes_after_its_transport_is_killed_and_loses_nothing(server, pki, clients):
    alice_cert = pki.client("sm-slix-alice", xmpp_addrs=["alice@localhost"])
    alice = clients("alice@localhost/phone", cert=alice_cert)
    alice.register_plugin("xep_0198")
    resumed = asyncio.get_running_loop().create_future()
    enabled = asyncio.get_running_loop().create_future()
    alice.add_event_handler("session_resumed", lambda _e: resumed.done() or resumed.set_result(True))
    alice.add_event_handler("sm_enabled", lambda _e: enabled.done() or enabled.set_result(True))
    await alice.login(server.listener_port(0))
    await asyncio.wait_for(enabled, 10)

    bob_cert = pki.client("sm-slix-bob", xmpp_addrs=["bob@localhost"])
    bob = await clients("bob@localhost", cert=bob_cert).login(server.listener_port(0))
    for i in range(5):
        bob.send_message(mto="alice@localhost/phone", mbody=f"before-{i}", mtype="chat")
    got = [(await alice.next_message())["body"] for _ in range(5)]

    disconnected = asyncio.get_running_loop().create_future()
    alice.add_event_handler("disconnected", lambda _e: disconnected.done() or disconnected.set_result(True))
    alice.transport.abort()  # mid-stream, no </stream:stream>
    await asyncio.wait_for(disconnected, 10)
    for i in range(5):
        bob.send_message(mto="alice@localhost/phone", mbody=f"during-{i}", mtype="chat")
    await asyncio.sleep(0.5)
    alice.connect("127.0.0.1", server.listener_port(0))
    await asyncio.wait_for(resumed, 15)
    for i in range(5):
        bob.send_message(mto="alice@localhost/phone", mbody=f"after-{i}", mtype="chat")
    while len(got) < 15:
        got.append((await alice.next_message())["body"])
    await asyncio.sleep(0.5)
    while not alice.messages.empty():
        got.append(alice.messages.get_nowait()["body"])
    expected = [f"{p}-{i}" for p in ("before", "during", "after") for i in range(5)]
    assert sorted(got) == sorted(expected)  # nothing lost, nothing duplicated
