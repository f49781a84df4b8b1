"""Multi-user chat rooms (XEP-0045): persistent rooms, affiliations, the room archive.

Tables (SQLAlchemy Core on the shared :data:`~xmppd.storage.engine.metadata`,
SQLite and PostgreSQL with the same code):

* ``muc_rooms``        — one row per persistent room: its configuration (JSON
  text, the keys of :class:`xmppd.modules.muc.room.RoomConfig`), subject, creation time;
* ``muc_affiliations`` — owner / admin / member / outcast per bare JID, with the
  reserved nick and reason (XEP-0045 §9, §10); ``none`` is the absence of a row;
* ``muc_archive``      — the room's message archive (XEP-0313 on the room JID):
  the exact bytes the room broadcast (``from`` = occupant JID, payload untouched),
  the XEP-0359 stanza-id, the time; order is ``seq``;
* ``muc_secrets``      — one random secret per service, for stable XEP-0421
  occupant ids across restarts and nodes.

Writes to a room's configuration or affiliations are single transactions the
caller awaits before answering the owner (acknowledged means durable).
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
from dataclasses import dataclass, field

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import UtcDateTime, metadata

__all__ = ["MucStore", "StoredRoom", "ArchivedGroupMessage", "ArchivePage", "UnknownArchiveId",
           "muc_rooms_table", "muc_affiliations_table", "muc_archive_table"]

_PART_LEN = 1023  # RFC 7622 §3
_JID_LEN = 3071
_ID_LEN = 64

muc_rooms_table = Table(
    "muc_rooms",
    metadata,
    Column("service", String(_PART_LEN), nullable=False),
    Column("name", String(_PART_LEN), nullable=False),
    Column("config", Text(), nullable=False),
    Column("subject", Text(), nullable=False, default=""),
    Column("subject_nick", String(_PART_LEN), nullable=False, default=""),
    Column("created_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("service", "name", name="muc_rooms_pk"),
)

muc_affiliations_table = Table(
    "muc_affiliations",
    metadata,
    Column("service", String(_PART_LEN), nullable=False),
    Column("name", String(_PART_LEN), nullable=False),
    Column("jid", String(_JID_LEN), nullable=False),
    Column("affiliation", String(16), nullable=False),
    Column("nick", String(_PART_LEN), nullable=True),
    Column("reason", Text(), nullable=True),
    PrimaryKeyConstraint("service", "name", "jid", name="muc_affiliations_pk"),
)

muc_archive_table = Table(
    "muc_archive",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("service", String(_PART_LEN), nullable=False),
    Column("name", String(_PART_LEN), nullable=False),
    Column("archive_id", String(_ID_LEN), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    Column("nick", String(_PART_LEN), nullable=False),
    Column("data", LargeBinary(), nullable=False),
    Index("muc_archive_room", "service", "name", "seq"),
    Index("muc_archive_id", "service", "name", "archive_id", unique=True),
)

muc_secrets_table = Table(
    "muc_secrets",
    metadata,
    Column("service", String(_PART_LEN), primary_key=True),
    Column("secret", String(128), nullable=False),
)


@dataclass(slots=True)
class StoredRoom:
    name: str
    config: dict
    subject: str
    subject_nick: str
    created_at: _dt.datetime
    #: bare JID -> (affiliation, reserved nick or None)
    affiliations: dict[str, tuple[str, str | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ArchivedGroupMessage:
    archive_id: str
    ts: _dt.datetime
    nick: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ArchivePage:
    items: list[ArchivedGroupMessage]
    count: int
    complete: bool


class UnknownArchiveId(LookupError):
    def __init__(self, archive_id: str) -> None:
        super().__init__(archive_id)
        self.archive_id = archive_id


class MucStore:
    """Repository over the ``muc_*`` tables; the tables come from :func:`create_schema`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # ------------------------------------------------------------ service secret
    async def service_secret(self, service: str) -> str:
        """The service's occupant-id secret, created on first use (race-safe)."""
        t = muc_secrets_table
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(t.c.secret).where(t.c.service == service))).first()
            if row is not None:
                return row[0]
        value = secrets.token_urlsafe(32)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(t.insert().values(service=service, secret=value))
            return value
        except IntegrityError:  # another node created it first
            async with self._engine.begin() as conn:
                return (await conn.execute(select(t.c.secret).where(t.c.service == service))).scalar_one()

    # ------------------------------------------------------------ rooms
    async def load_rooms(self, service: str) -> list[StoredRoom]:
        r, a = muc_rooms_table, muc_affiliations_table
        async with self._engine.connect() as conn:
            rooms = {row.name: StoredRoom(row.name, json.loads(row.config), row.subject or "",
                                          row.subject_nick or "", row.created_at)
                     for row in await conn.execute(select(r).where(r.c.service == service))}
            for row in await conn.execute(select(a).where(a.c.service == service)):
                room = rooms.get(row.name)
                if room is not None:
                    room.affiliations[row.jid] = (row.affiliation, row.nick)
        return list(rooms.values())

    async def save_room(self, service: str, name: str, config: dict, *, subject: str = "",
                        subject_nick: str = "", created_at: _dt.datetime,
                        affiliations: dict[str, tuple[str, str | None]] | None = None) -> None:
        """Insert or replace the room row (and, if given, all its affiliations) in one transaction."""
        r, a = muc_rooms_table, muc_affiliations_table
        where = and_(r.c.service == service, r.c.name == name)
        async with self._engine.begin() as conn:
            await conn.execute(delete(r).where(where))
            await conn.execute(r.insert().values(service=service, name=name, config=json.dumps(config),
                                                 subject=subject, subject_nick=subject_nick,
                                                 created_at=created_at))
            if affiliations is not None:
                await conn.execute(delete(a).where(and_(a.c.service == service, a.c.name == name)))
                rows = [dict(service=service, name=name, jid=jid, affiliation=aff, nick=nick)
                        for jid, (aff, nick) in affiliations.items() if aff != "none"]
                if rows:
                    await conn.execute(a.insert(), rows)

    async def set_subject(self, service: str, name: str, subject: str, nick: str) -> None:
        r = muc_rooms_table
        async with self._engine.begin() as conn:
            await conn.execute(r.update().where(and_(r.c.service == service, r.c.name == name))
                               .values(subject=subject, subject_nick=nick))

    async def set_affiliations(self, service: str, name: str,
                               changes: list[tuple[str, str, str | None, str | None]]) -> None:
        """``changes``: (bare JID, affiliation, nick, reason); ``none`` deletes the row."""
        a = muc_affiliations_table
        async with self._engine.begin() as conn:
            for jid, aff, nick, reason in changes:
                await conn.execute(delete(a).where(and_(a.c.service == service, a.c.name == name,
                                                        a.c.jid == jid)))
                if aff != "none":
                    await conn.execute(a.insert().values(service=service, name=name, jid=jid,
                                                         affiliation=aff, nick=nick, reason=reason))

    async def delete_room(self, service: str, name: str, *, archive_before: _dt.datetime | None = None,
                          keep_archive: bool = False) -> None:
        """The room, its affiliations and its archive (only rows older than ``archive_before``
        when given: a new room of the same name may already be archiving), in one transaction.
        ``keep_archive``: only the room row and affiliations (a room that stops being persistent)."""
        tables = (muc_rooms_table, muc_affiliations_table) + (() if keep_archive else (muc_archive_table,))
        async with self._engine.begin() as conn:
            for t in tables:
                cond = and_(t.c.service == service, t.c.name == name)
                if t is muc_archive_table and archive_before is not None:
                    cond = and_(cond, t.c.ts < archive_before)
                await conn.execute(delete(t).where(cond))

    # ------------------------------------------------------------ archive
    async def append_many(self, rows: list[tuple[str, str, str, _dt.datetime, str, bytes]]) -> None:
        """Rows ``(service, name, archive_id, ts, nick, data)`` in ONE transaction, in order."""
        if not rows:
            return
        params = [dict(service=s, name=n, archive_id=i, ts=ts, nick=nick, data=data)
                  for s, n, i, ts, nick, data in rows]
        async with self._engine.begin() as conn:
            await conn.execute(muc_archive_table.insert(), params)

    async def last(self, service: str, name: str, n: int) -> list[ArchivedGroupMessage]:
        """The newest ``n`` messages, oldest first (discussion history after a restart)."""
        t = muc_archive_table
        q = (select(t.c.archive_id, t.c.ts, t.c.nick, t.c.data)
             .where(and_(t.c.service == service, t.c.name == name)).order_by(t.c.seq.desc()).limit(n))
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(q))
        return [ArchivedGroupMessage(*r) for r in reversed(rows)]

    async def query(self, service: str, name: str, *, max_items: int, start: _dt.datetime | None = None,
                    end: _dt.datetime | None = None, with_nick: str | None = None,
                    after_id: str | None = None, before_id: str | None = None) -> ArchivePage:
        """One page, oldest first.  ``before_id = ""`` asks for the last page (XEP-0059 §2.5)."""
        t = muc_archive_table
        conds = [t.c.service == service, t.c.name == name]
        if start is not None:
            conds.append(t.c.ts >= start)
        if end is not None:
            conds.append(t.c.ts <= end)
        if with_nick is not None:
            conds.append(t.c.nick == with_nick)
        async with self._engine.connect() as conn:
            base = list(conds)
            for ident, op in ((after_id, "after"), (before_id or None, "before")):
                if ident is None:
                    continue
                seq = (await conn.execute(select(t.c.seq).where(and_(
                    t.c.service == service, t.c.name == name, t.c.archive_id == ident)))).scalar()
                if seq is None:
                    raise UnknownArchiveId(ident)
                conds.append(t.c.seq > seq if op == "after" else t.c.seq < seq)
            count = (await conn.execute(select(func.count()).select_from(t).where(and_(*base)))).scalar_one()
            cols = (t.c.archive_id, t.c.ts, t.c.nick, t.c.data)
            backwards = before_id is not None
            order = t.c.seq.desc() if backwards else t.c.seq.asc()
            rows = list(await conn.execute(select(*cols).where(and_(*conds)).order_by(order)
                                           .limit(max_items + 1)))
        complete = len(rows) <= max_items
        rows = rows[:max_items]
        if backwards:
            rows.reverse()
        return ArchivePage([ArchivedGroupMessage(*r) for r in rows], count, complete)
