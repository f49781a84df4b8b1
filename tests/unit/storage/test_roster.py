"""xmppd.storage.roster on SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from xmppd.storage import create_schema
from xmppd.storage.roster import (
    BOTH,
    FROM,
    MAX_PENDING_STANZA_CHARS,
    NONE,
    TO,
    BlocklistFull,
    BlocklistStore,
    RosterFull,
    RosterItem,
    RosterStore,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def roster(db_engine):
    await create_schema(db_engine)
    return RosterStore(db_engine, max_items=3, max_pending=2)


@pytest.fixture
async def blocklist(db_engine):
    await create_schema(db_engine)
    return BlocklistStore(db_engine, max_items=3)


async def test_an_empty_roster_has_version_zero_and_no_items(roster):
    assert await roster.version("alice", "example.org") == 0
    assert await roster.items("alice", "example.org") == (0, [])
    assert await roster.item("alice", "example.org", "bob@example.org") is None


async def test_every_change_bumps_the_version_and_items_round_trip(roster):
    item = RosterItem("bob@example.org", "Bob", NONE, ask=True, groups=("Friends", "Wörk"))
    assert await roster.put("alice", "example.org", item) == 1
    assert await roster.item("alice", "example.org", "bob@example.org") == item
    v = await roster.put("alice", "example.org", item.evolve(subscription=TO, ask=False))
    assert v == 2
    ver, items = await roster.items("alice", "example.org")
    assert ver == 2 and items == [item.evolve(subscription=TO, ask=False)]
    assert await roster.remove("alice", "example.org", "bob@example.org") == 3
    assert await roster.remove("alice", "example.org", "bob@example.org") is None
    assert await roster.version("alice", "example.org") == 3


async def test_rosters_of_accounts_and_domains_are_separate(roster):
    await roster.put("alice", "example.org", RosterItem("bob@example.org"))
    assert await roster.items("alice", "example.net") == (0, [])
    assert await roster.items("carol", "example.org") == (0, [])


async def test_contacts_filters_by_subscription(roster):
    for jid, sub in (("a@x", TO), ("b@x", FROM), ("c@x", BOTH)):
        await roster.put("alice", "example.org", RosterItem(jid, subscription=sub))
    assert await roster.contacts("alice", "example.org", (FROM, BOTH)) == ["b@x", "c@x"]
    assert await roster.contacts("alice", "example.org", (TO, BOTH)) == ["a@x", "c@x"]


async def test_max_items_refuses_a_new_item_but_allows_updates(roster):
    for jid in ("a@x", "b@x", "c@x"):
        await roster.put("alice", "example.org", RosterItem(jid))
    with pytest.raises(RosterFull):
        await roster.put("alice", "example.org", RosterItem("d@x"))
    await roster.put("alice", "example.org", RosterItem("a@x", name="A"))
    assert (await roster.item("alice", "example.org", "a@x")).name == "A"


async def test_concurrent_first_changes_give_distinct_versions(roster):
    versions = await asyncio.gather(*(roster.put("zed", "example.org", RosterItem(f"c{i}@x"))
                                      for i in range(3)))
    assert sorted(versions) == [1, 2, 3]


async def test_pending_requests_are_kept_once_in_order_and_bounded(roster):
    assert await roster.add_pending("bob", "example.org", "alice@example.org", "<presence/>", T0)
    assert not await roster.add_pending("bob", "example.org", "alice@example.org", "<presence/>", T0)
    assert await roster.add_pending("bob", "example.org", "carol@example.org", "<p2/>",
                                    T0 - dt.timedelta(seconds=1))
    assert not await roster.add_pending("bob", "example.org", "dave@example.org", "<p3/>", T0)  # max_pending
    assert await roster.pending("bob", "example.org") == [("carol@example.org", "<p2/>"),
                                                          ("alice@example.org", "<presence/>")]
    assert await roster.has_pending("bob", "example.org", "alice@example.org")
    assert await roster.remove_pending("bob", "example.org", "alice@example.org")
    assert not await roster.remove_pending("bob", "example.org", "alice@example.org")
    assert not await roster.has_pending("bob", "example.org", "alice@example.org")


async def test_a_long_stored_request_fits_the_text_column(roster):
    big = "<presence type='subscribe'><status>" + "x" * MAX_PENDING_STANZA_CHARS + "</status></presence>"
    assert await roster.add_pending("bob", "example.org", "alice@example.org", big, T0)
    assert (await roster.pending("bob", "example.org"))[0][1] == big


async def test_blocklist_add_remove_and_clear(blocklist):
    assert await blocklist.add("alice", "example.org", ["spam@x", "x", "spam@x"]) == ["spam@x", "x"]
    assert await blocklist.add("alice", "example.org", ["x", "y@x/r"]) == ["y@x/r"]
    assert await blocklist.list("alice", "example.org") == ["spam@x", "x", "y@x/r"]
    assert await blocklist.all() == {("alice", "example.org"): {"spam@x", "x", "y@x/r"}}
    assert await blocklist.remove("alice", "example.org", ["x", "nope"]) == ["x"]
    assert await blocklist.remove("alice", "example.org", []) == []
    assert sorted(await blocklist.remove("alice", "example.org", None)) == ["spam@x", "y@x/r"]
    assert await blocklist.list("alice", "example.org") == []


async def test_blocklist_limit_is_all_or_nothing(blocklist):
    await blocklist.add("alice", "example.org", ["a@x", "b@x"])
    with pytest.raises(BlocklistFull):
        await blocklist.add("alice", "example.org", ["c@x", "d@x"])
    assert await blocklist.list("alice", "example.org") == ["a@x", "b@x"]
    assert await blocklist.add("alice", "example.org", ["c@x"]) == ["c@x"]
