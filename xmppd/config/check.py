"""``xmppd check-config``: everything ``xmppd run`` would refuse, all at once.

:func:`check_config_file` loads the file (every schema error, each with its
TOML key), then does what ``run`` does before it binds a socket, without
binding or connecting:

* every file a listener names is read and parsed as ``run`` parses it
  (``tls.certfile``, ``tls.keyfile`` with ``tls.password``, ``tls.cacertfile``,
  each of ``tls.crl_files``), then the listener's TLS context is built exactly
  as the server builds it (key matches certificate, CRL signed by a CA of
  ``cacertfile``, ciphers, versions);
* every auth method in ``auth.methods`` is constructed from its ``[auth.<m>]``
  table (the constructors validate, e.g. ``auth.http.host``; none connects);
  CA bundles named there are parsed too;
* every module's ``[modules.<name>]`` options are checked.

It returns a list of :class:`Problem` (errors and warnings) instead of
raising, so the command can print them all.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .collect import ConfigErrors
from .loader import load_config
from .schema import Config, ConfigError

__all__ = ["Problem", "check_config_file", "validate_config"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of check-config: ``key`` is the TOML key path."""

    key: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        if not self.error:
            return f"warning: {self.message}" if not self.key else f"warning: {self.key}: {self.message}"
        return f"config error: {self.key}: {self.message}"


def check_config_file(path: str | Path) -> tuple[Config | None, list[Problem]]:
    """(config, problems); config is None when there is any error."""
    try:
        config = load_config(path)
    except ConfigErrors as exc:
        problems = [Problem("", w, False) for w in exc.warnings]
        return None, problems + [Problem(e.key, e.message) for e in exc.errors]
    except ConfigError as exc:
        return None, [Problem(exc.key, exc.message)]
    problems = [Problem("", w, False) for w in config.warnings]
    problems += validate_config(config)
    return (None if any(p.error for p in problems) else config), problems


def validate_config(config: Config) -> list[Problem]:
    """The checks ``run`` does past the schema (files, auth methods, modules)."""
    problems: list[Problem] = []
    for i, listener in enumerate(config.listeners):
        problems += _check_tls(listener.tls, f"listen.c2s[{i}].tls")
    problems += _check_auth(config)
    problems += _check_modules(config)
    return problems


# ------------------------------------------------------------------ TLS files
def _check_tls(t: Any, prefix: str) -> list[Problem]:
    from ..pki.crl_upkeep import signer_for
    from ..tls.context import TLSConfigError, _load_certs, _load_crls, _load_key

    out: list[Problem] = []
    uses_ca = bool(t.cacertfile) and t.verify_mode != "none"
    now = _dt.datetime.now(_dt.timezone.utc)

    def attempt(key: str, fn, *args, used: bool = True):
        try:
            return fn(*args)
        except TLSConfigError as exc:
            note = "" if used else f" (not used while tls.verify_mode = \"{t.verify_mode}\")"
            out.append(Problem(key, f"{exc}{note}", used))
        except Exception as exc:  # noqa: BLE001 - a file must never crash the check
            out.append(Problem(key, f"cannot load: {type(exc).__name__}: {exc}", used))
        return None

    chain = attempt(f"{prefix}.certfile", _load_certs, t.certfile, "certfile")
    key = attempt(f"{prefix}.keyfile", _load_key, t.keyfile, t.password)
    if chain and chain[0].not_valid_after_utc < now:
        out.append(Problem(f"{prefix}.certfile", f"the server certificate in {t.certfile} expired on "
                           f"{chain[0].not_valid_after_utc.isoformat()}", False))
    if t.cacertfile:
        attempt(f"{prefix}.cacertfile", _load_certs, t.cacertfile, "cacertfile", used=uses_ca)
    crl_files = []
    for j, crl_path in enumerate(t.crl_files):
        if not Path(crl_path).exists() and signer_for(crl_path) is not None:
            # the server holds the CA key next to it: it creates the CRL at start (pki.crl_upkeep)
            out.append(Problem(f"{prefix}.crl_files", f"item {j}: CRL file {crl_path} does not exist yet; "
                               "the server creates it at start (the CA key is next to it)", False))
            continue
        crl_files.append(crl_path)
        crls = attempt(f"{prefix}.crl_files", _load_crls, crl_path, used=uses_ca)
        for crl in crls or ():
            next_update = crl.next_update_utc
            if next_update is not None and next_update < now:
                out.append(Problem(f"{prefix}.crl_files", f"item {j}: CRL file {crl_path} expired on "
                                   f"{next_update.isoformat()}; certificate logins of its CA will be refused",
                                   False))
    if any(p.error for p in out) or chain is None or key is None:
        return out
    # the individual files load: now build the context the way the listener does
    from ..tls import context as tls_context

    quiet = tls_context.log.disabled  # its expiry warnings are reported above, as Problems
    tls_context.log.disabled = True
    try:
        tls_context.ServerTLS(certfile=t.certfile, keyfile=t.keyfile, cacertfile=t.cacertfile, verify_mode=t.verify_mode,
                  disconnect_on_failure=t.disconnect_on_failure, crl_files=crl_files, versions=t.versions,
                  ciphers=t.ciphers, key_password=t.password)
    except tls_context.TLSConfigError as exc:
        out.append(Problem(_tls_key(prefix, str(exc)), str(exc)))
    except Exception as exc:  # noqa: BLE001
        out.append(Problem(prefix, f"cannot build the TLS context: {type(exc).__name__}: {exc}"))
    finally:
        tls_context.log.disabled = quiet
    return out


