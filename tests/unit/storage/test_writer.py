"""xmppd.storage.writer: group commit on a real database (SQLite and PostgreSQL), and kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, select, func

from xmppd.storage.engine import create_engine
from xmppd.storage.writer import GroupCommitWriter, WriterFull, WriterStopped

ROOT = Path(__file__).resolve().parents[3]

meta = MetaData()
rows_table = Table("writer_rows", meta, Column("seq", Integer, primary_key=True, autoincrement=True),
                   Column("owner", String(64), nullable=False), Column("data", LargeBinary, nullable=False))


class Store:
    """A store whose commit is one transaction for the whole batch (counted)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.transactions = 0
        self.batch_sizes: list[int] = []
        self.fail_next = 0

    async def commit(self, rows: list[tuple[str, bytes]]) -> list[int]:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database unavailable")
        async with self.engine.begin() as conn:
            await conn.execute(rows_table.insert(), [{"owner": o, "data": d} for o, d in rows])
        self.transactions += 1
        self.batch_sizes.append(len(rows))
        return [len(d) for _o, d in rows]

    async def count(self, owner: str | None = None) -> int:
        q = select(func.count()).select_from(rows_table)
        if owner is not None:
            q = q.where(rows_table.c.owner == owner)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(q))


@pytest.fixture
async def store(db_engine):
    async with db_engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    return Store(db_engine)


async def test_rows_submitted_together_are_committed_in_one_transaction(store):
    w = GroupCommitWriter(store.commit, name="t")
    futs = [w.submit(("alice", b"x" * i), key="alice") for i in range(1, 101)]
    assert w.pending("alice") == 100
    results = await asyncio.gather(*futs)
    assert results == list(range(1, 101))  # each row gets its own result
    assert store.transactions == 1 and await store.count() == 100
    assert w.pending("alice") == 0
    await w.stop(5)


async def test_a_batch_holds_at_most_max_rows(store):
    w = GroupCommitWriter(store.commit, name="t", max_rows=30)
    await asyncio.gather(*[w.submit(("a", b"m"), key=i % 7) for i in range(100)])
    assert max(store.batch_sizes) <= 30 and sum(store.batch_sizes) == 100
    assert store.transactions == 4
    await w.stop(5)


async def test_rows_arriving_within_the_window_share_a_commit(store):
    w = GroupCommitWriter(store.commit, name="t", window_s=0.05)
    first = w.submit(("a", b"1"))
    await asyncio.sleep(0.005)  # well inside the window
    second = w.submit(("b", b"2"))
    await asyncio.gather(first, second)
    assert store.batch_sizes == [2]
    await w.stop(5)


async def test_one_account_over_its_limit_is_refused_while_another_is_accepted(store):
    w = GroupCommitWriter(store.commit, name="t", max_pending_per_key=5, window_s=0.05)
    futs = [w.submit(("flood", b"x"), key="flood") for _ in range(5)]
    with pytest.raises(WriterFull, match="this account"):
        w.submit(("flood", b"x"), key="flood")
    other = w.submit(("quiet", b"y"), key="quiet")
    await asyncio.gather(*futs, other)
    assert await store.count("quiet") == 1 and await store.count("flood") == 5
    w.submit(("flood", b"x"), key="flood")  # room again once committed
    await w.stop(5)


async def test_the_global_limit_refuses_instead_of_dropping(store):
    w = GroupCommitWriter(store.commit, name="t", max_pending=3, window_s=0.05)
    futs = [w.submit(("a", b"x"), key=i) for i in range(3)]
    with pytest.raises(WriterFull):
        w.submit(("a", b"x"), key=99)
    await asyncio.gather(*futs)
    assert await store.count() == 3
    await w.stop(5)


async def test_a_failed_commit_is_retried_and_then_succeeds(store):
    store.fail_next = 2
    w = GroupCommitWriter(store.commit, name="t", retries=3, retry_s=0.01)
    assert await w.submit(("a", b"abc")) == 3
    assert await store.count() == 1 and w.rows_failed == 0
    await w.stop(5)


