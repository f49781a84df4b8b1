"""Per-account client-certificate registry (XEP-0257 data model) and policies.

Why: a CA-verified certificate proves "the CA issued this", not "the account
still wants this device".  The registry pins the certificates an account
accepts for SASL EXTERNAL (reference §4 #2): each row is one certificate of
one account, keyed by its SHA-256 fingerprint, with the user-chosen name
(XEP-0257 ``<name/>``), the ``no-cert-management`` flag and a state:

* ``active``   — may log in (subject to the policy);
* ``disabled`` — may not log in; re-appending the same certificate re-enables it;
* ``revoked``  — may never log in again (terminal); CLI revocation also puts its
  serial on the CA's CRL.

``cert_policy`` holds per-account overrides of ``auth.cert_registry``
(``always`` / ``ifpresent`` / ``never``).

Both tables live on the shared :data:`~xmppd.storage.engine.metadata` and work
on SQLite and PostgreSQL with the same code.

Login fast path: :meth:`CertRegistry.login_view` (policy override + the
account's fingerprint → state) is cached per engine in a bounded LRU
(:data:`LOGIN_VIEW_CACHE_SIZE` accounts).  Every registry write made in this
process (any :class:`CertRegistry` on the same engine: XEP-0257
append/disable/revoke, policy changes) invalidates it at once.  Writes from
another process (the ``xmppd certs`` CLI):

* SQLite file database: every registry write also touches a stamp file next
  to the database (``<db>-certs-changed``); the cache checks it (one
  ``stat``) on every lookup and is dropped when it changed — new logins see
  the change at once, as before;
* otherwise (PostgreSQL, several nodes): a cached view is trusted for at most
  :data:`LOGIN_VIEW_TTL_S` seconds, so a change made elsewhere reaches new
  logins on this node within that time.

Most accounts register no certificate and set no policy (``ifpresent`` /
``never`` deployments), and a first login is always a cache miss.  So the
cache also keeps the *index*: the set of accounts that have any registry row
or policy (at most :data:`REGISTRY_INDEX_MAX`; a bigger registry is not
indexed and every miss queries).  An account outside the index gets the empty
view without a query.  The index follows the same rules: writes here add to
it, the stamp file (SQLite) reloads it, else it is reloaded when older than
:data:`LOGIN_VIEW_TTL_S`.

``last_used`` is not written on the login path: :meth:`CertRegistry.note_used`
keeps it in memory and a flusher writes the batch every
:data:`LAST_USED_FLUSH_INTERVAL_S` (and at stop), so it lags by up to that much.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import os
import time
import weakref
from dataclasses import dataclass, field

from sqlalchemy import (
    Boolean,
    bindparam,
    Column,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .batch import PeriodicFlusher
from .engine import UtcDateTime, metadata
from .files import open_private

__all__ = [
    "ACTIVE",
    "DISABLED",
    "REVOKED",
    "STATES",
    "POLICIES",
    "CertRow",
    "CertRegistry",
    "add_facts",
    "DuplicateCert",
    "client_certs_table",
    "cert_policy_table",
    "LOGIN_VIEW_CACHE_SIZE",
    "LOGIN_VIEW_TTL_S",
    "REGISTRY_INDEX_MAX",
    "LAST_USED_FLUSH_INTERVAL_S",
    "MAX_PENDING_LAST_USED",
]

log = logging.getLogger("xmppd.storage.certs")

#: accounts whose login view is cached (LRU), per database engine
LOGIN_VIEW_CACHE_SIZE = 10_000
#: seconds a cached login view is trusted when another process may change the registry
#: without this process seeing a signal (non-file databases); see the module docstring
LOGIN_VIEW_TTL_S = 5.0
#: accounts with registry rows or a policy kept in the in-memory index (see the module docstring)
REGISTRY_INDEX_MAX = 100_000
#: a registry found bigger than REGISTRY_INDEX_MAX is counted again after this many seconds
REGISTRY_INDEX_RETRY_S = 60.0
#: seconds between two batched writes of ``last_used`` (see :meth:`CertRegistry.note_used`)
LAST_USED_FLUSH_INTERVAL_S = 1.0
#: certificates noted as used before a flush starts at once (instead of at the interval)
MAX_PENDING_LAST_USED = 10_000

ACTIVE, DISABLED, REVOKED = "active", "disabled", "revoked"
STATES = (ACTIVE, DISABLED, REVOKED)
#: auth.cert_registry values, also the per-account overrides
POLICIES = ("always", "ifpresent", "never")

_PART_LEN = 1023  # RFC 7622 §3
_FP_LEN = 64  # hex SHA-256
_NAME_LEN = 255
_SERIAL_LEN = 64  # hex of a <= 20-octet serial (RFC 5280 §4.1.2.2), with room
_ISSUER_LEN = 2048

client_certs_table = Table(
    "client_certs",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("fingerprint_sha256", String(_FP_LEN), nullable=False),
    Column("name", String(_NAME_LEN), nullable=False),
    Column("serial_hex", String(_SERIAL_LEN), nullable=False),
    Column("issuer", String(_ISSUER_LEN), nullable=False),
    Column("not_after", UtcDateTime(), nullable=False),
    Column("added_at", UtcDateTime(), nullable=False),
    Column("last_used", UtcDateTime(), nullable=True),
    Column("state", String(16), nullable=False),
    Column("state_changed_at", UtcDateTime(), nullable=True),
    #: XEP-0257 <no-cert-management/>: a session logged in with it may not add/remove certs
    Column("cert_management", Boolean(), nullable=False),
    Column("der", LargeBinary(), nullable=False),
    PrimaryKeyConstraint("domain", "username", "fingerprint_sha256", name="client_certs_pk"),
)

cert_policy_table = Table(
    "cert_policy",
    metadata,
    Column("domain", String(_PART_LEN), nullable=False),
    Column("username", String(_PART_LEN), nullable=False),
    Column("policy", String(16), nullable=False),
    PrimaryKeyConstraint("domain", "username", name="cert_policy_pk"),
)

# keep the column list for "no der" listing queries in one place
_LIST_COLS = [c for c in client_certs_table.c if c.name != "der"]


class DuplicateCert(Exception):
    """append: the name or the certificate is already registered (``what`` says which)."""

    def __init__(self, what: str, existing: "CertRow") -> None:
        super().__init__(f"duplicate {what}")
        self.what = what
        self.existing = existing


@dataclass(frozen=True, slots=True)
class CertRow:
    user: str
    domain: str
    fingerprint_sha256: str
    name: str
    serial_hex: str
    issuer: str
    not_after: _dt.datetime
    added_at: _dt.datetime
    last_used: _dt.datetime | None
    state: str
    state_changed_at: _dt.datetime | None
    cert_management: bool = True
    der: bytes | None = field(default=None, repr=False)

    @property
    def jid(self) -> str:
        return f"{self.user}@{self.domain}"

    @property
    def active(self) -> bool:
        return self.state == ACTIVE


def _row(r, *, with_der: bool = False) -> CertRow:
    return CertRow(r.username, r.domain, r.fingerprint_sha256, r.name, r.serial_hex, r.issuer,
                   r.not_after, r.added_at, r.last_used, r.state, r.state_changed_at,
                   bool(r.cert_management), bytes(r.der) if with_der else None)


def _aware(when: _dt.datetime) -> _dt.datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("naive datetime: pass an aware datetime (UTC)")
    return when


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _storable(user: str, domain: str) -> bool:
    return (0 < len(user) <= _PART_LEN and 0 < len(domain) <= _PART_LEN
            and "\x00" not in user and "\x00" not in domain)


class _LoginViews:
    """The per-engine cache behind :meth:`CertRegistry.login_view` (see the module docstring)."""

    __slots__ = ("views", "generation", "stamp_path", "stamp_seen", "index", "index_at", "index_loading",
                 "index_retry_at", "__weakref__")

    def __init__(self, engine: AsyncEngine) -> None:
        #: (domain, user) -> (expires at (monotonic), policy override, {fingerprint: state})
        self.views: collections.OrderedDict = collections.OrderedDict()
        #: bumped by every write: a read that started before a write is not cached
        self.generation = 0
        self.stamp_path: str | None = None
        url = engine.url
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                self.stamp_path = os.path.abspath(os.path.expanduser(database)) + "-certs-changed"
        self.stamp_seen = self._stamp()
        #: (domain, user) of every account with a registry row or a policy; None = not loaded
        self.index: set[tuple[str, str]] | None = None
        self.index_at = 0.0
        self.index_loading = False
        self.index_retry_at = 0.0

    def _stamp(self) -> tuple[int, int] | None:
        if self.stamp_path is None:
            return None
        try:
            st = os.stat(self.stamp_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check(self) -> int:
        """Drop everything if another process signalled a change; the current generation."""
        if self.stamp_path is not None:
            stamp = self._stamp()
            if stamp != self.stamp_seen:
                self.stamp_seen = stamp
                self.views.clear()
                self.index = None
                self.generation += 1
        return self.generation

    def changed(self, user: str, domain: str) -> None:
        """A registry write in this process (after its commit)."""
        self.check()  # a change by another process first: it must not be swallowed below
        self.generation += 1
        self.views.pop((domain, user), None)
        if self.index is not None:
            self.index.add((domain, user))  # never removed: being listed only means "ask the database"
        if self.stamp_path is not None:
            try:  # tell the other processes on this database; grow by a byte, restart at 4 KiB
                grow = (self.stamp_seen or (0, 0))[1] < 4096
                fd = open_private(self.stamp_path, os.O_WRONLY | (os.O_APPEND if grow else os.O_TRUNC))
                with os.fdopen(fd, "wb") as f:  # 0600 like the database it signals for
                    f.write(b".")
            except OSError as exc:
                log.warning("cannot touch %s (other processes see this change within %.0f s): %s",
                            self.stamp_path, LOGIN_VIEW_TTL_S, exc)
            self.stamp_seen = self._stamp()


_VIEWS: "weakref.WeakKeyDictionary[AsyncEngine, _LoginViews]" = weakref.WeakKeyDictionary()


def _views_for(engine: AsyncEngine) -> _LoginViews:
    views = _VIEWS.get(engine)
    if views is None:
        views = _VIEWS[engine] = _LoginViews(engine)
    return views


class CertRegistry:
    """Repository over ``client_certs`` and ``cert_policy``; call :func:`create_schema` first."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._views = _views_for(engine)
        #: (domain, user, fingerprint) -> when: ``last_used`` not yet written
        self._used: dict[tuple[str, str, str], _dt.datetime] = {}
        self._flusher = PeriodicFlusher(self.flush_used, interval=LAST_USED_FLUSH_INTERVAL_S,
                                        what="certificate last_used records", pending=lambda: len(self._used))

    # ------------------------------------------------------------ writes
    async def add(self, user: str, domain: str, *, der: bytes, fingerprint_sha256: str, name: str,
                  serial_hex: str, issuer: str, not_after: _dt.datetime, cert_management: bool = True,
                  when: _dt.datetime | None = None) -> CertRow:
        """Register a certificate for ``user@domain`` as ``active``.

        * the same certificate already active, or the name used by another
          active certificate of the account → :class:`DuplicateCert`;
        * the same certificate ``disabled`` → re-enabled under the new name;
        * the same certificate ``revoked`` → :class:`DuplicateCert` (``"revoked"``):
          revocation is final.
        """
        if not _storable(user, domain):
            raise ValueError("user/domain cannot be stored (empty, too long or contains NUL)")
        name = name.strip()
        if not name or len(name) > _NAME_LEN:
            raise ValueError(f"certificate name must be 1..{_NAME_LEN} characters")
        fp = fingerprint_sha256.lower()
        if len(fp) != _FP_LEN or any(c not in "0123456789abcdef" for c in fp):
            raise ValueError("fingerprint_sha256 must be 64 hex digits")
        when = _aware(when or _now())
        _aware(not_after)
        t = client_certs_table
        for _ in range(2):
            try:
                async with self._engine.begin() as conn:
                    rows = (await conn.execute(
                        select(*_LIST_COLS).where(t.c.domain == domain, t.c.username == user))).all()
                    same = next((r for r in rows if r.fingerprint_sha256 == fp), None)
                    if same is not None and same.state == REVOKED:
                        raise DuplicateCert("revoked", _row(same))
                    if same is not None and same.state == ACTIVE:
                        raise DuplicateCert("certificate", _row(same))
                    clash = next((r for r in rows if r.name == name and r.state == ACTIVE
                                  and r.fingerprint_sha256 != fp), None)
                    if clash is not None:
                        raise DuplicateCert("name", _row(clash))
                    if same is not None:  # disabled: enable again
                        await conn.execute(
                            update(t).where(t.c.domain == domain, t.c.username == user,
                                            t.c.fingerprint_sha256 == fp)
                            .values(state=ACTIVE, name=name, state_changed_at=when,
                                    cert_management=cert_management))
                    else:
                        await conn.execute(t.insert().values(
                            domain=domain, username=user, fingerprint_sha256=fp, name=name,
                            serial_hex=serial_hex.lower(), issuer=issuer, not_after=not_after,
                            added_at=when, last_used=None, state=ACTIVE, state_changed_at=None,
                            cert_management=cert_management, der=der))
                break
            except IntegrityError:  # a concurrent add of the same certificate: re-read and decide
                continue
        self._views.changed(user, domain)
        row = await self.get(user, domain, fp)
        assert row is not None
        return row

    async def set_state(self, user: str, domain: str, fingerprint_sha256: str, state: str, *,
                        when: _dt.datetime | None = None) -> bool:
        """Move one certificate to ``state``; False if unknown or already revoked (final)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        if not _storable(user, domain):
            return False
        when = _aware(when or _now())
        t = client_certs_table
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(t).where(t.c.domain == domain, t.c.username == user,
                                t.c.fingerprint_sha256 == fingerprint_sha256.lower(),
                                t.c.state != REVOKED)
                .values(state=state, state_changed_at=when))
        self._views.changed(user, domain)
        return bool(result.rowcount)

    async def touch_used(self, user: str, domain: str, fingerprint_sha256: str,
                         when: _dt.datetime | None = None) -> None:
        if not _storable(user, domain):
            return
        t = client_certs_table
        async with self._engine.begin() as conn:
            await conn.execute(
                update(t).where(t.c.domain == domain, t.c.username == user,
                                t.c.fingerprint_sha256 == fingerprint_sha256.lower())
                .values(last_used=_aware(when or _now())))

    async def remove(self, user: str, domain: str, fingerprint_sha256: str) -> bool:
        if not _storable(user, domain):
            return False
        t = client_certs_table
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(t).where(
                t.c.domain == domain, t.c.username == user,
                t.c.fingerprint_sha256 == fingerprint_sha256.lower()))
        self._views.changed(user, domain)
        return bool(result.rowcount)

    # ------------------------------------------------------------ reads
    async def get(self, user: str, domain: str, fingerprint_sha256: str, *,
                  with_der: bool = False) -> CertRow | None:
        if not _storable(user, domain):
            return None
        t = client_certs_table
        cols = list(t.c) if with_der else _LIST_COLS
        async with self._engine.connect() as conn:
            r = (await conn.execute(select(*cols).where(
                t.c.domain == domain, t.c.username == user,
                t.c.fingerprint_sha256 == fingerprint_sha256.lower()))).first()
        return None if r is None else _row(r, with_der=with_der)

    async def list(self, user: str | None = None, domain: str | None = None, *,
                   states: tuple[str, ...] | None = None, with_der: bool = False) -> list[CertRow]:
        """One account's certificates (or every account's with ``user=None``), oldest first."""
        t = client_certs_table
        stmt = select(*(list(t.c) if with_der else _LIST_COLS))
        if user is not None:
            if domain is None or not _storable(user, domain):
                return []
            stmt = stmt.where(t.c.domain == domain, t.c.username == user)
        elif domain is not None:
            stmt = stmt.where(t.c.domain == domain)
        if states is not None:
            stmt = stmt.where(t.c.state.in_(states))
        stmt = stmt.order_by(t.c.domain, t.c.username, t.c.added_at, t.c.fingerprint_sha256)
        async with self._engine.connect() as conn:
            return [_row(r, with_der=with_der) for r in (await conn.execute(stmt)).all()]

    async def by_name(self, user: str, domain: str, name: str) -> CertRow | None:
        """The account's certificate called ``name`` (an active one first, then the newest)."""
        rows = [r for r in await self.list(user, domain) if r.name == name]
        if not rows:
            return None
        rows.sort(key=lambda r: (r.state == ACTIVE, r.state == DISABLED, r.added_at), reverse=True)
        return rows[0]

    async def by_fingerprint(self, fingerprint_sha256: str) -> list[CertRow]:
        """Every account registration of this certificate (one per account it names)."""
        t = client_certs_table
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*_LIST_COLS).where(
                t.c.fingerprint_sha256 == fingerprint_sha256.lower()))).all()
        return [_row(r) for r in rows]

    async def account_states(self, user: str, domain: str) -> dict[str, str]:
        """fingerprint → state for one account: all the login check needs, in one query."""
        if not _storable(user, domain):
            return {}
        t = client_certs_table
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t.c.fingerprint_sha256, t.c.state).where(
                t.c.domain == domain, t.c.username == user))).all()
        return {r.fingerprint_sha256: r.state for r in rows}

    async def expiring(self, within: _dt.timedelta, *, now: _dt.datetime | None = None,
                       user: str | None = None, domain: str | None = None) -> list[CertRow]:
        """Active certificates whose not_after falls before ``now + within`` (expired ones included)."""
        limit = _aware(now or _now()) + within
        return [r for r in await self.list(user, domain, states=(ACTIVE,)) if r.not_after <= limit]

    async def revoked_serials(self, issuer: str) -> list[tuple[int, _dt.datetime]]:
        """``(serial, revocation time)`` of every revoked certificate from ``issuer`` (for a CRL)."""
        t = client_certs_table
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t.c.serial_hex, t.c.state_changed_at, t.c.added_at).where(
                t.c.issuer == issuer, t.c.state == REVOKED))).all()
        seen: dict[int, _dt.datetime] = {}
        for r in rows:
            serial = int(r.serial_hex, 16)
            when = r.state_changed_at or r.added_at
            if serial not in seen or when < seen[serial]:
                seen[serial] = when
        return sorted(seen.items())

    # ------------------------------------------------------------ policy
    async def get_policy(self, user: str, domain: str) -> str | None:
        """The account's override of ``auth.cert_registry``, None when it follows the default."""
        if not _storable(user, domain):
            return None
        t = cert_policy_table
        async with self._engine.connect() as conn:
            return await conn.scalar(select(t.c.policy).where(t.c.domain == domain, t.c.username == user))

    async def set_policy(self, user: str, domain: str, policy: str | None) -> None:
        """Set the override; ``None`` removes it (back to the configured default)."""
        if not _storable(user, domain):
            raise ValueError("user/domain cannot be stored (empty, too long or contains NUL)")
        if policy is not None and policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        t = cert_policy_table
        async with self._engine.begin() as conn:
            await conn.execute(delete(t).where(t.c.domain == domain, t.c.username == user))
            if policy is not None:
                await conn.execute(t.insert().values(domain=domain, username=user, policy=policy))
        self._views.changed(user, domain)

    async def login_view(self, user: str, domain: str) -> tuple[str | None, dict[str, str]]:
        """(policy override, fingerprint → state) in one connection, for the EXTERNAL check."""
        if not _storable(user, domain):
            return None, {}
        views = self._views
        generation = views.check()
        key = (domain, user)
        now = time.monotonic()
        hit = views.views.get(key)
        if hit is not None:
            if hit[0] > now:
                views.views.move_to_end(key)
                return hit[1], dict(hit[2])
            del views.views[key]
        index = await self._index(now)
        if index is not None and key not in index:
            return None, {}  # nothing registered, no policy: the common case, no query
        c, p = client_certs_table, cert_policy_table
        async with self._engine.connect() as conn:
            policy = await conn.scalar(select(p.c.policy).where(p.c.domain == domain, p.c.username == user))
            rows = (await conn.execute(select(c.c.fingerprint_sha256, c.c.state).where(
                c.c.domain == domain, c.c.username == user))).all()
        states = {r.fingerprint_sha256: r.state for r in rows}
        if views.check() == generation:  # no write meanwhile: the answer may be cached
            views.views[key] = (now + LOGIN_VIEW_TTL_S, policy, states)
            while len(views.views) > LOGIN_VIEW_CACHE_SIZE:
                views.views.popitem(last=False)
        return policy, dict(states)

    async def _index(self, now: float) -> set[tuple[str, str]] | None:
        """The accounts with registry rows or a policy (None: not available right now)."""
        views = self._views
        index = views.index
        if index is not None and (views.stamp_path is not None or now - views.index_at < LOGIN_VIEW_TTL_S):
            return index
        if views.index_loading or now < views.index_retry_at:
            return None  # being loaded by another login, or too big: query this account
        views.index_loading = True
        generation = views.generation
        try:
            c, p = client_certs_table, cert_policy_table
            stmt = (select(c.c.domain, c.c.username).union(select(p.c.domain, p.c.username))
                    .limit(REGISTRY_INDEX_MAX + 1))
            async with self._engine.connect() as conn:
                rows = (await conn.execute(stmt)).all()
        finally:
            views.index_loading = False
        if len(rows) > REGISTRY_INDEX_MAX:
            views.index = None
            views.index_retry_at = now + REGISTRY_INDEX_RETRY_S
            return None
        if views.check() != generation:  # a write meanwhile: this answer may be stale
            return None
        views.index = {(r[0], r[1]) for r in rows}
        views.index_at = now
        return views.index

    # ------------------------------------------------------------ batched last_used
    def note_used(self, user: str, domain: str, fingerprint_sha256: str,
                  when: _dt.datetime | None = None) -> None:
        """Record a login with this certificate; written by the next :meth:`flush_used`."""
        if not _storable(user, domain):
            return
        self._used[(domain, user, fingerprint_sha256.lower())] = _aware(when or _now())
        if len(self._used) >= MAX_PENDING_LAST_USED:
            self._flusher.kick()

    async def flush_used(self) -> int:
        """Write every noted ``last_used`` in ONE transaction; returns how many."""
        if not self._used:
            return 0
        used, self._used = self._used, {}
        t = client_certs_table
        stmt = (update(t).where(t.c.domain == bindparam("b_domain"), t.c.username == bindparam("b_user"),
                                t.c.fingerprint_sha256 == bindparam("b_fp"))
                .values(last_used=bindparam("b_when")))
        params = [{"b_domain": d, "b_user": u, "b_fp": fp, "b_when": when} for (d, u, fp), when in used.items()]
        try:
            async with self._engine.begin() as conn:
                await conn.execute(stmt, params)
        except BaseException:
            for key, value in used.items():
                self._used.setdefault(key, value)
            raise
        return len(used)

    def start_flusher(self, interval: float = LAST_USED_FLUSH_INTERVAL_S) -> None:
        self._flusher.interval = interval
        self._flusher.start()

    async def stop_flusher(self) -> None:
        """Stop the periodic flush and write what is left."""
        await self._flusher.stop()


async def add_facts(registry: CertRegistry, user: str, domain: str, facts, *, name: str,
                    cert_management: bool = True, when: _dt.datetime | None = None) -> CertRow:
    """:meth:`CertRegistry.add` from an :class:`auth.base.CertFacts`."""
    return await registry.add(user, domain, der=facts.der, fingerprint_sha256=facts.fingerprint_sha256,
                              name=name, serial_hex=facts.serial_hex, issuer=facts.issuer,
                              not_after=facts.not_after, cert_management=cert_management, when=when)
