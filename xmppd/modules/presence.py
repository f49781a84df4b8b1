"""Presence broadcast, probes and unavailable-on-close (RFC 6121 §4).

Spec references:
  RFC 6121 §4.2  initial presence: to the user's other resources and to every
                 contact with subscription from/both; probes to contacts with
                 to/both (answered here directly: every account is local)
  RFC 6121 §4.3  probe answers: the last presence of each available resource
                 (a contact with no available resource gets no answer, option
                 (2) of §4.3.2)
  RFC 6121 §4.4  subsequent presence: same audience as initial presence
  RFC 6121 §4.5  unavailable presence (also when the stream ends, §4.5.2): to
                 the same audience and to directed-presence targets
  RFC 6121 §3.1.3 unanswered subscription requests re-delivered when the
                 contact next sends initial presence

What stays in the router (``Router.broadcast_own``, ``session_ended``): the
user's own resources — the sending one included for available presence
(§4.2.2, §4.4.2) — and directed presence.  The account itself is never in the
roster audience here, even if it is in its own roster: its resources already
got the presence from the router, once.  This module adds the roster
audience through ``server.roster`` (the roster module); without it, presence
reaches only the user's own resources and directed targets.

The subscriber broadcast needs the roster (storage), so it runs as a task
under the account's lock (``server.roster.locks``): presence changes of one
account go out in the order they were sent.
"""

from __future__ import annotations

import weakref

from ..jid import JID
from ..stanza import presence_bytes, synthetic_presence
from ..xml.parser import Stanza
from .base import Module
from .roster import KeyedLocks

__all__ = ["PresenceModule"]


class PresenceModule(Module):
    name = "presence"
    xeps = ()

    def __init__(self, server, options=None) -> None:
        super().__init__(server, options)
        #: sessions whose available presence went to their subscribers
        self._announced: "weakref.WeakSet" = weakref.WeakSet()
        self._own_locks = KeyedLocks()

    def setup(self) -> None:
        h = self.server.hooks
        h.on("presence_out", self.presence_out)
        h.on("session_closed", self.session_closed)

    @property
    def roster(self):
        return getattr(self.server, "roster", None)

    def _lock(self, bare: JID):
        roster = self.roster
        return roster.locks(bare) if roster is not None else self._own_locks(bare)

    # ------------------------------------------------------------ client presence
    def presence_out(self, session, stanza: Stanza, to: JID | None, typ: str | None) -> bool:
        if to is None:
            if typ not in (None, "unavailable"):
                return False
            initial = typ is None and not session.available
            self.server.router.broadcast_own(session, stanza, typ)
            self.server.spawn(self._broadcast(session, stanza, typ, initial))
            return True
        if typ == "probe":
            # a client probe (RFC 6121 §4.3 lets servers answer it like their own)
            self.server.spawn(self._answer_probe(session, to.bare))
            return True
        return False

    async def _broadcast(self, session, stanza: Stanza, typ: str | None, initial: bool) -> None:
        roster = self.roster
        if roster is None:
            return
        router = self.server.router
        jid = session.jid
        async with self._lock(jid.bare):
            if typ is None:
                self._announced.add(session)
            else:
                self._announced.discard(session)
            for contact in await roster.subscribers(jid.bare):
                if contact == jid.bare:
                    continue  # the router already told the account's own resources
                targets = [t for t in self.server.sessions.resources(contact) if t.available]
                if not targets or router.filtered_in(jid, contact, stanza):
                    continue
                data = router.bytes_for(stanza, stanza.element, {"from": str(jid), "to": str(contact)})
                for t in targets:
                    t.send_bytes(data)
            if not initial:
                return
            # §4.2.2: probe the contacts whose presence the user receives
            for contact in await roster.contacts_to_probe(jid.bare):
                if contact != jid.bare:  # its own resources: the router sent those
                    self._send_presence_of(contact, session)
            # §3.1.3: requests that arrived while the user was away
            for data in await roster.pending_requests(jid.bare):
                session.send_bytes(data)

    def _send_presence_of(self, contact: JID, session) -> None:
        router = self.server.router
        for s in self.server.sessions.resources(contact):
            last = getattr(s, "last_presence", None)
            if not s.available or last is None or router.filtered_in(s.jid, session.jid, last):
                continue
            session.send_bytes(router.bytes_for(last, last.element,
                                                 {"from": str(s.jid), "to": str(session.jid)}))

    async def _answer_probe(self, session, contact: JID) -> None:
        roster = self.roster
        if roster is None or contact.domain not in self.server.router.hosts or contact.local is None:
            return
        if await roster.subscription(contact, session.jid.bare) in ("from", "both"):
            self._send_presence_of(contact, session)

    # ------------------------------------------------------------ end of session
    def session_closed(self, session) -> None:
        if session in self._announced:
            self._announced.discard(session)
            self.server.spawn(self._gone(session.jid))

    async def _gone(self, jid: JID) -> None:
        """§4.5.2: the stream ended without unavailable presence: say it for the client."""
        roster = self.roster
        if roster is None:
            return
        router = self.server.router
        async with self._lock(jid.bare):
            for contact in await roster.subscribers(jid.bare):
                if contact == jid.bare:
                    continue  # the router told the account's own resources (session_ended)
                targets = [t for t in self.server.sessions.resources(contact) if t.available]
                if not targets:
                    continue
                if router.filtered_in(jid, contact, synthetic_presence(
                        {"from": str(jid), "to": str(contact), "type": "unavailable"})):
                    continue
                data = presence_bytes(jid, contact, "unavailable")
                for t in targets:
                    t.send_bytes(data)
