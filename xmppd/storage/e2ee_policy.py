"""Stored end-to-end-encryption policy choices of accounts (``e2ee_policy`` table).

One row per explicit choice a user made over ``urn:xmppd:e2ee-policy:0``:

* ``peer = ""``           — the account's own level (applies to every conversation);
* ``peer = "bob@host"``   — the level of the conversation with that bare JID.

Levels are ``none`` / ``warn`` / ``require`` (:data:`LEVELS`).  Domain levels
and the default come from the configuration, never from this table.  The
table lives on the shared :data:`~xmppd.storage.engine.metadata` and works on
SQLite and PostgreSQL with the same code.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import AsyncIterator

from sqlalchemy import Column, PrimaryKeyConstraint, String, Table, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import UtcDateTime, metadata

__all__ = ["LEVELS", "ACCOUNT", "PolicyRow", "E2EEPolicyStore", "e2ee_policy_table"]

#: weakest to strictest
LEVELS = ("none", "warn", "require")
#: the ``peer`` value of an account-wide row
ACCOUNT = ""

_PART_LEN = 1023  # RFC 7622 §3
_JID_LEN = 3071  # local@domain, each part <= 1023 octets
#: rows fetched per round trip when loading everything at start
LOAD_BATCH = 1000

e2ee_policy_table = Table(
    "e2ee_policy",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("peer", String(_JID_LEN), nullable=False),
    Column("level", String(16), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("domain", "username", "peer", name="e2ee_policy_pk"),
)


@dataclass(frozen=True, slots=True)
class PolicyRow:
    user: str
    domain: str
    peer: str  # ACCOUNT ("") or a bare JID
    level: str


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _check(user: str, domain: str, peer: str, level: str | None = None) -> None:
    if not (0 < len(user) <= _PART_LEN and 0 < len(domain) <= _PART_LEN and len(peer) <= _JID_LEN):
        raise ValueError("user/domain/peer cannot be stored (empty or too long)")
    if "\x00" in user + domain + peer:
        raise ValueError("user/domain/peer contains NUL")
    if level is not None and level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")


class E2EEPolicyStore:
    """Repository over ``e2ee_policy``; the table is created by :meth:`create`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self) -> None:
        async with self._engine.begin() as conn:
            await conn.run_sync(lambda sync: e2ee_policy_table.create(sync, checkfirst=True))

    async def set(self, user: str, domain: str, peer: str, level: str) -> None:
        """Insert or replace the level of (account, peer)."""
        _check(user, domain, peer, level)
        t = e2ee_policy_table
        where = (t.c.domain == domain, t.c.username == user, t.c.peer == peer)
        for _ in range(2):  # a concurrent insert of the same key: retry as an update
            try:
                async with self._engine.begin() as conn:
                    res = await conn.execute(update(t).where(*where).values(level=level, updated_at=_now()))
                    if res.rowcount == 0:
                        await conn.execute(t.insert().values(domain=domain, username=user, peer=peer,
                                                             level=level, updated_at=_now()))
                return
            except IntegrityError:
                continue
        raise RuntimeError("could not store the e2ee policy (concurrent writers)")

    async def clear(self, user: str, domain: str, peer: str) -> bool:
        """Remove the explicit level of (account, peer); True if there was one."""
        _check(user, domain, peer)
        t = e2ee_policy_table
        async with self._engine.begin() as conn:
            res = await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user,
                                                     t.c.peer == peer))
        return res.rowcount > 0

    async def count_conversations(self, user: str, domain: str) -> int:
        t = e2ee_policy_table
        async with self._engine.connect() as conn:
            return int(await conn.scalar(
                select(func.count()).select_from(t).where(t.c.domain == domain, t.c.username == user,
                                                          t.c.peer != ACCOUNT)) or 0)

    async def for_account(self, user: str, domain: str) -> list[PolicyRow]:
        t = e2ee_policy_table
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t.c.peer, t.c.level).where(
                t.c.domain == domain, t.c.username == user).order_by(t.c.peer))).all()
        return [PolicyRow(user, domain, r.peer, r.level) for r in rows]

    async def iter_all(self) -> AsyncIterator[PolicyRow]:
        """Every row, in key order, fetched in batches of :data:`LOAD_BATCH`."""
        t = e2ee_policy_table
        after: tuple[str, str, str] | None = None
        while True:
            q = select(t.c.domain, t.c.username, t.c.peer, t.c.level)
            if after is not None:
                d, u, p = after
                q = q.where((t.c.domain > d) | ((t.c.domain == d) & (t.c.username > u))
                            | ((t.c.domain == d) & (t.c.username == u) & (t.c.peer > p)))
            q = q.order_by(t.c.domain, t.c.username, t.c.peer).limit(LOAD_BATCH)
            async with self._engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            for r in rows:
                if r.level in LEVELS:  # a hand-edited bad value is ignored, not fatal
                    yield PolicyRow(r.username, r.domain, r.peer, r.level)
            if len(rows) < LOAD_BATCH:
                return
            last = rows[-1]
            after = (last.domain, last.username, last.peer)
