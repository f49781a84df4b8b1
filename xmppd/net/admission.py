"""Admission bookkeeping of a listener: per-client keys and the rate-limited refusal log.

Pure (no sockets, no loop): the listener passes ``now`` in.
"""

from __future__ import annotations

import ipaddress
import logging

__all__ = ["REFUSAL_LOG_INTERVAL_S", "REFUSAL_LOG_MAX_KEYS", "RefusalLog", "client_key"]

log = logging.getLogger("xmppd.listener")

#: refused connections are logged at most once per this many seconds (one line with the counts)
REFUSAL_LOG_INTERVAL_S = 10.0
#: client keys remembered per refusal-log interval (for the "most refused" part of the summary)
REFUSAL_LOG_MAX_KEYS = 1024


def client_key(host: str) -> str:
    """The address a per-client limit counts by: IPv4 as is (also when it arrives
    IPv4-mapped on a dual-stack socket), IPv6 by its /64 (one host or home network
    usually owns a whole /64, RFC 6177), the IPv6 loopback as itself."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        if not addr.is_loopback:
            return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class RefusalLog:
    """Counts refused connections; logs the first of an interval at once, the rest summed up."""

    __slots__ = ("name", "counts", "keys", "last")

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[str, int] = {}
        self.keys: dict[str, int] = {}
        self.last = float("-inf")

    def refused(self, why: str, key: str | None, now: float) -> None:
        self.counts[why] = self.counts.get(why, 0) + 1
        if key is not None and (key in self.keys or len(self.keys) < REFUSAL_LOG_MAX_KEYS):
            self.keys[key] = self.keys.get(key, 0) + 1
        if now - self.last >= REFUSAL_LOG_INTERVAL_S:
            self.flush(now)

    def flush(self, now: float, *, due_only: bool = False) -> None:
        if not self.counts or (due_only and now - self.last < REFUSAL_LOG_INTERVAL_S):
            return
        total = sum(self.counts.values())
        why = ", ".join(f"{n} over {limit}" for limit, n in sorted(self.counts.items()))
        top = sorted(self.keys.items(), key=lambda kv: -kv[1])[:3]
        source = (" (most from " + ", ".join(f"{k}: {n}" for k, n in top) + ")") if top else ""
        log.warning("%s: refused %d connection(s): %s%s; refusals are logged at most once per %g s",
                    self.name, total, why, source, REFUSAL_LOG_INTERVAL_S)
        self.counts.clear()
        self.keys.clear()
        self.last = now

