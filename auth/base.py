"""The one small interface every authentication method implements.

Rules of this package: ``auth`` never imports ``xmppd``.  Everything the server
knows about a TLS client certificate reaches a method as :class:`CertFacts`
(plain, frozen data), so methods can be tested without a server.

Mandatory for every method: ``name``, ``supports_sasl``, ``user_exists``.
Optional, announced through :meth:`AuthMethod.supports_sasl` and the
``can_*`` capability flags: ``check_password`` (PLAIN), ``get_scram``
(SCRAM-*), ``authorize_cert`` (EXTERNAL), ``register``/``set_password``/
``remove_user`` (account administration).

A method that cannot reach its backend raises :class:`AuthUnavailable`; the
server turns that into the SASL condition ``temporary-auth-failure``.  A
method that simply says "no" returns ``False``/``None``/a refusing
:class:`CertDecision`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

__all__ = [
    "AuthMethod",
    "AuthUnavailable",
    "AuthConfigError",
    "CertDecision",
    "CertFacts",
    "ScramCredentials",
    "SASL_PASSWORD",
    "SASL_SCRAM",
    "SASL_EXTERNAL",
]

# Families of SASL mechanisms a method may serve.
SASL_PASSWORD = "plain"  # PLAIN: the method verifies a cleartext password
SASL_SCRAM = "scram"  # SCRAM-*: the method hands out stored SCRAM keys
SASL_EXTERNAL = "external"  # EXTERNAL: the method accepts a verified certificate


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What a *verified* client certificate says, as plain data.

    ``xmpp_addrs`` holds every id-on-xmppAddr otherName value (OID
    1.3.6.1.5.5.7.8.5) in certificate order, undecoded beyond UTF-8.
    Fingerprint is the lowercase hex SHA-256 of the DER, no separators.
    """

    der: bytes = dataclasses.field(repr=False)
    fingerprint_sha256: str
    serial: int
    subject: str
    issuer: str
    not_before: _dt.datetime
    not_after: _dt.datetime
    xmpp_addrs: tuple[str, ...] = ()
    common_name: str | None = None
    email: str | None = None
    uid: str | None = None
    ekus: tuple[str, ...] = ()  # dotted OIDs; empty = extension absent

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """Stored SCRAM keys for one hash (RFC 5802 §3). Never the password."""

    hash_name: str  # "sha1" | "sha256" | "sha512"
    salt: bytes = dataclasses.field(repr=False)
    iterations: int
    stored_key: bytes = dataclasses.field(repr=False)
    server_key: bytes = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class CertDecision:
    """Answer of :meth:`AuthMethod.authorize_cert`.

    ``reason`` is a stable code when refused (``no-account``,
    ``cert-not-registered``, ``account-disabled``...).
    """

    ok: bool
    reason: str | None = None

    @classmethod
    def accept(cls) -> "CertDecision":
        return cls(True, None)

    @classmethod
    def refuse(cls, reason: str) -> "CertDecision":
        return cls(False, reason)


class AuthUnavailable(Exception):
    """The backend could not answer (timeout, connection refused, bad reply)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthConfigError(Exception):
    """A method's configuration section is wrong; ``key`` is the TOML key path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class AuthMethod:
    """Base class. Subclasses set ``name`` and override what they support.

    Construct with ``Method(options, context)`` where ``options`` is the
    method's TOML section (``[auth.<name>]``) as a mapping and ``context``
    is a mapping of shared resources the server provides (for example
    ``"db_engine"``: a SQLAlchemy ``AsyncEngine``).
    """

    name: ClassVar[str] = ""
    #: option keys this method accepts in ``[auth.<name>]``
    option_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: Mapping[str, Any] | None = None,
                 context: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_keys))
        if unknown:
            raise AuthConfigError(f"auth.{self.name}.{unknown[0]}", "unknown key")
        self.options = options
        self.context = dict(context or {})

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Open connections/pools, create schema if the method owns one."""

    async def stop(self) -> None:
        """Release everything :meth:`start` opened."""

    # -- capabilities ------------------------------------------------------
    def supports_sasl(self, family: str) -> bool:
        """``family`` is one of SASL_PASSWORD, SASL_SCRAM, SASL_EXTERNAL."""
        return False

    can_register: ClassVar[bool] = False

    # -- queries -------------------------------------------------------------
    async def user_exists(self, user: str, domain: str) -> bool:
        raise NotImplementedError

    async def check_password(self, user: str, domain: str, password: str) -> bool:
        raise NotImplementedError

    async def get_scram(self, user: str, domain: str, hash_name: str) -> ScramCredentials | None:
        raise NotImplementedError

    async def authorize_cert(self, user: str, domain: str, cert: CertFacts) -> CertDecision:
        raise NotImplementedError

    # -- administration (optional; can_register says whether available) -------
    async def register(self, user: str, domain: str, password: str) -> bool:
        """Create the account; False if it exists already."""
        raise NotImplementedError

    async def set_password(self, user: str, domain: str, password: str) -> bool:
        raise NotImplementedError

    async def remove_user(self, user: str, domain: str) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:  # options may hold secrets: never print them
        return f"<{type(self).__name__} name={self.name!r}>"
