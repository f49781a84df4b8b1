"""Registry of bound sessions: by full JID and by bare JID.

Conflict policy (RFC 6120 §7.7.2.2): binding a full JID that is already
bound replaces the old session; the caller closes the old one with a
``<conflict/>`` stream error.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from .jid import JID

__all__ = ["Session", "SessionRegistry"]


class Session(Protocol):
    """What the router needs from a bound client connection."""

    jid: JID  # full JID
    available: bool  # sent initial presence and not unavailable since
    priority: int
    #: what is sent now reaches the client: bound, transport up, stream not closing.
    #: False for a stream-management session waiting to be resumed (XEP-0198) — it
    #: still keeps what it is sent — and for one whose stream is being closed.
    writable: bool

    def send_bytes(self, data: bytes) -> None: ...

    def close_stream(self, condition, text: str = "") -> None: ...


class SessionRegistry:
    __slots__ = ("_full", "_bare")

    def __init__(self) -> None:
        self._full: dict[JID, Session] = {}
        self._bare: dict[JID, dict[str, Session]] = {}

    def __len__(self) -> int:
        return len(self._full)

    def add(self, session: Session) -> Session | None:
        """Register; returns the session it displaced, if any."""
        jid = session.jid
        old = self._full.get(jid)
        self._full[jid] = session
        self._bare.setdefault(jid.bare, {})[jid.resource or ""] = session
        return old if old is not session else None

    def remove(self, session: Session) -> bool:
        jid = session.jid
        if self._full.get(jid) is not session:
            return False  # already replaced by a newer session
        del self._full[jid]
        res = self._bare.get(jid.bare)
        if res is not None:
            res.pop(jid.resource or "", None)
            if not res:
                del self._bare[jid.bare]
        return True

    def get(self, full: JID) -> Session | None:
        return self._full.get(full)

    def resources(self, bare: JID) -> list[Session]:
        res = self._bare.get(bare)
        return list(res.values()) if res else []

    def has_bare(self, bare: JID) -> bool:
        return bare in self._bare

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._full.values()))
