"""``sql``: accounts in a database table (MongooseIM ``rdbms``, alias ``rdbms``).

Config: ``[auth.sql]`` has no keys of its own.  Shared resources arrive in the
context mapping:

* ``db_engine`` (required): a SQLAlchemy ``AsyncEngine`` (SQLite or PostgreSQL);
* ``password_hashes``: SCRAM hashes to store, default all of
  :data:`auth.scram.HASHES`;
* ``scram_iterations``: PBKDF2 iterations, default
  :data:`auth.scram.DEFAULT_ITERATIONS`, at least :data:`auth.scram.MIN_ITERATIONS`.

Table (MongooseIM-shaped, so exported tables port over)::

    users(server VARCHAR(1023), username VARCHAR(1023),
          password TEXT NULL,          -- always NULL: never a plaintext password
          pass_details TEXT NOT NULL,  -- ==MULTI_SCRAM== (auth.scram.serialize)
          created_at TIMESTAMPTZ, PRIMARY KEY (server, username))

Passwords are used exactly as given: the caller applies the PRECIS
OpaqueString preparation (RFC 8265) before register/check/set, as SCRAM
requires, so that PLAIN and SCRAM logins agree.

Failure semantics: a database that cannot answer (refused, timeout, driver
error) raises :class:`~auth.base.AuthUnavailable`; a row whose
``pass_details`` cannot be parsed is logged and treated as having no usable
credentials (never accepted, never a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import logging
from typing import Any, AsyncIterator, Mapping

from sqlalchemy import (Column, DateTime, MetaData, PrimaryKeyConstraint, String, Table, Text,
                        delete, select, update)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import scram
from .base import (SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM, AuthConfigError, AuthMethod,
                   AuthUnavailable, CertDecision, CertFacts, ScramCredentials)

__all__ = ["SqlAuth", "users_table", "MAX_ITERATIONS"]

log = logging.getLogger("auth.sql")

#: RFC 7622 §3: localpart and domainpart are at most 1023 octets
_PART_LEN = 1023
#: iteration counts above this in a stored row are treated as malformed (a
#: corrupt or hostile row must not pin a CPU for minutes)
MAX_ITERATIONS = 1_000_000
#: strongest first
_STRENGTH = ("sha512", "sha256", "sha1")

_metadata = MetaData()

users_table = Table(
    "users",
    _metadata,
    Column("server", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("password", Text, nullable=True),
    Column("pass_details", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("server", "username", name="users_pk"),
)


def _storable(user: str, domain: str) -> bool:
    """False for keys no account can have; such keys never reach the database."""
    return (0 < len(user) <= _PART_LEN and 0 < len(domain) <= _PART_LEN
            and "\x00" not in user and "\x00" not in domain)


def _is_backend_error(exc: BaseException) -> bool:
    if isinstance(exc, (SQLAlchemyError, OSError, TimeoutError, asyncio.TimeoutError)):
        return True
    # driver exceptions that escape SQLAlchemy's wrapping (asyncpg on connect)
    return type(exc).__module__.split(".")[0] in ("asyncpg", "aiosqlite", "sqlite3")


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    inner = orig if orig is not None else exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    return f"{type(inner).__name__}: {text}"[:300] if text else type(inner).__name__


class SqlAuth(AuthMethod):
    name = "sql"
    option_keys = frozenset()
    can_register = True

    def __init__(self, options: Mapping[str, Any] | None = None,
                 context: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, context)
        engine = self.context.get("db_engine")
        if engine is None:
            raise AuthConfigError("auth.sql", "needs a database: configure [storage] "
                                  "(the server passes its engine as context['db_engine'])")
        if not hasattr(engine, "begin") or not hasattr(engine, "dialect"):
            raise AuthConfigError("auth.sql", "context['db_engine'] must be a SQLAlchemy AsyncEngine")
        self._engine = engine

        hashes = tuple(self.context.get("password_hashes") or tuple(scram.HASHES))
        unknown = [h for h in hashes if h not in scram.HASHES]
        if unknown:
            raise AuthConfigError("auth.sql", f"unknown password hash {unknown[0]!r} "
                                  f"(known: {', '.join(scram.HASHES)})")
        self._hashes = tuple(dict.fromkeys(hashes))  # dedupe, keep order

        iterations = self.context.get("scram_iterations", scram.DEFAULT_ITERATIONS)
        if isinstance(iterations, bool) or not isinstance(iterations, int):
            raise AuthConfigError("auth.sql", "scram_iterations must be an integer")
        if not scram.MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise AuthConfigError("auth.sql", f"scram_iterations must be between "
                                  f"{scram.MIN_ITERATIONS} and {MAX_ITERATIONS}")
        self._iterations = iterations

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Create the ``users`` table if it is missing."""
        # Two nodes starting at once may both see the table missing; the
        # loser's CREATE fails, and a second look finds the table there.
        for attempt in (1, 2):
            try:
                async with self._db("create table"):
                    async with self._engine.begin() as conn:
                        await conn.run_sync(_metadata.create_all, tables=[users_table], checkfirst=True)
                return
            except (AuthUnavailable, IntegrityError):
                if attempt == 2:
                    raise

    async def stop(self) -> None:
        """Nothing to release: the engine belongs to the server."""

    def supports_sasl(self, family: str) -> bool:
        return family in (SASL_PASSWORD, SASL_SCRAM, SASL_EXTERNAL)

    # -- helpers ---------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _db(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except IntegrityError:
            raise
        except AuthUnavailable:
            raise
        except Exception as exc:
            if not _is_backend_error(exc):
                raise
            reason = f"sql: database unavailable during {what}: {_describe(exc)}"
            log.debug("%s", reason)  # the chain logs it once, with the method name
            raise AuthUnavailable(reason) from exc

    def _where(self, user: str, domain: str):
        t = users_table
        return (t.c.server == domain) & (t.c.username == user)

    async def _load(self, user: str, domain: str) -> dict[str, ScramCredentials] | None:
        """The row's usable credentials; None if no such account.

        A malformed ``pass_details`` yields ``{}`` (account exists, nothing
        can ever match) and a warning naming the account, never the value.
        """
        async with self._db("lookup"):
            async with self._engine.connect() as conn:
                row = (await conn.execute(
                    select(users_table.c.pass_details).where(self._where(user, domain)))).first()
        if row is None:
            return None
        try:
            creds = scram.deserialize(row.pass_details or "")
            for c in creds.values():
                _check_sane(c)
        except (ValueError, TypeError) as exc:
            log.warning("sql: unusable pass_details for %s@%s (%s): treating as no credentials",
                        user, domain, exc)
            return {}
        return creds

    async def _derive(self, password: str) -> str:
        creds = await asyncio.to_thread(scram.new_credentials, password, self._hashes, self._iterations)
        return scram.serialize(creds)

    # -- queries -------------------------------------------------------------
    async def user_exists(self, user: str, domain: str) -> bool:
        if not _storable(user, domain):
            return False
        async with self._db("lookup"):
            async with self._engine.connect() as conn:
                found = await conn.scalar(
                    select(users_table.c.username).where(self._where(user, domain)).limit(1))
        return found is not None

    async def check_password(self, user: str, domain: str, password: str) -> bool:
        """Verify against the strongest stored hash (PBKDF2 runs in a worker thread)."""
        if not _storable(user, domain) or not password:
            return False
        creds = await self._load(user, domain)
        if not creds:
            return False
        best = next(creds[h] for h in _STRENGTH if h in creds)
        return await asyncio.to_thread(scram.verify_password, password, best)

    async def get_scram(self, user: str, domain: str, hash_name: str) -> ScramCredentials | None:
        if not _storable(user, domain) or hash_name not in scram.HASHES:
            return None
        creds = await self._load(user, domain)
        if not creds:
            return None
        return creds.get(hash_name)

    async def authorize_cert(self, user: str, domain: str, cert: CertFacts) -> CertDecision:
        """The certificate was verified and mapped already; the account must exist."""
        if await self.user_exists(user, domain):
            return CertDecision.accept()
        return CertDecision.refuse("no-account")

    # -- administration ---------------------------------------------------------
    async def register(self, user: str, domain: str, password: str) -> bool:
        """Create the account; False if it exists (the primary key decides races)."""
        _require_storable(user, domain)
        if not password:
            raise ValueError("empty password")
        details = await self._derive(password)
        try:
            async with self._db("register"):
                async with self._engine.begin() as conn:
                    await conn.execute(users_table.insert().values(
                        server=domain, username=user, password=None, pass_details=details,
                        created_at=_dt.datetime.now(_dt.timezone.utc)))
        except IntegrityError:
            return False
        return True

    async def set_password(self, user: str, domain: str, password: str) -> bool:
        """Replace the credentials (fresh salts); False if there is no such account."""
        if not _storable(user, domain):
            return False
        if not password:
            raise ValueError("empty password")
        details = await self._derive(password)
        async with self._db("set_password"):
            async with self._engine.begin() as conn:
                result = await conn.execute(update(users_table).where(self._where(user, domain))
                                            .values(password=None, pass_details=details))
        return bool(result.rowcount)

    async def remove_user(self, user: str, domain: str) -> bool:
        if not _storable(user, domain):
            return False
        async with self._db("remove_user"):
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(users_table).where(self._where(user, domain)))
        return bool(result.rowcount)


def _require_storable(user: str, domain: str) -> None:
    if not _storable(user, domain):
        raise ValueError("user and domain must be 1..1023 characters without NUL")


def _check_sane(c: ScramCredentials) -> None:
    """Reject stored values that cannot be genuine (wrong key size, absurd cost)."""
    size = hashlib.new(scram.HASHES[c.hash_name][0]).digest_size
    if len(c.stored_key) != size or len(c.server_key) != size:
        raise ValueError(f"{c.hash_name}: key length is not {size}")
    if not c.salt:
        raise ValueError(f"{c.hash_name}: empty salt")
    if c.iterations > MAX_ITERATIONS:
        raise ValueError(f"{c.hash_name}: iteration count above {MAX_ITERATIONS}")
