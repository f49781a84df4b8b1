"""Build a server from a Config: storage → auth → modules → listeners; graceful stop.

No import-time globals: several servers can run in one process (the tests do).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
from typing import Any

from xmppd_auth.registry import AuthChain, build_methods

from .audit import AuditLog
from .config import Config
from .errors import StreamErrorCondition
from .hooks import Hooks
from .modules import Module, enabled_modules
from .net.listener import C2SListener
from .router import Router
from .sessions import SessionRegistry
from .jid import JID, InvalidJID
from .storage.accounts import AccountRemovals, Accounts
from .storage.engine import create_engine, create_schema
from .storage.certs import CertRegistry
from .storage.files import warn_if_open
from .pki.crl_upkeep import CRL_CHECK_INTERVAL_S, CrlKeeper, crl_paths

__all__ = ["Server"]

log = logging.getLogger("xmppd.server")

#: loop iterations given to transports' connection_lost callbacks during stop()
STOP_CALLBACK_ROUNDS = 5
#: how long stop() waits for background work before cancelling it
STOP_DRAIN_S = 10.0


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.hooks = Hooks()
        self.sessions = SessionRegistry()
        self.router = Router(frozenset(config.general.hosts), self.sessions, self.hooks)
        self.db_engine = create_engine(config.storage.url, pool_size=config.storage.pool_size,
                                       echo=config.storage.echo)
        self.accounts = Accounts(self.db_engine)
        auth = config.auth
        methods = build_methods(auth.methods, auth.method_options, {
            "db_engine": self.db_engine,
            "password_hashes": tuple(auth.password.hash),
            "scram_iterations": auth.password.scram_iterations,
        })
        self.auth_chain = AuthChain(methods)
        a = config.audit
        self.audit = AuditLog(a.file if a.enabled else None, max_bytes=a.max_bytes, keep=a.keep,
                              retention_days=a.retention_days, hosts=config.general.hosts)
        warn_if_open(config.general.data_dir)  # created 0700 by storage/audit when they need it
        #: the stream-management module, when loaded (it sets itself here in setup())
        self.sm = None
        self.modules: list[Module] = [cls(self, opts) for cls, opts in enabled_modules(config)]
        for m in self.modules:
            self.hooks.features.update(m.features)
            m.setup()
        #: re-signs the CRLs whose CA key this server holds, warns about the others (pki/crl_upkeep.py)
        self.crl_keeper = CrlKeeper(crl_paths(config))
        self.crl_keeper.create_missing()  # before the listeners load them
        self._crl_registry = CertRegistry(self.db_engine)  # its revoked serials go on a re-signed CRL
        self.listeners = [C2SListener(self, lc, i) for i, lc in enumerate(config.listeners)]
        self._bg: set[asyncio.Task] = set()
        self._closed = False
        self._started = False
        #: callables run after reload() (e.g. re-check live sessions against new CRLs)
        self.after_reload: list = [self.close_revoked_sessions]
        self._watcher: asyncio.Task | None = None
        self._crl_task: asyncio.Task | None = None
        self._account_watch = AccountRemovals(self.db_engine)

    async def start(self) -> None:
        await create_schema(self.db_engine)
        await self.keep_crls()
        await self.auth_chain.start()
        for m in self.modules:
            await m.start()
        try:
            for listener in self.listeners:
                await listener.start()
        except BaseException:
            await self.stop()
            raise
        self._started = True
        self.accounts.start_flusher()
        interval = self.config.general.reload_check_interval_s
        if interval > 0 and self.listeners:
            self._watcher = asyncio.create_task(self._watch_tls_files(interval))
        if self.listeners:
            self._crl_task = asyncio.create_task(self._upkeep_loop(interval or CRL_CHECK_INTERVAL_S))
        log.info("xmppd serving %s", ", ".join(self.config.general.hosts))

    async def stop(self) -> None:
        for task in (self._watcher, self._crl_task):
            if task is not None:
                task.cancel()
                try:
                    await task  # not mid-query when the engine is disposed
                except BaseException:  # noqa: BLE001 - cancelled, or failed (already logged)
                    pass
        self._watcher = self._crl_task = None
        for m in self.modules:
            m.before_stop()  # sessions are still open (e.g. MUC: status 332 to occupants)
        for listener in self.listeners:
            await listener.stop()
        # let the aborted transports' connection_lost callbacks run (they end sessions and
        # may spawn work: presence unavailable, offline, ...) before anything is torn down
        for _ in range(STOP_CALLBACK_ROUNDS):
            await asyncio.sleep(0)
        await self._drain_background()
        for m in self.modules:
            await m.stop()
        await self._drain_background()
        await self.accounts.stop_flusher()  # the last logins noted in memory
        await self.auth_chain.stop()
        await self._drain_background()
        # nothing may hold a database connection when the pool is disposed: a connection
        # checked out past this point is terminated later by the garbage collector, and
        # aiosqlite then waits forever on its already-stopped thread
        self._closed = True
        await self.db_engine.dispose()
        self.audit.close()
        self._started = False

    async def _drain_background(self) -> None:
        """Wait (bounded) for spawned work; cancel what is still running after STOP_DRAIN_S."""
        while self._bg:
            pending = set(self._bg)
            _done, late = await asyncio.wait(pending, timeout=STOP_DRAIN_S)
            if late:
                log.warning("stop: cancelling %d background task(s) still running after %ss",
                            len(late), STOP_DRAIN_S)
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=STOP_DRAIN_S)
                self._bg.difference_update(late)
                return

    # ------------------------------------------------------------ helpers
    def spawn(self, coro: Any) -> "asyncio.Future":
        """Fire-and-forget work that must finish before stop() returns.

        After stop() disposed the database nothing new is started: the coroutine is
        closed and a cancelled future returned."""
        if self._closed:
            coro.close()
            fut = asyncio.get_running_loop().create_future()
            fut.cancel()
            return fut
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg_done)
        return task

    def _bg_done(self, task: asyncio.Task) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def note_login(self, user: str, domain: str, method: str) -> None:
        # noted in memory, written in batches (storage.accounts.LOGIN_FLUSH_INTERVAL_S)
        self.accounts.note_login(user, domain, method, _dt.datetime.now(_dt.timezone.utc))

    def close_sessions(self, predicate, condition, text: str) -> int:
        """End every bound session for which ``predicate(session)`` is true."""
        doomed = [s for s in self.sessions if predicate(s)]
        for session in doomed:
            session.close_stream(condition, text)
        return len(doomed)

    def reload(self) -> None:
        """SIGHUP: re-read certificates, CA bundles and CRLs for new handshakes.

        Live sessions are re-checked by the ``after_reload`` callbacks
        (revocation); a listener whose files are broken keeps its old context.
        """
        for listener in self.listeners:
            try:
                listener.tls.reload()
            except Exception as exc:  # noqa: BLE001 - keep serving with the old context
                log.error("reload of %s failed, keeping the previous TLS context: %s", listener.name, exc)
                self.audit.write({"event": "tls-reload", "listener": listener.name,
                                  "result": "failure", "reason": str(exc)})
            else:
                self.audit.write({"event": "tls-reload", "listener": listener.name,
                                  "result": "success"})
        for callback in list(self.after_reload):
            callback()
        log.info("reloaded TLS material")

    def close_revoked_sessions(self) -> int:
        """After a reload: end every connection whose certificate login (or
        pending EXTERNAL login) uses a certificate its listener's current CRLs
        revoke, with ``<not-authorized/>`` and an audit record."""
        closed = 0
        for listener in self.listeners:
            for conn in list(listener.connections):
                facts = conn.login_cert
                check = conn.cert_check
                if facts is None and check is not None and check.ok and not conn.machine.authenticated:
                    facts = check.facts  # EXTERNAL was offered and may still be used
                if facts is None or conn._closing:
                    continue
                reason = listener.tls.revocation_reason(facts)
                if reason is None:
                    continue
                self.audit.write({
                    "event": "session-revoked", "listener": listener.name, "peer": conn.peer,
                    "jid": str(conn.jid) if conn.jid is not None else None, "reason": reason,
                    "cert_fingerprint": facts.fingerprint_sha256, "cert_serial": facts.serial_hex,
                    "cert_issuer": facts.issuer})
                log.warning("%s: closing %s: certificate serial %s was revoked", listener.name,
                            conn.jid or conn.peer, facts.serial_hex)
                conn.close_stream(StreamErrorCondition.NOT_AUTHORIZED,
                                  f"revoked: your certificate (serial {facts.serial_hex}) was revoked")
                closed += 1
        return closed

    def _tls_file_state(self) -> dict[str, tuple[int, int, int] | None]:
        state: dict[str, tuple[int, int, int] | None] = {}
        for listener in self.listeners:
            for path in listener.tls.watched_files():
                try:
                    st = os.stat(path)
                    state[str(path)] = (st.st_mtime_ns, st.st_size, st.st_ino)
                except OSError:
                    state[str(path)] = None
        return state

    async def _watch_tls_files(self, interval: float) -> None:
        """Reload when a certificate, key, CA bundle or CRL file changes."""
        seen = self._tls_file_state()
        while True:
            await asyncio.sleep(interval)
            try:
                now = self._tls_file_state()
                if now != seen:
                    changed = sorted(p for p in now.keys() | seen.keys() if now.get(p) != seen.get(p))
                    log.info("TLS files changed (%s), reloading", ", ".join(changed))
                    seen = now
                    self.reload()
            except Exception:  # noqa: BLE001 - the watcher must survive a bad reload
                log.exception("TLS file watcher failed")

    # ------------------------------------------------------------ CRL upkeep
    async def keep_crls(self) -> list:
        """Re-sign the due CRLs this server holds the CA key of (merging the certificate
        registry's revoked serials), warn about the others; reload TLS if one was re-signed."""
        done = await self.crl_keeper.upkeep(self._crl_registry.revoked_serials)
        if done and self._started:
            self.reload()
        elif done:
            for listener in self.listeners:  # not serving yet: just load the new files
                listener.tls.reload()
        return done

    async def _upkeep_loop(self, interval: float) -> None:
        """Every ``interval``: accounts removed by another process, CRLs due for re-signing."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.close_removed_accounts()
                if self.crl_keeper.paths:
                    await self.keep_crls()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must survive a bad file
                log.exception("periodic upkeep failed")

    def close_removed_accounts(self) -> int:
        """End the live sessions of accounts `xmppd user remove` deleted (storage/accounts.py)."""
        closed = 0
        for user, domain in self._account_watch.poll():
            try:
                bare = JID(user, domain)
            except InvalidJID:
                continue
            n = self.close_sessions(lambda s, b=bare: s.jid is not None and s.jid.bare == b,
                                    StreamErrorCondition.NOT_AUTHORIZED,
                                    f"account-removed: the account {bare} was removed")
            self.spawn(self.accounts.remove(user, domain))  # no longer "seen": no offline storage for it
            if n:
                log.warning("closed %d session(s) of %s: the account was removed", n, bare)
                self.audit.write({"event": "account-removed", "jid": str(bare), "reason": "account-removed",
                                  "sessions_closed": n})
            closed += n
        return closed

    def listener_port(self, index: int = 0) -> int:
        port = self.listeners[index].port
        assert port is not None, "server not started"
        return port
