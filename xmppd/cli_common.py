"""What every ``xmppd`` subcommand module shares: exit codes, errors, config, accounts, secrets, the CA.

Rules of the command line (every ``xmppd/cli*.py`` follows them):

* An error is **one line** on stderr, ``xmppd: <cause>: <what to do>``, never a traceback.  Commands raise
  :class:`CliError`; :func:`xmppd.cli.main` prints it.
* Exit status :data:`EXIT_USAGE` (2, as argparse) when what was typed or configured is wrong — fix the command
  line or the config file; :data:`EXIT_RUNTIME` (1) when the command was right but could not be done now (port in
  use, account missing, file exists, permission denied).
* Output that a reader stops reading (``| head``) never interrupts the work: see :func:`guard_stdout`.

The modules import from here, never each other's private helpers (no import cycles).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_RUNTIME", "EXIT_USAGE", "EXIT_CONFIG", "ENV_PORT", "ENV_TLS_PORT", "CliError", "fail",
    "load_config", "parse_account", "read_secret", "ca_paths", "load_ca", "days", "positive_int", "port_number",
    "writable_dir", "describe_os_error", "guard_stdout", "ensure_default_pki", "run_storage", "with_registry", "storage_error",
]

#: the command could not be done now (state of the system, not the command line)
EXIT_RUNTIME = 1
#: the command line or the configuration is wrong (argparse uses 2 as well)
EXIT_USAGE = 2
EXIT_CONFIG = 2
#: override the embedded default's STARTTLS port (5222) — e.g. when 5222 is taken, or in tests
ENV_PORT = "XMPPD_PORT"
#: override the embedded default's direct-TLS port (5223)
ENV_TLS_PORT = "XMPPD_TLS_PORT"


class CliError(Exception):
    """A one-line error for the user: the cause and the fix, with an exit status."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_RUNTIME, *, one_line: bool = True) -> int:
    """Print ``xmppd: message`` on stderr (as one line unless ``one_line=False``) and return ``code``."""
    text = " ".join(str(message).split()) if one_line else str(message).rstrip()
    try:
        print(f"xmppd: {text}", file=sys.stderr, flush=True)
    except OSError:  # stderr closed too: the exit status is all that is left
        pass
    return code


