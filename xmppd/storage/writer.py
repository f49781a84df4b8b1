"""Group commit: one writer per store, one transaction for everything that arrived together.

A stanza the server acknowledges must be durable, and durability must cost a few
milliseconds of latency, not throughput.  So a store does not open a
transaction per row: callers :meth:`GroupCommitWriter.submit` a row and get a
future; the writer collects what arrives within ``window_s`` (or until
``max_rows`` are waiting), hands the whole batch to the store's ``commit``
coroutine — one transaction — and resolves every row's future with its result
when the commit has returned.  Only then may the caller count the stanza as
handled (XEP-0198 ``h``) — the shape of PostgreSQL's group commit and of
Kafka's ``acks=all``.

Bounds, never drops:

* at most ``max_pending_per_key`` rows of one key (an account) wait at once and
  at most ``max_pending`` in all; beyond, :meth:`submit` raises
  :class:`WriterFull` and the caller answers the sender with an error
  (``resource-constraint``): one user's flood cannot crowd out another's rows;
* ``soft_per_key`` rows of one key is the point where the caller should stop
  reading from the sessions that produce them (:meth:`over_soft_limit`,
  :meth:`when_drained` tells when to read again);
* a failed commit is retried ``retries`` times, ``retry_s`` apart; then every
  row of the batch fails (its future raises) — the caller reports the error to
  the sender instead of acknowledging silently.

Stopping is by event, never by cancelling a task mid-query (a cancelled
aiosqlite query leaves its connection to the garbage collector, whose close then
hangs): :meth:`stop` refuses new rows, commits what is queued, and reports.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Hashable, Sequence, TypeVar

__all__ = [
    "GroupCommitWriter",
    "WriterFull",
    "WriterStopped",
    "DrainReport",
    "GROUP_COMMIT_WINDOW_S",
    "GROUP_COMMIT_MAX_ROWS",
    "MAX_PENDING_PER_KEY",
    "MAX_PENDING",
    "COMMIT_RETRIES",
    "COMMIT_RETRY_S",
]

log = logging.getLogger("xmppd.storage.writer")

#: how long the writer waits for more rows after the first one of a batch
GROUP_COMMIT_WINDOW_S = 0.002
#: rows in one transaction at most (a full batch is committed at once, without waiting)
GROUP_COMMIT_MAX_ROWS = 500
#: rows of one key (account) waiting at once; beyond, submit() raises WriterFull
MAX_PENDING_PER_KEY = 2_000
#: rows waiting in all; beyond, submit() raises WriterFull
MAX_PENDING = 50_000
#: a failed commit is retried this many times, COMMIT_RETRY_S apart, before its rows fail
COMMIT_RETRIES = 3
COMMIT_RETRY_S = 0.5

Row = TypeVar("Row")


class WriterFull(Exception):
    """Too many rows are waiting (for this key, or in all): answer the sender with an error."""


class WriterStopped(Exception):
    """The writer is stopping or stopped: nothing new is accepted."""


@dataclass(frozen=True, slots=True)
class DrainReport:
    committed: int  # rows committed while stopping
    failed: int  # rows whose commit failed for good while stopping
    left: int  # rows still queued when the ceiling ran out (their futures fail)
    seconds: float


class GroupCommitWriter(Generic[Row]):
    """``commit(rows) -> results`` runs one transaction; ``results[i]`` resolves row i's future."""

    def __init__(self, commit: Callable[[list[Row]], Awaitable[Sequence[Any] | None]], *, name: str,
                 window_s: float = GROUP_COMMIT_WINDOW_S, max_rows: int = GROUP_COMMIT_MAX_ROWS,
                 max_pending_per_key: int = MAX_PENDING_PER_KEY, max_pending: int = MAX_PENDING,
                 soft_per_key: int | None = None, retries: int = COMMIT_RETRIES,
                 retry_s: float = COMMIT_RETRY_S) -> None:
        if max_rows < 1 or max_pending_per_key < 1 or max_pending < 1 or window_s < 0:
            raise ValueError("group commit limits must be positive")
        self._commit = commit
        self.name = name
        self.window_s = window_s
        self.max_rows = max_rows
        self.max_pending_per_key = max_pending_per_key
        self.max_pending = max_pending
        self.soft_per_key = soft_per_key if soft_per_key is not None else max(1, max_pending_per_key // 2)
        self.retries = retries
        self.retry_s = retry_s
        self._queue: collections.deque[tuple[Row, asyncio.Future, Hashable]] = collections.deque()
        self._per_key: dict[Hashable, int] = {}
        self._drained: dict[Hashable, list[Callable[[], None]]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        #: counters for metrics and the benchmark
        self.commits = 0
        self.rows_committed = 0
        self.rows_failed = 0

    # ------------------------------------------------------------ callers
    def submit(self, row: Row, *, key: Hashable = None) -> asyncio.Future:
        """Queue ``row``; the future resolves with its commit result (or raises)."""
        if self._stopping:
            raise WriterStopped(f"{self.name} writer is stopping")
        if len(self._queue) >= self.max_pending:
            raise WriterFull(f"{self.name}: {len(self._queue)} rows waiting (limit {self.max_pending})")
        n = self._per_key.get(key, 0)
        if key is not None and n >= self.max_pending_per_key:
            raise WriterFull(f"{self.name}: {n} rows of this account waiting "
                             f"(limit {self.max_pending_per_key})")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((row, fut, key))
        self._per_key[key] = n + 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wakeup.set()
        return fut

    def pending(self, key: Hashable = None) -> int:
        """Rows of ``key`` (or, with no key, in all) submitted and not yet resolved."""
        if key is None:
            return sum(self._per_key.values())
        return self._per_key.get(key, 0)

    def over_soft_limit(self, key: Hashable) -> bool:
        return self._per_key.get(key, 0) >= self.soft_per_key

    def when_drained(self, key: Hashable, callback: Callable[[], None]) -> None:
        """Call ``callback`` once ``key`` has fewer than half of ``soft_per_key`` rows waiting."""
        if self._per_key.get(key, 0) < max(1, self.soft_per_key // 2):
            callback()
        else:
            self._drained.setdefault(key, []).append(callback)

    # ------------------------------------------------------------ the writer task
    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(queue) < self.max_rows and self.window_s > 0 and not self._stopping:
                await asyncio.sleep(self.window_s)  # let the rest of the group arrive
            n = min(len(queue), self.max_rows)
            batch = [queue.popleft() for _ in range(n)]
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[tuple[Row, asyncio.Future, Hashable]]) -> None:
        rows = [row for row, _f, _k in batch]
        error: BaseException | None = None
        results: Sequence[Any] | None = None
        for attempt in range(self.retries + 1):
            try:
                results = await self._commit(rows)
                error = None
                break
            except Exception as exc:  # noqa: BLE001 - database busy/unreachable: retry, then fail the rows
                error = exc
                if attempt < self.retries:
                    log.warning("%s: commit of %d rows failed (attempt %d of %d), retrying in %.1f s: %s",
                                self.name, len(rows), attempt + 1, self.retries + 1, self.retry_s, exc)
                    await asyncio.sleep(self.retry_s)
        if error is not None:
            log.error("%s: commit of %d rows failed for good: %s", self.name, len(rows), error)
            self.rows_failed += len(rows)
        else:
            self.commits += 1
            self.rows_committed += len(rows)
        for i, (_row, fut, key) in enumerate(batch):
            if not fut.done():
                if error is not None:
                    fut.set_exception(error)
                    fut.exception()  # retrieved here: a caller that only counts does not warn
                else:
                    fut.set_result(results[i] if results is not None else None)
            self._release(key)

    def _release(self, key: Hashable) -> None:
        n = self._per_key.get(key, 0) - 1
        if n <= 0:
            self._per_key.pop(key, None)
            n = 0
        else:
            self._per_key[key] = n
        waiting = self._drained.get(key)
        if waiting and n < max(1, self.soft_per_key // 2):
            del self._drained[key]
            for cb in waiting:
                try:
                    cb()
                except Exception:  # noqa: BLE001 - a caller's bug must not stop the writer
                    log.exception("%s: drained callback failed", self.name)

    # ------------------------------------------------------------ stop
    async def stop(self, ceiling_s: float) -> DrainReport:
        """Refuse new rows, commit everything queued (within ``ceiling_s``), report."""
        started = time.monotonic()
        before_ok, before_failed = self.rows_committed, self.rows_failed
        self._stopping = True
        self._wakeup.set()
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=ceiling_s)
            if not done:
                # the ceiling ran out: the task finishes its current commit on its own
                # (never cancelled mid-query); what is still queued fails now
                left = list(self._queue)
                self._queue.clear()
                err = WriterStopped(f"{self.name}: not written before the stop ceiling of {ceiling_s} s")
                for _row, fut, key in left:
                    if not fut.done():
                        fut.set_exception(err)
                        fut.exception()
                    self._release(key)
                return DrainReport(self.rows_committed - before_ok, self.rows_failed - before_failed,
                                   len(left), time.monotonic() - started)
        return DrainReport(self.rows_committed - before_ok, self.rows_failed - before_failed, 0,
                           time.monotonic() - started)
