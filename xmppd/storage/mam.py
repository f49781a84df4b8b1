"""Message archive (XEP-0313): per-account rows of exact message bytes.

Each row belongs to one account (``domain``, ``username``) and holds the
message as it was relayed (``from`` stamped, payload untouched), the archive
id the account sees (``archive_id``: XEP-0359 stanza-id / RSM id), the time
and the other party (``with_bare`` + ``with_resource``).  Order is ``seq``
(insertion order), which is also time order.  Paging follows XEP-0059: a page
is always returned oldest first; ``count`` and ``first_index`` describe the
whole filtered result set.  SQLite and PostgreSQL, same code.

``max_per_user`` is enforced at write, as a ring: :meth:`MamStore.append_many`
deletes an account's oldest rows in the same transaction that takes it over
the limit, so an account never holds more (refusing instead would stop
archiving the newest messages, which are the ones a client syncs).  The
check costs no count per message: the store keeps each account's row count in
memory (:data:`COUNT_CACHE_ACCOUNTS` accounts, least recently used dropped
first), counted once with the indexed owner count and kept exact by every
write and delete this store makes (a purge or trim forgets them all).  This
assumes the server process is the only writer of the table (true of a single
node).
"""

from __future__ import annotations

import collections
import datetime as _dt
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    and_,
    delete,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import UtcDateTime, metadata

__all__ = ["ArchivedMessage", "Page", "UnknownId", "MamStore", "mam_table", "mam_prefs_table",
           "PREF_DEFAULTS", "COUNT_CACHE_ACCOUNTS"]

_PART_LEN = 1023  # RFC 7622 §3
_ID_LEN = 64
PREF_DEFAULTS = ("always", "never", "roster")
#: accounts whose archive row count is kept in memory (for ``max_per_user`` at write)
COUNT_CACHE_ACCOUNTS = 100_000

