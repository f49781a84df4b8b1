"""Build a server from a Config: storage → auth → modules → listeners; graceful stop.

No import-time globals: several servers can run in one process (the tests do).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from typing import Any

from auth.registry import AuthChain, build_methods

from .audit import AuditLog
from .config import Config
from .hooks import Hooks
from .modules import BUILTIN, Module
from .net.listener import C2SListener
from .router import Router
from .sessions import SessionRegistry
from .storage.accounts import Accounts
from .storage.engine import create_engine, create_schema

__all__ = ["Server"]

log = logging.getLogger("xmppd.server")


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
                              retention_days=a.retention_days)
        self.modules: list[Module] = [cls(self) for cls in BUILTIN]
        for m in self.modules:
            self.hooks.features.update(m.features)
            m.setup()
        self.listeners = [C2SListener(self, lc, i) for i, lc in enumerate(config.listeners)]
        self._bg: set[asyncio.Task] = set()
        self._started = False
        #: callables run after reload() (e.g. re-check live sessions against new CRLs)
        self.after_reload: list = []

    async def start(self) -> None:
        await create_schema(self.db_engine)
        await self.auth_chain.start()
        try:
            for listener in self.listeners:
                await listener.start()
        except BaseException:
            await self.stop()
            raise
        self._started = True
        log.info("xmppd serving %s", ", ".join(self.config.general.hosts))

    async def stop(self) -> None:
        for listener in self.listeners:
            await listener.stop()
        for m in self.modules:
            await m.stop()
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)
        await self.auth_chain.stop()
        await self.db_engine.dispose()
        self.audit.close()
        self._started = False

    # ------------------------------------------------------------ helpers
    def spawn(self, coro: Any) -> asyncio.Task:
        """Fire-and-forget work that must finish before stop() returns."""
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg_done)
        return task

    def _bg_done(self, task: asyncio.Task) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def note_login(self, user: str, domain: str, method: str) -> None:
        now = _dt.datetime.now(_dt.timezone.utc)
        self.spawn(self.accounts.touch_login(user, domain, method, now))

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
        for callback in list(self.after_reload):
            callback()
        log.info("reloaded TLS material")

    def listener_port(self, index: int = 0) -> int:
        port = self.listeners[index].port
        assert port is not None, "server not started"
        return port
