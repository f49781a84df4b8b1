"""vcard-temp store (XEP-0054): one serialized <vCard/> per account."""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import Column, LargeBinary, PrimaryKeyConstraint, String, Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import UtcDateTime, metadata

__all__ = ["VCardStore", "vcards_table"]

_PART_LEN = 1023  # RFC 7622 §3

vcards_table = Table(
    "vcards",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("data", LargeBinary(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("domain", "username", name="vcards_pk"),
)


class VCardStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, user: str, domain: str) -> bytes | None:
        t = vcards_table
        async with self._engine.connect() as conn:
            data = await conn.scalar(select(t.c.data).where(t.c.domain == domain, t.c.username == user))
        return bytes(data) if data is not None else None

    async def set(self, user: str, domain: str, data: bytes, when: _dt.datetime) -> None:
        """Replace the account's vCard (delete + insert in one transaction: portable)."""
        t = vcards_table
        async with self._engine.begin() as conn:
            await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user))
            await conn.execute(t.insert().values(domain=domain, username=user, data=data, updated_at=when))

    async def remove(self, user: str, domain: str) -> bool:
        t = vcards_table
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user))
        return bool(result.rowcount)