def _tls_key(prefix: str, message: str) -> str:
    """The tls.* key a ServerTLS error message is about (they start with the file's role)."""
    for word, key in (("keyfile", "keyfile"), ("cacertfile", "cacertfile"), ("CRL file", "crl_files"),
                      ("certfile", "certfile"), ("ciphers", "ciphers"), ("versions", "versions"),
                      ("verify_mode", "verify_mode")):
        if message.startswith(word):
            return f"{prefix}.{key}"
    return prefix


# ------------------------------------------------------------------ auth methods
def _check_auth(config: Config) -> list[Problem]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from xmppd_auth.base import AuthConfigError
    from xmppd_auth.registry import build_methods

    out: list[Problem] = []
    auth = config.auth
    try:
        # what SqlAuth needs; an engine connects only when first used, and this one never is
        engine = create_async_engine(config.storage.url)
    except Exception as exc:  # noqa: BLE001 - e.g. the driver is not installed
        return [Problem("storage.url", f"cannot create the database engine: {exc}")]
    context = {"db_engine": engine, "password_hashes": tuple(auth.password.hash),
               "scram_iterations": auth.password.scram_iterations}
    try:
        if not auth.methods:
            out.append(Problem("auth.methods", "at least one auth method is required"))
        for name in auth.methods:
            try:
                build_methods([name], auth.method_options, context)
            except AuthConfigError as exc:
                out.append(Problem(exc.key, exc.message))
            except Exception as exc:  # noqa: BLE001 - a method's constructor must not crash the check
                out.append(Problem(f"auth.{name}", f"{type(exc).__name__}: {exc}"))
    finally:
        engine.sync_engine.dispose()
    ldap = auth.options_for("ldap")
    cafile = ldap.get("cacertfile") if "ldap" in auth.methods else None
    if isinstance(cafile, str) and cafile and Path(cafile).is_file():
        from ..tls.context import TLSConfigError, _load_certs

        try:
            _load_certs(cafile, "cacertfile")
        except TLSConfigError as exc:
            out.append(Problem("auth.ldap.cacertfile", str(exc)))
    return out


# ------------------------------------------------------------------ modules
def _check_modules(config: Config) -> list[Problem]:
    from ..modules import BUILTIN
    from ..modules.base import parse_module_options

    out: list[Problem] = []
    for cls in BUILTIN:
        try:
            parse_module_options(cls, config.modules.options_for(cls.name))
        except ConfigError as exc:
            out.append(Problem(exc.key, exc.message))
    return out
