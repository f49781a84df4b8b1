"""Rosters (RFC 6121 §2), pending inbound subscription requests (§3.1.3),
roster versions (XEP-0237) and blocklists (XEP-0191).

Tables, on the shared :data:`~xmppd.storage.engine.metadata`, same code on
SQLite and PostgreSQL:

* ``roster_items``    one row per (account, contact bare JID): handle
  (``name``), ``subscription`` (none/to/from/both), ``ask`` (a subscription
  request of ours is pending: "Pending Out"), ``approved`` (pre-approval,
  RFC 6121 §3.4) and the groups (a JSON list; never queried by group).
* ``roster_pending``  inbound subscription requests not answered yet
  ("Pending In"), with the stanza as received so it can be re-delivered at
  the next login (RFC 6121 §3.1.3).
* ``roster_versions`` one counter per account, bumped in the same
  transaction as every roster change; its decimal string is the XEP-0237
  ``ver``.
* ``blocklist``       XEP-0191 blocked JIDs per account (any JID form).

Named limits: ``max_items`` per roster (``[modules.roster] max_roster_items``),
``max_pending`` requests per account (:data:`DEFAULT_MAX_PENDING`),
``max_items`` per blocklist (``[modules.blocking] max_blocklist``), and
:data:`MAX_PENDING_STANZA_CHARS` per stored request.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, replace

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import UtcDateTime, metadata

__all__ = [
    "NONE", "TO", "FROM", "BOTH", "SUBSCRIPTIONS",
    "DEFAULT_MAX_ROSTER_ITEMS", "DEFAULT_MAX_PENDING", "DEFAULT_MAX_BLOCKLIST",
    "MAX_PENDING_STANZA_CHARS",
    "RosterItem", "RosterStore", "RosterFull", "BlocklistStore", "BlocklistFull",
    "roster_items_table", "roster_pending_table", "roster_versions_table", "blocklist_table",
]

NONE, TO, FROM, BOTH = "none", "to", "from", "both"
SUBSCRIPTIONS = (NONE, TO, FROM, BOTH)

#: items per roster unless configured (``[modules.roster] max_roster_items``)
DEFAULT_MAX_ROSTER_ITEMS = 1000
#: unanswered inbound subscription requests kept per account; more are dropped
DEFAULT_MAX_PENDING = 1000
#: JIDs per blocklist unless configured (``[modules.blocking] max_blocklist``)
DEFAULT_MAX_BLOCKLIST = 1000
#: a stored subscription request longer than this is kept without its payload
MAX_PENDING_STANZA_CHARS = 8192
#: attempts of a write transaction that lost a race on a primary key
_RETRIES = 3

_PART_LEN = 1023  # RFC 7622 §3
_JID_LEN = 3071  # local@domain/resource
_NAME_LEN = 1023

roster_items_table = Table(
    "roster_items",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("contact", String(_JID_LEN), nullable=False),
    Column("name", String(_NAME_LEN), nullable=True),
    Column("subscription", String(4), nullable=False),
    Column("ask", Boolean(), nullable=False),
    Column("approved", Boolean(), nullable=False),
    Column("groups", Text(), nullable=False),
    PrimaryKeyConstraint("domain", "username", "contact", name="roster_items_pk"),
)

roster_pending_table = Table(
    "roster_pending",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("contact", String(_JID_LEN), nullable=False),
    Column("stanza", Text(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("domain", "username", "contact", name="roster_pending_pk"),
)

roster_versions_table = Table(
    "roster_versions",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("version", BigInteger(), nullable=False),
    PrimaryKeyConstraint("domain", "username", name="roster_versions_pk"),
)

blocklist_table = Table(
    "blocklist",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("jid", String(_JID_LEN), nullable=False),
    PrimaryKeyConstraint("domain", "username", "jid", name="blocklist_pk"),
)


class RosterFull(Exception):
    """Adding the item would exceed ``max_items``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the roster already holds the maximum of {limit} items")
        self.limit = limit


