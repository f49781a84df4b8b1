"""A throw-away xmppd for other projects' CI and tests.

Everything lives in a fresh temporary directory that is deleted on stop: a new
CA and server certificate, a SQLite database, the audit log, and N test
accounts ``user1..N@domain``, each with a password *and* a client certificate
(PEM pair plus a ``.p12`` with its own passphrase).  Listeners bind 127.0.0.1
on free ports (port 0): one STARTTLS, one direct TLS (XEP-0368).  Client
certificates are requested but optional, so the same ports take certificate
(SASL EXTERNAL) and password (SCRAM) logins.

Three ways in::

    # async code
    async with EphemeralServer(accounts=3) as eph:
        eph.info            # the JSON-able description (see ``info``)
        eph.accounts[0].jid, eph.port_starttls, eph.ca_path

    # sync code / another event loop (the pytest plugin uses this)
    with BackgroundEphemeralServer(accounts=3) as eph:
        ...

    # a CI job
    xmppd run --ephemeral --accounts 3 --json -     # one JSON line on stdout; SIGTERM stops and cleans up

The JSON document (``info``, version 1)::

    {"version": 1, "domain": "localhost", "host": "127.0.0.1",
     "ports": {"starttls": 40001, "tls": 40002}, "ca": "/tmp/.../certs/ca.pem",
     "accounts": [{"jid": "user1@localhost", "password": "...", "cert": ".../cert.pem",
                   "key": ".../key.pem", "p12": ".../user1.p12", "p12_password": "..."}],
     "data_dir": "/tmp/xmppd-ephemeral-...", "audit_log": ".../audit.jsonl", "pid": 1234}

Secrets in it are test credentials for a server that lives as long as the
process: fine to print in CI, never a production set-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EphemeralAccount", "EphemeralServer", "BackgroundEphemeralServer", "MAX_ACCOUNTS",
           "START_TIMEOUT_S", "STOP_TIMEOUT_S", "run_ephemeral"]

log = logging.getLogger("xmppd.ephemeral")

#: most test accounts one ephemeral server creates (each costs a key pair and a .p12)
MAX_ACCOUNTS = 1000
#: seconds a background server may take to start or to stop
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
#: validity of the throw-away certificates (days)
CERT_DAYS = 30
INFO_VERSION = 1


@dataclass(frozen=True)
class EphemeralAccount:
    """One test account: password login and certificate login both work."""

    jid: str
    password: str = field(repr=False)
    cert: str  # PEM client certificate (xmppAddr = jid, EKU clientAuth)
    key: str  # PEM private key, unencrypted, mode 0600
    p12: str  # PKCS#12 bundle of cert + key + CA
    p12_password: str = field(repr=False)

    @property
    def user(self) -> str:
        return self.jid.split("@", 1)[0]

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class EphemeralServer:
    """An in-process xmppd on free loopback ports with a fresh PKI and test accounts.

    ``accounts``: how many ``userN@domain`` accounts (0..:data:`MAX_ACCOUNTS`).
    ``config``: extra TOML-shaped settings merged over the generated ones
    (e.g. ``{"modules": {"e2ee_policy": {"default": "require"}}}``).
    ``base_dir``: where the temporary directory is created (default: the
    system temp dir); ``keep=True`` leaves it behind on stop (debugging).
    """

    def __init__(self, *, accounts: int = 2, domain: str = "localhost", host: str = "127.0.0.1",
                 config: dict[str, Any] | None = None, base_dir: str | os.PathLike | None = None,
                 keep: bool = False) -> None:
        if not 0 <= accounts <= MAX_ACCOUNTS:
            raise ValueError(f"accounts must be 0..{MAX_ACCOUNTS}")
        from .jid import JID, InvalidJID

        try:
            jid = JID.parse(domain)
        except InvalidJID as exc:
            raise ValueError(f"{domain!r} is not a domain: {exc}") from None
        if jid.local is not None or jid.resource is not None:
            raise ValueError(f"{domain!r} is not a domain")
        self.domain = jid.domain
        self.host = host
        self.n_accounts = accounts
        self.extra_config = config or {}
        self.base_dir = base_dir
        self.keep = keep
        self.server = None
        self.data_dir: Path | None = None
        self.accounts: list[EphemeralAccount] = []
        self._ca = None

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> "EphemeralServer":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.server is not None:
            raise RuntimeError("already started")
        self.data_dir = Path(tempfile.mkdtemp(prefix="xmppd-ephemeral-", dir=self.base_dir))
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        from .config import parse_config
        from .pki import create_ca, issue_server_cert, write_cert, write_private_key
        from .server import Server

        d = self.data_dir
        certs = d / "certs"
        certs.mkdir(mode=0o700)
        self._ca = await asyncio.to_thread(create_ca, f"xmppd ephemeral CA ({self.domain})", days=CERT_DAYS)
        write_private_key(certs / "ca.key", self._ca.key)
        write_cert(certs / "ca.pem", self._ca.cert)
        server_cert = await asyncio.to_thread(issue_server_cert, self._ca, [self.domain], days=CERT_DAYS)
        write_private_key(certs / "server.key", server_cert.key)
        write_cert(certs / "server.pem", server_cert.cert, self._ca.cert)

        tls = {"certfile": str(certs / "server.pem"), "keyfile": str(certs / "server.key"),
               "cacertfile": str(certs / "ca.pem"), "verify_mode": "peer", "disconnect_on_failure": False,
               # created empty at start (the server holds ca.key next to it): revoking bites on SIGHUP
               "crl_files": [str(certs / "crl.pem")]}
        data: dict[str, Any] = {
            "general": {"hosts": [self.domain], "data_dir": str(d / "var"), "reload_check_interval_s": 0},
            "listen": {"c2s": [
                {"port": 0, "ip_address": self.host, "tls": dict(tls, mode="starttls_required")},
                {"port": 0, "ip_address": self.host, "tls": dict(tls, mode="tls")},
            ]},
            "auth": {"methods": ["pki", "sql"]},
            "storage": {"url": f"sqlite+aiosqlite:///{d / 'xmppd.sqlite'}"},
            "audit": {"file": str(d / "audit.jsonl")},
        }
        data = _merge(data, self.extra_config)
        self.server = Server(parse_config(data))
        await self.server.start()
        for i in range(1, self.n_accounts + 1):
            await self.add_account(f"user{i}")
        log.info("ephemeral xmppd for %s on %s:%d (STARTTLS) and %s:%d (TLS), %d account(s), in %s",
                 self.domain, self.host, self.port_starttls, self.host, self.port_tls,
                 len(self.accounts), d)

    async def stop(self) -> None:
        server, self.server = self.server, None
        try:
            if server is not None:
                await server.stop()
        finally:
            if self.data_dir is not None and not self.keep:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    # ------------------------------------------------------------ accounts
    async def add_account(self, user: str, password: str | None = None) -> EphemeralAccount:
        """Create ``user@domain`` with a password and a client certificate (+ .p12)."""
        from .pki import export_p12, issue_client_cert, write_cert, write_private_key
        from .sasl import prepare_password

        if self.server is None or self._ca is None:
            raise RuntimeError("not started")
        if len(self.accounts) >= MAX_ACCOUNTS:
            raise RuntimeError(f"at most {MAX_ACCOUNTS} accounts")
        jid = f"{user}@{self.domain}"
        password = prepare_password(password if password is not None else secrets.token_urlsafe(18))
        if not await self.server.auth_chain.register(user, self.domain, password):
            raise ValueError(f"{jid} already exists")
        out = self.data_dir / "accounts" / user
        out.mkdir(parents=True, mode=0o700)
        issued = await asyncio.to_thread(issue_client_cert, self._ca, xmpp_addrs=[jid], common_name=user,
                                         days=CERT_DAYS)
        write_private_key(out / "key.pem", issued.key)
        write_cert(out / "cert.pem", issued.cert)
        p12_password = secrets.token_urlsafe(12)
        await asyncio.to_thread(export_p12, out / f"{user}.p12", issued, ca_cert=self._ca.cert,
                                friendly_name=jid, password=p12_password.encode())
        account = EphemeralAccount(jid=jid, password=password, cert=str(out / "cert.pem"),
                                   key=str(out / "key.pem"), p12=str(out / f"{user}.p12"),
                                   p12_password=p12_password)
        self.accounts.append(account)
        return account

    # ------------------------------------------------------------ what a client needs
    def _port(self, index: int) -> int:
        if self.server is None:
            raise RuntimeError("not started")
        return self.server.listener_port(index)

    @property
    def port_starttls(self) -> int:
        return self._port(0)

    @property
    def port_tls(self) -> int:
        return self._port(1)

    @property
    def ca_path(self) -> Path:
        if self.data_dir is None:
            raise RuntimeError("not started")
        return self.data_dir / "certs" / "ca.pem"

    @property
    def audit_log(self) -> Path:
        return self.data_dir / "audit.jsonl"

    @property
    def info(self) -> dict[str, Any]:
        return {
            "version": INFO_VERSION,
            "domain": self.domain,
            "host": self.host,
            "ports": {"starttls": self.port_starttls, "tls": self.port_tls},
            "ca": str(self.ca_path),
            "accounts": [a.as_dict() for a in self.accounts],
            "data_dir": str(self.data_dir),
            "audit_log": str(self.audit_log),
            "pid": os.getpid(),
        }


class BackgroundEphemeralServer:
    """An :class:`EphemeralServer` on its own event loop in a daemon thread.

    For synchronous code and for tests whose event loop must not host the
    server (any test, any loop, any scope).  Same attributes as
    :class:`EphemeralServer`; :meth:`add_account` runs on the server's loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._eph = EphemeralServer(**kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> "BackgroundEphemeralServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:  # domain, accounts, ports, ca_path, info, server...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._eph, name)

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        self._thread = threading.Thread(target=self._run, name="xmppd-ephemeral", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"ephemeral xmppd did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT_S)
            raise RuntimeError(f"ephemeral xmppd failed to start: {self._error}") from self._error

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            await self._eph.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self._eph.stop()

    def add_account(self, user: str, password: str | None = None,
                    timeout: float = START_TIMEOUT_S) -> EphemeralAccount:
        fut = asyncio.run_coroutine_threadsafe(self._eph.add_account(user, password), self._loop)
        return fut.result(timeout)

    def call(self, coro_fn, *args: Any, timeout: float = START_TIMEOUT_S) -> Any:
        """Run ``await coro_fn(*args)`` on the server's loop (e.g. to inspect ``server``)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop).result(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopped is not None and thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"ephemeral xmppd did not stop within {timeout} s")


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------ xmppd run --ephemeral
def _write_json(target: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, separators=(",", ":"))
    if target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    path = Path(target)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds test passwords
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)


async def _serve_ephemeral(accounts: int, domain: str, json_target: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with EphemeralServer(accounts=accounts, domain=domain) as eph:
        loop.add_signal_handler(signal.SIGHUP, eph.server.reload)
        _write_json(json_target, eph.info)
        await stop.wait()
        log.info("stopping ephemeral xmppd, removing %s", eph.data_dir)
    if json_target != "-":
        Path(json_target).unlink(missing_ok=True)  # its paths and passwords are gone with the server
    return 0


def run_ephemeral(*, accounts: int, domain: str, json_target: str, log_level: str | None) -> int:
    """``xmppd run --ephemeral``: logs on stderr, the JSON document on stdout (or a file)."""
    from .logsetup import configure
    configure(log_level or "warning")  # third-party loggers stay at WARNING, as for `run`
    try:
        EphemeralServer(accounts=accounts, domain=domain)  # argument checks only; nothing starts
    except ValueError as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 2  # usage error (xmppd.cli_common.EXIT_USAGE)
    return asyncio.run(_serve_ephemeral(accounts, domain, json_target))
