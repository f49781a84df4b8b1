"""Method names → classes, and the chain that asks methods in order.

Names are resolved at config load (:func:`build_methods`), so an unknown or
unavailable method fails there, never at login (DESIGN principle 4).  Method
modules are imported lazily by module path: a method whose dependencies are
not installed only matters when it is configured.

Chain semantics follow MongooseIM's ``auth.methods``:

* methods are asked in configured order; the first positive answer wins;
* only methods that :meth:`~auth.base.AuthMethod.supports_sasl` the family in
  question are asked for it (PLAIN → ``check_password``, SCRAM →
  ``get_scram``, EXTERNAL → ``authorize_cert``);
* a method raising :class:`~auth.base.AuthUnavailable` is skipped but
  remembered: if no method answered positively and at least one was
  unavailable, the chain raises :class:`AuthUnavailable` (the client gets
  ``temporary-auth-failure``, not ``not-authorized``);
* administration (``set_password``/``remove_user``) goes to every method that
  can administer accounts; there an unavailable method always raises, after
  the others were done, because the operation is idempotent and must be
  retried rather than half-applied silently.

A listener may restrict the chain (``allowed_auth_methods``) with
:meth:`AuthChain.restricted`; the restricted chain shares the method
instances, so only the full chain is started and stopped.
"""

from __future__ import annotations

import importlib
import logging
from typing import Awaitable, Callable, Mapping, Sequence, TypeVar

from .base import (SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM, AuthConfigError, AuthMethod,
                   AuthUnavailable, CertDecision, CertFacts, ScramCredentials)

__all__ = ["ALIASES", "METHOD_PATHS", "canonical_name", "method_class", "build_methods", "AuthChain"]

log = logging.getLogger("auth.chain")

#: other spellings accepted in ``auth.methods`` (MongooseIM calls sql "rdbms")
ALIASES: dict[str, str] = {"rdbms": "sql"}

#: method name → "module:Class", imported on first use
METHOD_PATHS: dict[str, str] = {
    "pki": "xmppd_auth.pki:PkiAuth",
    "sql": "xmppd_auth.sql:SqlAuth",
    "http": "xmppd_auth.http:HttpAuth",
    "ldap": "xmppd_auth.ldap:LdapAuth",
}

_FAMILIES = (SASL_PASSWORD, SASL_SCRAM, SASL_EXTERNAL)
_T = TypeVar("_T")


def canonical_name(name: str) -> str:
    """``rdbms`` → ``sql``; other names unchanged."""
    return ALIASES.get(name, name)


