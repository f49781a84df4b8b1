"""xmppd.net.shaper (token buckets) and xmppd.net.login_throttle (failed-login limits): pure, clock passed in."""

from __future__ import annotations

import pytest

from xmppd.net.login_throttle import LoginThrottle, ThrottleSettings
from xmppd.net.shaper import MAX_PAUSE_S, Shaper, ShaperSettings, TokenBucket


def test_bucket_allows_the_burst_then_asks_for_a_pause_proportional_to_the_debt():
    b = TokenBucket(rate=100, burst=50, now=0.0)
    assert b.take(50, 0.0) == 0.0
    assert b.take(10, 0.0) == pytest.approx(0.1)  # 10 tokens short at 100/s
    assert b.take(0, 0.1) == 0.0  # paid back


def test_bucket_refills_at_its_rate_up_to_the_burst():
    b = TokenBucket(rate=10, burst=20, now=0.0)
    b.take(20, 0.0)
    b.take(0, 1.0)
    assert b.tokens == pytest.approx(10)
    b.take(0, 100.0)
    assert b.tokens == pytest.approx(20)


def test_a_huge_read_pauses_at_most_max_pause():
    b = TokenBucket(rate=1, burst=1, now=0.0)
    assert b.take(10_000, 0.0) == MAX_PAUSE_S


def test_shaper_limits_stanzas_and_bytes_independently():
    s = Shaper(ShaperSettings(bytes_per_s=1000, bytes_burst=1000, stanzas_per_s=10, stanzas_burst=2), now=0.0)
    assert s.on_bytes(500, 0.0) == 0.0
    assert s.on_stanza(0.0) == 0.0 and s.on_stanza(0.0) == 0.0
    assert s.on_stanza(0.0) == pytest.approx(0.1)
    assert s.on_bytes(1000, 0.0) == pytest.approx(0.5)
    assert s.pauses == 2


def test_unlimited_shaper_never_pauses():
    s = Shaper(ShaperSettings(None, None, None, None), now=0.0)
    assert s.on_bytes(10**9, 0.0) == 0.0 and s.on_stanza(0.0) == 0.0


def _throttle(**kw) -> LoginThrottle:
    return LoginThrottle(ThrottleSettings(**kw))


def test_an_address_is_refused_after_its_free_failures_and_let_in_again_later():
    t = _throttle(failures_per_ip=3, ip_window_s=30, failures_per_account=100)
    for i in range(3):
        assert t.check("192.0.2.1", f"user{i}@x", 0.0) is None
        t.failed("192.0.2.1", f"user{i}@x", 0.0)
    refusal = t.check("192.0.2.1", "other@x", 0.0)
    assert refusal is not None and refusal.scope == "address"
    assert refusal.retry_after_s == pytest.approx(10.0)  # one failure refills in 30/3 s
    assert "try again in 10 s" in refusal.text
    assert t.check("198.51.100.7", "other@x", 0.0) is None  # another address is not affected
    assert t.check("192.0.2.1", "other@x", 10.0) is None


def test_failures_from_many_addresses_throttle_the_account_but_not_its_owner_address():
    t = _throttle(failures_per_ip=100, failures_per_account=5, account_window_s=50)
    t.succeeded("203.0.113.5", "alice@x", 0.0)  # alice's own address
    for i in range(5):
        t.failed(f"192.0.2.{i}", "alice@x", 1.0)
    refusal = t.check("192.0.2.99", "alice@x", 1.0)
    assert refusal is not None and refusal.scope == "account"
    assert t.check("203.0.113.5", "alice@x", 1.0) is None  # the owner's address still gets in
    assert t.check("192.0.2.99", "bob@x", 1.0) is None  # other accounts are unaffected


def test_a_refusal_never_lasts_longer_than_the_cap():
    t = _throttle(failures_per_ip=1, ip_window_s=100_000, max_refusal_s=60)
    t.failed("192.0.2.1", "a@x", 0.0)
    assert t.check("192.0.2.1", "a@x", 0.0).retry_after_s == 60


def test_certificate_logins_are_never_refused_by_the_throttle():
    t = _throttle(failures_per_ip=1, failures_per_account=1)
    t.failed("192.0.2.1", "a@x", 0.0)
    assert t.check("192.0.2.1", "a@x", 0.0, password=False) is None


def test_failed_reports_which_limit_it_used_up():
    t = _throttle(failures_per_ip=2, failures_per_account=1)
    assert t.failed("192.0.2.1", "a@x", 0.0) == ["account"]
    assert t.failed("192.0.2.1", "b@x", 0.0) == ["address", "account"]


def test_tracked_addresses_are_bounded():
    t = _throttle(max_tracked=100)
    for i in range(1000):
        t.failed(f"2001:db8::{i:x}", None, 0.0)
    assert len(t._ips) == 100
