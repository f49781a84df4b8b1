"""The cluster-wide session directory: which node holds which full JID (pure).

Each node owns the entries of its own sessions and announces them on the bus;
every node keeps a replica of all entries (the shape of MongooseIM's CETS
tables: no central store, each node the authority for its part).  A node that
stops announcing itself for longer than the bus's node timeout is dropped with
all its entries.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Entry", "SessionDirectory"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One bound session somewhere in the cluster."""

    jid: str  # full JID, normalised
    node: str
    available: bool = False
    priority: int = 0

    @property
    def bare(self) -> str:
        return self.jid.partition("/")[0]

    def to_wire(self) -> list:
        return [self.jid, self.node, self.available, self.priority]

    @classmethod
    def from_wire(cls, data: list) -> "Entry":
        jid, node, available, priority = data
        return cls(str(jid), str(node), bool(available), int(priority))


class SessionDirectory:
    def __init__(self, node: str) -> None:
        self.node = node
        self._by_jid: dict[str, Entry] = {}
        self._by_bare: dict[str, dict[str, Entry]] = {}
        self._by_node: dict[str, set[str]] = {}

    def put(self, entry: Entry) -> Entry | None:
        """Add or replace; returns the entry it replaced (maybe on another node)."""
        old = self._by_jid.get(entry.jid)
        if old is not None and old.node != entry.node:
            self._by_node.get(old.node, set()).discard(entry.jid)
        self._by_jid[entry.jid] = entry
        self._by_bare.setdefault(entry.bare, {})[entry.jid] = entry
        self._by_node.setdefault(entry.node, set()).add(entry.jid)
        return old

    def remove(self, jid: str, node: str | None = None) -> Entry | None:
        """Remove ``jid`` (only if it is held by ``node``, when given)."""
        old = self._by_jid.get(jid)
        if old is None or (node is not None and old.node != node):
            return None
        del self._by_jid[jid]
        resources = self._by_bare.get(old.bare)
        if resources is not None:
            resources.pop(jid, None)
            if not resources:
                del self._by_bare[old.bare]
        held = self._by_node.get(old.node)
        if held is not None:
            held.discard(jid)
        return old

    def drop_node(self, node: str) -> list[Entry]:
        """Everything ``node`` held (it died); the removed entries."""
        gone = [self._by_jid[j] for j in self._by_node.pop(node, set()) if j in self._by_jid]
        for entry in gone:
            self.remove(entry.jid, entry.node)
        return gone

    def get(self, jid: str) -> Entry | None:
        return self._by_jid.get(jid)

    def resources(self, bare: str) -> list[Entry]:
        return list(self._by_bare.get(bare, {}).values())

    def remote_resources(self, bare: str) -> list[Entry]:
        return [e for e in self._by_bare.get(bare, {}).values() if e.node != self.node]

    def held_by(self, node: str) -> list[Entry]:
        return [self._by_jid[j] for j in self._by_node.get(node, ()) if j in self._by_jid]

    def nodes(self) -> dict[str, int]:
        """Sessions per node."""
        return {n: len(j) for n, j in self._by_node.items() if j}

    def __len__(self) -> int:
        return len(self._by_jid)
