"""Write-behind for bookkeeping that must not cost a query on the hot path.

Callers note rows in memory and :class:`PeriodicFlusher` writes them in one
transaction every ``interval`` seconds (or at once when a caller's batch is
full), and once more when stopped.  It is stopped by an event, never
cancelled: a write cancelled mid-query leaves its connection to the garbage
collector, and aiosqlite's close then waits forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

__all__ = ["PeriodicFlusher"]

log = logging.getLogger("xmppd.storage")


class PeriodicFlusher:
    def __init__(self, flush: Callable[[], Awaitable[int]], *, interval: float, what: str,
                 pending: Callable[[], int]) -> None:
        self._flush = flush
        self.interval = interval
        self._what = what  # for the log: "last-login records"
        self._pending = pending
        self._loop_task: asyncio.Task | None = None
        self._early: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def flush_logged(self) -> None:
        """One flush; a failure is logged and the rows stay noted for the next one."""
        try:
            await self._flush()
        except Exception:  # noqa: BLE001 - retried at the next interval
            log.warning("writing %d %s failed; retrying later", self._pending(), self._what, exc_info=True)

    def kick(self) -> None:
        """A batch is full: flush now unless a flush is already running."""
        if self._early is None or self._early.done():
            self._early = asyncio.get_running_loop().create_task(self.flush_logged())

    def start(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._stop = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                await self.flush_logged()

    async def stop(self) -> None:
        """Stop the periodic flush, let a running one finish, write what is left."""
        self._stop.set()
        for task in (self._loop_task, self._early):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        self._loop_task = self._early = None
        await self.flush_logged()
