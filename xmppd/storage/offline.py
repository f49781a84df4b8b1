"""Offline message store (XEP-0160): the exact bytes to deliver, per account.

Each row is one message for one account, stored as the bytes the recipient
will get (``from`` stamped, ``<delay/>`` inserted: see modules.offline), in
arrival order (``seq``).  Rows are deleted once delivered.  SQLite and
PostgreSQL, same code.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import UtcDateTime, metadata

__all__ = ["OfflineRow", "OfflineStore", "offline_table", "MAX_FETCH"]

_PART_LEN = 1023  # RFC 7622 §3
_JID_LEN = 3071
#: most rows one fetch() returns (delivery loops in batches of this size)
MAX_FETCH = 500

offline_table = Table(
    "offline_messages",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("stored_at", UtcDateTime(), nullable=False),
    Column("sender", String(_JID_LEN), nullable=False),
    Column("data", LargeBinary(), nullable=False),
    Index("offline_messages_owner", "domain", "username", "seq"),
)


@dataclass(frozen=True, slots=True)
class OfflineRow:
    seq: int
    stored_at: _dt.datetime
    sender: str
    data: bytes


class OfflineStore:
    """Repository over ``offline_messages``; call :func:`create_schema` first."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def store(self, user: str, domain: str, sender: str, data: bytes, when: _dt.datetime,
                    *, max_per_user: int) -> bool:
        """Append a message; False (nothing stored) when the account already
        holds ``max_per_user`` messages."""
        t = offline_table
        async with self._engine.begin() as conn:
            n = await conn.scalar(select(func.count()).select_from(t)
                                  .where(t.c.domain == domain, t.c.username == user))
            if (n or 0) >= max_per_user:
                return False
            await conn.execute(t.insert().values(domain=domain, username=user, stored_at=when,
                                                 sender=sender, data=data))
        return True

    async def count(self, user: str, domain: str) -> int:
        t = offline_table
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(t)
                                         .where(t.c.domain == domain, t.c.username == user)) or 0)

    async def fetch(self, user: str, domain: str, limit: int = MAX_FETCH) -> list[OfflineRow]:
        """The oldest ``limit`` (at most :data:`MAX_FETCH`) messages, oldest first."""
        t = offline_table
        limit = max(0, min(limit, MAX_FETCH))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(t.c.seq, t.c.stored_at, t.c.sender, t.c.data)
                .where(t.c.domain == domain, t.c.username == user)
                .order_by(t.c.seq).limit(limit))).all()
        return [OfflineRow(r.seq, r.stored_at, r.sender, bytes(r.data)) for r in rows]

    async def delete(self, user: str, domain: str, seqs: list[int]) -> int:
        if not seqs:
            return 0
        t = offline_table
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user,
                                                        t.c.seq.in_(seqs)))
        return result.rowcount or 0

    async def remove_user(self, user: str, domain: str) -> int:
        t = offline_table
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user))
        return result.rowcount or 0
