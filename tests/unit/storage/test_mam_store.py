"""xmppd.storage.mam on SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import datetime as dt

import pytest

from xmppd.storage import create_schema
from xmppd.storage.mam import MamStore, UnknownId

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
D = "example.org"


@pytest.fixture
async def mam(db_engine):
    await create_schema(db_engine)
    store = MamStore(db_engine)
    for i in range(5):  # alice: m0..m4, one minute apart; m1 and m3 with carol, others with bob
        peer = "carol@example.org" if i % 2 else "bob@example.org"
        await store.append("alice", D, f"id{i}", T0 + dt.timedelta(minutes=i), peer, "r" if i == 4 else None,
                           b"<message><body>m%d</body></message>" % i)
    await store.append("bob", D, "b0", T0, "alice@example.org", None, b"<message/>")
    return store


def bodies(page) -> list[str]:
    return [p.archive_id for p in page.items]


async def test_forward_paging_with_counts_and_first_index(mam):
    p1 = await mam.query("alice", D, max_items=2)
    assert bodies(p1) == ["id0", "id1"] and p1.count == 5 and p1.first_index == 0 and not p1.complete
    p2 = await mam.query("alice", D, max_items=2, rsm_after="id1")
    assert bodies(p2) == ["id2", "id3"] and p2.first_index == 2 and not p2.complete
    p3 = await mam.query("alice", D, max_items=2, rsm_after="id3")
    assert bodies(p3) == ["id4"] and p3.first_index == 4 and p3.complete and p3.count == 5


async def test_backward_paging_from_the_last_page_returns_pages_oldest_first(mam):
    p1 = await mam.query("alice", D, max_items=2, rsm_before="")
    assert bodies(p1) == ["id3", "id4"] and p1.first_index == 3 and not p1.complete
    p2 = await mam.query("alice", D, max_items=2, rsm_before="id3")
    assert bodies(p2) == ["id1", "id2"] and p2.first_index == 1
    p3 = await mam.query("alice", D, max_items=2, rsm_before="id1")
    assert bodies(p3) == ["id0"] and p3.complete


async def test_with_filter_bare_matches_every_resource_full_matches_one(mam):
    assert bodies(await mam.query("alice", D, max_items=10, with_bare="bob@example.org")) == ["id0", "id2", "id4"]
    page = await mam.query("alice", D, max_items=10, with_bare="bob@example.org", with_resource="r")
    assert bodies(page) == ["id4"] and page.count == 1


async def test_time_filters_are_inclusive(mam):
    page = await mam.query("alice", D, max_items=10, start=T0 + dt.timedelta(minutes=1),
                           end=T0 + dt.timedelta(minutes=3))
    assert bodies(page) == ["id1", "id2", "id3"] and page.count == 3 and page.complete


async def test_after_id_and_before_id_filters(mam):
    page = await mam.query("alice", D, max_items=10, after_id="id0", before_id="id3")
    assert bodies(page) == ["id1", "id2"]


async def test_unknown_or_other_accounts_ids_raise_unknown_id(mam):
    with pytest.raises(UnknownId):
        await mam.query("alice", D, max_items=2, rsm_after="nope")
    with pytest.raises(UnknownId):
        await mam.query("alice", D, max_items=2, rsm_before="b0")  # bob's id, not alice's


async def test_max_zero_returns_only_the_count(mam):
    page = await mam.query("alice", D, max_items=0)
    assert page.items == [] and page.count == 5 and not page.complete


async def test_bytes_come_back_identical(mam):
    page = await mam.query("alice", D, max_items=1)
    assert page.items[0].data == b"<message><body>m0</body></message>" and page.items[0].ts == T0


async def test_retention_purge_and_trim(mam):
    assert await mam.purge_before(T0 + dt.timedelta(minutes=2)) == 3  # id0, id1, bob's b0
    assert await mam.count("alice", D) == 3
    assert await mam.trim(2) == 1
    assert bodies(await mam.query("alice", D, max_items=10)) == ["id3", "id4"]


async def test_preferences_default(mam):
    assert await mam.get_default("alice", D) is None
    await mam.set_default("alice", D, "never")
    await mam.set_default("alice", D, "roster")
    assert await mam.get_default("alice", D) == "roster"
    await mam.set_default("bob", D, "never")
    assert await mam.accounts_with_default("never", limit=10) == [("bob", D)]
    with pytest.raises(ValueError):
        await mam.set_default("alice", D, "sometimes")


async def test_append_many_inserts_in_order_in_one_call_with_exact_bytes(db_engine):
    await create_schema(db_engine)
    store = MamStore(db_engine)
    rows = [("carol", D, f"c{i}", T0 + dt.timedelta(seconds=i // 3), "dave@example.org", "r" if i % 2 else None,
             b"<message>\x00\xff <b a='1'  c=\"2\"/>%d</message>" % i) for i in range(25)]
    await store.append_many(rows)
    await store.append_many([])
    page = await store.query("carol", D, max_items=100)
    assert bodies(page) == [f"c{i}" for i in range(25)] and page.count == 25
    assert [p.data for p in page.items] == [r[6] for r in rows]
    assert [p.ts for p in page.items] == [r[3] for r in rows]
    assert [p.with_resource for p in page.items] == [r[5] for r in rows]
    page = await store.query("carol", D, max_items=100, start=T0 + dt.timedelta(seconds=2))
    assert bodies(page) == [f"c{i}" for i in range(6, 25)]


async def test_max_per_user_is_enforced_at_write_by_dropping_the_oldest_rows(mam, db_engine):
    # alice holds id0..id4; a write with a limit of 3 keeps the newest 3 (a ring)
    row = ("alice", D, "id5", T0 + dt.timedelta(minutes=5), "bob@example.org", None, b"<message/>")
    assert await mam.append_many([row], max_per_user=3) == 3
    assert bodies(await mam.query("alice", D, max_items=10)) == ["id3", "id4", "id5"]
    # a batch with several rows of several accounts: each account is kept at the limit
    batch = [("alice", D, f"id{i}", T0 + dt.timedelta(minutes=i), "bob@example.org", None, b"<m/>")
             for i in range(6, 9)] + [("bob", D, "b1", T0, "alice@example.org", None, b"<m/>")]
    assert await mam.append_many(batch, max_per_user=3) == 3
    assert bodies(await mam.query("alice", D, max_items=10)) == ["id6", "id7", "id8"]
    assert bodies(await mam.query("bob", D, max_items=10)) == ["b0", "b1"]
    # a fresh store (a restarted server) counts what is there and keeps the ring exact
    fresh = MamStore(db_engine)
    await fresh.append("alice", D, "id9", T0 + dt.timedelta(minutes=9), "bob@example.org", None, b"<m/>",
                       max_per_user=3)
    assert bodies(await fresh.query("alice", D, max_items=10)) == ["id7", "id8", "id9"]
    # after a purge the counts are taken again: nothing more than needed is dropped
    assert await fresh.purge_before(T0 + dt.timedelta(minutes=8)) >= 1  # id7 (and bob's)
    await fresh.append("alice", D, "id10", T0 + dt.timedelta(minutes=10), "bob@example.org", None, b"<m/>",
                       max_per_user=3)
    assert bodies(await fresh.query("alice", D, max_items=10)) == ["id8", "id9", "id10"]
