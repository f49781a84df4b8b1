"""Registry of bound sessions: by full JID and by bare JID.

Conflict policy (RFC 6120 §7.7.2.2): binding a full JID that is already
bound replaces the old session; the caller closes the old one with a
``<conflict/>`` stream error.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from .jid import JID

__all__ = ["Session", "SessionRegistry", "Delivery", "AbsentSender", "AckTracker"]


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


class AckTracker(Protocol):
    """What the router asks the stream-management module (XEP-0198), when loaded."""

    def keeps(self, session: Session) -> bool:
        """Stanzas sent to ``session`` now are kept until acknowledged (also while detached)."""

    def holds(self, session: Session, data: bytes, delivery: "Delivery") -> bool:
        """``data`` just sent to ``session`` is kept, as part of ``delivery``."""


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


class Delivery:
    """One message handed to one or more of an account's sessions.

    RFC 6121 §8.5.2 wants each resource to get a message at most once, and the
    offline store to get it only when no available resource took it.  Under
    XEP-0198 a session keeps what it was sent until its client acknowledges it;
    if the session ends first, the message must be routed again — unless
    another resource has it.  So every routed message carries this record:

    ``holding``  sessions that keep it unacknowledged (live or detached);
    ``taken``    some resource surely has it: written to a stream without stream
                 management, or acknowledged.

    A session that ends re-routes the message only when it was the last holder
    and nobody took it: exactly once, whatever the order in which sessions end.
    """

    __slots__ = ("holding", "taken")

    def __init__(self) -> None:
        self.holding = 0
        self.taken = False


class AbsentSender:
    """Stands for the sender of a message being re-routed (``Router.redeliver``): it is
    not on this stream, so errors about the re-routing go nowhere."""

    __slots__ = ("jid",)
    available = False
    writable = False
    priority = 0

    def __init__(self, jid: JID) -> None:
        self.jid = jid

    def send_bytes(self, data: bytes) -> None:  # errors about a redelivery have nobody to go to
        pass

    def close_stream(self, condition, text: str = "") -> None:
        pass
