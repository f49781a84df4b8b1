"""Publish-subscribe storage for PEP (XEP-0163 on XEP-0060): nodes, items, affiliations.

Tables, on the shared :data:`~xmppd.storage.engine.metadata`, same code on
SQLite and PostgreSQL:

* ``pubsub_nodes``        one row per (account, node name): the node
  configuration as JSON (:class:`NodeConfig`), creation time.
* ``pubsub_items``        one row per (node, item id): the publisher, the
  payload as the **exact bytes** the owner published, its size, and the time
  of the last publish.  ``seq`` orders items: a re-publish of an existing id
  gets a new ``seq`` (it becomes the newest item, XEP-0060 §7.1.2).
* ``pubsub_affiliations`` whitelist membership per node (``member``; the
  owner is implicit and never stored, XEP-0060 §4.1, XEP-0223).

Everything is bounded by named limits handed in by the caller
(``max_items`` per node from the node's configuration, ``max_nodes`` per
account, ``max_members`` per whitelist, and per account the total items and
payload bytes over all its nodes: ``account_items`` / ``account_bytes`` of
:meth:`PubsubStore.publish`) plus :data:`MAX_NODE_BYTES` /
:data:`MAX_ITEM_ID_BYTES` for names.  The account totals are checked in the
publish transaction, after the item is written and the node trimmed, with one
aggregate over the account's items (``length(payload)``: the engine reads the
stored length, not the payload): exact whatever the publish replaced or
dropped, and a publish is rare next to a message.  Writes of one account are expected to
be serialised by the caller (``modules.pep`` holds a per-account lock); the
unique constraints keep the tables consistent even if they are not.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field, replace

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    and_,
    or_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import UtcDateTime, metadata

__all__ = [
    "ACCESS_MODELS", "SEND_LAST_VALUES", "PUBLISH_MODELS",
    "DEFAULT_MAX_ITEMS_PER_NODE", "DEFAULT_MAX_NODES", "DEFAULT_MAX_ITEM_BYTES",
    "DEFAULT_MAX_MEMBERS", "MAX_NODE_BYTES", "MAX_ITEM_ID_BYTES", "MAX_ROSTER_GROUPS",
    "DEFAULT_MAX_ACCOUNT_ITEMS", "DEFAULT_MAX_ACCOUNT_BYTES",
    "NodeConfig", "Node", "Item", "PubsubStore", "NodeExists", "TooManyNodes", "TooManyMembers",
    "AccountQuotaExceeded",
    "pubsub_nodes_table", "pubsub_items_table", "pubsub_affiliations_table",
]

#: XEP-0060 §4.5 access models offered by PEP here (``authorize`` is not)
ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
#: XEP-0060 §16.4.3 pubsub#send_last_published_item
SEND_LAST_VALUES = ("never", "on_sub", "on_sub_and_presence")
#: only the owner publishes to a PEP node (XEP-0163 §3 "one publisher per node")
PUBLISH_MODELS = ("publishers",)

#: items a node may keep unless configured (``[modules.pep] max_items_per_node``);
#: ``pubsub#max_items = max`` means this number
DEFAULT_MAX_ITEMS_PER_NODE = 1000
#: nodes per account unless configured (``[modules.pep] max_nodes_per_account``)
DEFAULT_MAX_NODES = 1000
#: bytes of one item payload unless configured (``[modules.pep] max_item_bytes``)
DEFAULT_MAX_ITEM_BYTES = 128 * 1024
#: whitelist members per node (``[modules.pep] max_members_per_node``)
DEFAULT_MAX_MEMBERS = 1000
#: items over all of an account's nodes (``[modules.pep] max_items_per_account``)
DEFAULT_MAX_ACCOUNT_ITEMS = 10_000
#: payload bytes over all of an account's nodes (``[modules.pep] max_bytes_per_account``)
DEFAULT_MAX_ACCOUNT_BYTES = 16 * 1024 * 1024
#: UTF-8 bytes of a node name / of an item id (indexed columns: keeps every
#: key well inside PostgreSQL's b-tree entry limit)
MAX_NODE_BYTES = 512
MAX_ITEM_ID_BYTES = 512
#: groups in pubsub#roster_groups_allowed
MAX_ROSTER_GROUPS = 64
#: attempts of a write that lost a race on a unique key
_RETRIES = 3
#: owners / nodes per batched query
_CHUNK = 100

_PART_LEN = 1023  # RFC 7622 §3
_JID_LEN = 3071

_ID = BigInteger().with_variant(Integer, "sqlite")

pubsub_nodes_table = Table(
    "pubsub_nodes",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("node", String(MAX_NODE_BYTES), nullable=False),
    Column("config", Text(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("domain", "username", "node", name="pubsub_nodes_owner_node"),
)

pubsub_items_table = Table(
    "pubsub_items",
    metadata,
    Column("seq", _ID, primary_key=True, autoincrement=True),
    Column("node_id", _ID, ForeignKey("pubsub_nodes.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", String(MAX_ITEM_ID_BYTES), nullable=False),
    Column("publisher", String(_JID_LEN), nullable=False),
    Column("payload", LargeBinary(), nullable=False),
    Column("size", Integer(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("node_id", "item_id", name="pubsub_items_node_item"),
    Index("pubsub_items_node_seq", "node_id", "seq"),
)

pubsub_affiliations_table = Table(
    "pubsub_affiliations",
    metadata,
    Column("node_id", _ID, ForeignKey("pubsub_nodes.id", ondelete="CASCADE"), nullable=False),
    Column("jid", String(_JID_LEN), nullable=False),
    Column("affiliation", String(16), nullable=False),
    PrimaryKeyConstraint("node_id", "jid", name="pubsub_affiliations_pk"),
)


class NodeExists(Exception):
    """create_node: the account already has a node of that name."""


class TooManyNodes(Exception):
    """The account already has ``max_nodes`` nodes."""


class TooManyMembers(Exception):
    """The whitelist already has ``max_members`` members."""


class AccountQuotaExceeded(Exception):
    """A publish would take the account over its total items or bytes (nothing stored)."""

    def __init__(self, what: str, total: int, limit: int) -> None:
        super().__init__(f"{what}: {total} > {limit}")
        self.what = what  # "items" or "bytes"
        self.total = total
        self.limit = limit


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The node configuration fields PEP honours (XEP-0060 §16.4.4 ``pubsub#node_config``).

    ``max_items`` is a number (the ``max`` keyword is resolved by the caller
    against its configured limit)."""

    access_model: str = "presence"  # XEP-0163 §"Recommended Defaults"
    persist_items: bool = True
    max_items: int = 1
    publish_model: str = "publishers"
    send_last_published_item: str = "on_sub_and_presence"  # XEP-0163 §notify-last
    deliver_notifications: bool = True
    deliver_payloads: bool = True
    notify_retract: bool = True
    notify_delete: bool = True
    title: str = ""
    roster_groups_allowed: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        d = asdict(self)
        d["roster_groups_allowed"] = list(self.roster_groups_allowed)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "NodeConfig":
        raw = json.loads(text)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        if "roster_groups_allowed" in known:
            known["roster_groups_allowed"] = tuple(known["roster_groups_allowed"])
        return cls(**known)

    @property
    def kept_items(self) -> int:
        """Items stored: a transient node (persist_items false) keeps only the
        last published item, for ``send_last_published_item``."""
        return self.max_items if self.persist_items else 1


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    user: str
    domain: str
    name: str
    config: NodeConfig
    created_at: _dt.datetime


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    publisher: str
    payload: bytes
    updated_at: _dt.datetime
    seq: int


