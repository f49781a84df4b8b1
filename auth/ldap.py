"""``ldap``: accounts in an LDAP directory (MongooseIM ``ldap`` semantics).

Serves PLAIN (``check_password``) and EXTERNAL (``authorize_cert``); never
SCRAM (a directory does not hand out SCRAM keys) and never registration.

* ``check_password``: search under ``base`` (bound as ``rootdn``, or
  anonymously) for exactly one entry matching the uid filter, then bind as
  that entry's DN with the password on a fresh connection.  Zero or several
  entries, or an empty password, is ``False`` (an empty password would be an
  unauthenticated bind, which servers accept: it is never sent).
* ``user_exists``: the search finds at least one entry (an ambiguous name is
  still taken).
* ``authorize_cert``: the certificate was verified and mapped to a username
  by the server already; the search must find exactly one entry (else
  ``no-account`` / ``ambiguous-account``), then ``cert_match`` decides:
  ``"none"`` accepts, ``"always"`` requires the presented certificate's DER
  among the entry's ``cert_attribute`` values, ``"ifpresent"`` requires it
  only when the entry has any such value (``cert-not-registered``).

Options (``[auth.ldap]``; every one validated here, errors name the key):

=================  ==============================================================
``servers``        hosts tried in order, first reachable wins. ``["localhost"]``
``port``           TCP port. 389, or 636 with ``tls``
``tls``            LDAPS (TLS from the first byte), server cert verified. false
``cacertfile``     PEM CA file for ``tls`` (default: the system CAs)
``rootdn``         DN to bind as for searches; ``""`` = anonymous. ``""``
``password``       password of ``rootdn`` (secret: never printed). ``""``
``base``           search base DN. REQUIRED
``uids``           attributes holding the username: each a name (``"uid"``) or
                   ``{attr = "mail", format = "%u@example.org"}`` (``%u`` the
                   username, ``%d`` the XMPP domain). ``["uid"]``
``filter``         extra filter ANDed in, e.g. ``"(objectClass=inetOrgPerson)"``
``cert_attribute`` attribute with the user's DER certificates.
                   ``"userCertificate;binary"``
``cert_match``     ``"none"`` | ``"ifpresent"`` | ``"always"``. ``"none"``
``connect_timeout`` seconds per TCP/TLS connect, (0, 300]. 5
``request_timeout`` whole seconds per LDAP request, 1..300. 5
``pool_size``      worker threads (so at most this many LDAP requests at once,
                   each on its own connection), 1..64. 4
=================  ==============================================================

User input is escaped (RFC 4515) before it enters a filter.  ldap3 is
synchronous, so every LDAP call runs on the method's own bounded thread pool;
the event loop only awaits.  Referrals are not followed.

Failure semantics: unreachable servers, timeouts, referrals, a refused
``rootdn`` bind, a missing ``base`` or any unexpected result code raise
:class:`~auth.base.AuthUnavailable` (the client sees
``temporary-auth-failure``); no error path ever accepts a login.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import re
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.core.results import (RESULT_INAPPROPRIATE_AUTHENTICATION, RESULT_INVALID_CREDENTIALS,
                                RESULT_REFERRAL, RESULT_SIZE_LIMIT_EXCEEDED, RESULT_SUCCESS,
                                RESULT_UNWILLING_TO_PERFORM)
from ldap3.operation.search import parse_filter

from .base import (SASL_EXTERNAL, SASL_PASSWORD, AuthConfigError, AuthMethod, AuthUnavailable,
                   CertDecision, CertFacts)

__all__ = ["LdapAuth", "escape_filter_value", "CERT_MATCH_MODES", "MAX_PENDING_PER_WORKER"]

log = logging.getLogger("auth.ldap")

CERT_MATCH_MODES = ("none", "ifpresent", "always")
#: requests allowed to wait for a worker thread, per worker; beyond that a
#: request fails at once (AuthUnavailable) instead of queueing without bound
MAX_PENDING_PER_WORKER = 16
#: upper bound for connect_timeout / request_timeout, seconds
MAX_TIMEOUT_S = 300.0
MAX_POOL_SIZE = 64
#: RFC 7622: a localpart is at most 1023 octets
_USER_LEN = 1023
#: seconds stop() waits for busy workers (each is bounded by its own timeouts)
_STOP_GRACE_S = 1.0

#: attribute description: name or numeric OID, with options (";binary")
_ATTR_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?:;[A-Za-z0-9-]+)*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9._:\[\]-]+$")
#: characters left as they are in a filter value; every other octet is \XX
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_@+")
#: bind results that mean "this password does not log this entry in"
_BIND_REFUSED = (RESULT_INVALID_CREDENTIALS, RESULT_INAPPROPRIATE_AUTHENTICATION,
                 RESULT_UNWILLING_TO_PERFORM)

_T = TypeVar("_T")


def escape_filter_value(value: str) -> str:
    """RFC 4515 assertion value: every octet outside ``[A-Za-z0-9.-_@+]`` as ``\\XX``.

    Stricter than the RFC's minimum (``* ( ) \\ NUL``): nothing in the result
    can be read as filter syntax by any parser.
    """
    return "".join(chr(b) if b in _SAFE else f"\\{b:02x}" for b in value.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class _Uid:
    """One ``uids`` entry: the attribute and how a username becomes its value."""

    attr: str
    format: str | None = None  # contains %u once; may contain %d

    def assertion(self, user: str, domain: str) -> str:
        if self.format is None:
            return f"({self.attr}={escape_filter_value(user)})"
        out = []
        for part in re.split(r"(%[ud])", self.format):
            if part == "%u":
                out.append(escape_filter_value(user))
            elif part == "%d":
                out.append(escape_filter_value(domain))
            else:
                out.append(escape_filter_value(part))
        return f"({self.attr}={''.join(out)})"


@dataclass(frozen=True, slots=True)
class _Entry:
    dn: str
    attributes: Mapping[str, list[bytes]]


class _Unavailable(Exception):
    """Raised in worker threads; becomes AuthUnavailable on the loop side."""


# ---------------------------------------------------------------------------
# option parsing


def _key(name: str) -> str:
    return f"auth.ldap.{name}"


def _str(options: Mapping[str, Any], name: str, default: str, *, empty_ok: bool = True) -> str:
    value = options.get(name, default)
    if not isinstance(value, str):
        raise AuthConfigError(_key(name), f"must be a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise AuthConfigError(_key(name), "must not be empty")
    if "\x00" in value:
        raise AuthConfigError(_key(name), "must not contain NUL")
    return value


def _bool(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise AuthConfigError(_key(name), "must be true or false")
    return value


def _int(options: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AuthConfigError(_key(name), "must be an integer")
    if not lo <= value <= hi:
        raise AuthConfigError(_key(name), f"must be between {lo} and {hi}")
    return value


def _seconds(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthConfigError(_key(name), "must be a number of seconds")
    if not (0 < value <= MAX_TIMEOUT_S) or math.isnan(value):
        raise AuthConfigError(_key(name), f"must be > 0 and <= {MAX_TIMEOUT_S:g} seconds")
    return float(value)


def _attr(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _ATTR_RE.match(value):
        raise AuthConfigError(key, f"{value!r} is not an LDAP attribute description")
    return value


def _uids(options: Mapping[str, Any]) -> tuple[_Uid, ...]:
    raw = options.get("uids", ["uid"])
    if not isinstance(raw, (list, tuple)) or not raw:
        raise AuthConfigError(_key("uids"), "must be a non-empty list")
    uids: list[_Uid] = []
    for item in raw:
        if isinstance(item, str):
            uids.append(_Uid(_attr(item, _key("uids"))))
            continue
        if not isinstance(item, Mapping):
            raise AuthConfigError(_key("uids"), "each entry is an attribute name or "
                                  "a table {attr = ..., format = ...}")
        unknown = sorted(set(item) - {"attr", "format"})
        if unknown:
            raise AuthConfigError(_key(f"uids.{unknown[0]}"), "unknown key (known: attr, format)")
        if "attr" not in item:
            raise AuthConfigError(_key("uids.attr"), "required in every table entry")
        attr = _attr(item["attr"], _key("uids.attr"))
        fmt = item.get("format")
        if fmt is not None:
            if not isinstance(fmt, str) or fmt.count("%u") != 1:
                raise AuthConfigError(_key("uids.format"), 'must be a string containing "%u" once')
            if re.search(r"%[^ud]|%$", fmt):
                raise AuthConfigError(_key("uids.format"), 'only "%u" and "%d" may follow "%"')
        uids.append(_Uid(attr, fmt))
    return tuple(uids)


def _filter(options: Mapping[str, Any]) -> str:
    value = options.get("filter", "")
    if not isinstance(value, str):
        raise AuthConfigError(_key("filter"), "must be a string")
    value = value.strip()
    if not value:
        return ""
    if not (value.startswith("(") and value.endswith(")")):
        raise AuthConfigError(_key("filter"), "must be one parenthesised LDAP filter, "
                              'e.g. "(objectClass=inetOrgPerson)"')
    try:
        parse_filter(f"(&(objectClass=*){value})", None, True, True, None, False)
    except Exception as exc:  # ldap3 raises several kinds for bad syntax
        raise AuthConfigError(_key("filter"), f"not a valid LDAP filter: {exc}") from None
    return value


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def _result_text(result: Mapping[str, Any] | None) -> str:
    if not result:
        return "no result"
    text = f"{result.get('description') or 'result'} ({result.get('result')})"
    if result.get("message"):
        text += f": {str(result['message'])[:200]}"
    return text


# ---------------------------------------------------------------------------


class LdapAuth(AuthMethod):
    name = "ldap"
    option_keys = frozenset({
        "servers", "port", "tls", "cacertfile", "rootdn", "password", "base", "uids", "filter",
        "cert_attribute", "cert_match", "connect_timeout", "request_timeout", "pool_size",
    })
    can_register = False

    def __init__(self, options: Mapping[str, Any] | None = None,
                 context: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, context)
        opts = self.options

        servers = opts.get("servers", ["localhost"])
        if isinstance(servers, str) or not isinstance(servers, (list, tuple)) or not servers:
            raise AuthConfigError(_key("servers"), "must be a non-empty list of host names")
        for host in servers:
            if not isinstance(host, str) or not _HOST_RE.match(host):
                raise AuthConfigError(_key("servers"), f"{host!r} is not a host name or address "
                                      "(no scheme, no port: use tls and port)")
        self._servers: tuple[str, ...] = tuple(dict.fromkeys(servers))

        self._tls = _bool(opts, "tls", False)
        self._port = _int(opts, "port", 636 if self._tls else 389, 1, 65535)
        cacertfile = opts.get("cacertfile")
        if cacertfile is not None:
            if not isinstance(cacertfile, str) or not cacertfile:
                raise AuthConfigError(_key("cacertfile"), "must be a file path")
            if not self._tls:
                raise AuthConfigError(_key("cacertfile"), "only used with tls = true")
            if not os.path.isfile(cacertfile):
                raise AuthConfigError(_key("cacertfile"), f"no such file: {cacertfile}")
        self._cacertfile: str | None = cacertfile

        self._rootdn = _str(opts, "rootdn", "")
        self._password = _str(opts, "password", "")
        if self._rootdn and not self._password:
            raise AuthConfigError(_key("password"), "required when rootdn is set (an empty "
                                  "password would be an unauthenticated bind)")
        if self._password and not self._rootdn:
            raise AuthConfigError(_key("rootdn"), "required when password is set")

        if "base" not in opts:
            raise AuthConfigError(_key("base"), "required: the DN to search for users under")
        self._base = _str(opts, "base", "", empty_ok=False).strip()
        self._uids = _uids(opts)
        self._filter = _filter(opts)
        self._cert_attribute = _attr(opts.get("cert_attribute", "userCertificate;binary"),
                                     _key("cert_attribute"))
        cert_match = opts.get("cert_match", "none")
        if cert_match not in CERT_MATCH_MODES:
            raise AuthConfigError(_key("cert_match"), f"must be one of {', '.join(CERT_MATCH_MODES)}")
        self._cert_match: str = cert_match
        self._connect_timeout = _seconds(opts, "connect_timeout", 5)
        # whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer
        self._request_timeout = _int(opts, "request_timeout", 5, 1, int(MAX_TIMEOUT_S))
        self._pool_size = _int(opts, "pool_size", 4, 1, MAX_POOL_SIZE)

        # Worst case for one call on a worker: every server's connect times
        # out, then bind + search (+ one retry on a stale connection).  The
        # loop side gives up after this, whatever the thread is doing.
        self._call_deadline = (len(self._servers) * self._connect_timeout
                               + 3 * self._request_timeout + 1.0)
        self._max_pending = self._pool_size * MAX_PENDING_PER_WORKER
        self._pending = 0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopped = False
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        self._search_conns: set[ldap3.Connection] = set()
        self._ldap_servers = [self._make_server(h) for h in self._servers]

    def __repr__(self) -> str:  # never the password
        return (f"<LdapAuth servers={list(self._servers)!r} port={self._port} tls={self._tls} "
                f"base={self._base!r} rootdn={self._rootdn or '(anonymous)'!r} "
                f"cert_match={self._cert_match!r}>")

    # -- lifecycle -------------------------------------------------------------
    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._stopped:
            raise _Unavailable("ldap: method stopped")
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._pool_size, thread_name_prefix="auth-ldap")
        return self._executor

    async def start(self) -> None:
        """Create the worker pool; the directory is not contacted (it may come up later)."""
        self._stopped = False
        self._pool()

    async def stop(self) -> None:
        """Stop the workers (queued requests are cancelled) and close connections."""
        self._stopped = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            loop = asyncio.get_running_loop()
            waiter = loop.run_in_executor(None, executor.shutdown, True)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), _STOP_GRACE_S)
            except TimeoutError:
                log.debug("ldap: workers still busy at stop; their sockets time out on their own")
        with self._conns_lock:
            conns, self._search_conns = self._search_conns, set()
        for conn in conns:
            _close(conn)

    # -- capabilities ----------------------------------------------------------
    def supports_sasl(self, family: str) -> bool:
        return family in (SASL_PASSWORD, SASL_EXTERNAL)

    # -- loop side ---------------------------------------------------------------
    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._pending >= self._max_pending:
            raise AuthUnavailable(f"ldap: {self._pending} requests already waiting "
                                  f"(pool_size {self._pool_size}); try again later")
        self._pending += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)
            try:
                return await asyncio.wait_for(future, self._call_deadline)
            except TimeoutError:
                raise AuthUnavailable(f"ldap: no answer within {self._call_deadline:g} s "
                                      f"from {self._where()}") from None
        except _Unavailable as exc:
            reason = str(exc)
            log.debug("%s", reason)  # the chain logs it once, with the method name
            raise AuthUnavailable(reason) from None
        except RuntimeError as exc:  # stop() shut the executor down meanwhile
            if "after shutdown" in str(exc):
                raise AuthUnavailable("ldap: method stopped") from None
            raise
        finally:
            self._pending -= 1

    def _where(self) -> str:
        return ", ".join(f"{h}:{self._port}" for h in self._servers)

    def _filter_for(self, user: str, domain: str) -> str:
        parts = [u.assertion(user, domain) for u in self._uids]
        uid_filter = parts[0] if len(parts) == 1 else f"(|{''.join(parts)})"
        return f"(&{uid_filter}{self._filter})" if self._filter else uid_filter

    async def _lookup(self, user: str, domain: str, with_certs: bool = False) -> list[_Entry]:
        """Entries matching ``user`` (at most 2: enough to see ambiguity)."""
        try:
            encoded = user.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no directory entry can have this name
            return []
        if not encoded or len(encoded) > _USER_LEN or b"\x00" in encoded:
            return []
        attrs = [self._cert_attribute] if with_certs else [ldap3.NO_ATTRIBUTES]
        return await self._call(self._search_sync, self._filter_for(user, domain), attrs)

    # -- queries -----------------------------------------------------------------------
    async def user_exists(self, user: str, domain: str) -> bool:
        return bool(await self._lookup(user, domain))

    async def check_password(self, user: str, domain: str, password: str) -> bool:
        if not password:
            return False  # an empty password is an unauthenticated bind: never sent
        entries = await self._lookup(user, domain)
        if len(entries) != 1:
            if len(entries) > 1:
                log.warning("ldap: username %r matches several entries under %s; "
                            "password login refused", user, self._base)
            return False
        return await self._call(self._bind_sync, entries[0].dn, password)

    async def authorize_cert(self, user: str, domain: str, cert: CertFacts) -> CertDecision:
        entries = await self._lookup(user, domain, with_certs=self._cert_match != "none")
        if not entries:
            return CertDecision.refuse("no-account")
        if len(entries) > 1:
            log.warning("ldap: username %r matches several entries under %s; "
                        "certificate login refused", user, self._base)
            return CertDecision.refuse("ambiguous-account")
        if self._cert_match == "none":
            return CertDecision.accept()
        registered = self._certs_of(entries[0])
        if not registered and self._cert_match == "ifpresent":
            return CertDecision.accept()
        if cert.der in registered:
            return CertDecision.accept()
        return CertDecision.refuse("cert-not-registered")

    def _certs_of(self, entry: _Entry) -> list[bytes]:
        wanted = self._cert_attribute.lower()
        base = wanted.split(";", 1)[0]
        values: list[bytes] = []
        for name, vals in entry.attributes.items():
            lname = name.lower()
            if lname == wanted or lname.split(";", 1)[0] == base:
                values.extend(v for v in vals if isinstance(v, (bytes, bytearray)))
        return values

    # -- worker side (runs on the pool's threads, blocking) ---------------------------
    def _make_server(self, host: str) -> ldap3.Server:
        tls = None
        if self._tls:
            # version None: ldap3 uses ssl.create_default_context (TLS >= 1.2,
            # system CAs unless cacertfile); ldap3 then checks the host name.
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self._cacertfile)
        return ldap3.Server(host, port=self._port, use_ssl=self._tls, tls=tls,
                            get_info=ldap3.NONE, connect_timeout=self._connect_timeout)

    def _open(self, user: str | None, password: str | None) -> ldap3.Connection:
        """A connection bound as ``user`` (None = anonymous), first reachable server.

        A refused bind raises :class:`ldap_exc.LDAPBindError` carrying the
        result; transport failures on every server raise :class:`_Unavailable`.
        """
        problems: list[str] = []
        for host, server in zip(self._servers, self._ldap_servers):
            conn = ldap3.Connection(
                server, user=user, password=password,
                authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
                client_strategy=ldap3.SYNC, auto_bind=ldap3.AUTO_BIND_NONE,
                receive_timeout=self._request_timeout, auto_referrals=False,
                raise_exceptions=False, read_only=True, check_names=False)
            try:
                conn.open(read_server_info=False)
            except (ldap_exc.LDAPException, OSError) as exc:
                _close(conn)
                problems.append(f"cannot reach {host}:{self._port}: {_describe(exc)}")
                continue
            try:
                conn.bind(read_server_info=False)
            except (ldap_exc.LDAPException, OSError) as exc:
                _close(conn)
                problems.append(f"{host}:{self._port}: bind failed: {_describe(exc)}")
                continue
            conn._xmppd_host = host  # type: ignore[attr-defined]  (for messages)
            return conn
        raise _Unavailable("ldap: " + "; ".join(problems))

    def _search_conn(self) -> tuple[ldap3.Connection, bool]:
        """This thread's search connection, bound as rootdn; (conn, reused)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn, True
        conn = self._open(self._rootdn or None, self._password or None)
        host = conn._xmppd_host  # type: ignore[attr-defined]
        if conn.result is None or conn.result.get("result") != RESULT_SUCCESS or not conn.bound:
            result = conn.result
            _close(conn)
            who = f"as rootdn {self._rootdn!r}" if self._rootdn else "anonymously"
            raise _Unavailable(f"ldap: {host}:{self._port} refused the bind {who}: {_result_text(result)}")
        self._local.conn = conn
        with self._conns_lock:
            self._search_conns.add(conn)
        return conn, False

    def _forget(self, conn: ldap3.Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._conns_lock:
            self._search_conns.discard(conn)
        _close(conn)

    def _search_sync(self, search_filter: str, attributes: list[str]) -> list[_Entry]:
        for attempt in (1, 2):
            conn, reused = self._search_conn()
            host = conn._xmppd_host  # type: ignore[attr-defined]
            try:
                conn.search(self._base, search_filter, search_scope=ldap3.SUBTREE,
                            dereference_aliases=ldap3.DEREF_NEVER, attributes=attributes,
                            size_limit=2, time_limit=self._request_timeout)
            except (ldap_exc.LDAPException, OSError) as exc:
                self._forget(conn)
                if reused and attempt == 1 and not _is_timeout(exc):
                    continue  # idle connection closed by the server: once more, fresh
                raise _Unavailable(f"ldap: search on {host}:{self._port} failed: {_describe(exc)}") from None
            return self._entries(conn, host)
        raise AssertionError("unreachable")

    def _entries(self, conn: ldap3.Connection, host: str) -> list[_Entry]:
        result = conn.result or {}
        code = result.get("result")
        response = conn.response or []
        refs = [r for r in response if r.get("type") == "searchResRef"]
        if code == RESULT_REFERRAL or refs:
            urls = result.get("referrals") or [u for r in refs for u in (r.get("uri") or [])]
            raise _Unavailable(f"ldap: {host}:{self._port} answered with a referral "
                               f"({', '.join(map(str, urls))[:200] or 'no URL'}); "
                               "referrals are not followed: choose a base without them")
        if code not in (RESULT_SUCCESS, RESULT_SIZE_LIMIT_EXCEEDED):
            raise _Unavailable(f"ldap: search under {self._base!r} on {host}:{self._port} "
                               f"failed: {_result_text(result)}")
        entries = [_Entry(r["dn"], dict(r.get("raw_attributes") or {}))
                   for r in response if r.get("type") == "searchResEntry"]
        if code == RESULT_SIZE_LIMIT_EXCEEDED and len(entries) < 2:
            # the limit was hit, so there are at least two: never guess which
            raise _Unavailable(f"ldap: search on {host}:{self._port} hit a size limit "
                               f"with {len(entries)} entries returned")
        return entries

    def _bind_sync(self, dn: str, password: str) -> bool:
        if not password:  # guarded by the caller too: never an unauthenticated bind
            return False
        conn = self._open(dn, password)
        host = conn._xmppd_host  # type: ignore[attr-defined]
        try:
            result = conn.result or {}
            code = result.get("result")
            if code == RESULT_SUCCESS and conn.bound:
                return True
            if code in _BIND_REFUSED:
                return False
            raise _Unavailable(f"ldap: bind as the user's entry on {host}:{self._port} "
                               f"failed: {_result_text(result)}")
        finally:
            _close(conn)


def _is_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, (TimeoutError, ldap_exc.LDAPResponseTimeoutError)) or "timed out" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _close(conn: ldap3.Connection) -> None:
    try:
        if conn.bound:
            conn.unbind()
        elif not conn.closed:
            conn.strategy.close()
    except Exception:  # closing a dead socket: nothing to do
        pass
