"""The cluster bus on NATS (nats-py): request/reply delivery, events, a replicated directory.

Why request/reply and not JetStream for delivery: a message must be counted as
handled only when the node holding the recipient's session has *taken* it, and
must go to offline storage when nobody did.  Core NATS request/reply gives
exactly that answer synchronously: the remote node replies ``ok`` after writing
the stanza to the session (or ``offline``), "no responders" means the node is
gone.  Durability stays where it already is — in the sender's node, which keeps
the stanza unacknowledged until the answer and stores it offline (PostgreSQL)
otherwise — so there is no second durable log to keep consistent.  (A timeout is
treated as "not taken": the message is stored offline; if the remote node did
write it, the recipient sees it twice rather than never.)

Subjects, under ``prefix`` (default ``xmppd``):

  {p}.node.{node}.deliver   request: header ``jid``, body the stanza; reply ok | offline
  {p}.node.{node}.call.{n}  request: node-to-node call ``n`` (e.g. kick)
  {p}.dir                   directory updates: put / del / hello / state (JSON)
  {p}.hb                    heartbeats: every HEARTBEAT_S, JSON about the node
  {p}.event.{topic}         events (header ``node``: the origin)

A node silent on ``{p}.hb`` for ``node_timeout_s`` is dead: its directory
entries are dropped and ``on_node_down`` handlers run (presence unavailable for
its users, their messages go offline).  When NATS itself goes away, nats-py
reconnects (forever, ``reconnect_wait_s`` apart); deliveries meanwhile answer
OFFLINE (stored, not dropped); after reconnecting the node says hello and
re-publishes its entries, and the others answer with theirs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import Any

import nats
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeout

from .bus import Bus, Delivery
from .directory import Entry

__all__ = ["NatsBus", "HEARTBEAT_S", "NODE_TIMEOUT_S", "DELIVER_TIMEOUT_S", "CALL_TIMEOUT_S",
           "RECONNECT_WAIT_S", "CONNECT_TIMEOUT_S"]

log = logging.getLogger("xmppd.cluster.nats")

#: how often a node says it is alive
HEARTBEAT_S = 1.0
#: a node silent for this long is dead (its sessions are dropped)
NODE_TIMEOUT_S = 5.0
#: how long a delivery to another node may take before the message goes offline
DELIVER_TIMEOUT_S = 5.0
#: node-to-node calls (kick, ...)
CALL_TIMEOUT_S = 2.0
#: between reconnection attempts after NATS went away
RECONNECT_WAIT_S = 0.5
#: the first connection to NATS at start
CONNECT_TIMEOUT_S = 5.0

_OK, _OFFLINE = b"ok", b"offline"
_LOST = (NoRespondersError, NatsTimeout, asyncio.TimeoutError, ConnectionClosedError,
         OutboundBufferLimitError, OSError)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class NatsBus(Bus):
    def __init__(self, node: str, *, url: str, prefix: str = "xmppd", heartbeat_s: float = HEARTBEAT_S,
                 node_timeout_s: float = NODE_TIMEOUT_S, deliver_timeout_s: float = DELIVER_TIMEOUT_S,
                 call_timeout_s: float = CALL_TIMEOUT_S, reconnect_wait_s: float = RECONNECT_WAIT_S) -> None:
        super().__init__(node)
        self.url = url
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.node_timeout_s = node_timeout_s
        self.deliver_timeout_s = deliver_timeout_s
        self.call_timeout_s = call_timeout_s
        self.reconnect_wait_s = reconnect_wait_s
        self.nc: Any = None
        self._peers: dict[str, tuple[float, dict]] = {}  # node -> (last heard, what it said)
        self._tasks: list[asyncio.Task] = []
        self._started = time.time()
        #: counters (metrics, tests)
        self.delivered_remote = 0
        self.delivered_offline = 0

    def __repr__(self) -> str:
        return f"<NatsBus node={self.node!r} url={self.url!r} peers={sorted(self._peers)}>"

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        p = self.prefix
        self.nc = await nats.connect(
            self.url, name=f"xmppd {self.node}", allow_reconnect=True, max_reconnect_attempts=-1,
            reconnect_time_wait=self.reconnect_wait_s, connect_timeout=CONNECT_TIMEOUT_S,
            reconnected_cb=self._reconnected, disconnected_cb=self._disconnected, error_cb=self._error)
        await self.nc.subscribe(f"{p}.node.{self.node}.deliver", cb=self._on_deliver)
        await self.nc.subscribe(f"{p}.node.{self.node}.call.*", cb=self._on_call)
        await self.nc.subscribe(f"{p}.dir", cb=self._on_dir)
        await self.nc.subscribe(f"{p}.hb", cb=self._on_heartbeat)
        await self.nc.subscribe(f"{p}.event.>", cb=self._on_event)
        await self.nc.flush(timeout=CONNECT_TIMEOUT_S)  # subscriptions live on the server before we speak
        await self._hello()
        self._tasks = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._reaper())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.nc is not None and not self.nc.is_closed:
            try:  # the others drop our sessions at once instead of after the node timeout
                await self.nc.publish(f"{self.prefix}.dir", _dumps({"op": "bye", "node": self.node}))
                await self.nc.flush(timeout=1)
            except Exception:  # noqa: BLE001 - going away anyway
                pass
            await self.nc.close()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def _disconnected(self) -> None:
        log.warning("cluster: lost the connection to NATS (%s); reconnecting every %.1f s, "
                    "remote deliveries go to offline storage meanwhile", self.url, self.reconnect_wait_s)

    async def _reconnected(self) -> None:
        log.warning("cluster: reconnected to NATS (%s)", self.nc.connected_url.netloc if self.nc else "?")
        now = time.monotonic()  # we could not hear anyone meanwhile: give them a fresh node timeout
        self._peers = {n: (now, info) for n, (_seen, info) in self._peers.items()}
        await self._hello()

    async def _error(self, exc: Exception) -> None:
        log.info("cluster: NATS client error: %s", exc)

    # ------------------------------------------------------------ delivery
    async def deliver(self, node: str, jid: str, data: bytes) -> Delivery:
        if node == self.node or not self.connected:
            self.delivered_offline += 1
            return Delivery.OFFLINE
        try:
            reply = await self.nc.request(f"{self.prefix}.node.{node}.deliver", data,
                                          timeout=self.deliver_timeout_s, headers={"jid": jid})
        except _LOST as exc:
            log.info("cluster: delivery to %s on %s not taken (%s): offline", jid, node, type(exc).__name__)
            self.delivered_offline += 1
            return Delivery.OFFLINE
        if reply.data == _OK:
            self.delivered_remote += 1
            return Delivery.ACCEPTED
        self.delivered_offline += 1
        return Delivery.OFFLINE

    async def _on_deliver(self, msg: Any) -> None:
        jid = (msg.headers or {}).get("jid", "")
        taken = False
        handler = self._deliver_handler
        if handler is not None and jid:
            try:
                taken = await handler(jid, msg.data)
            except Exception:  # noqa: BLE001 - answer "offline": the sender stores it
                log.exception("cluster: delivering to %s failed", jid)
        await self._respond(msg, _OK if taken else _OFFLINE)

    @staticmethod
    async def _respond(msg: Any, data: bytes) -> None:
        try:
            await msg.respond(data)
        except _LOST as exc:  # the asker will time out and store the message offline
            log.info("cluster: could not answer a request: %s", exc)

    # ------------------------------------------------------------ calls
    async def call(self, node: str, name: str, payload: bytes) -> bytes | None:
        if not self.connected:
            return None
        try:
            reply = await self.nc.request(f"{self.prefix}.node.{node}.call.{name}", payload,
                                          timeout=self.call_timeout_s)
        except _LOST:
            return None
        return reply.data

    async def _on_call(self, msg: Any) -> None:
        name = msg.subject.rpartition(".")[2]
        handler = self._rpc_handlers.get(name)
        reply = b""
        if handler is not None:
            try:
                reply = await handler(msg.data)
            except Exception:  # noqa: BLE001
                log.exception("cluster: call %s failed", name)
        await self._respond(msg, reply)

    # ------------------------------------------------------------ events
    async def publish(self, topic: str, payload: bytes) -> None:
        if not self.connected:
            log.info("cluster: event %s not published: NATS is not connected", topic)
            return
        try:
            await self.nc.publish(f"{self.prefix}.event.{topic}", payload, headers={"node": self.node})
        except _LOST as exc:
            log.info("cluster: event %s not published: %s", topic, exc)

    async def _on_event(self, msg: Any) -> None:
        origin = (msg.headers or {}).get("node", "")
        if origin == self.node:
            return
        topic = msg.subject[len(self.prefix) + len(".event."):]
        self._dispatch(topic, msg.data, origin)

    # ------------------------------------------------------------ directory
    async def _publish_dir(self, obj: dict) -> None:
        if not self.connected:
            return  # re-sent whole after reconnecting (_hello)
        try:
            await self.nc.publish(f"{self.prefix}.dir", _dumps(obj))
        except _LOST as exc:
            log.info("cluster: directory update not published: %s", exc)

    async def announce(self, entry: Entry) -> Entry | None:
        old = self.directory.put(entry)
        await self._publish_dir({"op": "put", "node": self.node, "entry": entry.to_wire()})
        if old is not None and old.node != self.node:
            # the same full JID bound on another node: a new bind replaces the old one cluster-wide
            await self.call(old.node, "kick", entry.jid.encode())
        return old

    async def withdraw(self, jid: str) -> None:
        if self.directory.remove(jid, self.node) is not None:
            await self._publish_dir({"op": "del", "node": self.node, "jid": jid})

    async def _hello(self) -> None:
        await self._publish_dir({"op": "hello", "node": self.node})
        await self._publish_state()

    async def _publish_state(self) -> None:
        entries = [e.to_wire() for e in self.directory.held_by(self.node)]
        await self._publish_dir({"op": "state", "node": self.node, "entries": entries})

    async def _on_dir(self, msg: Any) -> None:
        try:
            obj = json.loads(msg.data)
            op, node = obj["op"], obj["node"]
        except (ValueError, KeyError, TypeError):
            log.warning("cluster: malformed directory update ignored")
            return
        if node == self.node:
            return
        self._seen(node, None)
        d = self.directory
        if op == "put":
            # the same JID bound here before: theirs is the newer bind, and it calls "kick" on us
            d.put(Entry.from_wire(obj["entry"]))
        elif op == "del":
            d.remove(obj["jid"], node)
        elif op == "hello":
            await self._publish_state()  # a node (re)joined: tell it what we hold
        elif op == "state":
            for entry in d.held_by(node):
                d.remove(entry.jid, node)
            for raw in obj.get("entries", ()):
                d.put(Entry.from_wire(raw))
        elif op == "bye":
            self._peers.pop(node, None)
            self._node_died(node)

    # ------------------------------------------------------------ liveness
    def _seen(self, node: str, info: dict | None) -> None:
        prev = self._peers.get(node)
        self._peers[node] = (time.monotonic(), info if info is not None else (prev[1] if prev else {}))

    async def _heartbeats(self) -> None:
        host = socket.gethostname()
        while True:
            if self.connected:
                info = {"node": self.node, "host": host, "pid": os.getpid(), "started": self._started,
                        "sessions": len(self.directory.held_by(self.node))}
                try:
                    await self.nc.publish(f"{self.prefix}.hb", _dumps(info))
                except _LOST:
                    pass
            await asyncio.sleep(self.heartbeat_s)

    async def _on_heartbeat(self, msg: Any) -> None:
        try:
            info = json.loads(msg.data)
            node = info["node"]
        except (ValueError, KeyError, TypeError):
            return
        if node != self.node:
            known = node in self._peers
            self._seen(node, info)
            if not known:
                log.info("cluster: node %s joined", node)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if not self.connected:
                continue  # we cannot hear anyone: not their fault
            limit = time.monotonic() - self.node_timeout_s
            for node, (seen, _info) in list(self._peers.items()):
                if seen < limit:
                    del self._peers[node]
                    self._node_died(node)

    def nodes(self) -> dict[str, dict]:
        out = {self.node: {"self": True, "sessions": len(self.directory.held_by(self.node)),
                           "pid": os.getpid(), "host": socket.gethostname()}}
        now = time.monotonic()
        for node, (seen, info) in self._peers.items():
            out[node] = dict(info, last_heard_s=round(now - seen, 1))
        return out
