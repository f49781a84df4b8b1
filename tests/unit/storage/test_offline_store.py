"""xmppd.storage.offline on SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import datetime as dt

import pytest

from xmppd.storage import create_schema
from xmppd.storage.offline import MAX_FETCH, OfflineStore

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
OMEMO = (b"<message to='bob@example.org' from='alice@example.org/a' type='chat'>"
         b"<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'>"
         b"<x xmlns='urn:example:unknown'  b='2' a='1'> kept &amp; \xc3\xa9 </x></header></encrypted></message>")


@pytest.fixture
async def store(db_engine):
    await create_schema(db_engine)
    return OfflineStore(db_engine)


async def test_stored_bytes_come_back_byte_identical_oldest_first(store):
    assert await store.store("bob", "example.org", "alice@example.org/a", OMEMO, T0, max_per_user=10)
    assert await store.store("bob", "example.org", "alice@example.org/a", b"<message/>",
                             T0 + dt.timedelta(seconds=1), max_per_user=10)
    rows = await store.fetch("bob", "example.org")
    assert [r.data for r in rows] == [OMEMO, b"<message/>"]
    assert rows[0].stored_at == T0 and rows[0].sender == "alice@example.org/a"
    assert rows[0].seq < rows[1].seq


async def test_store_refuses_beyond_max_per_user_and_stores_nothing(store):
    for i in range(3):
        assert await store.store("bob", "example.org", "a@example.org", b"<m%d/>" % i, T0, max_per_user=3)
    assert not await store.store("bob", "example.org", "a@example.org", b"<m3/>", T0, max_per_user=3)
    assert await store.count("bob", "example.org") == 3
    # another account is not affected by bob's full store
    assert await store.store("carol", "example.org", "a@example.org", b"<m/>", T0, max_per_user=3)


async def test_delete_removes_only_the_given_rows_of_that_account(store):
    for i in range(3):
        await store.store("bob", "example.org", "a@example.org", b"<m%d/>" % i, T0, max_per_user=10)
    await store.store("bob", "other.example", "a@example.org", b"<o/>", T0, max_per_user=10)
    rows = await store.fetch("bob", "example.org")
    assert await store.delete("bob", "example.org", [rows[0].seq, rows[2].seq]) == 2
    assert [r.data for r in await store.fetch("bob", "example.org")] == [b"<m1/>"]
    # a seq of bob@other.example is not deleted through bob@example.org
    other = await store.fetch("bob", "other.example")
    assert await store.delete("bob", "example.org", [other[0].seq]) == 0
    assert await store.count("bob", "other.example") == 1


async def test_fetch_is_bounded_by_max_fetch(store):
    assert (await store.fetch("nobody", "example.org", MAX_FETCH * 10)) == []
    for i in range(5):
        await store.store("bob", "example.org", "a@example.org", b"<m/>", T0, max_per_user=10)
    assert len(await store.fetch("bob", "example.org", 2)) == 2


async def test_remove_user_empties_the_account(store):
    await store.store("bob", "example.org", "a@example.org", b"<m/>", T0, max_per_user=10)
    assert await store.remove_user("bob", "example.org") == 1
    assert await store.count("bob", "example.org") == 0


async def test_store_refuses_beyond_max_bytes_and_says_why(store):
    from xmppd.storage.offline import Stored

    assert await store.store("bob", "example.org", "a@example.org/x", b"x" * 600, T0,
                             max_per_user=10, max_bytes=1000) is Stored.OK
    assert await store.store("bob", "example.org", "c@example.org/y", b"y" * 401, T0,
                             max_per_user=10, max_bytes=1000) is Stored.BYTES
    assert await store.store("bob", "example.org", "c@example.org/y", b"y" * 400, T0,
                             max_per_user=10, max_bytes=1000) is Stored.OK
    assert await store.count("bob", "example.org") == 2


async def test_one_sender_cannot_take_more_than_its_share_of_an_account_but_others_can(store):
    from xmppd.storage.offline import Stored

    limits = dict(max_per_user=4, max_bytes=10_000, sender_share=0.5)
    for resource in ("r1", "r2"):  # the share is per bare JID, whatever the resource
        assert await store.store("bob", "example.org", f"spam@example.org/{resource}", b"<m/>", T0, **limits)
    assert await store.store("bob", "example.org", "spam@example.org/r3", b"<m/>", T0,
                             **limits) is Stored.SENDER_SHARE
    assert await store.store("bob", "example.org", "friend@example.org/a", b"<m/>", T0, **limits)
    # the byte share too: half of 10,000 bytes for one sender
    assert await store.store("carol", "example.org", "big@example.org/a", b"z" * 5001, T0,
                             **limits) is Stored.SENDER_SHARE
    assert await store.count("bob", "example.org") == 3


async def test_quota_usage_survives_a_new_store_object_and_follows_deliveries(store, db_engine):
    limits = dict(max_per_user=2)
    assert await store.store("bob", "example.org", "a@example.org", b"<m1/>", T0, **limits)
    assert await store.store("bob", "example.org", "a@example.org", b"<m2/>", T0, **limits)
    # a restarted server (fresh object, no cached usage) counts what the database holds
    fresh = OfflineStore(db_engine)
    assert not await fresh.store("bob", "example.org", "a@example.org", b"<m3/>", T0, **limits)
    # delivering one frees one place
    rows = await fresh.fetch("bob", "example.org")
    assert await fresh.delete("bob", "example.org", [rows[0].seq]) == 1
    assert await fresh.store("bob", "example.org", "a@example.org", b"<m3/>", T0, **limits)
    assert not await fresh.store("bob", "example.org", "a@example.org", b"<m4/>", T0, **limits)
