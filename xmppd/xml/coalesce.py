"""Input coalescing for expat: when may received bytes be handed over?

Expat (< 2.6, and >= 2.6 with re-parse deferral off, which the stream parser
needs) keeps an incomplete token and scans it again from its first byte on
every ``Parse`` call.  A start tag of n bytes arriving k bytes at a time (tiny
TLS records, one byte per TCP segment) therefore costs O(n^2/k).

Rules of this file:
  * Pure: looks at the stream parser's buffer, never at sockets or clocks.
  * After every ``Parse`` the stream parser notes where expat's incomplete
    token starts (``pending``: expat's ``CurrentByteIndex`` then) and where
    the bytes handed to expat end (``fed``).  Bytes received since are handed
    over (the test is inlined in the parser's ``feed``) when
      - the incomplete token is short (<= :data:`SMALL_TOKEN` bytes) and we are
        between stanzas, or the new bytes hold a ``>``, or
        :data:`MAX_HELD_CONTENT` bytes are waiting (text trickled into a stanza
        completes nothing before the next ``>``), or
      - at least as many new bytes as the incomplete token has arrived (each
        re-scan is paid for by as many new bytes: expat scans every byte at
        most ~3 times in all), or
      - the new bytes contain what ends the incomplete token (``>`` outside
        quotes for a tag, ``-->`` for a comment, ``?>`` for a PI/declaration,
        ``;`` for a reference; :class:`TokenEnd`), so nothing that completes an event is ever
        held back: events only complete at the end of a token, and no later
        token can complete before the incomplete one does.
  * Hence everything held back belongs to the incomplete token, and the
    search for its end is incremental (a quote state is kept), linear in the
    bytes received.
"""

from __future__ import annotations

import re

__all__ = ["SMALL_TOKEN", "MAX_HELD_CONTENT", "TokenEnd"]

#: an incomplete token up to this size is re-scanned on every feed (cheaper than deciding)
SMALL_TOKEN = 16
#: inside a stanza, bytes without a '>' cannot complete anything: up to this many
#: are collected before expat sees them (one ``Parse`` call, not one per record)
MAX_HELD_CONTENT = 4096

_TAG_STOP = re.compile(rb"['\">]")
_LT, _AMP, _GT, _SLASH, _BANG, _QMARK = b"<&>/!?"
#: "terminator" of a start tag: '>' outside quotes, found by scanning with a quote state
_START_TAG = b""


def _terminator(head: bytes) -> bytes | None:
    """What ends the token starting with ``head`` (>= 4 bytes); None: unknown, hand over."""
    first = head[0]
    if first == _AMP:
        return b";"
    if first != _LT:
        return None  # partial character data: a few bytes at most
    second = head[1]
    if second == _SLASH:
        return b">"
    if second == _QMARK:
        return b"?>"
    if second == _BANG:
        return b"-->" if head.startswith(b"<!--") else b">"
    return _START_TAG


class TokenEnd:
    """Finds the end of expat's incomplete token in the bytes received after it.

    :meth:`found` is called with the same ``pending`` offset as long as expat
    holds the same token; the search resumes where it stopped (with its quote
    state), so each byte is looked at once.  A new ``pending`` starts afresh.
    """

    __slots__ = ("_pending", "_term", "_pos", "_quote")

    def __init__(self) -> None:
        self._pending = -1
        self._term: bytes | None = None
        self._pos = 0  # absolute offset the search continues from
        self._quote = 0

    def found(self, buf: bytearray, base: int, pending: int) -> bool:
        """Does ``buf`` (absolute offset ``base``) hold the end of the token at ``pending``?"""
        end = base + len(buf)
        if pending != self._pending:  # a new incomplete token: classify it
            start = pending - base
            self._pending = pending
            self._term = _terminator(bytes(buf[start : start + 4]))
            self._quote = 0
            self._pos = pending + 1
        term = self._term
        if term is None:
            return True
        pos = self._pos
        if term:
            i = buf.find(term, pos - base, end - base)
            if i >= 0:
                # if expat still holds the same token afterwards (it was no end after
                # all), the search goes on after this match, never finds it again
                self._pos = i + 1 + base
                return True
            self._pos = max(pos, end - len(term) + 1)  # a terminator may straddle the next feed
            return False
        # a start tag (or the stream header): '>' outside quoted attribute values
        i, stop, quote = pos - base, end - base, self._quote
        while i < stop:
            if quote:
                j = buf.find(quote, i, stop)
                if j < 0:
                    i = stop
                    break
                i, quote = j + 1, 0
            else:
                m = _TAG_STOP.search(buf, i, stop)
                if m is None:
                    i = stop
                    break
                c = buf[m.start()]
                if c == _GT:
                    self._pos, self._quote = m.end() + base, 0
                    return True
                i, quote = m.end(), c
        self._pos, self._quote = i + base, quote
        return False
