"""Per-client keys and the refusal log (pure: ``now`` is passed in)."""

from __future__ import annotations

import logging

import pytest

from xmppd.net.admission import REFUSAL_LOG_INTERVAL_S, RefusalLog, client_key


@pytest.mark.parametrize("host, key", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 client on a dual-stack socket
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # same /64, same client
    ("::1", "::1"),
    ("fe80::1%eth0", "fe80::/64"),
    ("not-an-address", "not-an-address"),
])
def test_client_key_counts_ipv4_as_is_and_ipv6_by_its_64(host, key):
    assert client_key(host) == key


def test_refusals_log_the_first_at_once_then_one_summary_per_interval(caplog):
    caplog.set_level(logging.WARNING, logger="xmppd.listener")
    rl = RefusalLog("c2s:5222")
    for i in range(500):
        rl.refused("max_connections (10)", "192.0.2.7", now=100.0 + i * 0.001)
    assert len(caplog.records) == 1 and "refused 1 connection" in caplog.records[0].getMessage()
    rl.flush(101.0, due_only=True)  # the sweep: not due yet
    assert len(caplog.records) == 1
    rl.flush(100.0 + REFUSAL_LOG_INTERVAL_S, due_only=True)
    assert len(caplog.records) == 2
    summary = caplog.records[1].getMessage()
    assert "refused 499 connection" in summary and "192.0.2.7: 499" in summary
    rl.flush(1000.0, due_only=True)  # nothing new: nothing logged
    assert len(caplog.records) == 2
