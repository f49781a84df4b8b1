"""Private XML storage (XEP-0049): one row per account and root element (``{namespace}name``).

``data`` is the element as stored (serialised once when set, served as is).
SQLite and PostgreSQL with the same code, on the shared metadata.
"""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary, PrimaryKeyConstraint, String, Table, and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import metadata

__all__ = ["PrivateStore", "private_table", "TooManyEntries"]

_PART_LEN = 1023
_KEY_LEN = 2048

private_table = Table(
    "private_storage",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("key", String(_KEY_LEN), nullable=False),
    Column("data", LargeBinary(), nullable=False),
    PrimaryKeyConstraint("domain", "username", "key", name="private_storage_pk"),
)


class TooManyEntries(Exception):
    """The account already stores ``max_entries`` different elements."""


class PrivateStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, user: str, domain: str, key: str) -> bytes | None:
        t = private_table
        async with self._engine.connect() as conn:
            return (await conn.execute(select(t.c.data).where(and_(
                t.c.domain == domain, t.c.username == user, t.c.key == key)))).scalar()

    async def set_many(self, user: str, domain: str, items: list[tuple[str, bytes]], *, max_entries: int) -> None:
        """Store every ``(key, data)`` in one transaction; raises TooManyEntries (nothing stored)."""
        t = private_table
        mine = and_(t.c.domain == domain, t.c.username == user)
        async with self._engine.begin() as conn:
            keys = {k for k, _ in items}
            existing = set((await conn.execute(select(t.c.key).where(mine, t.c.key.in_(keys)))).scalars())
            count = (await conn.execute(select(func.count()).select_from(t).where(mine))).scalar_one()
            if count + len(keys - existing) > max_entries:
                raise TooManyEntries(f"{count} entries stored (limit {max_entries})")
            for key, data in items:
                await conn.execute(delete(t).where(mine, t.c.key == key))
                await conn.execute(t.insert().values(domain=domain, username=user, key=key, data=data))
