"""xmppd.storage.pubsub on SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import datetime as dt

import pytest

from xmppd.storage import create_schema
from xmppd.storage.pubsub import NodeConfig, NodeExists, PubsubStore, TooManyMembers, TooManyNodes

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
OWNER = ("alice", "example.org")
DEVICES = "eu.siacs.conversations.axolotl.devicelist"
PAYLOAD = (b"<list xmlns='eu.siacs.conversations.axolotl'>\n  <device id='1'  label=\"caf\xc3\xa9 &amp; co\"/>"
           b"<x xmlns='urn:example:unknown' b='2' a='1'>kept</x></list>")


@pytest.fixture
async def store(db_engine):
    await create_schema(db_engine)
    return PubsubStore(db_engine)


async def publish(store, node, item_id, payload=PAYLOAD, config=NodeConfig(), when=T0, max_nodes=10):
    return await store.publish(*OWNER, node, item_id, "alice@example.org", payload, when,
                               create_config=config, max_nodes=max_nodes)


async def test_publish_auto_creates_the_node_and_payload_bytes_come_back_identical(store):
    node, created = await publish(store, DEVICES, "current", config=NodeConfig(access_model="open"))
    assert created and node.config.access_model == "open"
    again, created = await publish(store, DEVICES, "current")
    assert not created and again.id == node.id and again.config.access_model == "open"
    items = await store.items(node.id)
    assert [(i.item_id, i.payload, i.publisher) for i in items] == [("current", PAYLOAD, "alice@example.org")]
    assert items[0].updated_at == T0
    assert (await store.node(*OWNER, DEVICES)).config == NodeConfig(access_model="open")


async def test_republishing_an_id_makes_it_the_newest_and_max_items_drops_the_oldest(store):
    cfg = NodeConfig(max_items=3)
    node, _ = await publish(store, "n", "a", b"<a/>", cfg)
    for i, iid in enumerate(["b", "c", "a", "d"]):
        await publish(store, "n", iid, b"<%s/>" % iid.encode(), cfg, T0 + dt.timedelta(seconds=i + 1))
    items = await store.items(node.id)
    assert [i.item_id for i in items] == ["c", "a", "d"]  # b dropped: the oldest once a moved up
    assert [i.item_id for i in await store.items(node.id, max_items=2)] == ["a", "d"]
    assert [i.item_id for i in await store.items(node.id, item_ids=["d", "zz", "c"])] == ["c", "d"]
    assert (await store.last_item(node.id)).item_id == "d"


async def test_items_are_bounded_by_max_bytes_newest_first(store):
    cfg = NodeConfig(max_items=10)
    node, _ = await publish(store, "n", "1", b"<x>" + b"a" * 100 + b"</x>", cfg)
    await publish(store, "n", "2", b"<x>" + b"b" * 100 + b"</x>", cfg)
    await publish(store, "n", "3", b"<x>" + b"c" * 100 + b"</x>", cfg)
    assert [i.item_id for i in await store.items(node.id, max_bytes=250)] == ["2", "3"]


async def test_transient_node_keeps_only_the_last_item(store):
    node, _ = await publish(store, "n", "1", config=NodeConfig(persist_items=False, max_items=50))
    await publish(store, "n", "2")
    assert [i.item_id for i in await store.items(node.id)] == ["2"]


async def test_configure_stores_the_config_and_trims_items(store):
    cfg = NodeConfig(max_items=5)
    node, _ = await publish(store, "n", "1", config=cfg)
    for iid in "2345":
        await publish(store, "n", iid)
    dropped = await store.configure(node.id, NodeConfig(max_items=2, access_model="whitelist"))
    assert dropped == 3
    assert [i.item_id for i in await store.items(node.id)] == ["4", "5"]
    assert (await store.node(*OWNER, "n")).config.access_model == "whitelist"


async def test_create_node_refuses_duplicates_and_beyond_max_nodes(store):
    await store.create_node(*OWNER, "a", NodeConfig(), T0, max_nodes=2)
    with pytest.raises(NodeExists):
        await store.create_node(*OWNER, "a", NodeConfig(), T0, max_nodes=2)
    await store.create_node(*OWNER, "b", NodeConfig(), T0, max_nodes=2)
    with pytest.raises(TooManyNodes):
        await store.create_node(*OWNER, "c", NodeConfig(), T0, max_nodes=2)
    with pytest.raises(TooManyNodes):
        await publish(store, "c", "1", max_nodes=2)
    assert await store.node(*OWNER, "c") is None
    # another account is not affected
    await store.create_node("bob", "example.org", "c", NodeConfig(), T0, max_nodes=2)
    assert [n.name for n in await store.nodes(*OWNER)] == ["a", "b"]


async def test_retract_purge_and_delete(store):
    node, _ = await publish(store, "n", "1", config=NodeConfig(max_items=5))
    await publish(store, "n", "2")
    assert await store.retract(node.id, "1")
    assert not await store.retract(node.id, "1")
    assert [i.item_id for i in await store.items(node.id)] == ["2"]
    assert await store.purge(node.id) == 1
    assert await store.items(node.id) == []
    await store.set_affiliations(node.id, {"bob@example.org": "member"}, max_members=5)
    assert await store.delete_node(node.id)
    assert await store.node(*OWNER, "n") is None
    node2, created = await publish(store, "n", "x")
    assert created and await store.affiliations(node2.id) == {}


async def test_whitelist_affiliations_are_bounded_and_atomic(store):
    node = await store.create_node(*OWNER, "secret", NodeConfig(access_model="whitelist"), T0, max_nodes=5)
    await store.set_affiliations(node.id, {"bob@example.org": "member", "carol@example.org": "member"},
                                 max_members=2)
    assert await store.affiliation(node.id, "bob@example.org") == "member"
    with pytest.raises(TooManyMembers):
        await store.set_affiliations(node.id, {"dave@example.org": "member"}, max_members=2)
    assert await store.affiliation(node.id, "dave@example.org") is None
    await store.set_affiliations(node.id, {"bob@example.org": None}, max_members=2)
    assert await store.affiliations(node.id) == {"carol@example.org": "member"}


async def test_find_nodes_and_last_items_in_batches(store):
    ids = {}
    for user in ("u%d" % i for i in range(130)):
        node, _ = await store.publish(user, "example.org", DEVICES, "current", f"{user}@example.org",
                                      b"<l xmlns='x'>%s</l>" % user.encode(), T0,
                                      create_config=NodeConfig(), max_nodes=5)
        ids[user] = node.id
        await store.publish(user, "example.org", "other", "1", f"{user}@example.org", b"<o/>", T0,
                            create_config=NodeConfig(), max_nodes=5)
    owners = [(f"u{i}", "example.org") for i in range(0, 130, 2)] + [("nobody", "example.org")]
    found = await store.find_nodes(owners, [DEVICES, "absent"])
    assert sorted(n.user for n in found) == sorted(u for u, _ in owners if u != "nobody")
    last = await store.last_items([n.id for n in found])
    assert last[ids["u4"]].payload == b"<l xmlns='x'>u4</l>"
    assert len(last) == 65


async def test_remove_user_deletes_every_node(store):
    await publish(store, "a", "1")
    await publish(store, "b", "1")
    assert await store.remove_user(*OWNER) == 2
    assert await store.nodes(*OWNER) == []


async def test_account_totals_over_all_nodes_are_checked_in_the_publish_transaction(store):
    from xmppd.storage.pubsub import AccountQuotaExceeded

    many = NodeConfig(max_items=10)
    limits = dict(create_config=many, max_nodes=10, account_items=3, account_bytes=100)
    for node, item in (("n1", "a"), ("n1", "b"), ("n2", "c")):
        await store.publish("alice", "example.org", node, item, "alice@example.org", b"<p>12345</p>", T0, **limits)
    with pytest.raises(AccountQuotaExceeded) as exc:
        await store.publish("alice", "example.org", "n3", "d", "alice@example.org", b"<p/>", T0, **limits)
    assert exc.value.what == "items" and exc.value.limit == 3
    assert await store.node("alice", "example.org", "n3") is None  # rolled back with the item
    # a re-publish of an existing id replaces it: the total stays 3
    await store.publish("alice", "example.org", "n2", "c", "alice@example.org", b"<p>x</p>", T0, **limits)
    with pytest.raises(AccountQuotaExceeded) as exc:
        await store.publish("alice", "example.org", "n2", "c", "alice@example.org", b"<p>" + b"x" * 80 + b"</p>",
                            T0, **limits)
    assert exc.value.what == "bytes"
    assert await store.account_usage("alice", "example.org") == (3, 2 * 12 + 8)
    # other accounts have their own totals
    await store.publish("bob", "example.org", "n1", "a", "bob@example.org", b"<p/>", T0, **limits)
