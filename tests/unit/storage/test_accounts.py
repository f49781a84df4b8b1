"""xmppd.storage.accounts on SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from xmppd.storage import AccountRow, Accounts, create_schema

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def accounts(db_engine):
    await create_schema(db_engine)
    return Accounts(db_engine)


async def test_touch_login_creates_the_account_on_first_login(accounts):
    assert not await accounts.exists("alice", "example.org")
    assert await accounts.get("alice", "example.org") is None
    await accounts.touch_login("alice", "example.org", "pki", T0)
    assert await accounts.exists("alice", "example.org")
    assert await accounts.get("alice", "example.org") == AccountRow(
        "alice", "example.org", created_at=T0, last_login=T0, last_method="pki")


async def test_touch_login_upsert_keeps_created_at_and_updates_last_login_and_method(accounts):
    await accounts.touch_login("alice", "example.org", "pki", T0)
    later = T0 + dt.timedelta(days=3)
    await accounts.touch_login("alice", "example.org", "sql", later)
    row = await accounts.get("alice", "example.org")
    assert row.created_at == T0 and row.last_login == later and row.last_method == "sql"
    assert await accounts.count() == 1


async def test_concurrent_first_logins_make_one_row(accounts):
    await asyncio.gather(*(accounts.touch_login("bob", "example.org", "pki", T0 + dt.timedelta(seconds=i))
                           for i in range(5)))
    assert await accounts.count("example.org") == 1


async def test_timestamps_come_back_aware_utc_whatever_the_input_zone(accounts):
    paris = dt.timezone(dt.timedelta(hours=2))
    await accounts.touch_login("alice", "example.org", "pki", T0.astimezone(paris))
    row = await accounts.get("alice", "example.org")
    assert row.created_at == T0 and row.created_at.utcoffset() == dt.timedelta(0)


async def test_touch_login_refuses_naive_datetimes_and_unstorable_names(accounts):
    with pytest.raises(ValueError, match="naive"):
        await accounts.touch_login("alice", "example.org", "pki", dt.datetime(2030, 1, 1))
    with pytest.raises(ValueError):
        await accounts.touch_login("a" * 1024, "example.org", "pki", T0)
    assert not await accounts.exists("a\x00", "example.org")


async def test_accounts_are_per_domain(accounts):
    await accounts.touch_login("alice", "example.org", "pki", T0)
    assert not await accounts.exists("alice", "other.example")
    await accounts.touch_login("alice", "other.example", "pki", T0)
    assert await accounts.count() == 2 and await accounts.count("example.org") == 1


async def test_remove_deletes_only_that_account(accounts):
    await accounts.touch_login("alice", "example.org", "pki", T0)
    await accounts.touch_login("bob", "example.org", "pki", T0)
    assert await accounts.remove("alice", "example.org") is True
    assert await accounts.remove("alice", "example.org") is False
    assert not await accounts.exists("alice", "example.org")
    assert await accounts.exists("bob", "example.org")


async def test_create_schema_is_idempotent(db_engine, accounts):
    await accounts.touch_login("alice", "example.org", "pki", T0)
    await create_schema(db_engine)
    assert await accounts.exists("alice", "example.org")


async def test_noted_logins_are_visible_at_once_and_written_in_one_batch_by_flush(accounts):
    accounts.note_login("alice", "example.org", "pki", T0)
    accounts.note_login("bob", "example.org", "sql", T0)
    later = T0 + dt.timedelta(seconds=5)
    accounts.note_login("alice", "example.org", "sql", later)  # the newest note wins
    assert await accounts.exists("alice", "example.org")  # before any write
    assert await accounts.flush() == 2
    assert await accounts.flush() == 0
    row = await accounts.get("alice", "example.org")
    assert row.created_at == later and row.last_login == later and row.last_method == "sql"
    accounts.note_login("alice", "example.org", "pki", later + dt.timedelta(seconds=1))
    await accounts.flush()
    row = await accounts.get("alice", "example.org")  # upsert keeps created_at
    assert row.created_at == later and row.last_method == "pki"
    assert await accounts.count("example.org") == 2


async def test_get_count_and_remove_see_logins_not_yet_flushed(accounts):
    accounts.note_login("carol", "example.org", "pki", T0)
    assert (await accounts.get("carol", "example.org")).last_login == T0
    accounts.note_login("dave", "example.org", "pki", T0)
    assert await accounts.count() == 2
    accounts.note_login("erin", "example.org", "pki", T0)
    assert await accounts.remove("erin", "example.org") is True
    assert not await accounts.exists("erin", "example.org")
    with pytest.raises(ValueError, match="naive"):
        accounts.note_login("alice", "example.org", "pki", dt.datetime(2030, 1, 1))
    accounts.note_login("a" * 1024, "example.org", "pki", T0)  # logged, not recorded
    assert not await accounts.exists("a" * 1024, "example.org")


async def test_the_flusher_writes_periodically_and_stop_writes_the_rest(accounts):
    accounts.start_flusher(0.05)
    accounts.note_login("frank", "example.org", "pki", T0)
    await asyncio.sleep(0.3)
    assert accounts._pending == {}
    accounts.note_login("grace", "example.org", "pki", T0)
    await accounts.stop_flusher()
    assert accounts._pending == {}
    assert await accounts.count() == 2