class BlocklistFull(Exception):
    """Blocking these JIDs would exceed ``max_items``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the blocklist would exceed the maximum of {limit} JIDs")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class RosterItem:
    contact: str  # bare JID, normalised
    name: str | None = None
    subscription: str = NONE
    ask: bool = False  # Pending Out
    approved: bool = False  # pre-approved (RFC 6121 §3.4)
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.subscription not in SUBSCRIPTIONS:
            raise ValueError(f"bad subscription {self.subscription!r}")

    def evolve(self, **changes) -> "RosterItem":
        return replace(self, **changes)

    @property
    def has_to(self) -> bool:
        return self.subscription in (TO, BOTH)

    @property
    def has_from(self) -> bool:
        return self.subscription in (FROM, BOTH)


def _key(table: Table, user: str, domain: str):
    return (table.c.domain == domain) & (table.c.username == user)


def _row_item(row) -> RosterItem:
    try:
        groups = tuple(json.loads(row.groups))
    except (ValueError, TypeError):
        groups = ()
    return RosterItem(row.contact, row.name, row.subscription, bool(row.ask), bool(row.approved), groups)


def _item_values(item: RosterItem) -> dict:
    return {"name": item.name, "subscription": item.subscription, "ask": item.ask,
            "approved": item.approved, "groups": json.dumps(list(item.groups), ensure_ascii=False)}


async def _bump_version(conn, user: str, domain: str) -> int:
    t = roster_versions_table
    res = await conn.execute(update(t).where(_key(t, user, domain)).values(version=t.c.version + 1))
    if res.rowcount == 0:
        await conn.execute(t.insert().values(domain=domain, username=user, version=1))
        return 1
    return (await conn.execute(select(t.c.version).where(_key(t, user, domain)))).scalar_one()


class RosterStore:
    """Roster items, versions and pending inbound requests of local accounts."""

    def __init__(self, engine: AsyncEngine, *, max_items: int = DEFAULT_MAX_ROSTER_ITEMS,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_items < 1 or max_pending < 1:
            raise ValueError("limits must be >= 1")
        self.engine = engine
        self.max_items = max_items
        self.max_pending = max_pending

    # ------------------------------------------------------------ reads
    async def version(self, user: str, domain: str) -> int:
        t = roster_versions_table
        async with self.engine.connect() as conn:
            v = (await conn.execute(select(t.c.version).where(_key(t, user, domain)))).scalar_one_or_none()
        return v or 0

    async def items(self, user: str, domain: str) -> tuple[int, list[RosterItem]]:
        """(version, items) read together."""
        t, v = roster_items_table, roster_versions_table
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t).where(_key(t, user, domain)).order_by(t.c.contact)
                                       .limit(self.max_items))).all()
            ver = (await conn.execute(select(v.c.version).where(_key(v, user, domain)))).scalar_one_or_none()
        return ver or 0, [_row_item(r) for r in rows]

    async def item(self, user: str, domain: str, contact: str) -> RosterItem | None:
        t = roster_items_table
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t).where(_key(t, user, domain) & (t.c.contact == contact)))).first()
        return _row_item(row) if row is not None else None

    async def contacts(self, user: str, domain: str, subscriptions: tuple[str, ...]) -> list[str]:
        """Bare JIDs of the items whose subscription is one of ``subscriptions``."""
        t = roster_items_table
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(t.c.contact).where(_key(t, user, domain) & t.c.subscription.in_(subscriptions))
                .order_by(t.c.contact).limit(self.max_items))).all()
        return [r.contact for r in rows]

    # ------------------------------------------------------------ writes
    async def put(self, user: str, domain: str, item: RosterItem) -> int:
        """Create or replace ``item``; returns the new roster version.

        Raises :class:`RosterFull` when a new item would exceed ``max_items``.
        """
        t = roster_items_table
        values = _item_values(item)
        for attempt in range(_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    res = await conn.execute(update(t).where(
                        _key(t, user, domain) & (t.c.contact == item.contact)).values(**values))
                    if res.rowcount == 0:
                        count = (await conn.execute(
                            select(func.count()).select_from(t).where(_key(t, user, domain)))).scalar_one()
                        if count >= self.max_items:
                            raise RosterFull(self.max_items)
                        await conn.execute(t.insert().values(domain=domain, username=user,
                                                             contact=item.contact, **values))
                    return await _bump_version(conn, user, domain)
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def remove(self, user: str, domain: str, contact: str) -> int | None:
        """Delete the item; the new version, or None if there was no such item."""
        t = roster_items_table
        for attempt in range(_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    res = await conn.execute(delete(t).where(_key(t, user, domain) & (t.c.contact == contact)))
                    if res.rowcount == 0:
                        return None
                    return await _bump_version(conn, user, domain)
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ pending in
    async def add_pending(self, user: str, domain: str, contact: str, stanza: str,
                          now: _dt.datetime) -> bool:
        """Remember an inbound subscription request; False if one from
        ``contact`` was already pending or ``max_pending`` is reached."""
        t = roster_pending_table
        try:
            async with self.engine.begin() as conn:
                exists = (await conn.execute(select(t.c.contact).where(
                    _key(t, user, domain) & (t.c.contact == contact)))).first()
                if exists is not None:
                    return False
                count = (await conn.execute(
                    select(func.count()).select_from(t).where(_key(t, user, domain)))).scalar_one()
                if count >= self.max_pending:
                    return False
                await conn.execute(t.insert().values(domain=domain, username=user, contact=contact,
                                                     stanza=stanza, received_at=now))
        except IntegrityError:  # a concurrent request from the same contact won
            return False
        return True

    async def remove_pending(self, user: str, domain: str, contact: str) -> bool:
        t = roster_pending_table
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(t).where(_key(t, user, domain) & (t.c.contact == contact)))
        return res.rowcount > 0

    async def has_pending(self, user: str, domain: str, contact: str) -> bool:
        t = roster_pending_table
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.c.contact).where(
                _key(t, user, domain) & (t.c.contact == contact)))).first()
        return row is not None

    async def pending(self, user: str, domain: str) -> list[tuple[str, str]]:
        """(contact, stanza) of every unanswered request, oldest first."""
        t = roster_pending_table
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.c.contact, t.c.stanza).where(_key(t, user, domain))
                                       .order_by(t.c.received_at, t.c.contact).limit(self.max_pending))).all()
        return [(r.contact, r.stanza) for r in rows]


class BlocklistStore:
    """XEP-0191 blocklists: JIDs (any form) per account."""

    def __init__(self, engine: AsyncEngine, *, max_items: int = DEFAULT_MAX_BLOCKLIST) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.engine = engine
        self.max_items = max_items

    async def list(self, user: str, domain: str) -> list[str]:
        t = blocklist_table
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.c.jid).where(_key(t, user, domain)).order_by(t.c.jid)
                                       .limit(self.max_items))).all()
        return [r.jid for r in rows]

    async def all(self) -> dict[tuple[str, str], set[str]]:
        """Every blocklist, keyed by (user, domain): the enforcement cache."""
        t = blocklist_table
        out: dict[tuple[str, str], set[str]] = {}
        async with self.engine.connect() as conn:
            result = await conn.stream(select(t.c.username, t.c.domain, t.c.jid))
            async for row in result:
                out.setdefault((row.username, row.domain), set()).add(row.jid)
        return out

    async def add(self, user: str, domain: str, jids: list[str]) -> list[str]:
        """Block ``jids``; returns those that were not blocked yet.

        All or nothing: raises :class:`BlocklistFull` if the list would exceed
        ``max_items``.
        """
        t = blocklist_table
        wanted = list(dict.fromkeys(jids))
        for attempt in range(_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    have = {r.jid for r in (await conn.execute(
                        select(t.c.jid).where(_key(t, user, domain)))).all()}
                    new = [j for j in wanted if j not in have]
                    if len(have) + len(new) > self.max_items:
                        raise BlocklistFull(self.max_items)
                    if new:
                        await conn.execute(t.insert(), [{"domain": domain, "username": user, "jid": j}
                                                        for j in new])
                    return new
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def remove(self, user: str, domain: str, jids: list[str] | None) -> list[str]:
        """Unblock ``jids`` (None: all); returns those that were blocked."""
        t = blocklist_table
        if jids is not None and not jids:
            return []
        async with self.engine.begin() as conn:
            where = _key(t, user, domain)
            if jids is not None:
                where = where & t.c.jid.in_(list(dict.fromkeys(jids)))
            gone = [r.jid for r in (await conn.execute(select(t.c.jid).where(where))).all()]
            if gone:
                await conn.execute(delete(t).where(where))
        return gone
