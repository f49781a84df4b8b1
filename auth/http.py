"""``http``: ask an external HTTP service (MongooseIM ``ejabberd_auth_http``).

The wire contract is exactly MongooseIM's, so an auth service written for
MongooseIM works unchanged.  For each operation the method calls
``<host><path_prefix><operation>``:

====================  ======  ==================================================
operation             method  answer
====================  ======  ==================================================
``check_password``    GET     200 + ``true``/``false``
``user_exists``       GET     200 + ``true``/``false``
``get_password``      GET     200 + plaintext or ``==MULTI_SCRAM==`` value; 404
``get_certs``         GET     200 + the user's valid certificates, concatenated PEM
``register``          POST    201 created, 409 exists
``set_password``      POST    200/201/204 done, 404 no such user
``remove_user``       POST    200/201/204 done, 404 no such user, 403 not allowed
====================  ======  ==================================================

GET puts ``user``, ``server`` and ``pass`` in the query string; POST sends the
same three keys as an ``application/x-www-form-urlencoded`` body.  All three
keys are always sent (``pass`` empty when unused).  Status codes map as in
MongooseIM: 200 ok/body, 201 created, 204 ok/empty, 400 error (body = reason),
401 not_authorized, 403 not_allowed, 404 not_found, 409 conflict; anything
else is a failure.

Config, ``[auth.http]``:

* ``host`` (required): base URL, ``http://`` or ``https://`` with no path
  (MongooseIM ``outgoing_pools.http.auth.connection.host``);
* ``path_prefix``: default ``"/"``; a missing trailing ``/`` is added;
* ``request_timeout``: milliseconds per request, default 2000 (covers waiting
  for a pooled connection, connecting, and reading the whole answer);
* ``basic_auth``: ``"user:password"`` sent as ``Authorization: Basic`` (secret);
* ``pool_size``: most simultaneous connections to the service, default 20;
* ``cacertfile``: CA bundle that signs the service's certificate (https only;
  default: the system trust store);
* ``password_format``: ``"scram"`` (default) or ``"plain"``: what
  ``register``/``set_password`` send as ``pass`` — a ``==MULTI_SCRAM==`` value
  built with ``auth.password.hash``/``scram_iterations`` (context keys
  ``password_hashes``/``scram_iterations``), or the password itself.

Failure semantics: a timeout, a refused connection, a 5xx, an unexpected
status, an oversize or malformed body all raise
:class:`~auth.base.AuthUnavailable` with a reason naming the operation and
what happened; the server answers ``temporary-auth-failure``.  Never an
accepted login.  Bodies are capped at :data:`MAX_BODY_BYTES`; a response
without ``Content-Length`` (which MongooseIM requires) is still read, bounded.

Passwords and the ``basic_auth`` secret are never logged or shown in
``repr``.  Note that ``check_password`` sends the password in the query
string, as the MongooseIM contract says: keep the service's access log free
of query strings, and use https.

SCRAM from a plaintext ``get_password`` answer: the keys are derived here
with a salt that is HMAC(per-process secret, ``user@domain``) truncated to 16
bytes and :data:`auth.scram.DEFAULT_ITERATIONS`, and cached (bounded LRU,
:data:`PLAIN_SCRAM_CACHE_ENTRIES`) keyed by user and a keyed digest of the
password, so repeated logins do not rerun PBKDF2 and a changed password is
noticed at once.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import logging
import os
import re
import ssl
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from yarl import URL

from . import scram
from .base import (SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM, AuthConfigError, AuthMethod,
                   AuthUnavailable, CertDecision, CertFacts, ScramCredentials)

__all__ = ["HttpAuth", "MAX_BODY_BYTES", "MAX_ITERATIONS", "PLAIN_SCRAM_CACHE_ENTRIES",
           "DEFAULT_REQUEST_TIMEOUT_MS", "MAX_REQUEST_TIMEOUT_MS", "DEFAULT_POOL_SIZE", "MAX_POOL_SIZE"]

log = logging.getLogger("auth.http")

#: largest response body read from the service, in bytes (1 MiB)
MAX_BODY_BYTES = 1024 * 1024
#: ``request_timeout`` default and upper bound, in milliseconds
DEFAULT_REQUEST_TIMEOUT_MS = 2000
MAX_REQUEST_TIMEOUT_MS = 60_000
#: ``pool_size`` default and upper bound (simultaneous connections)
DEFAULT_POOL_SIZE = 20
MAX_POOL_SIZE = 1000
#: SCRAM iteration counts above this from the service are treated as malformed
MAX_ITERATIONS = 1_000_000
#: (user, domain, hash) entries of keys derived from plaintext passwords
PLAIN_SCRAM_CACHE_ENTRIES = 1024
#: longest error text quoted from a 400 answer
_MAX_REASON_CHARS = 200

_OPERATIONS = ("check_password", "user_exists", "get_password", "get_certs",
               "register", "set_password", "remove_user")
_STATUS = {200: "ok", 201: "created", 204: "ok_empty", 400: "error", 401: "not_authorized",
           403: "not_allowed", 404: "not_found", 409: "conflict"}
_DONE = ("ok", "created", "ok_empty")
_LEGACY_SCRAM_PREFIX = "==SCRAM==,"
_MULTI_SCRAM_PREFIX = "==MULTI_SCRAM=="

#: keys plaintext-derived salts and the cache's password digests; never leaves the process
_PROCESS_SECRET = os.urandom(32)

try:  # the same preparation the SASL layer applies to the client's password
    import precis_i18n as _precis

    _OPAQUE = _precis.get_profile("OpaqueString")
except ImportError:  # pragma: no cover - precis-i18n is a dependency
    _OPAQUE = None


def _prepare(password: str) -> str:
    if _OPAQUE is None:  # pragma: no cover
        return password
    try:
        return _OPAQUE.enforce(password)
    except UnicodeError:
        return password  # cannot match a prepared client password; still never accepted by accident


def _plain_salt(user: str, domain: str) -> bytes:
    return hmac.digest(_PROCESS_SECRET, f"{user}@{domain}".encode("utf-8"), "sha256")[:scram.SALT_BYTES]


def _password_tag(password: str) -> bytes:
    return hmac.digest(_PROCESS_SECRET, b"pw\x00" + password.encode("utf-8"), "sha256")


_QUERY_RE = re.compile(r"\?\S*")


def _describe(exc: BaseException) -> str:
    """Type and first line of an exception, with any URL query string removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = _QUERY_RE.sub("?…", text)[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _printable(text: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text.strip())
    return text[:_MAX_REASON_CHARS] + ("…" if len(text) > _MAX_REASON_CHARS else "")


def _parse_bool(op: str, body: str) -> bool:
    value = body.strip()
    if value == "true":
        return True
    if value == "false":
        return False
    raise AuthUnavailable(f"http: {op} answered {_printable(value)[:40]!r}, expected 'true' or 'false'")


def _check_sane(c: ScramCredentials) -> None:
    size = hashlib.new(scram.HASHES[c.hash_name][0]).digest_size
    if len(c.stored_key) != size or len(c.server_key) != size:
        raise ValueError(f"{c.hash_name} key length is not {size}")
    if not c.salt:
        raise ValueError(f"{c.hash_name} salt is empty")
    if not 1 <= c.iterations <= MAX_ITERATIONS:
        raise ValueError(f"{c.hash_name} iteration count outside 1..{MAX_ITERATIONS}")


def _parse_legacy_scram(text: str) -> dict[str, ScramCredentials]:
    """MongooseIM's older single-hash ``==SCRAM==,stored,server,salt,iterations`` (SHA-1)."""
    fields = text[len(_LEGACY_SCRAM_PREFIX):].split(",")
    if len(fields) != 4:
        raise ValueError("not a ==SCRAM== value")
    try:
        stored, server, salt = (base64.b64decode(f, validate=True) for f in fields[:3])
        iterations = int(fields[3])
    except (ValueError, TypeError):
        raise ValueError("bad field in ==SCRAM== value") from None
    return {"sha1": ScramCredentials("sha1", salt, iterations, stored, server)}


def _option_int(options: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AuthConfigError(f"auth.http.{key}", f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise AuthConfigError(f"auth.http.{key}", f"must be between {low} and {high}, got {value}")
    return value


def _option_str(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is not None and not isinstance(value, str):
        raise AuthConfigError(f"auth.http.{key}", "must be a string")
    return value


class HttpAuth(AuthMethod):
    name = "http"
    option_keys = frozenset({"host", "path_prefix", "request_timeout", "basic_auth",
                             "pool_size", "cacertfile", "password_format"})
    can_register = True

    def __init__(self, options: Mapping[str, Any] | None = None,
                 context: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, context)
        opts = self.options

        host = _option_str(opts, "host")
        if not host:
            raise AuthConfigError("auth.http.host", "required: the auth service's base URL, "
                                  "e.g. \"https://auth-service:8000\"")
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AuthConfigError("auth.http.host", f"must be an http:// or https:// URL with a host, got {host!r}")
        if parts.username is not None or parts.password is not None:
            raise AuthConfigError("auth.http.host", "must not contain credentials; use auth.http.basic_auth")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise AuthConfigError("auth.http.host", "must have no path, query or fragment; "
                                  "put a path in auth.http.path_prefix")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise AuthConfigError("auth.http.host", f"bad port in {host!r}") from None
        self._https = parts.scheme == "https"

        prefix = _option_str(opts, "path_prefix")
        prefix = "/" if prefix is None else prefix
        if not prefix.startswith("/") or any(c in prefix for c in "?#") or any(c.isspace() for c in prefix):
            raise AuthConfigError("auth.http.path_prefix", f"must be a URL path starting with '/', got {prefix!r}")
        if not prefix.endswith("/"):
            prefix += "/"
        base = f"{parts.scheme}://{parts.netloc}{prefix}"
        self._urls = {op: base + op for op in _OPERATIONS}
        self.base_url = base

        self.request_timeout_ms = _option_int(opts, "request_timeout", DEFAULT_REQUEST_TIMEOUT_MS,
                                              1, MAX_REQUEST_TIMEOUT_MS)
        self._timeout_s = self.request_timeout_ms / 1000
        self.pool_size = _option_int(opts, "pool_size", DEFAULT_POOL_SIZE, 1, MAX_POOL_SIZE)

        basic = _option_str(opts, "basic_auth")
        self._auth_header: str | None = None
        if basic is not None:
            login, sep, _secret = basic.partition(":")
            if not sep or not login:
                raise AuthConfigError("auth.http.basic_auth", "must be \"user:password\"")
            self._auth_header = "Basic " + base64.b64encode(basic.encode("utf-8")).decode("ascii")

        cafile = opts.get("cacertfile")
        self._ssl: ssl.SSLContext | bool = True
        if cafile is not None:
            if not isinstance(cafile, (str, Path)) or not str(cafile):
                raise AuthConfigError("auth.http.cacertfile", "must be a file path")
            if not self._https:
                raise AuthConfigError("auth.http.cacertfile", "only applies to an https:// host")
            try:
                self._ssl = ssl.create_default_context(cafile=str(cafile))
            except (OSError, ssl.SSLError) as exc:
                raise AuthConfigError("auth.http.cacertfile", f"cannot load {cafile}: {exc}") from None

        fmt = opts.get("password_format", "scram")
        if fmt not in ("scram", "plain"):
            raise AuthConfigError("auth.http.password_format", f"must be \"scram\" or \"plain\", got {fmt!r}")
        self.password_format: str = fmt

        hashes = tuple(self.context.get("password_hashes") or tuple(scram.HASHES))
        unknown = [h for h in hashes if h not in scram.HASHES]
        if unknown:
            raise AuthConfigError("auth.password.hash", f"unknown password hash {unknown[0]!r}")
        self._hashes = tuple(dict.fromkeys(hashes))
        iterations = self.context.get("scram_iterations", scram.DEFAULT_ITERATIONS)
        if isinstance(iterations, bool) or not isinstance(iterations, int) \
                or not scram.MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise AuthConfigError("auth.password.scram_iterations",
                                  f"must be an integer between {scram.MIN_ITERATIONS} and {MAX_ITERATIONS}")
        self._iterations = iterations

        self._session: aiohttp.ClientSession | None = None
        self._plain_cache: collections.OrderedDict[tuple[str, str, str], tuple[bytes, ScramCredentials]] = \
            collections.OrderedDict()
        self._warned_no_length = False

    def __repr__(self) -> str:
        return (f"<HttpAuth name='http' url={self.base_url!r} timeout={self.request_timeout_ms}ms "
                f"pool={self.pool_size} basic_auth={'set' if self._auth_header else 'unset'}>")

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size, ssl=self._ssl)
        headers = {"User-Agent": "xmppd-auth-http"}
        if self._auth_header is not None:
            headers["Authorization"] = self._auth_header
        self._session = aiohttp.ClientSession(
            connector=connector, headers=headers, trust_env=False, raise_for_status=False,
            # every request runs under asyncio.timeout(request_timeout) in _call: one clock
            # for pool wait, connect, send and read
            timeout=aiohttp.ClientTimeout(total=None))

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._plain_cache.clear()

    def supports_sasl(self, family: str) -> bool:
        return family in (SASL_PASSWORD, SASL_SCRAM, SASL_EXTERNAL)

    # -- transport -------------------------------------------------------------
    async def _call(self, op: str, user: str, domain: str, password: str = "") -> tuple[str, str]:
        """One request; returns (status kind, body text). Raises AuthUnavailable."""
        session = self._session
        if session is None:
            raise AuthUnavailable(f"http: {op}: method not started")
        form = urlencode({"user": user, "server": domain, "pass": password}, quote_via=quote, safe="")
        try:
            async with asyncio.timeout(self._timeout_s):
                if op in ("register", "set_password", "remove_user"):
                    ctx = session.post(URL(self._urls[op], encoded=True), data=form.encode("ascii"),
                                       headers={"Content-Type": "application/x-www-form-urlencoded"},
                                       allow_redirects=False)
                else:
                    ctx = session.get(URL(f"{self._urls[op]}?{form}", encoded=True), allow_redirects=False)
                async with ctx as resp:
                    status = resp.status
                    kind = _STATUS.get(status)
                    if kind is None:
                        what = "server error" if status >= 500 else "status outside the contract"
                        raise AuthUnavailable(f"http: {op}: service answered HTTP {status} ({what})")
                    raw = await self._read_body(op, resp)
        except AuthUnavailable as exc:
            log.debug("%s", exc.reason)
            raise
        except TimeoutError:
            reason = f"http: {op} timed out after {self.request_timeout_ms} ms"
            log.debug("%s", reason)
            raise AuthUnavailable(reason) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            reason = f"http: {op} failed: {_describe(exc)}"
            log.debug("%s", reason)
            raise AuthUnavailable(reason) from None
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthUnavailable(f"http: {op}: body is not UTF-8 (HTTP {status})") from None
        if kind == "error":
            raise AuthUnavailable(f"http: {op}: service reported an error (HTTP 400): "
                                  f"{_printable(body) or 'no reason given'}")
        return kind, body

    async def _read_body(self, op: str, resp: aiohttp.ClientResponse) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > MAX_BODY_BYTES:
            raise AuthUnavailable(f"http: {op}: body of {declared} bytes exceeds the "
                                  f"{MAX_BODY_BYTES}-byte limit")
        if declared is None and resp.status != 204 and not self._warned_no_length:
            self._warned_no_length = True
            log.warning("http: %s: response without Content-Length (the MongooseIM contract requires "
                        "it); reading at most %d bytes", op, MAX_BODY_BYTES)
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            buf += chunk
            if len(buf) > MAX_BODY_BYTES:
                raise AuthUnavailable(f"http: {op}: body exceeds the {MAX_BODY_BYTES}-byte limit")
        return bytes(buf)

    @staticmethod
    def _unexpected(op: str, kind: str) -> AuthUnavailable:
        code = next(c for c, k in _STATUS.items() if k == kind)
        return AuthUnavailable(f"http: {op}: unexpected answer HTTP {code} ({kind})")

    # -- queries -------------------------------------------------------------
    async def user_exists(self, user: str, domain: str) -> bool:
        if not user or not domain:
            return False
        kind, body = await self._call("user_exists", user, domain)
        if kind == "ok":
            return _parse_bool("user_exists", body)
        if kind == "not_found":
            return False
        raise self._unexpected("user_exists", kind)

    async def check_password(self, user: str, domain: str, password: str) -> bool:
        if not user or not domain or not password:
            return False
        kind, body = await self._call("check_password", user, domain, password)
        if kind == "ok":
            return _parse_bool("check_password", body)
        if kind in ("not_authorized", "not_allowed", "not_found"):
            return False
        raise self._unexpected("check_password", kind)

    async def get_scram(self, user: str, domain: str, hash_name: str) -> ScramCredentials | None:
        if not user or not domain or hash_name not in scram.HASHES:
            return None
        kind, body = await self._call("get_password", user, domain)
        if kind == "not_found":
            return None
        if kind != "ok":
            raise self._unexpected("get_password", kind)
        if not body:
            raise AuthUnavailable("http: get_password answered an empty password")
        if body.startswith(_MULTI_SCRAM_PREFIX) or body.startswith(_LEGACY_SCRAM_PREFIX):
            try:
                creds = (scram.deserialize(body) if body.startswith(_MULTI_SCRAM_PREFIX)
                         else _parse_legacy_scram(body))
                for c in creds.values():
                    _check_sane(c)
            except (ValueError, TypeError) as exc:
                raise AuthUnavailable(f"http: get_password answered a malformed SCRAM value for "
                                      f"{user}@{domain} ({exc})") from None
            return creds.get(hash_name)
        return await self._plain_scram(user, domain, hash_name, body)

    async def _plain_scram(self, user: str, domain: str, hash_name: str, password: str) -> ScramCredentials:
        key = (user, domain, hash_name)
        tag = _password_tag(password)
        hit = self._plain_cache.get(key)
        if hit is not None and hmac.compare_digest(hit[0], tag):
            self._plain_cache.move_to_end(key)
            return hit[1]
        creds = await asyncio.to_thread(scram.derive, _prepare(password), hash_name,
                                        _plain_salt(user, domain), scram.DEFAULT_ITERATIONS)
        self._plain_cache[key] = (tag, creds)
        self._plain_cache.move_to_end(key)
        while len(self._plain_cache) > PLAIN_SCRAM_CACHE_ENTRIES:
            self._plain_cache.popitem(last=False)
        return creds

    async def authorize_cert(self, user: str, domain: str, cert: CertFacts) -> CertDecision:
        """Accept iff the service lists a certificate whose DER equals the presented one."""
        if not user or not domain:
            return CertDecision.refuse("cert-not-registered")
        kind, body = await self._call("get_certs", user, domain)
        if kind in ("not_found", "ok_empty"):
            return CertDecision.refuse("cert-not-registered")
        if kind != "ok":
            raise self._unexpected("get_certs", kind)
        if not body.strip():
            return CertDecision.refuse("cert-not-registered")
        try:
            certs = x509.load_pem_x509_certificates(body.encode("utf-8"))
        except ValueError as exc:
            raise AuthUnavailable(f"http: get_certs answered unparsable PEM for {user}@{domain} "
                                  f"({_describe(exc)})") from None
        if any(c.public_bytes(Encoding.DER) == cert.der for c in certs):
            return CertDecision.accept()
        return CertDecision.refuse("cert-not-registered")

    # -- administration ---------------------------------------------------------
    async def _pass_value(self, password: str) -> str:
        if self.password_format == "plain":
            return password
        creds = await asyncio.to_thread(scram.new_credentials, password, self._hashes, self._iterations)
        return scram.serialize(creds)

    async def register(self, user: str, domain: str, password: str) -> bool:
        """Create the account; False if the service says it exists (409)."""
        if not user or not domain:
            raise ValueError("user and domain must not be empty")
        if not password:
            raise ValueError("empty password")
        kind, _ = await self._call("register", user, domain, await self._pass_value(password))
        if kind == "created":
            return True
        if kind == "conflict":
            return False
        raise self._unexpected("register", kind)

    async def set_password(self, user: str, domain: str, password: str) -> bool:
        if not user or not domain:
            return False
        if not password:
            raise ValueError("empty password")
        kind, _ = await self._call("set_password", user, domain, await self._pass_value(password))
        if kind in _DONE:
            return True
        if kind == "not_found":
            return False
        raise self._unexpected("set_password", kind)

    async def remove_user(self, user: str, domain: str) -> bool:
        if not user or not domain:
            return False
        kind, _ = await self._call("remove_user", user, domain)
        if kind in _DONE:
            return True
        if kind == "not_found":
            return False
        if kind == "not_allowed":
            raise AuthUnavailable("http: remove_user: not allowed by the auth service (HTTP 403)")
        raise self._unexpected("remove_user", kind)
