"""Registry of the accounts this server has seen log in.

Why: an auth method such as ``pki`` cannot enumerate accounts, and
MongooseIM's ``pki`` answers "exists" for every name, so offline storage and
MAM keep messages for users that never existed (reference §3 #12).  xmppd
records every successful login here instead; "does this local user exist?"
is answered by the auth chain *or* this table.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Column, PrimaryKeyConstraint, String, Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from .batch import PeriodicFlusher
from .engine import UtcDateTime, metadata
from .files import PRIVATE_FILE_MODE, open_private

__all__ = ["AccountRow", "Accounts", "accounts_table", "LOGIN_FLUSH_INTERVAL_S", "MAX_PENDING_LOGINS",
           "AccountRemovals", "announce_removal", "removal_stamp_path", "REMOVAL_STAMP_MAX_BYTES"]

log = logging.getLogger("xmppd.storage.accounts")

#: seconds between two batched writes of the logins noted in memory (:meth:`Accounts.note_login`)
LOGIN_FLUSH_INTERVAL_S = 1.0
#: distinct accounts noted in memory before a flush is started at once (instead of at the interval)
MAX_PENDING_LOGINS = 10_000

#: the account-removal stamp file is started afresh (new inode) when it grows past this
REMOVAL_STAMP_MAX_BYTES = 64 * 1024
#: most removals one poll reads (a bigger backlog is read by the next polls)
_REMOVAL_READ_MAX = 1024 * 1024

#: RFC 7622 §3: localpart and domainpart are at most 1023 octets each
_PART_LEN = 1023
_METHOD_LEN = 64

accounts_table = Table(
    "accounts",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_login", UtcDateTime(), nullable=False),
    Column("last_method", String(_METHOD_LEN), nullable=False),
    PrimaryKeyConstraint("domain", "username", name="accounts_pk"),
)


@dataclass(frozen=True, slots=True)
class AccountRow:
    user: str
    domain: str
    created_at: _dt.datetime
    last_login: _dt.datetime
    last_method: str


def _storable(user: str, domain: str) -> bool:
    """False for keys no account can have (too long, NUL): never sent to the DB."""
    return (0 < len(user) <= _PART_LEN and 0 < len(domain) <= _PART_LEN
            and "\x00" not in user and "\x00" not in domain)


class Accounts:
    """Small repository over the ``accounts`` table; call :func:`create_schema` first."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        #: (domain, user) -> (when, method): logins noted but not yet written
        self._pending: dict[tuple[str, str], tuple[_dt.datetime, str]] = {}
        #: the batch being written (still "noted" for exists() until its commit)
        self._writing: dict[tuple[str, str], tuple[_dt.datetime, str]] = {}
        self._flusher = PeriodicFlusher(self.flush, interval=LOGIN_FLUSH_INTERVAL_S,
                                        what="last-login records", pending=lambda: len(self._pending))

    # ------------------------------------------------------------ batched login bookkeeping
    # The server notes each login in memory (no I/O on the login path, no concurrent
    # SQLite writers); a background task writes them every LOGIN_FLUSH_INTERVAL_S in
    # one transaction, and stop_flusher() writes what is left.  Reads (exists, get,
    # count) see the noted logins at once.
    def note_login(self, user: str, domain: str, method: str, when: _dt.datetime) -> None:
        """Record a successful login, written by the next flush (see :meth:`flush`)."""
        if not _storable(user, domain) or not method or len(method) > _METHOD_LEN:
            log.warning("login of %r@%r (%r) cannot be recorded", user, domain, method)
            return
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("naive datetime: pass an aware datetime (UTC)")
        self._pending[(domain, user)] = (when, method)
        if len(self._pending) >= MAX_PENDING_LOGINS:
            self._flusher.kick()

    async def flush(self) -> int:
        """Write every noted login in ONE transaction (a batched upsert); returns the count."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        self._writing = {**self._writing, **pending}
        try:
            await self._upsert_many([(user, domain, method, when)
                                     for (domain, user), (when, method) in pending.items()])
        except BaseException:
            for key, value in pending.items():  # keep them for the next flush (newer notes win)
                self._pending.setdefault(key, value)
            raise
        finally:
            for key in pending:
                self._writing.pop(key, None)
        return len(pending)

    def start_flusher(self, interval: float = LOGIN_FLUSH_INTERVAL_S) -> None:
        self._flusher.interval = interval
        self._flusher.start()

    async def stop_flusher(self) -> None:
        """Stop the periodic flush and write what is left."""
        await self._flusher.stop()

    async def _upsert_many(self, rows: list[tuple[str, str, str, _dt.datetime]]) -> None:
        t = accounts_table
        dialect = self._engine.dialect.name
        if dialect in ("postgresql", "sqlite"):
            insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t)
            stmt = insert.on_conflict_do_update(
                index_elements=[t.c.domain, t.c.username],
                set_={"last_login": insert.excluded.last_login, "last_method": insert.excluded.last_method},
            )
            params = [dict(domain=domain, username=user, created_at=when, last_login=when, last_method=method)
                      for user, domain, method, when in rows]
            async with self._engine.begin() as conn:
                await conn.execute(stmt, params)
            return
        for user, domain, method, when in rows:
            await self.touch_login(user, domain, method, when)

    async def touch_login(self, user: str, domain: str, method: str, when: _dt.datetime) -> None:
        """Record a successful login: insert on first sight, else update last_login/last_method."""
        if not _storable(user, domain):
            raise ValueError("user/domain cannot be stored (empty, too long or contains NUL)")
        if not method or len(method) > _METHOD_LEN:
            raise ValueError("method name must be 1..64 characters")
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("naive datetime: pass an aware datetime (UTC)")
        t = accounts_table
        values = dict(domain=domain, username=user, created_at=when, last_login=when, last_method=method)
        dialect = self._engine.dialect.name
        async with self._engine.begin() as conn:
            if dialect in ("postgresql", "sqlite"):
                insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t).values(**values)
                stmt = insert.on_conflict_do_update(
                    index_elements=[t.c.domain, t.c.username],
                    set_={"last_login": insert.excluded.last_login,
                          "last_method": insert.excluded.last_method},
                )
                await conn.execute(stmt)
                return
        # Portable fallback for other dialects: update, else insert; a
        # concurrent insert turns into a second update.
        for _ in range(2):
            try:
                async with self._engine.begin() as conn:
                    result = await conn.execute(
                        update(t).where(t.c.domain == domain, t.c.username == user)
                        .values(last_login=when, last_method=method))
                    if result.rowcount:
                        return
                    await conn.execute(t.insert().values(**values))
                    return
            except IntegrityError:
                continue
        raise RuntimeError("touch_login: could not upsert account row")

    async def exists(self, user: str, domain: str) -> bool:
        if not _storable(user, domain):
            return False
        if (domain, user) in self._pending or (domain, user) in self._writing:
            return True
        t = accounts_table
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                select(t.c.username).where(t.c.domain == domain, t.c.username == user).limit(1))
        return found is not None

    async def get(self, user: str, domain: str) -> AccountRow | None:
        if not _storable(user, domain):
            return None
        if (domain, user) in self._pending:
            await self.flush()
        t = accounts_table
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                select(t.c.created_at, t.c.last_login, t.c.last_method)
                .where(t.c.domain == domain, t.c.username == user))).first()
        if row is None:
            return None
        return AccountRow(user, domain, row.created_at, row.last_login, row.last_method)

    async def remove(self, user: str, domain: str) -> bool:
        if not _storable(user, domain):
            return False
        noted = self._pending.pop((domain, user), None) is not None
        t = accounts_table
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user))
        return bool(result.rowcount) or noted

    async def count(self, domain: str | None = None) -> int:
        """Number of known accounts, on one domain or all (pki can't count: we can)."""
        if self._pending:
            await self.flush()
        t = accounts_table
        stmt = select(func.count()).select_from(t)
        if domain is not None:
            stmt = stmt.where(t.c.domain == domain)
        async with self._engine.connect() as conn:
            return int(await conn.scalar(stmt) or 0)


# ------------------------------------------------------------------ removals seen by other processes
# ``xmppd user remove`` runs in another process than the server.  Like the certificate registry's
# stamp file (storage/certs.py), a SQLite file database gets a companion ``<db>-accounts-changed``
# (mode 0600): the CLI appends one line per removed account, ``<ns since epoch> remove <jid>``,
# and the server polls it (every ``general.reload_check_interval_s``) and closes that account's
# live sessions.  The file is started afresh (atomically, a new inode) past
# REMOVAL_STAMP_MAX_BYTES; a reader that sees a new inode reads it from the start.  Other
# databases (PostgreSQL, several nodes) have no such signal yet: sessions end when they do.


def removal_stamp_path(url) -> str | None:
    """The stamp file for a database URL (or engine URL); None when there is none (not a SQLite file)."""
    parsed = make_url(str(url)) if not hasattr(url, "get_backend_name") else url
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(os.path.expanduser(database)) + "-accounts-changed"


def announce_removal(url, user: str, domain: str) -> bool:
    """Tell servers on this database that ``user@domain`` was removed (see above); False if
    this database has no stamp file or it cannot be written (a warning says so)."""
    path = removal_stamp_path(url)
    if path is None:
        return False
    line = f"{time.time_ns()} remove {user}@{domain}\n".encode("utf-8")
    try:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        if size + len(line) > REMOVAL_STAMP_MAX_BYTES:
            tmp = f"{path}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), PRIVATE_FILE_MODE)
                fh.write(line)
            os.replace(tmp, path)
        else:
            with os.fdopen(open_private(path, os.O_WRONLY | os.O_APPEND), "wb") as fh:
                fh.write(line)
    except OSError as exc:
        log.warning("cannot write %s: a running server keeps %s@%s's live sessions until they end (%s)",
                    path, user, domain, exc)
        return False
    return True


class AccountRemovals:
    """The server's reader of the removal stamp file; :meth:`poll` returns the removals
    announced since the previous poll (the file's history before construction is skipped)."""

    def __init__(self, engine_or_url) -> None:
        url = engine_or_url.url if hasattr(engine_or_url, "url") else engine_or_url
        self.path = removal_stamp_path(url)
        self._ino, self._pos = self._stat()

    def _stat(self) -> tuple[int | None, int]:
        if self.path is None:
            return None, 0
        try:
            st = os.stat(self.path)
        except OSError:
            return None, 0
        return st.st_ino, st.st_size

    def poll(self) -> list[tuple[str, str]]:
        """``(user, domain)`` of every account removed since the last call (one stat when none)."""
        ino, size = self._stat()
        if ino is None or (ino == self._ino and size == self._pos):
            return []
        if ino != self._ino or size < self._pos:
            self._ino, self._pos = ino, 0  # started afresh
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read(_REMOVAL_READ_MAX)
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return []
        end = data.rfind(b"\n") + 1  # only complete lines; a half-written one is read next time
        self._pos += end
        out = []
        for raw in data[:end].splitlines():
            parts = raw.decode("utf-8", "replace").split(" ", 2)
            if len(parts) == 3 and parts[1] == "remove" and "@" in parts[2]:
                user, _, domain = parts[2].rpartition("@")
                out.append((user, domain))
        return out
