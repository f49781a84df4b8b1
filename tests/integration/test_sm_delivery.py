"""XEP-0198 and RFC 6121 §8.5.2 together: a message reaches each resource at most
once, and the offline store only when no available resource took it — however
many sessions of the account lose their connection, resume, expire, or are
still detached when the server stops.

Detached sessions here are raw clients that never acknowledge anything (the
worst case: every stanza they were sent is still theirs when they go); live
ones are slixmpp clients.  Copies are counted exactly.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from xmppd.jid import JID

from .harness import start_server
from .rawclient import RawClient

SM = "urn:xmpp:sm:3"
#: short resumption window so that expiry happens within the test
WINDOW = {"modules": {"stream_management": {"resume_timeout_s": 1}}}


def cert_for(pki, account: str):
    name = f"dlv-{account}"
    try:
        return pki.get(name)
    except KeyError:
        return pki.client(name, xmpp_addrs=[f"{account}@localhost"])


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Resource:
    """A raw client bound as account/resource, available, with resumable stream management."""

    def __init__(self, server, client: RawClient, jid: str, previd: str) -> None:
        self.server = server
        self.client = client
        self.jid = jid
        self.previd = previd

    @classmethod
    async def open(cls, server, pki, account: str, resource: str) -> "Resource":
        c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, account))
        jid = await c.login_external(resource=resource)
        await c.send(f"<enable xmlns='{SM}' resume='true'/>")
        out = await c.read_until(rb"<enabled[^>]*/>")
        previd = re.search(rb"id='([^']+)'", out).group(1).decode()
        await c.send("<presence/>")
        self = cls(server, c, jid, previd)
        await until(lambda: self.session is not None and self.session.available, what=f"{jid} available")
        return self

    @property
    def session(self):
        return self.server.sessions.get(JID.parse(self.jid))

    async def drop(self) -> None:
        """The network goes away: no </stream:stream>, nothing acknowledged."""
        session = self.session
        self.client.writer.transport.abort()
        await until(lambda: session.transport is None, what=f"{self.jid} detached")

    async def expired(self, timeout: float = 10.0) -> None:
        await until(lambda: self.server.sessions.get(JID.parse(self.jid)) is None, timeout,
                    what=f"{self.jid} expired")


async def live(server, pki, clients, account: str, resource: str):
    c = await clients(f"{account}@localhost/{resource}", cert=cert_for(pki, account)).login(
        server.listener_port(0))
    c.send_presence()
    await until(lambda: (s := server.sessions.get(JID.parse(c.boundjid.full))) is not None and s.available,
                what="live resource available")
    return c


async def bob(server, pki, clients):
    return await clients("bob@localhost", cert=cert_for(pki, "bob")).login(server.listener_port(0))


async def bodies_of(client, settle: float = 0.7) -> list[str]:
    await asyncio.sleep(settle)
    out = []
    while not client.messages.empty():
        out.append(client.messages.get_nowait()["body"])
    return out


async def everything(client: RawClient, settle: float = 0.7) -> bytes:
    """All a raw client has received, after reading for ``settle`` seconds more."""
    try:
        await client.read_until(rb"(?!)", timeout=settle)  # matches nothing: read until the timeout
    except TimeoutError:
        pass
    return bytes(client.buf)


async def offline_rows(server, account: str) -> list[bytes]:
    offline = next(m for m in server.modules if m.name == "offline")
    return [r.data for r in await offline.store.fetch(account, "localhost", 100)]


async def test_bare_jid_messages_reach_the_live_resource_once_while_three_others_are_detached(
        make_server, pki, clients):
    server = await make_server(WINDOW)
    desk = await live(server, pki, clients, "dora", "desk")
    lost = [await Resource.open(server, pki, "dora", f"phone{i}") for i in range(3)]
    sender = await bob(server, pki, clients)
    sender.send_message(mto="dora@localhost", mbody="before", mtype="chat")  # all four are live
    for r in lost:
        await r.client.read_until(rb"before</body>")
    for r in lost:
        await r.drop()
    sender.send_message(mto="dora@localhost", mbody="during", mtype="chat")  # one live, three detached
    for r in lost:
        await r.expired()
    got = await bodies_of(desk)
    assert got.count("before") == 1 and got.count("during") == 1, got
    assert await offline_rows(server, "dora") == []  # the live resource took both


async def test_message_for_detached_resources_only_is_kept_once_and_not_copied_to_the_one_that_resumes(
        make_server, pki):
    server = await make_server(WINDOW)
    a = await Resource.open(server, pki, "erin", "a")
    b = await Resource.open(server, pki, "erin", "b")
    await a.drop()
    await b.drop()
    sender = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, "bob"))
    await sender.login_external(resource="s")
    await sender.send("<message to='erin@localhost' type='chat'><body>kept</body></message>")
    await until(lambda: len(a.session.sm.unacked) + len(b.session.sm.unacked) >= 1, what="message queued")

    back = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, "erin"))
    await back.starttls()
    await back.open_stream()
    assert b"<success" in await back.auth_external()
    await back.open_stream()
    await back.send(f"<resume xmlns='{SM}' previd='{a.previd}' h='0'/>")
    await back.read_until(rb"kept</body>")
    await b.expired()
    assert (await everything(back)).count(b"kept</body>") == 1  # not a second time from b
    assert await offline_rows(server, "erin") == []  # and not stored: the resumed session has it
    await back.send(f"<a xmlns='{SM}' h='{a.session.sm.h_out}'/>")
    await back.close()


async def test_message_for_detached_resources_that_all_expire_is_stored_offline_once(make_server, pki):
    server = await make_server(WINDOW)
    a = await Resource.open(server, pki, "fay", "a")
    b = await Resource.open(server, pki, "fay", "b")
    c = await Resource.open(server, pki, "fay", "c")
    sender = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, "bob"))
    await sender.login_external(resource="s")
    await sender.send("<message to='fay@localhost' type='chat'><body>first</body></message>")
    for r in (a, b, c):
        await r.client.read_until(rb"first</body>")
        await r.drop()
    await sender.send("<message to='fay@localhost' type='chat'><body>second</body></message>")
    for r in (a, b, c):
        await r.expired()
    await asyncio.sleep(0.5)
    stored = b"".join(await offline_rows(server, "fay"))
    assert stored.count(b"first</body>") == 1 and stored.count(b"second</body>") == 1, stored


async def test_server_stop_with_detached_sessions_keeps_each_message_exactly_once(tmp_path, pki):
    server = await start_server(tmp_path, pki)
    try:
        a = await Resource.open(server, pki, "gil", "a")
        b = await Resource.open(server, pki, "gil", "b")
        sender = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, "bob"))
        await sender.login_external(resource="s")
        await sender.send("<message to='gil@localhost' type='chat'><body>one</body></message>")
        for r in (a, b):
            await r.client.read_until(rb"one</body>")
        await a.drop()
        await sender.send("<message to='gil@localhost' type='chat'><body>two</body></message>")
        await b.client.read_until(rb"two</body>")
        await b.drop()
        await sender.send("<message to='gil@localhost' type='chat'><body>three</body></message>")
        await until(lambda: any(b"three" in d for s in (a.session, b.session) for _, d, *_ in s.sm.unacked),
                    what="three queued")
    finally:
        await server.stop()

    server = await start_server(tmp_path, pki)
    try:
        stored = b"".join(await offline_rows(server, "gil"))
        assert [stored.count(w) for w in (b"one</body>", b"two</body>", b"three</body>")] == [1, 1, 1], stored
    finally:
        await server.stop()


async def test_carbon_copies_held_by_a_detached_session_are_not_re_routed(make_server, pki, clients):
    server = await make_server(WINDOW)
    desk = await Resource.open(server, pki, "hal", "desk")  # raw: to see every byte it gets
    phone = await Resource.open(server, pki, "hal", "phone")
    await phone.client.send("<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    await phone.client.read_until(rb"id='c1'")
    sender = await bob(server, pki, clients)
    sender.send_message(mto=desk.jid, mbody="for the desk", mtype="chat")
    await phone.client.read_until(rb"<received xmlns='urn:xmpp:carbons:2'>")  # the phone's copy
    await phone.drop()
    await phone.expired()
    got = await everything(desk.client)
    assert got.count(b"for the desk</body>") == 1 and b"<received" not in got  # not the phone's carbon
    assert await offline_rows(server, "hal") == []


async def test_iq_request_to_a_session_that_expires_gets_service_unavailable(make_server, pki, clients):
    from slixmpp.exceptions import IqError

    server = await make_server(WINDOW)
    phone = await Resource.open(server, pki, "ivy", "phone")
    await phone.drop()
    asker = await bob(server, pki, clients)
    started = time.monotonic()
    with pytest.raises(IqError) as err:
        await asker.plugin["xep_0030"].get_info(jid=phone.jid, timeout=15)
    assert err.value.iq["error"]["condition"] == "service-unavailable"
    assert err.value.iq["from"] == phone.jid
    assert time.monotonic() - started < 8  # at expiry (1 s window + sweep), not the iq timeout


async def test_slixmpp_resource_that_drops_its_transport_does_not_make_the_other_see_a_message_twice(
        make_server, pki, clients):
    server = await make_server(WINDOW)
    desk = await live(server, pki, clients, "jo", "desk")
    phone = clients("jo@localhost/phone", cert=cert_for(pki, "jo"))
    phone.register_plugin("xep_0198")
    enabled = asyncio.get_running_loop().create_future()
    phone.add_event_handler("sm_enabled", lambda _e: enabled.done() or enabled.set_result(True))
    await phone.login(server.listener_port(0))
    await asyncio.wait_for(enabled, 10)
    phone.send_presence()
    session = None

    def phone_available() -> bool:
        nonlocal session
        session = server.sessions.get(JID.parse(phone.boundjid.full))
        return session is not None and session.available

    await until(phone_available, what="phone available")
    sender = await bob(server, pki, clients)
    sender.send_message(mto="jo@localhost", mbody="both see this", mtype="chat")
    assert (await phone.next_message())["body"] == "both see this"
    phone.transport.abort()  # mid-stream, no </stream:stream>; it does not come back
    await until(lambda: session.transport is None, what="phone detached")
    sender.send_message(mto="jo@localhost", mbody="while the phone is away", mtype="chat")
    await until(lambda: server.sessions.get(session.jid) is None, what="phone expired")
    assert sorted(await bodies_of(desk)) == ["both see this", "while the phone is away"]
    assert await offline_rows(server, "jo") == []


async def test_detached_session_that_reaches_max_unacked_ends_and_its_messages_are_stored_once(make_server, pki):
    server = await make_server({"modules": {"stream_management": {"max_unacked": 5}}})  # window: 300 s
    away = await Resource.open(server, pki, "kim", "phone")
    await away.drop()
    sender = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, "bob"))
    await sender.login_external(resource="s")
    await sender.send("".join(f"<message to='kim@localhost' type='chat'><body>n{i}.</body></message>"
                              for i in range(12)))
    await away.expired(timeout=5)  # the queue is bounded while detached, not only on a live stream
    await asyncio.sleep(0.5)
    stored = b"".join(await offline_rows(server, "kim"))
    assert [stored.count(f"n{i}.</body>".encode()) for i in range(12)] == [1] * 12, stored


async def test_stanzas_held_back_by_csi_are_each_counted_for_stream_management(make_server, pki):
    server = await make_server()
    quiet = await Resource.open(server, pki, "lee", "phone")
    c = quiet.client
    await c.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    sender = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, "bob"))
    await sender.login_external(resource="s")
    await sender.send(f"<presence to='{quiet.jid}'/><message to='{quiet.jid}' type='chat'>"
                      "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    await until(lambda: quiet.session.__dict__.get("send_bytes") is not None
                and len(quiet.session.send_bytes.held) == 2, what="two stanzas held")
    c.mark()
    await c.send("<active xmlns='urn:xmpp:csi:0'/>")
    await c.read_until(rb"composing")
    # the client acknowledges every stanza it got since <enable/>: its presence echo and the two
    # held ones — two stanzas for XEP-0198's count, even when they went out in one write
    await c.send(f"<a xmlns='{SM}' h='3'/><r xmlns='{SM}'/>")
    out = await c.read_until(rb"<a xmlns='urn:xmpp:sm:3' h='\d+'/>|</stream:stream>")
    assert b"handled-count-too-high" not in out and b"stream:error" not in out
    assert not quiet.session.sm.unacked


async def test_offline_messages_a_session_never_acknowledged_are_stored_again_once(make_server, pki):
    server = await make_server(WINDOW)
    sender = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, "bob"))
    await sender.login_external(resource="s")
    first = await Resource.open(server, pki, "max", "once")  # the account exists (it logged in)
    await first.client.close()
    await until(lambda: first.session is None, what="first session gone")
    await sender.send("<message to='max@localhost' type='chat'><body>while away</body></message>")
    for _ in range(100):
        if await offline_rows(server, "max"):
            break
        await asyncio.sleep(0.05)
    again = await Resource.open(server, pki, "max", "again")  # presence: the stored message comes
    await again.client.read_until(rb"while away</body>")
    await again.drop()  # never acknowledged
    await again.expired()
    await asyncio.sleep(0.5)
    stored = b"".join(await offline_rows(server, "max"))
    assert stored.count(b"while away</body>") == 1, stored


async def test_archive_results_held_by_a_detached_session_are_not_stored_offline(make_server, pki):
    server = await make_server(WINDOW)
    reader = await Resource.open(server, pki, "nia", "reader")
    sender = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_for(pki, "bob"))
    await sender.login_external(resource="s")
    await sender.send("<message to='nia@localhost' type='chat'><body>archived</body></message>")
    await reader.client.read_until(rb"archived</body>")
    await reader.client.send(f"<a xmlns='{SM}' h='{reader.session.sm.h_out}'/>")  # it has that one
    await until(lambda: not reader.session.sm.unacked, what="acknowledged")
    await reader.client.send("<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='x'/></iq>")
    await reader.client.read_until(rb"<fin")
    await reader.drop()  # the archive page is unacknowledged
    await reader.expired()
    await asyncio.sleep(0.5)
    assert await offline_rows(server, "nia") == []  # a page of results is not a message to store
