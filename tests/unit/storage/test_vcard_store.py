"""xmppd.storage.vcard on SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import datetime as dt

import pytest

from xmppd.storage import create_schema
from xmppd.storage.vcard import VCardStore

T0 = dt.datetime(2030, 5, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
async def store(db_engine):
    await create_schema(db_engine)
    return VCardStore(db_engine)


async def test_set_replaces_and_get_returns_the_bytes(store):
    assert await store.get("alice", "example.org") is None
    await store.set("alice", "example.org", b"<vCard xmlns='vcard-temp'><FN>A</FN></vCard>", T0)
    await store.set("alice", "example.org", b"<vCard xmlns='vcard-temp'><FN>B \xc3\xa9</FN></vCard>", T0)
    assert await store.get("alice", "example.org") == b"<vCard xmlns='vcard-temp'><FN>B \xc3\xa9</FN></vCard>"
    assert await store.get("alice", "other.example") is None


async def test_remove(store):
    await store.set("alice", "example.org", b"<vCard xmlns='vcard-temp'/>", T0)
    assert await store.remove("alice", "example.org")
    assert not await store.remove("alice", "example.org")