mam_table = Table(
    "mam_messages",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("archive_id", String(_ID_LEN), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    Column("with_bare", String(2 * _PART_LEN + 1), nullable=False),
    Column("with_resource", String(_PART_LEN), nullable=True),
    Column("data", LargeBinary(), nullable=False),
    Index("mam_messages_owner", "domain", "username", "seq"),
    Index("mam_messages_id", "domain", "username", "archive_id", unique=True),
    Index("mam_messages_with", "domain", "username", "with_bare", "seq"),
    Index("mam_messages_ts", "ts"),
)

mam_prefs_table = Table(
    "mam_prefs",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("default_pref", String(16), nullable=False),
    PrimaryKeyConstraint("domain", "username", name="mam_prefs_pk"),
)


_SQLITE_INSERT = ("INSERT INTO mam_messages (domain, username, archive_id, ts, with_bare, with_resource, data) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)")


class UnknownId(LookupError):
    """An RSM/after-id/before-id that is not in this account's archive."""

    def __init__(self, archive_id: str) -> None:
        super().__init__(archive_id)
        self.archive_id = archive_id


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    archive_id: str
    ts: _dt.datetime
    with_bare: str
    with_resource: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Page:
    items: list[ArchivedMessage]
    count: int  # messages matching the filters, all pages
    first_index: int | None  # position of items[0] in that set
    complete: bool  # this page reaches the end of the set in the paging direction


class MamStore:
    """Repository over ``mam_messages`` / ``mam_prefs``; call :func:`create_schema` first."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        #: (domain, user) -> rows archived, exact (see the module docstring)
        self._counts: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()

    async def append(self, user: str, domain: str, archive_id: str, ts: _dt.datetime,
                     with_bare: str, with_resource: str | None, data: bytes, *,
                     max_per_user: int = 0) -> int:
        return await self.append_many([(user, domain, archive_id, ts, with_bare, with_resource, data)],
                                      max_per_user=max_per_user)

    async def append_many(self, rows: "list[tuple]", *, max_per_user: int = 0) -> int:
        """Archive several messages in ONE transaction (a multi-row executemany),
        in list order (``seq`` follows it).  Each row is ``(user, domain,
        archive_id, ts, with_bare, with_resource, data)``, as for :meth:`append`.
        With ``max_per_user``, an account taken over it loses its oldest rows in
        the same transaction (a ring).  Returns the number of rows so dropped."""
        if not rows:
            return 0
        added: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row[1], row[0])
            added[key] = added.get(key, 0) + 1
        try:
            async with self._engine.begin() as conn:
                await self._insert(conn, rows)
                counts, dropped = await self._ring(conn, added, max_per_user)
        except BaseException:
            for key in added:  # unknown whether it committed: count again next time
                self._counts.pop(key, None)
            raise
        for key, n in counts.items():
            self._counts[key] = n
            self._counts.move_to_end(key)
        while len(self._counts) > COUNT_CACHE_ACCOUNTS:
            self._counts.popitem(last=False)
        return dropped

    async def _ring(self, conn, added: dict[tuple[str, str], int], max_per_user: int
                    ) -> tuple[dict[tuple[str, str], int], int]:
        """New row counts of the accounts in ``added`` (rows just inserted), after
        dropping the oldest rows beyond ``max_per_user`` (0 = no limit)."""
        t = mam_table
        counts: dict[tuple[str, str], int] = {}
        dropped = 0
        if not max_per_user:  # no limit: nothing to count; forget what would now be stale
            for key in added:
                self._counts.pop(key, None)
            return counts, dropped
        for (domain, user), k in added.items():
            n = self._counts.get((domain, user))
            owner = and_(t.c.domain == domain, t.c.username == user)
            if n is None:  # once per account: the indexed count, the new rows included
                n = int(await conn.scalar(select(func.count()).select_from(t).where(owner)) or 0)
            else:
                n += k
            if n > max_per_user:
                oldest = select(t.c.seq).where(owner).order_by(t.c.seq).limit(n - max_per_user)
                result = await conn.execute(delete(t).where(t.c.seq.in_(oldest.scalar_subquery())))
                dropped += result.rowcount or 0
                n = max_per_user
            counts[(domain, user)] = n
        return counts, dropped

    async def _insert(self, conn, rows: "list[tuple]") -> None:
        dialect = self._engine.dialect
        if dialect.name == "sqlite":
            # fast path: the driver's executemany with the column values SQLAlchemy would bind
            # (the timestamp through the column type's own bind processor, once per distinct value)
            to_db = mam_table.c.ts.type.bind_processor(dialect) or (lambda v: v)
            stamps: dict[_dt.datetime, object] = {}
            params = []
            for user, domain, archive_id, ts, with_bare, with_resource, data in rows:
                db_ts = stamps.get(ts)
                if db_ts is None:
                    db_ts = stamps[ts] = to_db(ts)
                params.append((domain, user, archive_id, db_ts, with_bare, with_resource or None, data))
            await conn.exec_driver_sql(_SQLITE_INSERT, params)
            return
        params = [dict(domain=domain, username=user, archive_id=archive_id, ts=ts, with_bare=with_bare,
                       with_resource=with_resource or None, data=data)
                  for user, domain, archive_id, ts, with_bare, with_resource, data in rows]
        await conn.execute(mam_table.insert(), params)

    async def query(self, user: str, domain: str, *, max_items: int,
                    with_bare: str | None = None, with_resource: str | None = None,
                    start: _dt.datetime | None = None, end: _dt.datetime | None = None,
                    after_id: str | None = None, before_id: str | None = None,
                    rsm_after: str | None = None, rsm_before: str | None = None) -> Page:
        """One page.  ``rsm_before`` = "" asks for the last page (XEP-0059 §2.5).
        Raises :class:`UnknownId` for an id not in the archive."""
        t = mam_table
        owner = and_(t.c.domain == domain, t.c.username == user)
        async with self._engine.connect() as conn:
            async def seq_of(archive_id: str) -> int:
                seq = await conn.scalar(select(t.c.seq).where(owner, t.c.archive_id == archive_id))
                if seq is None:
                    raise UnknownId(archive_id)
                return seq

            conds = [owner]
            if with_bare is not None:
                conds.append(t.c.with_bare == with_bare)
                if with_resource is not None:
                    conds.append(t.c.with_resource == with_resource)
            if start is not None:
                conds.append(t.c.ts >= start)
            if end is not None:
                conds.append(t.c.ts <= end)
            if after_id is not None:
                conds.append(t.c.seq > await seq_of(after_id))
            if before_id is not None:
                conds.append(t.c.seq < await seq_of(before_id))
            count = int(await conn.scalar(select(func.count()).select_from(t).where(*conds)) or 0)
            page = list(conds)
            backward = rsm_before is not None
            if backward and rsm_before:
                page.append(t.c.seq < await seq_of(rsm_before))
            if rsm_after is not None:
                page.append(t.c.seq > await seq_of(rsm_after))
            cols = (t.c.seq, t.c.archive_id, t.c.ts, t.c.with_bare, t.c.with_resource, t.c.data)
            order = t.c.seq.desc() if backward else t.c.seq
            rows = (await conn.execute(select(*cols).where(*page).order_by(order).limit(max_items + 1))).all()
            complete = len(rows) <= max_items
            rows = rows[:max_items]
            if backward:
                rows.reverse()
            first_index = None
            if rows:
                first_index = int(await conn.scalar(
                    select(func.count()).select_from(t).where(*conds, t.c.seq < rows[0].seq)) or 0)
        items = [ArchivedMessage(r.archive_id, r.ts, r.with_bare, r.with_resource, bytes(r.data)) for r in rows]
        if max_items == 0:
            complete = count == 0
        return Page(items, count, first_index, complete)

    async def count(self, user: str, domain: str) -> int:
        t = mam_table
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(t)
                                         .where(t.c.domain == domain, t.c.username == user)) or 0)

    async def purge_before(self, cutoff: _dt.datetime) -> int:
        """Retention: delete every message older than ``cutoff``."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(mam_table).where(mam_table.c.ts < cutoff))
        if result.rowcount:
            self._counts.clear()  # counted again at each account's next write
        return result.rowcount or 0

    async def trim(self, max_per_user: int, *, max_accounts: int = 1000) -> int:
        """Drop the oldest messages of accounts holding more than ``max_per_user``
        (at most ``max_accounts`` accounts per call)."""
        t = mam_table
        removed = 0
        async with self._engine.begin() as conn:
            over = (await conn.execute(
                select(t.c.domain, t.c.username, func.count().label("n"))
                .group_by(t.c.domain, t.c.username).having(func.count() > max_per_user)
                .limit(max_accounts))).all()
            for domain, user, n in over:
                cutoff = await conn.scalar(
                    select(t.c.seq).where(t.c.domain == domain, t.c.username == user)
                    .order_by(t.c.seq).offset(n - max_per_user - 1).limit(1))
                result = await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user,
                                                            t.c.seq <= cutoff))
                removed += result.rowcount or 0
        if removed:
            self._counts.clear()
        return removed

    async def remove_user(self, user: str, domain: str) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(mam_table).where(
                mam_table.c.domain == domain, mam_table.c.username == user))
            await conn.execute(delete(mam_prefs_table).where(
                mam_prefs_table.c.domain == domain, mam_prefs_table.c.username == user))
        self._counts.pop((domain, user), None)
        return result.rowcount or 0

    # ------------------------------------------------------------ preferences
    async def get_default(self, user: str, domain: str) -> str | None:
        p = mam_prefs_table
        async with self._engine.connect() as conn:
            return await conn.scalar(select(p.c.default_pref).where(p.c.domain == domain, p.c.username == user))

    async def set_default(self, user: str, domain: str, value: str) -> None:
        if value not in PREF_DEFAULTS:
            raise ValueError(f"default must be one of {PREF_DEFAULTS}")
        p = mam_prefs_table
        async with self._engine.begin() as conn:
            await conn.execute(delete(p).where(p.c.domain == domain, p.c.username == user))
            await conn.execute(p.insert().values(domain=domain, username=user, default_pref=value))

    async def accounts_with_default(self, value: str, *, limit: int) -> list[tuple[str, str]]:
        """(user, domain) whose default is ``value`` (at most ``limit``)."""
        p = mam_prefs_table
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(p.c.username, p.c.domain)
                                       .where(p.c.default_pref == value).limit(limit))).all()
        return [(r.username, r.domain) for r in rows]
