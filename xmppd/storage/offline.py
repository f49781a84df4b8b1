"""Offline message store (XEP-0160): the exact bytes to deliver, per account.

Each row is one message for one account, stored as the bytes the recipient
will get (``from`` stamped, ``<delay/>`` inserted: see modules.offline), in
arrival order (``seq``).  Rows are deleted once delivered.  SQLite and
PostgreSQL, same code.

Quotas per account, checked when storing (:meth:`OfflineStore.store`):
``max_per_user`` messages, ``max_bytes`` bytes, and no single sender (bare
JID) holding more than ``sender_share`` of either.  The check costs no query
per message: the store keeps each account's usage (messages and bytes, per
sender) in memory, loaded once with one indexed aggregate over that account's
rows, kept exact by every write this store makes (a store adds to it; a
delivery or removal drops it, so the next store reloads it), and bounded to
:data:`USAGE_CACHE_ACCOUNTS` accounts (least recently used dropped first).
This assumes the server process is the only writer of the table (true of a
single node; the CLI never writes it).
"""

from __future__ import annotations

import collections
import datetime as _dt
import enum
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import UtcDateTime, metadata

__all__ = ["OfflineRow", "OfflineStore", "Stored", "offline_table", "MAX_FETCH", "USAGE_CACHE_ACCOUNTS"]

_PART_LEN = 1023  # RFC 7622 §3
_JID_LEN = 3071
#: most rows one fetch() returns (delivery loops in batches of this size)
MAX_FETCH = 500
#: accounts whose usage (messages, bytes, per sender) is kept in memory for the quota check
USAGE_CACHE_ACCOUNTS = 10_000

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


class Stored(enum.Enum):
    """What :meth:`OfflineStore.store` did; true only for ``OK``."""

    OK = "stored"
    COUNT = "the account holds max_per_user messages"
    BYTES = "the account holds max_bytes bytes"
    SENDER_SHARE = "this sender holds its share of the account's store"

    def __bool__(self) -> bool:
        return self is Stored.OK


class _Usage:
    """One account's offline store: messages, bytes, and both per bare sender."""

    __slots__ = ("count", "bytes", "senders")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.senders: dict[str, list[int]] = {}

    def add(self, sender: str, n: int, size: int) -> None:
        self.count += n
        self.bytes += size
        per = self.senders.setdefault(sender, [0, 0])
        per[0] += n
        per[1] += size


def _bare(jid: str) -> str:
    return jid.split("/", 1)[0]  # RFC 7622: '/' cannot occur before the resource


class OfflineStore:
    """Repository over ``offline_messages``; call :func:`create_schema` first."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._usage: collections.OrderedDict[tuple[str, str], _Usage] = collections.OrderedDict()

    async def _load_usage(self, conn, user: str, domain: str) -> _Usage:
        t = offline_table
        usage = _Usage()
        rows = (await conn.execute(
            select(t.c.sender, func.count(), func.coalesce(func.sum(func.length(t.c.data)), 0))
            .where(t.c.domain == domain, t.c.username == user).group_by(t.c.sender))).all()
        for sender, n, size in rows:
            usage.add(_bare(sender), int(n), int(size))
        return usage

    async def store(self, user: str, domain: str, sender: str, data: bytes, when: _dt.datetime,
                    *, max_per_user: int, max_bytes: int | None = None,
                    sender_share: float = 1.0) -> Stored:
        """Append a message unless a quota refuses it (then nothing is stored):
        the account would hold more than ``max_per_user`` messages or
        ``max_bytes`` bytes, or the sender (bare JID of ``sender``) more than
        ``sender_share`` (0 < share <= 1) of either.  Stores of one account
        must not run concurrently (the offline module chains them)."""
        t = offline_table
        key = (domain, user)
        who = _bare(sender)
        size = len(data)
        usage = self._usage.get(key)
        if usage is not None:
            self._usage.move_to_end(key)
            verdict = _verdict(usage, who, size, max_per_user, max_bytes, sender_share)
            if verdict is not Stored.OK:
                return verdict  # refused without touching the database (a flood costs no I/O)
        async with self._engine.begin() as conn:
            if usage is None:
                usage = await self._load_usage(conn, user, domain)
            verdict = _verdict(usage, who, size, max_per_user, max_bytes, sender_share)
            if verdict is Stored.OK:
                await conn.execute(t.insert().values(domain=domain, username=user, stored_at=when,
                                                     sender=sender, data=data))
        # committed (or refused): now the usage may be remembered
        if verdict is Stored.OK:
            usage.add(who, 1, size)
        self._usage[key] = usage
        while len(self._usage) > USAGE_CACHE_ACCOUNTS:
            self._usage.popitem(last=False)
        return verdict

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
        self._usage.pop((domain, user), None)  # reloaded (from what is left) at the next store
        return result.rowcount or 0

    async def remove_user(self, user: str, domain: str) -> int:
        t = offline_table
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user))
        self._usage.pop((domain, user), None)
        return result.rowcount or 0


def _verdict(usage: _Usage, sender: str, size: int, max_count: int, max_bytes: int | None,
             share: float) -> Stored:
    if usage.count + 1 > max_count:
        return Stored.COUNT
    if max_bytes is not None and usage.bytes + size > max_bytes:
        return Stored.BYTES
    if share < 1.0:
        mine = usage.senders.get(sender, (0, 0))
        if mine[0] + 1 > max(1, int(max_count * share)):
            return Stored.SENDER_SHARE
        if max_bytes is not None and mine[1] + size > max(1, int(max_bytes * share)):
            return Stored.SENDER_SHARE
    return Stored.OK