def method_class(name: str) -> type[AuthMethod]:
    """The class implementing method ``name`` (aliases accepted).

    Raises :class:`AuthConfigError` with key ``auth.methods`` for an unknown
    name or a method that cannot be loaded in this installation.
    """
    if not isinstance(name, str):
        raise AuthConfigError("auth.methods", f"method names are strings, got {name!r}")
    canonical = canonical_name(name)
    path = METHOD_PATHS.get(canonical)
    if path is None:
        known = sorted(set(METHOD_PATHS) | set(ALIASES))
        raise AuthConfigError("auth.methods", f"unknown auth method {name!r} (known: {', '.join(known)})")
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise AuthConfigError("auth.methods", f"auth method {name!r} is not available "
                                  f"in this build (module {module_name} missing)") from exc
        raise AuthConfigError("auth.methods", f"auth method {name!r} needs a missing "
                              f"dependency: {exc.name}") from exc
    except ImportError as exc:
        raise AuthConfigError("auth.methods", f"auth method {name!r} failed to load: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, AuthMethod)):
        raise AuthConfigError("auth.methods", f"{path} is not an AuthMethod subclass")
    if cls.name != canonical:
        raise AuthConfigError("auth.methods", f"{path} declares name {cls.name!r}, expected {canonical!r}")
    return cls


def build_methods(names: Sequence[str], options: Mapping[str, Mapping],
                  context: Mapping) -> list[AuthMethod]:
    """Instantiate the configured methods, in order.

    ``options`` maps a method name to its ``[auth.<name>]`` section; the
    section may be spelled with the alias (``[auth.rdbms]``) or the canonical
    name, not both.  ``context`` is handed to every method unchanged.
    """
    if isinstance(names, str):
        raise AuthConfigError("auth.methods", "must be a list of method names, not a string")
    if not names:
        raise AuthConfigError("auth.methods", "at least one auth method is required")
    seen: set[str] = set()
    methods: list[AuthMethod] = []
    for name in names:
        cls = method_class(name)
        canonical = cls.name
        if canonical in seen:
            raise AuthConfigError("auth.methods", f"auth method {canonical!r} is listed twice")
        seen.add(canonical)
        candidates = dict.fromkeys([canonical, name, *(a for a, c in ALIASES.items() if c == canonical)])
        spellings = [n for n in candidates if n in options]
        if len(spellings) > 1:
            raise AuthConfigError(f"auth.{spellings[0]}", f"configured twice (also as [auth.{spellings[1]}])")
        section = options[spellings[0]] if spellings else {}
        if not isinstance(section, Mapping):
            raise AuthConfigError(f"auth.{spellings[0]}", "must be a table")
        methods.append(cls(section, context))
    return methods


class AuthChain:
    """The configured methods, asked in order (see module docstring)."""

    def __init__(self, methods: Sequence[AuthMethod]) -> None:
        methods = tuple(methods)
        names = tuple(m.name for m in methods)
        if len(set(names)) != len(names):
            raise AuthConfigError("auth.methods", "an auth method is listed twice")
        self._methods = methods
        self.names: tuple[str, ...] = names

    @property
    def methods(self) -> tuple[AuthMethod, ...]:
        return self._methods

    def __repr__(self) -> str:
        return f"<AuthChain {list(self.names)!r}>"

    # -- shape -----------------------------------------------------------------
    def restricted(self, allowed: Sequence[str] | None) -> "AuthChain":
        """The sub-chain a listener may use; empty/None means all methods.

        Order stays the configured order.  A name not in the chain is a
        config error (key ``allowed_auth_methods``; the loader prefixes the
        listener's path).
        """
        if not allowed:
            return self
        if isinstance(allowed, str):
            raise AuthConfigError("allowed_auth_methods", "must be a list of method names")
        wanted = {canonical_name(n) for n in allowed}
        missing = sorted(wanted - set(self.names))
        if missing:
            raise AuthConfigError("allowed_auth_methods", f"{missing[0]!r} is not in auth.methods "
                                  f"({', '.join(self.names) or 'empty'})")
        return AuthChain([m for m in self._methods if m.name in wanted])

    def supports(self, family: str) -> bool:
        return any(m.supports_sasl(family) for m in self._methods)

    @property
    def can_register(self) -> bool:
        return any(m.can_register for m in self._methods)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Start methods in order; if one fails, stop those already started and re-raise."""
        started: list[AuthMethod] = []
        try:
            for m in self._methods:
                await m.start()
                started.append(m)
        except BaseException:
            await self._stop_all(reversed(started))
            raise

    async def stop(self) -> None:
        """Stop every method in reverse order; errors are logged, never raised."""
        await self._stop_all(reversed(self._methods))

    @staticmethod
    async def _stop_all(methods) -> None:
        for m in methods:
            try:
                await m.stop()
            except Exception:
                log.exception("auth method %s failed to stop", m.name)

    # -- chain walking -------------------------------------------------------------
    async def _first(self, family: str | None, what: str,
                     call: Callable[[AuthMethod], Awaitable[_T]],
                     positive: Callable[[_T], bool]) -> tuple[_T | None, str | None, list[_T]]:
        """Ask methods in order; return (answer, method name) of the first positive one.

        Also returns the negative answers in order.  Raises AuthUnavailable if
        nothing was positive and some method was unavailable.
        """
        unavailable: list[tuple[str, AuthUnavailable]] = []
        negatives: list[_T] = []
        for m in self._methods:
            if family is not None and not m.supports_sasl(family):
                continue
            try:
                answer = await call(m)
            except AuthUnavailable as exc:
                log.warning("auth method %s unavailable for %s: %s", m.name, what, exc.reason)
                unavailable.append((m.name, exc))
                continue
            if positive(answer):
                return answer, m.name, negatives
            negatives.append(answer)
        if unavailable:
            raise _combined(unavailable)
        return None, None, negatives

    async def check_password(self, user: str, domain: str, password: str) -> str | None:
        """Name of the method that accepted the password, or None."""
        _, name, _ = await self._first(
            SASL_PASSWORD, "check_password",
            lambda m: m.check_password(user, domain, password), lambda ok: ok is True)
        return name

    async def get_scram(self, user: str, domain: str,
                        hash_name: str) -> tuple[ScramCredentials, str] | None:
        creds, name, _ = await self._first(
            SASL_SCRAM, "get_scram",
            lambda m: m.get_scram(user, domain, hash_name), lambda c: c is not None)
        if creds is None or name is None:
            return None
        return creds, name

    async def authorize_cert(self, user: str, domain: str,
                             cert: CertFacts) -> tuple[CertDecision, str | None]:
        """First accepting method wins; else the first refusal's reason."""
        decision, name, refusals = await self._first(
            SASL_EXTERNAL, "authorize_cert",
            lambda m: m.authorize_cert(user, domain, cert), lambda d: bool(d.ok))
        if decision is not None:
            return decision, name
        if refusals:
            return CertDecision.refuse(refusals[0].reason or "not-authorized"), None
        return CertDecision.refuse("no-external-method"), None

    async def user_exists(self, user: str, domain: str) -> bool:
        """True if any method knows the account (pki never does: see auth.pki)."""
        _, name, _ = await self._first(
            None, "user_exists", lambda m: m.user_exists(user, domain), lambda e: e is True)
        return name is not None

    # -- administration ------------------------------------------------------------
    def _admin_methods(self) -> list[AuthMethod]:
        return [m for m in self._methods if m.can_register]

    async def register(self, user: str, domain: str, password: str) -> bool:
        """Create the account in the first method that can register.

        False if any method already knows the account (so a name taken in
        LDAP cannot be registered again in sql).
        """
        admin = self._admin_methods()
        if not admin:
            raise AuthConfigError("auth.methods", "no configured auth method can register accounts "
                                  f"({', '.join(self.names) or 'none'}); add 'sql'")
        if await self.user_exists(user, domain):
            return False
        return await admin[0].register(user, domain, password)

    async def set_password(self, user: str, domain: str, password: str) -> bool:
        """Set the password wherever the account lives; True if any method changed it."""
        return await self._admin_all("set_password", lambda m: m.set_password(user, domain, password))

    async def remove_user(self, user: str, domain: str) -> bool:
        """Remove the account from every method that has it; True if any removed it."""
        return await self._admin_all("remove_user", lambda m: m.remove_user(user, domain))

    async def _admin_all(self, what: str, call: Callable[[AuthMethod], Awaitable[bool]]) -> bool:
        admin = self._admin_methods()
        if not admin:
            raise AuthConfigError("auth.methods", f"no configured auth method supports {what} "
                                  f"({', '.join(self.names) or 'none'})")
        done = False
        unavailable: list[tuple[str, AuthUnavailable]] = []
        for m in admin:
            try:
                done = bool(await call(m)) or done
            except AuthUnavailable as exc:
                log.warning("auth method %s unavailable for %s: %s", m.name, what, exc.reason)
                unavailable.append((m.name, exc))
        if unavailable:
            raise _combined(unavailable)
        return done


def _combined(unavailable: list[tuple[str, AuthUnavailable]]) -> AuthUnavailable:
    reason = "; ".join(exc.reason if exc.reason.startswith(f"{name}:") else f"{name}: {exc.reason}"
                       for name, exc in unavailable)
    err = AuthUnavailable(reason)
    err.__cause__ = unavailable[0][1]
    return err