# ------------------------------------------------------------------ config
def _env_port(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise CliError(f"{name}={raw!r} is not a TCP port: set it to a number 0..65535 or unset it", EXIT_USAGE)
    return port


def default_ports() -> tuple[int, int]:
    """The embedded default's (STARTTLS, direct TLS) ports after ``XMPPD_PORT``/``XMPPD_TLS_PORT``."""
    starttls, tls = _env_port(ENV_PORT), _env_port(ENV_TLS_PORT)
    return (5222 if starttls is None else starttls), (5223 if tls is None else tls)


def load_config(args: Any):
    """``--config FILE``, or the embedded default for the current directory (ports from the environment)."""
    from .config import default_config, load_config as load_file

    path = getattr(args, "config", None)
    if path:
        return load_file(path)
    config = default_config(Path.cwd())
    starttls, tls = default_ports()
    ports = {"starttls": starttls, "tls": tls}
    return dataclasses.replace(config, listeners=tuple(
        dataclasses.replace(lc, port=ports.get(lc.tls.mode, lc.port)) for lc in config.listeners))


def ensure_default_pki(config) -> None:
    """The embedded default generates its dev CA and server certificate on first use."""
    import logging

    from .pki import ensure_dev_pki

    for listener in config.listeners:
        tls = listener.tls
        if not tls.certfile.exists() or not tls.keyfile.exists():
            pki = ensure_dev_pki(tls.certfile.parent, list(config.general.hosts))
            logging.getLogger("xmppd").info("development PKI in %s (CA: %s)", tls.certfile.parent, pki.ca_cert)
            return


def parse_account(text: str, config=None, *, what: str = "an account"):
    """A bare JID ``user@domain`` (on a served domain if ``config`` is given), else :class:`CliError`."""
    from .jid import JID, InvalidJID

    try:
        jid = JID.parse(text)
    except InvalidJID as exc:
        raise CliError(f"{text!r} is not a valid JID ({exc}): give {what} as user@domain", EXIT_USAGE) from None
    if jid.local is None or jid.resource is not None:
        raise CliError(f"{text!r} is not an account: give {what} as user@domain (no /resource)", EXIT_USAGE)
    if config is not None and jid.domain not in config.general.hosts:
        source = f" of {config.source}" if getattr(config, "source", None) else " (embedded default)"
        raise CliError(f"{jid.domain} is not served here: general.hosts{source} is "
                       f"{', '.join(config.general.hosts)}; use one of them or pass --config", EXIT_USAGE)
    return jid


# ------------------------------------------------------------------ secrets
def read_secret(path: str | None, what: str) -> str | None:
    """The first line of ``path`` (``-`` = stdin), without its line end; ``None`` without ``path``."""
    if path is None:
        return None
    if path == "-":
        line = sys.stdin.readline()
        if not line:
            raise CliError(f"no {what} on stdin (it is not a terminal and was empty): pipe it in "
                           "(`echo SECRET | xmppd ...`), use --password-file FILE, or run it in a terminal",
                           EXIT_USAGE)
    else:
        try:
            with open(path, encoding="utf-8") as fh:
                line = fh.readline()
        except OSError as exc:
            raise CliError(f"--password-file {path}: {exc.strerror or exc}: give a readable file with the {what} "
                           "on its first line, or '-' for stdin", EXIT_USAGE) from None
        except UnicodeDecodeError:
            raise CliError(f"--password-file {path} is not UTF-8 text: write the {what} as UTF-8", EXIT_USAGE) from None
    secret = line.rstrip("\r\n")
    if not secret:
        raise CliError(f"the {what} from {'stdin' if path == '-' else path} is empty: give a non-empty one",
                       EXIT_USAGE)
    return secret


# ------------------------------------------------------------------ CA
def ca_paths(d: Path) -> tuple[Path, Path]:
    return d / "ca.pem", d / "ca.key"


def load_ca(d: Path):
    """The CA in ``d`` (``ca.pem`` + ``ca.key``), or :class:`CliError` saying how to create one."""
    from .pki import load_issued

    cert, key = ca_paths(d)
    if not cert.exists() or not key.exists():
        missing = cert if not cert.exists() else key
        raise CliError(f"no CA in {d} ({missing.name} missing): run `xmppd certs init-ca --dir {d}` first, "
                       "or pass --dir with the directory holding ca.pem and ca.key")
    try:
        return load_issued(cert, key)
    except OSError as exc:
        raise CliError(f"cannot read the CA in {d}: {describe_os_error(exc)}") from None
    except (ValueError, TypeError) as exc:
        raise CliError(f"{cert} / {key} is not a usable CA certificate and key ({exc}): "
                       f"re-create it with `xmppd certs init-ca --dir {d} --force`") from None


# ------------------------------------------------------------------ argument types
def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not allowed: give a number of at least 1")
    return n


def port_number(text: str) -> int:
    """argparse type: a TCP port 1..65535."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n} is not a TCP port: give 1..65535")
    return n


#: longest validity accepted by --days (100 years; X.509 GeneralizedTime beyond 9999 breaks clients)
MAX_DAYS = 36500


def days(text: str) -> int:
    """argparse type for ``--days``/``--crl-days``: 1..MAX_DAYS."""
    n = positive_int(text)
    if n > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{n} days is more than {MAX_DAYS}: give fewer days")
    return n


# ------------------------------------------------------------------ files
def describe_os_error(exc: OSError) -> str:
    """``<path>: <cause>: <what to do>`` for an OSError from the file system."""
    where = exc.filename or ""
    cause = exc.strerror or str(exc)
    hint = {
        errno.ENOENT: "check the path (does the directory exist?)",
        errno.EACCES: "check its permissions, or run as the user owning it",
        errno.EPERM: "check its permissions, or run as the user owning it",
        errno.EROFS: "choose a writable location",
        errno.ENOSPC: "free some disk space",
        errno.EEXIST: "remove it or choose another name",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EISDIR: "give a file, not a directory",
    }.get(exc.errno, "check the path and its permissions")
    return f"{where}: {cause}: {hint}" if where else f"{cause}: {hint}"


def writable_dir(d: Path, what: str, *, create: bool = True) -> Path:
    """Check (creating it 0700 if ``create``) that ``d`` is a writable directory, before any work is done."""
    if create:
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create {what} {describe_os_error(exc)}") from None
    elif not d.exists():
        raise CliError(f"{what} {d} does not exist: create it first, or give another path", EXIT_USAGE)
    if not d.is_dir():
        raise CliError(f"{what} {d} is not a directory: give a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise CliError(f"{what} {d} is not writable: check its permissions, or choose another one")
    return d


# ------------------------------------------------------------------ stdout
class _GuardedStdout:
    """sys.stdout that survives its reader going away (``xmppd certs issue | head -1``).

    On the first broken pipe the stream is pointed at /dev/null and the command carries on: what it was doing
    (writing a .p12, recording it in the registry) is finished, and nothing further is printed there.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self.broken = False

    def _divert(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._divert()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._divert()
            try:
                self._stream.flush()  # the buffered rest goes to /dev/null
            except OSError:
                pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_stdout() -> _GuardedStdout:
    """Install (once) the broken-pipe guard on sys.stdout and return it."""
    if not isinstance(sys.stdout, _GuardedStdout):
        sys.stdout = _GuardedStdout(sys.stdout)
    return sys.stdout


# ------------------------------------------------------------------ storage
def run_storage(config, action) -> int:
    """Open the configured storage, create missing tables, return ``await action(engine)``.

    A database that cannot be opened (a bad ``storage.url``, a missing or read-only directory, PostgreSQL down)
    becomes a :class:`CliError` naming the key, not a traceback.
    """
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from .storage.engine import create_engine, create_schema

    async def go() -> int:
        engine = create_engine(config.storage.url, pool_size=min(config.storage.pool_size, 2))
        try:
            await create_schema(engine)
            return await action(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except (SQLAlchemyError, OSError) as exc:
        raise storage_error(config, exc) from None


def storage_error(config, exc: Exception) -> CliError:
    """The one-line error for a database that cannot be opened or used."""
    from .config.schema import redact_url

    cause = getattr(exc, "orig", None) or exc
    text = describe_os_error(cause) if isinstance(cause, OSError) else (str(cause).splitlines() or ["?"])[0]
    return CliError(f"cannot use the database storage.url = {redact_url(config.storage.url)}: {text}: "
                    "check storage.url (and that its directory is writable or the server is reachable)")


def with_registry(config, action) -> int:
    """``await action(CertRegistry)`` on the configured storage (see :func:`run_storage`)."""
    from .storage.certs import CertRegistry

    async def go(engine) -> int:
        return await action(CertRegistry(engine))

    return run_storage(config, go)
