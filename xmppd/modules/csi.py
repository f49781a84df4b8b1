"""Client State Indication (XEP-0352, urn:xmpp:csi:0).

Spec references:
  XEP-0352 §3     stream feature <csi xmlns='urn:xmpp:csi:0'/> after authentication;
                  <active/> / <inactive/> nonzas from a bound client
  XEP-0352 §4     while inactive the server may hold back what is not urgent

While a session is inactive, presence updates and standalone chat states
(XEP-0085) are held: only the newest one per sender and kind is kept, in
arrival order, at most ``max_queue`` entries (full queue → flushed).  Anything
else (a message with a body or an encrypted payload, iq, errors) first
flushes the held items, then goes out, so order is never changed for what
matters.  ``<active/>`` flushes.

How: the first ``<inactive/>`` wraps the session's ``send_bytes`` with a
filter (kept for the session's lifetime, a pass-through while active); held
items are the exact bytes that would have been sent.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from xml.etree.ElementTree import Element

from .base import Module

__all__ = ["Csi", "NS_CSI"]

NS_CSI = "urn:xmpp:csi:0"
_FROM = re.compile(rb"""^<[^\s/>]+[^>]*?\sfrom=(?:'([^']*)'|"([^"]*)")""")
_CHATSTATES = b"http://jabber.org/protocol/chatstates"


def _kind(data: bytes) -> bytes | None:
    """b'p' presence / b'c' standalone chat state (may be held), None (urgent)."""
    if data.startswith(b"<presence"):
        return b"p"
    if (data.startswith(b"<message") and _CHATSTATES in data and b"<body" not in data
            and b"<encrypted" not in data and b"type='error'" not in data and b'type="error"' not in data):
        return b"c"
    return None


class _Filter:
    __slots__ = ("send", "inactive", "held", "limit")

    def __init__(self, send, limit: int) -> None:
        self.send = send
        self.inactive = False
        self.held: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        self.limit = limit

    def __call__(self, data: bytes) -> None:
        if self.inactive:
            kind = _kind(data)
            if kind is not None:
                m = _FROM.match(data)
                key = (kind, (m.group(1) or m.group(2) or b"") if m else b"")
                self.held.pop(key, None)  # the newest one replaces the older
                self.held[key] = data
                if len(self.held) > self.limit:
                    self.flush()
                return
            self.flush()
        self.send(data)

    def flush(self) -> None:
        held, self.held = self.held, OrderedDict()
        for data in held.values():  # one by one: each is a stanza for XEP-0198's count
            self.send(data)


class Csi(Module):
    name = "csi"
    xeps = (("0352", "1.0.0"),)
    options_spec = {
        # presence updates / chat states held per inactive session; beyond, all are flushed
        "max_queue": (int, 100),
    }

    @classmethod
    def check_options(cls, options) -> None:
        from ..config import ConfigError

        if options["max_queue"] < 1:
            raise ConfigError("modules.csi.max_queue", "must be >= 1")

    def setup(self) -> None:
        self.limit = max(1, self.options["max_queue"])
        h = self.server.hooks
        h.stream_features.append(f"<csi xmlns='{NS_CSI}'/>".encode())
        h.nonza[f"{{{NS_CSI}}}active"] = self._active
        h.nonza[f"{{{NS_CSI}}}inactive"] = self._inactive

    def _filter(self, session, create: bool) -> _Filter | None:
        f = session.__dict__.get("send_bytes")
        if isinstance(f, _Filter):
            return f
        if not create:
            return None
        f = _Filter(session.send_bytes, self.limit)
        session.send_bytes = f  # instance attribute: shadows the class method for this session only
        return f

    def _inactive(self, session, el: Element) -> None:
        self._filter(session, True).inactive = True

    def _active(self, session, el: Element) -> None:
        f = self._filter(session, False)
        if f is not None:
            f.inactive = False
            f.flush()

    def is_inactive(self, session) -> bool:
        f = self._filter(session, False)
        return f is not None and f.inactive