class PubsubStore:
    """Repository over the three pubsub tables; call :func:`create_schema` first."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # ------------------------------------------------------------ nodes
    @staticmethod
    def _node(row) -> Node:
        return Node(row.id, row.username, row.domain, row.node, NodeConfig.from_json(row.config),
                    row.created_at)

    async def node(self, user: str, domain: str, name: str) -> Node | None:
        t = pubsub_nodes_table
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(t).where(
                t.c.domain == domain, t.c.username == user, t.c.node == name))).first()
        return self._node(row) if row is not None else None

    async def nodes(self, user: str, domain: str) -> list[Node]:
        """The account's nodes by name (at most ``max_nodes`` exist)."""
        t = pubsub_nodes_table
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t).where(t.c.domain == domain, t.c.username == user)
                                       .order_by(t.c.node))).all()
        return [self._node(r) for r in rows]

    async def create_node(self, user: str, domain: str, name: str, config: NodeConfig,
                          when: _dt.datetime, *, max_nodes: int) -> Node:
        """Create a node; raises :class:`NodeExists` or :class:`TooManyNodes`."""
        try:
            async with self._engine.begin() as conn:
                node = await self._create(conn, user, domain, name, config, when, max_nodes)
        except IntegrityError:
            raise NodeExists(name) from None
        return node

    async def _create(self, conn, user, domain, name, config, when, max_nodes) -> Node:
        t = pubsub_nodes_table
        exists = await conn.scalar(select(t.c.id).where(
            t.c.domain == domain, t.c.username == user, t.c.node == name))
        if exists is not None:
            raise NodeExists(name)
        n = await conn.scalar(select(func.count()).select_from(t)
                              .where(t.c.domain == domain, t.c.username == user))
        if (n or 0) >= max_nodes:
            raise TooManyNodes(f"{user}@{domain} has {n} nodes")
        result = await conn.execute(t.insert().values(
            domain=domain, username=user, node=name, config=config.to_json(), created_at=when))
        node_id = result.inserted_primary_key[0]
        return Node(int(node_id), user, domain, name, config, when)

    async def configure(self, node_id: int, config: NodeConfig) -> int:
        """Store a new configuration; items beyond the new limit are dropped
        (oldest first).  Returns the number of items dropped."""
        t = pubsub_nodes_table
        async with self._engine.begin() as conn:
            await conn.execute(update(t).where(t.c.id == node_id).values(config=config.to_json()))
            return await self._trim(conn, node_id, config.kept_items)

    async def delete_node(self, node_id: int) -> bool:
        async with self._engine.begin() as conn:
            await conn.execute(delete(pubsub_items_table).where(pubsub_items_table.c.node_id == node_id))
            await conn.execute(delete(pubsub_affiliations_table)
                               .where(pubsub_affiliations_table.c.node_id == node_id))
            result = await conn.execute(delete(pubsub_nodes_table).where(pubsub_nodes_table.c.id == node_id))
        return bool(result.rowcount)

    async def remove_user(self, user: str, domain: str) -> int:
        """Delete every node of an account (with items and affiliations)."""
        t = pubsub_nodes_table
        async with self._engine.begin() as conn:
            ids = [r[0] for r in (await conn.execute(select(t.c.id).where(
                t.c.domain == domain, t.c.username == user))).all()]
            if not ids:
                return 0
            await conn.execute(delete(pubsub_items_table).where(pubsub_items_table.c.node_id.in_(ids)))
            await conn.execute(delete(pubsub_affiliations_table)
                               .where(pubsub_affiliations_table.c.node_id.in_(ids)))
            await conn.execute(delete(t).where(t.c.id.in_(ids)))
        return len(ids)

    # ------------------------------------------------------------ items
    async def publish(self, user: str, domain: str, name: str, item_id: str, publisher: str,
                      payload: bytes, when: _dt.datetime, *, create_config: NodeConfig,
                      max_nodes: int, account_items: int | None = None,
                      account_bytes: int | None = None) -> tuple[Node, bool]:
        """Store an item (replacing one with the same id, which becomes the
        newest); the node is created with ``create_config`` if missing
        (XEP-0060 §7.1.4 auto-create).  Items beyond the node's limit are
        dropped, oldest first, in the same transaction.  Returns (node, created).
        Raises :class:`TooManyNodes` or :class:`AccountQuotaExceeded` (the
        account would hold more than ``account_items`` items or
        ``account_bytes`` payload bytes over all its nodes); nothing stored."""
        nt, it = pubsub_nodes_table, pubsub_items_table
        for attempt in range(_RETRIES):
            try:
                async with self._engine.begin() as conn:
                    row = (await conn.execute(select(nt).where(
                        nt.c.domain == domain, nt.c.username == user, nt.c.node == name))).first()
                    created = row is None
                    if created:
                        node = await self._create(conn, user, domain, name, create_config, when, max_nodes)
                    else:
                        node = self._node(row)
                    await conn.execute(delete(it).where(it.c.node_id == node.id, it.c.item_id == item_id))
                    await conn.execute(it.insert().values(
                        node_id=node.id, item_id=item_id, publisher=publisher, payload=payload,
                        size=len(payload), updated_at=when))
                    await self._trim(conn, node.id, node.config.kept_items)
                    if account_items is not None or account_bytes is not None:
                        await self._check_account(conn, user, domain, account_items, account_bytes)
                return node, created
            except (IntegrityError, NodeExists):
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _check_account(conn, user: str, domain: str, max_items: int | None,
                             max_bytes: int | None) -> None:
        nt, it = pubsub_nodes_table, pubsub_items_table
        nodes = select(nt.c.id).where(nt.c.domain == domain, nt.c.username == user).scalar_subquery()
        n, total = (await conn.execute(
            select(func.count(), func.coalesce(func.sum(func.length(it.c.payload)), 0))
            .where(it.c.node_id.in_(nodes)))).one()
        if max_items is not None and n > max_items:
            raise AccountQuotaExceeded("items", int(n), max_items)  # rolls the transaction back
        if max_bytes is not None and total > max_bytes:
            raise AccountQuotaExceeded("bytes", int(total), max_bytes)

    async def account_usage(self, user: str, domain: str) -> tuple[int, int]:
        """(items, payload bytes) over all of the account's nodes."""
        nt, it = pubsub_nodes_table, pubsub_items_table
        nodes = select(nt.c.id).where(nt.c.domain == domain, nt.c.username == user).scalar_subquery()
        async with self._engine.connect() as conn:
            n, total = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(func.length(it.c.payload)), 0))
                .where(it.c.node_id.in_(nodes)))).one()
        return int(n), int(total)

    @staticmethod
    async def _trim(conn, node_id: int, keep: int) -> int:
        it = pubsub_items_table
        doomed = [r[0] for r in (await conn.execute(
            select(it.c.seq).where(it.c.node_id == node_id).order_by(it.c.seq.desc()).offset(keep)
        )).all()]
        if not doomed:
            return 0
        await conn.execute(delete(it).where(it.c.seq.in_(doomed)))
        return len(doomed)

    async def items(self, node_id: int, *, item_ids: list[str] | None = None,
                    max_items: int | None = None, max_bytes: int | None = None) -> list[Item]:
        """Items oldest first: all, the newest ``max_items``, or those of
        ``item_ids`` (unknown ids are skipped).  ``max_bytes`` bounds the total
        payload size: the newest items that fit are returned."""
        it = pubsub_items_table
        # length(payload), not the size column: the engine reads a blob's length from the row
        # header, while a column stored after a large payload is only reached through it
        q = select(it.c.seq, func.length(it.c.payload)).where(it.c.node_id == node_id)
        if item_ids is not None:
            if not item_ids:
                return []
            q = q.where(it.c.item_id.in_(item_ids))
        q = q.order_by(it.c.seq.desc())
        if max_items is not None:
            q = q.limit(max(0, max_items))
        async with self._engine.connect() as conn:
            chosen: list[int] = []
            total = 0
            for seq, size in (await conn.execute(q)).all():
                if max_bytes is not None and total + size > max_bytes:
                    break
                total += size
                chosen.append(seq)
            if not chosen:
                return []
            rows = (await conn.execute(
                select(it.c.seq, it.c.item_id, it.c.publisher, it.c.payload, it.c.updated_at)
                .where(it.c.seq.in_(chosen)).order_by(it.c.seq))).all()
        return [Item(r.item_id, r.publisher, bytes(r.payload), r.updated_at, r.seq) for r in rows]

    async def last_item(self, node_id: int) -> Item | None:
        items = await self.items(node_id, max_items=1)
        return items[0] if items else None

    async def last_items(self, node_ids: list[int]) -> dict[int, Item]:
        """The newest item of each node (nodes without items are absent)."""
        it = pubsub_items_table
        out: dict[int, Item] = {}
        async with self._engine.connect() as conn:
            for i in range(0, len(node_ids), _CHUNK):
                chunk = node_ids[i:i + _CHUNK]
                newest = (select(func.max(it.c.seq)).where(it.c.node_id.in_(chunk))
                          .group_by(it.c.node_id).scalar_subquery())
                rows = (await conn.execute(
                    select(it.c.node_id, it.c.seq, it.c.item_id, it.c.publisher, it.c.payload,
                           it.c.updated_at).where(it.c.seq.in_(newest)))).all()
                for r in rows:
                    out[r.node_id] = Item(r.item_id, r.publisher, bytes(r.payload), r.updated_at, r.seq)
        return out

    async def find_nodes(self, owners: list[tuple[str, str]], names: list[str]) -> list[Node]:
        """Nodes called one of ``names`` of any of ``owners`` ((user, domain) pairs)."""
        if not owners or not names:
            return []
        t = pubsub_nodes_table
        out: list[Node] = []
        async with self._engine.connect() as conn:
            for i in range(0, len(owners), _CHUNK):
                chunk = owners[i:i + _CHUNK]
                who = or_(*(and_(t.c.domain == d, t.c.username == u) for u, d in chunk))
                for j in range(0, len(names), _CHUNK):
                    rows = (await conn.execute(select(t).where(t.c.node.in_(names[j:j + _CHUNK]),
                                                               who))).all()
                    out.extend(self._node(r) for r in rows)
        return out

    async def count_items(self, node_id: int) -> int:
        it = pubsub_items_table
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(it)
                                         .where(it.c.node_id == node_id)) or 0)

    async def retract(self, node_id: int, item_id: str) -> bool:
        it = pubsub_items_table
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(it).where(it.c.node_id == node_id, it.c.item_id == item_id))
        return bool(result.rowcount)

    async def purge(self, node_id: int) -> int:
        it = pubsub_items_table
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(it).where(it.c.node_id == node_id))
        return result.rowcount or 0

    # ------------------------------------------------------------ affiliations (whitelist)
    async def affiliations(self, node_id: int) -> dict[str, str]:
        at = pubsub_affiliations_table
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(at.c.jid, at.c.affiliation)
                                       .where(at.c.node_id == node_id).order_by(at.c.jid))).all()
        return {r.jid: r.affiliation for r in rows}

    async def affiliation(self, node_id: int, jid: str) -> str | None:
        at = pubsub_affiliations_table
        async with self._engine.connect() as conn:
            return await conn.scalar(select(at.c.affiliation).where(at.c.node_id == node_id,
                                                                     at.c.jid == jid))

    async def set_affiliations(self, node_id: int, changes: dict[str, str | None], *,
                               max_members: int) -> None:
        """Apply {jid: affiliation or None (= none, removed)} atomically;
        raises :class:`TooManyMembers` (nothing changed)."""
        at = pubsub_affiliations_table
        async with self._engine.begin() as conn:
            for jid, aff in changes.items():
                await conn.execute(delete(at).where(at.c.node_id == node_id, at.c.jid == jid))
                if aff is not None:
                    await conn.execute(at.insert().values(node_id=node_id, jid=jid, affiliation=aff))
            n = await conn.scalar(select(func.count()).select_from(at).where(at.c.node_id == node_id))
            if (n or 0) > max_members:
                raise TooManyMembers(f"{n} > {max_members}")


def with_config(node: Node, config: NodeConfig) -> Node:
    return replace(node, config=config)
