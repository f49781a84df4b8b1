"""xmppd.cluster.nats_bus against a real nats-server (a private one per test module, so it can be restarted)."""

from __future__ import annotations

import asyncio

import pytest

from tests.pg import skip_or_fail
from tests.support.nats_server import NatsServer, nats_server_binary
from xmppd.cluster import Delivery, Entry, LocalBus
from xmppd.cluster.nats_bus import NatsBus


FAST = dict(heartbeat_s=0.1, node_timeout_s=0.6, deliver_timeout_s=1.0, call_timeout_s=1.0,
            reconnect_wait_s=0.1)


@pytest.fixture
def nats_srv(tmp_path):
    if nats_server_binary() is None:
        skip_or_fail("nats-server is not installed (Debian package nats-server; .ci/run installs it)")
    srv = NatsServer(tmp_path).start()
    yield srv
    srv.stop()


@pytest.fixture
async def pair(nats_srv):
    a = NatsBus("a", url=nats_srv.url, prefix="t", **FAST)
    b = NatsBus("b", url=nats_srv.url, prefix="t", **FAST)
    await a.start()
    await b.start()
    yield a, b
    for bus in (a, b):
        await bus.stop()


async def until(cond, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def test_deliver_is_accepted_only_when_the_remote_node_took_it(pair):
    a, b = pair
    got = []

    async def take(jid, data):
        got.append((jid, data))
        return jid == "bob@x/r"

    b.on_deliver(take)
    assert await a.deliver("b", "bob@x/r", b"<message/>") is Delivery.ACCEPTED
    assert await a.deliver("b", "carol@x/r", b"<message/>") is Delivery.OFFLINE
    assert got == [("bob@x/r", b"<message/>"), ("carol@x/r", b"<message/>")]


async def test_deliver_to_a_node_nobody_runs_is_offline_at_once(pair):
    a, _b = pair
    assert await asyncio.wait_for(a.deliver("ghost", "bob@x/r", b"<m/>"), 0.9) is Delivery.OFFLINE


async def test_events_reach_other_nodes_but_not_the_publisher(pair):
    a, b = pair
    seen_a, seen_b = [], []
    a.subscribe("presence", lambda t, p, o: seen_a.append((p, o)))
    b.subscribe("presence", lambda t, p, o: seen_b.append((p, o)))
    await a.publish("presence", b"hello")
    await until(lambda: seen_b)
    assert seen_b == [(b"hello", "a")] and seen_a == []


async def test_directory_entries_replicate_and_withdraw(pair):
    a, b = pair
    await a.announce(Entry("alice@x/phone", "a", True, 1))
    await until(lambda: b.directory.get("alice@x/phone") is not None)
    assert b.directory.get("alice@x/phone").node == "a"
    await a.withdraw("alice@x/phone")
    await until(lambda: b.directory.get("alice@x/phone") is None)


async def test_a_node_joining_late_learns_the_existing_entries(nats_srv, pair):
    a, _b = pair
    await a.announce(Entry("alice@x/phone", "a", True, 1))
    c = NatsBus("c", url=nats_srv.url, prefix="t", **FAST)
    await c.start()
    try:
        await until(lambda: c.directory.get("alice@x/phone") is not None)
    finally:
        await c.stop()


async def test_binding_the_same_full_jid_on_another_node_kicks_the_first(pair):
    a, b = pair
    kicked = []

    async def kick(payload):
        kicked.append(payload.decode())
        await a.withdraw(payload.decode())
        return b"ok"

    a.on_call("kick", kick)
    await a.announce(Entry("alice@x/r", "a", True, 0))
    await until(lambda: b.directory.get("alice@x/r") is not None)
    old = await b.announce(Entry("alice@x/r", "b", True, 0))
    assert old.node == "a" and kicked == ["alice@x/r"]
    await until(lambda: a.directory.get("alice@x/r") is not None and a.directory.get("alice@x/r").node == "b")


async def test_a_node_that_dies_is_dropped_with_its_sessions_within_the_timeout(nats_srv):
    a = NatsBus("a", url=nats_srv.url, prefix="t", **FAST)
    b = NatsBus("b", url=nats_srv.url, prefix="t", **FAST)
    await a.start()
    await b.start()
    down = []
    a.on_node_down(lambda node, gone: down.append((node, sorted(e.jid for e in gone))))
    try:
        await b.announce(Entry("bob@x/r", "b", True, 0))
        await until(lambda: a.directory.get("bob@x/r") is not None and "b" in a.nodes())
        # b vanishes without a goodbye (as after kill -9): stop its tasks and drop its connection
        for task in b._tasks:
            task.cancel()
        await b.nc.close()
        await until(lambda: down, timeout=FAST["node_timeout_s"] * 5)
        assert down == [("b", ["bob@x/r"])] and a.directory.get("bob@x/r") is None
    finally:
        await a.stop()


async def test_nats_restarting_does_not_crash_nodes_and_deliveries_meanwhile_are_offline(nats_srv, pair):
    a, b = pair

    async def take(jid, data):
        return True

    b.on_deliver(take)
    await a.announce(Entry("alice@x/r", "a", True, 0))
    await until(lambda: b.directory.get("alice@x/r") is not None)
    nats_srv.stop()
    await until(lambda: not a.connected)
    assert await a.deliver("b", "bob@x/r", b"<m/>") is Delivery.OFFLINE  # stored, not dropped
    nats_srv.start()
    await until(lambda: a.connected and b.connected, timeout=10)
    assert await a.deliver("b", "bob@x/r", b"<m/>") is Delivery.ACCEPTED
    # neither dropped the other for the outage, and the directory is whole again
    assert "b" in a.nodes() and "a" in b.nodes()
    assert b.directory.get("alice@x/r") is not None


async def test_local_bus_has_no_remote_nodes():
    bus = LocalBus("solo")
    await bus.start()
    assert await bus.deliver("other", "bob@x/r", b"<m/>") is Delivery.OFFLINE
    await bus.announce(Entry("alice@x/r", "solo", True, 0))
    assert bus.nodes() == {"solo": {"sessions": 1}}
    await bus.withdraw("alice@x/r")
    assert len(bus.directory) == 0
    await bus.stop()
