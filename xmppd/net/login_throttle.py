"""Failed-login throttling across connections, per source address and per account (pure).

Password guessing is slowed down, not the owner:

* per address: ``failures_per_ip`` failed password logins are free, refilled at
  that many per ``ip_window_s``; beyond, password logins from the address are
  refused (``temporary-auth-failure``) until a failure's worth has refilled;
* per account: the same with ``failures_per_account`` / ``account_window_s``,
  counted over all addresses — but an address that has logged in to the account
  successfully before (the last ``known_addresses_per_account`` of them) is never
  refused because of the account's count: a stranger guessing alice's password
  from elsewhere does not lock alice out;
* a refusal never lasts longer than ``max_refusal_s`` (the time the caller tells
  the client to wait is at most that);
* certificate logins (EXTERNAL) are not password guesses and are never refused
  here; their failures are still counted per address.

Memory is bounded: at most ``max_tracked`` addresses and accounts each (least
recently seen dropped first).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from .shaper import TokenBucket

__all__ = ["ThrottleSettings", "LoginThrottle", "Refusal"]


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    failures_per_ip: int = 10
    ip_window_s: float = 60.0
    failures_per_account: int = 20
    account_window_s: float = 60.0
    max_refusal_s: float = 60.0
    known_addresses_per_account: int = 8
    max_tracked: int = 100_000


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str  # "address" or "account"
    retry_after_s: float

    @property
    def text(self) -> str:
        what = "from your address" if self.scope == "address" else "for this account"
        return f"too many failed logins {what}; try again in {max(1, round(self.retry_after_s))} s"


class _LRU(collections.OrderedDict):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key, make):
        value = self.get(key)
        if value is None:
            value = self[key] = make()
            if len(self) > self.limit:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


class LoginThrottle:
    def __init__(self, settings: ThrottleSettings = ThrottleSettings()) -> None:
        self.settings = settings
        self._ips: _LRU = _LRU(settings.max_tracked)
        self._accounts: _LRU = _LRU(settings.max_tracked)
        self._known: _LRU = _LRU(settings.max_tracked)  # account -> deque of addresses
        #: how many logins were refused, per scope (metrics, tests)
        self.refused = collections.Counter()

    def _ip_bucket(self, ip: str, now: float) -> TokenBucket:
        s = self.settings
        return self._ips.touch(ip, lambda: TokenBucket(s.failures_per_ip / s.ip_window_s, s.failures_per_ip, now))

    def _account_bucket(self, account: str, now: float) -> TokenBucket:
        s = self.settings
        return self._accounts.touch(account, lambda: TokenBucket(
            s.failures_per_account / s.account_window_s, s.failures_per_account, now))

    @staticmethod
    def _wait(bucket: TokenBucket, now: float) -> float:
        """Seconds until ``bucket`` has a whole token (0: it has one now)."""
        bucket.take(0, now)  # refill only
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / bucket.rate

    def check(self, ip: str, account: str | None, now: float, *, password: bool = True) -> Refusal | None:
        """Before checking credentials: refuse (and say for how long) or let it through."""
        cap = self.settings.max_refusal_s
        bucket = self._ips.get(ip)
        if bucket is not None:
            wait = self._wait(bucket, now)
            if wait > 0 and password:
                self.refused["address"] += 1
                return Refusal("address", min(cap, wait))
        if password and account is not None and not self.is_known(account, ip):
            bucket = self._accounts.get(account)
            if bucket is not None:
                wait = self._wait(bucket, now)
                if wait > 0:
                    self.refused["account"] += 1
                    return Refusal("account", min(cap, wait))
        return None

    def failed(self, ip: str, account: str | None, now: float, *, password: bool = True) -> list[str]:
        """A login failed; the scopes whose limit this failure used up (for the audit log)."""
        triggered = []
        b = self._ip_bucket(ip, now)
        b.take(1, now)
        if b.tokens < 1:
            triggered.append("address")
        if password and account is not None and not self.is_known(account, ip):
            b = self._account_bucket(account, now)
            b.take(1, now)
            if b.tokens < 1:
                triggered.append("account")
        return triggered

    def succeeded(self, ip: str, account: str, now: float) -> None:
        """Remember ``ip`` as one of the account's own addresses."""
        known = self._known.touch(account, lambda: collections.deque(
            maxlen=self.settings.known_addresses_per_account))
        if ip in known:
            known.remove(ip)
        known.append(ip)

    def is_known(self, account: str, ip: str) -> bool:
        known = self._known.get(account)
        return known is not None and ip in known
