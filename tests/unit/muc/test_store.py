"""xmppd.storage.muc on SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import datetime as dt

import pytest

import xmppd.storage.muc  # noqa: F401  (tables on the metadata)
from xmppd.storage import create_schema
from xmppd.storage.muc import MucStore, UnknownArchiveId

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)
S = "conference.example.org"


@pytest.fixture
async def store(db_engine):
    await create_schema(db_engine)
    return MucStore(db_engine)


async def test_room_with_affiliations_round_trips_and_replaces(store):
    await store.save_room(S, "team", {"members_only": True, "name": "Team"}, subject="hi", subject_nick="al",
                          created_at=T0, affiliations={"alice@example.org": ("owner", None),
                                                       "bob@example.org": ("member", "bobby")})
    [room] = await store.load_rooms(S)
    assert room.name == "team" and room.config == {"members_only": True, "name": "Team"}
    assert room.subject == "hi" and room.subject_nick == "al" and room.created_at == T0
    assert room.affiliations == {"alice@example.org": ("owner", None), "bob@example.org": ("member", "bobby")}
    await store.save_room(S, "team", {"name": "T2"}, created_at=T0, affiliations={"alice@example.org": ("owner", None)})
    [room] = await store.load_rooms(S)
    assert room.config == {"name": "T2"} and list(room.affiliations) == ["alice@example.org"]
    assert await store.load_rooms("other.example.org") == []


async def test_affiliation_changes_and_none_deletes(store):
    await store.save_room(S, "r", {}, created_at=T0, affiliations={"alice@example.org": ("owner", None)})
    await store.set_affiliations(S, "r", [("bob@example.org", "outcast", None, "spam"),
                                          ("carol@example.org", "member", "c", None)])
    await store.set_affiliations(S, "r", [("carol@example.org", "none", None, None)])
    [room] = await store.load_rooms(S)
    assert room.affiliations == {"alice@example.org": ("owner", None), "bob@example.org": ("outcast", None)}


async def test_subject_update_and_delete_room_removes_everything(store):
    await store.save_room(S, "r", {}, created_at=T0, affiliations={"a@example.org": ("owner", None)})
    await store.set_subject(S, "r", "new topic", "nick")
    await store.append_many([(S, "r", "id1", T0, "nick", b"<message/>")])
    [room] = await store.load_rooms(S)
    assert room.subject == "new topic"
    await store.delete_room(S, "r")
    assert await store.load_rooms(S) == []
    assert (await store.query(S, "r", max_items=10)).items == []


async def test_archive_paging_forward_backward_and_unknown_id(store):
    await store.append_many([(S, "r", f"id{i}", T0 + dt.timedelta(minutes=i), "al" if i % 2 else "bo",
                              b"<message><body>m%d</body></message>" % i) for i in range(5)])
    await store.append_many([(S, "other", "x", T0, "z", b"<message/>")])
    p = await store.query(S, "r", max_items=2)
    assert [i.archive_id for i in p.items] == ["id0", "id1"] and p.count == 5 and not p.complete
    p = await store.query(S, "r", max_items=2, after_id="id3")
    assert [i.archive_id for i in p.items] == ["id4"] and p.complete
    p = await store.query(S, "r", max_items=2, before_id="")
    assert [i.archive_id for i in p.items] == ["id3", "id4"]
    p = await store.query(S, "r", max_items=10, with_nick="al")
    assert [i.archive_id for i in p.items] == ["id1", "id3"] and p.count == 2
    p = await store.query(S, "r", max_items=10, start=T0 + dt.timedelta(minutes=3))
    assert [i.archive_id for i in p.items] == ["id3", "id4"]
    with pytest.raises(UnknownArchiveId):
        await store.query(S, "r", max_items=1, after_id="x")  # another room's id
    last = await store.last(S, "r", 2)
    assert [i.archive_id for i in last] == ["id3", "id4"]


async def test_service_secret_is_created_once(store):
    a = await store.service_secret(S)
    assert a == await store.service_secret(S) and len(a) >= 32
    assert await store.service_secret("x." + S) != a


async def test_delete_room_keeps_a_newer_incarnations_archive_and_keep_archive(store):
    await store.save_room(S, "r", {}, created_at=T0)
    await store.append_many([(S, "r", "old", T0, "n", b"<message/>"),
                             (S, "r", "new", T0 + dt.timedelta(minutes=5), "n", b"<message/>")])
    await store.delete_room(S, "r", keep_archive=True)
    assert await store.load_rooms(S) == [] and (await store.query(S, "r", max_items=5)).count == 2
    await store.delete_room(S, "r", archive_before=T0 + dt.timedelta(minutes=1))
    assert [i.archive_id for i in (await store.query(S, "r", max_items=5)).items] == ["new"]