async def test_rows_fail_loudly_when_every_retry_fails(store):
    store.fail_next = 10
    w = GroupCommitWriter(store.commit, name="t", retries=2, retry_s=0.01)
    fut = w.submit(("a", b"abc"), key="a")
    with pytest.raises(RuntimeError, match="database unavailable"):
        await fut
    assert w.rows_failed == 1 and w.pending("a") == 0
    store.fail_next = 0
    assert await w.submit(("a", b"ok")) == 2  # the writer survives
    await w.stop(5)


async def test_soft_limit_and_drained_callback(store):
    w = GroupCommitWriter(store.commit, name="t", max_pending_per_key=10, soft_per_key=4, window_s=0.02)
    futs = [w.submit(("a", b"x"), key="a") for _ in range(4)]
    assert w.over_soft_limit("a") and not w.over_soft_limit("b")
    drained = asyncio.Event()
    w.when_drained("a", drained.set)
    assert not drained.is_set()
    await asyncio.gather(*futs)
    assert drained.is_set()
    fired = []
    w.when_drained("a", lambda: fired.append(1))  # nothing waiting: called at once
    assert fired == [1]
    await w.stop(5)


async def test_stop_commits_everything_queued_and_refuses_new_rows(store):
    w = GroupCommitWriter(store.commit, name="t", max_rows=10, window_s=0.01)
    futs = [w.submit(("a", b"x"), key="a") for _ in range(95)]
    report = await w.stop(30)
    assert report.committed == 95 and report.left == 0 and report.failed == 0
    assert all(f.done() and not f.exception() for f in futs)
    assert await store.count() == 95
    with pytest.raises(WriterStopped):
        w.submit(("a", b"late"))


async def test_stop_ceiling_fails_what_is_left_instead_of_hanging(store):
    gate = asyncio.Event()

    async def slow_commit(rows):
        await gate.wait()
        return await store.commit(rows)

    w = GroupCommitWriter(slow_commit, name="t", max_rows=1, window_s=0)
    futs = [w.submit(("a", b"x"), key="a") for _ in range(3)]
    await asyncio.sleep(0.01)
    report = await w.stop(0.05)
    assert report.left == 2  # the first row's commit is in flight, never cancelled
    assert isinstance(futs[2].exception(), WriterStopped)
    gate.set()
    await futs[0]
    assert await store.count() == 1


CHILD = textwrap.dedent('''
    import asyncio, sys
    sys.path.insert(0, sys.argv[2])
    from tests.unit.storage.test_writer import Store, meta
    from xmppd.storage.engine import create_engine
    from xmppd.storage.writer import GroupCommitWriter

    async def main():
        engine = create_engine("sqlite+aiosqlite:///" + sys.argv[1])
        async with engine.begin() as conn:
            await conn.run_sync(meta.create_all)
        store = Store(engine)
        w = GroupCommitWriter(store.commit, name="kill", max_rows=50)
        n = 0
        while True:  # until killed: submit, print what has been acknowledged as durable
            futs = [w.submit(("k", str(n + i).encode()), key=n % 3) for i in range(40)]
            n += 40
            await asyncio.gather(*futs)
            print(n, flush=True)

    asyncio.run(main())
''')


def test_every_acknowledged_row_survives_kill_9(tmp_path):
    db = tmp_path / "kill.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(ROOT)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    acked = 0
    try:
        for line in proc.stdout:
            acked = int(line)
            if acked >= 4000:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert acked >= 4000, proc.stderr.read()[-2000:]

    async def count() -> list[bytes]:
        engine = create_engine("sqlite+aiosqlite:///" + str(db))
        async with engine.connect() as conn:
            rows = (await conn.execute(select(rows_table.c.data))).scalars().all()
        await engine.dispose()
        return rows

    data = asyncio.run(count())
    present = {int(d) for d in data}
    assert set(range(acked)) <= present  # nothing acknowledged was lost
    assert len(data) == len(present)  # and nothing is there twice
