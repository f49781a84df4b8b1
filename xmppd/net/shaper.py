"""Input shaping: token buckets per connection (pure: the caller passes ``now``).

What a connection has read is already in memory, so it is always accepted; the
bucket goes into debt and answers how long reading must pause for the debt to
be paid back (ejabberd's shapers and Prosody's mod_limits work the same way).
The shell then calls ``transport.pause_reading()`` and a timer resumes it — a
flooding peer slows down to its rate while every other session keeps its share
of the event loop.

Two buckets per connection: bytes per second (before the XML parser) and
stanzas per second (after it).  Defaults are far above what a chat client
sends, even while it uploads an avatar or fetches its archive.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket", "ShaperSettings", "Shaper", "DEFAULT_SHAPER", "UNLIMITED", "MAX_PAUSE_S"]

#: the longest single pause, whatever the debt (a huge read pays back over several pauses)
MAX_PAUSE_S = 5.0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, amount: float, now: float) -> float:
        """Spend ``amount``; seconds to pause before reading more (0.0: carry on)."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        self.tokens -= amount
        if self.tokens >= 0:
            return 0.0
        return min(MAX_PAUSE_S, -self.tokens / self.rate)


@dataclass(frozen=True, slots=True)
class ShaperSettings:
    """Limits of one shaper (``[shaper.NAME]``); ``None``: that dimension is not limited."""

    bytes_per_s: float | None
    bytes_burst: float | None
    stanzas_per_s: float | None
    stanzas_burst: float | None

    @property
    def unlimited(self) -> bool:
        return self.bytes_per_s is None and self.stanzas_per_s is None


#: a chat user never gets near these: 256 KiB/s sustained, 1 MiB at once; 200 stanzas/s, 1,000 at once
DEFAULT_SHAPER = ShaperSettings(bytes_per_s=256 * 1024, bytes_burst=1024 * 1024,
                                stanzas_per_s=200, stanzas_burst=1000)
#: for trusted accounts and components
UNLIMITED = ShaperSettings(None, None, None, None)


class Shaper:
    """The buckets of one connection."""

    __slots__ = ("_bytes", "_stanzas", "paused_s", "pauses")

    def __init__(self, settings: ShaperSettings, now: float) -> None:
        self._bytes = (TokenBucket(settings.bytes_per_s, settings.bytes_burst or settings.bytes_per_s, now)
                       if settings.bytes_per_s else None)
        self._stanzas = (TokenBucket(settings.stanzas_per_s, settings.stanzas_burst or settings.stanzas_per_s,
                                     now) if settings.stanzas_per_s else None)
        #: how long and how often this connection was paused (for metrics and tests)
        self.paused_s = 0.0
        self.pauses = 0

    def on_bytes(self, n: int, now: float) -> float:
        return self._note(self._bytes.take(n, now)) if self._bytes is not None else 0.0

    def on_stanza(self, now: float) -> float:
        return self._note(self._stanzas.take(1, now)) if self._stanzas is not None else 0.0

    def _note(self, pause: float) -> float:
        if pause > 0:
            self.pauses += 1
            self.paused_s += pause
        return pause
