"""The cluster bus: the one interface the router and modules use to reach other nodes.

Three things, whichever implementation runs (DESIGN.md "The cluster bus"):

* ``deliver(node, jid, data) -> Delivery``: hand a stanza's bytes to the node
  that holds session ``jid``; ``ACCEPTED`` only when that node has taken it
  (written it to the session, or stored it); ``OFFLINE`` when nobody took it —
  no such session, no such node, the bus is down, or no answer within
  ``deliver_timeout_s``.  The caller then stores the message offline: a message
  is never lost between nodes, and counted as handled only once accepted.
* ``publish(topic, payload)`` / ``subscribe(topic, handler)``: events for every
  other node (presence, roster pushes, cache invalidation, revocation).
* ``directory``: the replicated :class:`~xmppd.cluster.directory.SessionDirectory`
  (``announce``/``withdraw`` the local sessions), plus ``on_node_down`` for a
  node that stopped answering.

:class:`LocalBus` is the single-process implementation (no other nodes: every
remote delivery is ``OFFLINE``, events go nowhere); :mod:`xmppd.cluster.nats_bus`
runs it on NATS.
"""

from __future__ import annotations

import abc
import enum
import logging
from typing import Awaitable, Callable

from .directory import Entry, SessionDirectory

__all__ = ["Delivery", "Bus", "LocalBus", "DeliverHandler", "EventHandler", "RpcHandler"]

log = logging.getLogger("xmppd.cluster")


class Delivery(enum.Enum):
    ACCEPTED = "accepted"
    OFFLINE = "offline"


#: (full or bare JID, stanza bytes) -> did a local session (or the local store) take it
DeliverHandler = Callable[[str, bytes], Awaitable[bool]]
#: (topic, payload, origin node)
EventHandler = Callable[[str, bytes, str], None]
#: (payload) -> reply payload
RpcHandler = Callable[[bytes], Awaitable[bytes]]


class Bus(abc.ABC):
    """Mandatory: everything below.  A new implementation passes tests/unit/cluster."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.directory = SessionDirectory(node)
        self._deliver_handler: DeliverHandler | None = None
        self._event_handlers: dict[str, list[EventHandler]] = {}
        self._rpc_handlers: dict[str, RpcHandler] = {}
        self._node_down: list[Callable[[str, list[Entry]], None]] = []

    # lifecycle
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    # delivery
    def on_deliver(self, handler: DeliverHandler) -> None:
        self._deliver_handler = handler

    @abc.abstractmethod
    async def deliver(self, node: str, jid: str, data: bytes) -> Delivery: ...

    # events
    def subscribe(self, topic: str, handler: EventHandler) -> None:
        self._event_handlers.setdefault(topic, []).append(handler)

    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes) -> None: ...

    def _dispatch(self, topic: str, payload: bytes, origin: str) -> None:
        for handler in self._event_handlers.get(topic, ()):
            try:
                handler(topic, payload, origin)
            except Exception:  # noqa: BLE001 - one module's bug must not stop the bus
                log.exception("cluster event handler for %s failed", topic)

    # node-to-node calls (e.g. "close the session you hold for this JID")
    def on_call(self, name: str, handler: RpcHandler) -> None:
        self._rpc_handlers[name] = handler

    @abc.abstractmethod
    async def call(self, node: str, name: str, payload: bytes) -> bytes | None:
        """The reply, or None when the node did not answer."""

    # the session directory
    @abc.abstractmethod
    async def announce(self, entry: Entry) -> Entry | None:
        """A local session was bound or changed; returns an entry it replaced on another node."""

    @abc.abstractmethod
    async def withdraw(self, jid: str) -> None:
        """A local session ended."""

    def on_node_down(self, handler: Callable[[str, list[Entry]], None]) -> None:
        self._node_down.append(handler)

    def _node_died(self, node: str) -> None:
        gone = self.directory.drop_node(node)
        log.warning("cluster node %s stopped answering: %d of its sessions dropped", node, len(gone))
        for handler in self._node_down:
            try:
                handler(node, gone)
            except Exception:  # noqa: BLE001
                log.exception("node-down handler failed")

    @abc.abstractmethod
    def nodes(self) -> dict[str, dict]:
        """Known live nodes (this one included) with what they said of themselves."""


class LocalBus(Bus):
    """One process, no cluster: nothing is remote."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def deliver(self, node: str, jid: str, data: bytes) -> Delivery:
        return Delivery.OFFLINE

    async def publish(self, topic: str, payload: bytes) -> None:
        pass

    async def call(self, node: str, name: str, payload: bytes) -> bytes | None:
        return None

    async def announce(self, entry: Entry) -> Entry | None:
        return self.directory.put(entry)

    async def withdraw(self, jid: str) -> None:
        self.directory.remove(jid, self.node)

    def nodes(self) -> dict[str, dict]:
        return {self.node: {"sessions": len(self.directory)}}
