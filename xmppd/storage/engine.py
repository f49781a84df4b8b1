"""Database engine factory and xmppd's own schema.

One SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncEngine` per server,
shared by storage repositories and by ``auth.sql`` (handed over as
``context["db_engine"]``).  Two backends are supported with the same code:

* ``sqlite+aiosqlite:///path/to/xmppd.db`` (default, single node): the parent
  directory is created 0700 and the database file 0600 whatever the umask
  (it holds SCRAM keys and messages; SQLite gives its -wal/-shm the same
  mode), an existing one that others can read is warned about
  (:mod:`xmppd.storage.files`); the database runs in WAL mode with foreign
  keys on and a busy timeout so concurrent writers wait instead of failing.
* ``postgresql+asyncpg://user@host/db`` (production, cluster): a bounded pool
  with ``pool_pre_ping`` and named connect / command / checkout timeouts, so a
  dead database turns into an error within seconds instead of a hung login.

Tables are declared with SQLAlchemy Core and portable types on
:data:`metadata`; :func:`create_schema` creates the missing ones.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from .files import check_database_files, private_dir, private_file

__all__ = [
    "CONNECT_TIMEOUT_S",
    "COMMAND_TIMEOUT_S",
    "POOL_TIMEOUT_S",
    "SQLITE_BUSY_TIMEOUT_MS",
    "DEFAULT_POOL_SIZE",
    "UtcDateTime",
    "metadata",
    "create_engine",
    "create_schema",
]

#: seconds to establish a new PostgreSQL connection before giving up
CONNECT_TIMEOUT_S = 5.0
#: seconds any single PostgreSQL statement may run (asyncpg ``command_timeout``)
COMMAND_TIMEOUT_S = 10.0
#: seconds to wait for a free pooled connection
POOL_TIMEOUT_S = 10.0
#: milliseconds SQLite waits on a locked database before raising "database is locked"
SQLITE_BUSY_TIMEOUT_MS = 5_000
DEFAULT_POOL_SIZE = 10

#: xmppd's own tables (accounts, ...). ``auth.sql`` keeps its own MetaData.
metadata = MetaData()


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores ``TIMESTAMPTZ``; SQLite has no timezone type, so values
    are normalised to UTC on the way in and tagged UTC on the way out.
    Naive datetimes are refused: they are always a bug in the caller.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: _dt.datetime | None, dialect: Any) -> _dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: pass an aware datetime (UTC)")
        value = value.astimezone(_dt.timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: _dt.datetime | None, dialect: Any) -> _dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc)


def create_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE, echo: bool = False,
                  connect_timeout_s: float = CONNECT_TIMEOUT_S,
                  command_timeout_s: float = COMMAND_TIMEOUT_S,
                  pool_timeout_s: float = POOL_TIMEOUT_S,
                  connect_args: Mapping[str, Any] | None = None) -> AsyncEngine:
    """Build the server's engine for ``url`` (``sqlite+aiosqlite`` or ``postgresql+asyncpg``).

    ``connect_args`` is merged into the driver's connect arguments (tests use
    it to set ``server_settings={"search_path": ...}`` on PostgreSQL).
    """
    if pool_size < 1:
        raise ValueError("pool_size must be >= 1")
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name()
    extra = dict(connect_args or {})

    if backend == "sqlite":
        if driver != "aiosqlite":
            raise ValueError(f"SQLite needs the aiosqlite driver (sqlite+aiosqlite://...), got {parsed.drivername!r}")
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if not in_memory and not database.startswith("file:"):
            db_path = Path(database).expanduser()
            private_dir(db_path.parent)
            private_file(db_path)  # before SQLite creates it with 0644 & ~umask
            check_database_files(db_path)
        args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        args.update(extra)
        kwargs: dict[str, Any] = {"echo": echo, "connect_args": args}
        if not in_memory:
            kwargs.update(pool_size=pool_size, pool_timeout=pool_timeout_s)
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine

    if backend == "postgresql":
        if driver != "asyncpg":
            raise ValueError(f"PostgreSQL needs the asyncpg driver (postgresql+asyncpg://...), got {parsed.drivername!r}")
        args = {"timeout": connect_timeout_s, "command_timeout": command_timeout_s}
        args.update(extra)
        return create_async_engine(
            parsed, echo=echo, pool_size=pool_size, max_overflow=0,
            pool_pre_ping=True, pool_timeout=pool_timeout_s, connect_args=args,
        )

    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: "
                     "use sqlite+aiosqlite:// or postgresql+asyncpg://")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL
    finally:
        cursor.close()


async def create_schema(engine: AsyncEngine) -> None:
    """Create xmppd's tables that do not exist yet (idempotent)."""
    from . import accounts, certs  # noqa: F401  (register their tables on ``metadata``)

    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
