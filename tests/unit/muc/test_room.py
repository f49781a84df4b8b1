"""Pure room state: join checks, roles, who sees what, history, rate limit, E2EE policy resolution."""

from __future__ import annotations

import datetime as dt

import pytest

from xmppd.errors import StanzaErrorCondition as E
from xmppd.jid import JID
from xmppd.modules.muc.policy import RoomPolicy
from xmppd.modules.muc.room import HistoryItem, MucError, Occupant, Room, RoomConfig

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
ALICE, BOB = JID.parse("alice@x/1"), JID.parse("bob@x/1")


def room(**cfg) -> Room:
    r = Room(jid=JID.parse("r@conference.x"), config=RoomConfig(**cfg), created_at=T0)
    r.set_affiliation("alice@x", "owner")
    return r


def join(r: Room, real: JID, nick: str) -> Occupant:
    r.check_join(real, nick, None, max_users=10)
    occ = Occupant(nick=nick, jid=real, role=r.default_role(r.affiliation(real)), occupant_id="x")
    r.add(occ)
    return occ


@pytest.mark.parametrize("cfg, setup, cond", [
    ({"members_only": True}, None, E.REGISTRATION_REQUIRED),
    ({}, "outcast", E.FORBIDDEN),
    ({"password": "pw"}, None, E.NOT_AUTHORIZED),
    ({"max_users": 1}, None, E.SERVICE_UNAVAILABLE),
])
def test_join_refusals_carry_the_xep0045_condition(cfg, setup, cond):
    r = room(**cfg)
    join(r, ALICE, "Alice")
    if setup:
        r.set_affiliation("bob@x", setup)
    with pytest.raises(MucError) as err:
        r.check_join(BOB, "Bob", None, max_users=10)
    assert err.value.condition == cond and err.value.text


def test_nick_in_use_or_reserved_by_another_is_a_conflict_but_not_for_the_same_account():
    r = room()
    join(r, ALICE, "Alice")
    with pytest.raises(MucError) as err:
        r.check_join(BOB, "Alice", None, max_users=10)
    assert err.value.condition == E.CONFLICT
    r.check_join(JID.parse("alice@x/2"), "Alice", None, max_users=10)  # the same account: allowed
    r.set_affiliation("carol@x", "member", "Cee")
    with pytest.raises(MucError):
        r.check_join(BOB, "Cee", None, max_users=10)


def test_locked_room_admits_only_its_owner():
    r = room()
    r.locked = True
    with pytest.raises(MucError) as err:
        r.check_join(BOB, "Bob", None, max_users=10)
    assert err.value.condition == E.ITEM_NOT_FOUND
    r.check_join(ALICE, "Alice", None, max_users=10)


def test_default_roles_follow_affiliation_and_moderation():
    r = room(moderated=True)
    assert r.default_role("owner") == "moderator" and r.default_role("member") == "participant"
    assert r.default_role("none") == "visitor" and r.default_role("outcast") == "none"


def test_member_list_readable_by_members_only_when_non_anonymous_and_members_only():
    r = room(members_only=True, whois="anyone")
    r.set_affiliation("bob@x", "member")
    assert r.may_read_member_list(BOB)
    r.config.whois = "moderators"
    assert not r.may_read_member_list(BOB) and r.may_read_member_list(ALICE)


def test_history_filters_maxstanzas_seconds_since():
    r = room()
    r.history_size = 3
    for i in range(5):
        r.remember(HistoryItem(T0 + dt.timedelta(minutes=i), "n", b"m%d" % i))
    now = T0 + dt.timedelta(minutes=5)
    assert [i.data for i in r.history_for(now)] == [b"m2", b"m3", b"m4"]
    assert [i.data for i in r.history_for(now, maxstanzas=1)] == [b"m4"]
    assert [i.data for i in r.history_for(now, seconds=150)] == [b"m3", b"m4"]
    assert r.history_for(now, since=now) == []


def test_rate_limit_token_bucket():
    r = room()
    occ = join(r, ALICE, "Alice")
    assert [r.take_token(occ, 100.0, rate=1.0, burst=2) for _ in range(3)] == [True, True, False]
    assert r.take_token(occ, 101.0, rate=1.0, burst=2)


def test_policy_floor_service_domain_creation():
    r = room()
    p = RoomPolicy(service_floor="warn", parent_domain="x", domain_level=lambda d: "none")
    assert p.floor(r) == ("warn", "service") and p.check_choice(r, "none") and p.check_choice(r, "require") is None
    p = RoomPolicy(service_floor="none", parent_domain="x", domain_level=lambda d: "require")
    assert p.floor(r) == ("require", "domain") and p.effective(r) == "require"
    r.config.e2ee_floor = "require"
    p = RoomPolicy(service_floor="none", parent_domain="x")
    assert p.floor(r) == ("require", "creation")


@pytest.mark.parametrize("key, value", [("host", "nodots"), ("max_occupants", 0), ("history_size", -1),
                                        ("max_config_bytes", 10), ("message_rate", -1.0), ("e2ee_policy", "max")])
def test_bad_options_name_the_key(key, value):
    from xmppd.config import ConfigError
    from xmppd.modules.base import parse_module_options
    from xmppd.modules.muc import Muc

    with pytest.raises(ConfigError) as err:
        parse_module_options(Muc, {key: value})
    assert f"modules.muc.{key}" in str(err.value)
