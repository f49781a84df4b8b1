"""Blocking Command (XEP-0191 1.3).

Spec references:
  XEP-0191 §3.2  blocklist get; the requesting resource becomes *interested*
                 and gets block/unblock pushes
  XEP-0191 §3.3  block: empty <block/> → bad-request; unavailable presence to
                 the blocked JID from each available resource of the user
                 (if it was receiving the user's presence); push
  XEP-0191 §3.4  unblock (one, several, or all with an empty <unblock/>); the
                 user's presence goes again to unblocked subscribers; push
  XEP-0191 §3.5  inbound from a blocked JID: presence dropped silently,
                 message → service-unavailable, iq get/set → service-unavailable,
                 other iqs dropped; outbound to a blocked JID: not routed,
                 <not-acceptable/> + <blocked xmlns='urn:xmpp:blocking:errors'/>
  XEP-0191 §4 / XEP-0016 §2.1  JID matching: full, bare, domain/resource, domain

Enforcement runs on the router's hot path (``stanza_in``/``stanza_out`` are
synchronous), so every blocklist is held in memory: loaded at start, updated
by this module on every change (each bounded by ``max_blocklist``).  The
database stays the record; a second node would need a bus message to refresh
(not built yet: one node per database for now).
"""

from __future__ import annotations

import secrets
import weakref
from xml.etree.ElementTree import Element, SubElement

from ..config import ConfigError
from ..errors import StanzaErrorCondition
from ..jid import JID, InvalidJID
from ..storage.roster import DEFAULT_MAX_BLOCKLIST, BlocklistFull, BlocklistStore
from ..stream.c2s import iq_error
from ..xml.parser import Stanza
from ..xml.writer import serialize
from .base import Module
from .roster import _presence_bytes

__all__ = ["Blocking", "NS_BLOCKING", "NS_BLOCKING_ERRORS", "jid_forms"]

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
_B = f"{{{NS_BLOCKING}}}"
C = "{jabber:client}"
MESSAGE, PRESENCE, IQ = f"{C}message", f"{C}presence", f"{C}iq"


def jid_forms(jid: JID) -> tuple[str, ...]:
    """The blocklist entries that match ``jid`` (XEP-0016 §2.1 order)."""
    if jid.resource is None:
        return (str(jid), jid.domain) if jid.local is not None else (jid.domain,)
    forms = [str(jid)]
    if jid.local is not None:
        forms.append(str(jid.bare))
    forms += [f"{jid.domain}/{jid.resource}", jid.domain]
    return tuple(forms)


class Blocking(Module):
    name = "blocking"
    xeps = (("0191", "1.3"),)
    features = (NS_BLOCKING,)
    options_spec = {"max_blocklist": (int, DEFAULT_MAX_BLOCKLIST)}

    def __init__(self, server, options=None) -> None:
        super().__init__(server, options)
        limit = self.options["max_blocklist"]
        if limit < 1:
            raise ConfigError("modules.blocking.max_blocklist", "must be at least 1")
        self.store = BlocklistStore(server.db_engine, max_items=limit)
        #: owner bare JID -> blocked entries (normalised JID strings)
        self._lists: dict[JID, frozenset[str]] = {}
        self._interested: "weakref.WeakSet" = weakref.WeakSet()

    def setup(self) -> None:
        h = self.server.hooks
        h.iq(NS_BLOCKING, get=self.handle_get, set=self.handle_set, account=True)
        h.on("stanza_in", self.stanza_in, priority=5)
        h.on("stanza_out", self.stanza_out, priority=5)
        h.on("session_closed", self._interested.discard)

    async def start(self) -> None:
        lists = await self.store.all()
        self._lists = {JID(user, domain): frozenset(jids) for (user, domain), jids in lists.items()}

    # ------------------------------------------------------------ matching
    def blocks(self, owner: JID, jid: JID) -> bool:
        """Does ``owner``'s blocklist match ``jid``?"""
        entries = self._lists.get(owner.bare)
        if not entries:
            return False
        return any(f in entries for f in jid_forms(jid))

    # ------------------------------------------------------------ enforcement
    def stanza_in(self, sender: JID | None, to: JID, stanza: Stanza) -> bool:
        if sender is None:
            return False
        el = stanza.element
        tag = el.tag
        if self.blocks(to, sender):
            typ = el.get("type")
            if tag == MESSAGE and typ != "error" or tag == IQ and typ in ("get", "set"):
                # §3.5: look unavailable; never reveal the block
                session = self.server.sessions.get(sender)
                if session is not None:
                    session.send_bytes(serialize(iq_error(
                        el, StanzaErrorCondition.SERVICE_UNAVAILABLE, "the recipient is unavailable",
                        from_=str(to))))
            return True
        # presence the sender itself must not send (broadcasts, probe answers)
        return tag == PRESENCE and self.blocks(sender, to)

    def stanza_out(self, session, stanza: Stanza, to: JID | None) -> bool:
        if to is None or not self.blocks(session.jid, to):
            return False
        el = stanza.element
        if el.get("type") != "error":
            reply = iq_error(el, StanzaErrorCondition.NOT_ACCEPTABLE,
                             f"you have blocked {to}: unblock it to communicate", from_=str(to))
            reply.find(f"{C}error").append(Element(f"{{{NS_BLOCKING_ERRORS}}}blocked"))
            session.send_bytes(serialize(reply))
        return True

    # ------------------------------------------------------------ protocol
    def handle_get(self, session, req: Element) -> Element:
        if req[0].tag != f"{_B}blocklist":
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "expected <blocklist/>")
        self._interested.add(session)
        reply = Element(f"{C}iq", {"type": "result"})
        q = SubElement(reply, f"{_B}blocklist")
        for jid in sorted(self._lists.get(session.jid.bare, ())):
            SubElement(q, f"{_B}item", {"jid": jid})
        return reply

    async def handle_set(self, session, req: Element) -> Element | None:
        q = req[0]
        if q.tag not in (f"{_B}block", f"{_B}unblock"):
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "expected <block/> or <unblock/>")
        jids: list[JID] = []
        for item in q:
            if item.tag != f"{_B}item":
                continue
            raw = item.get("jid")
            if not raw:
                return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "an <item/> has no 'jid'")
            try:
                jids.append(JID.parse(raw))
            except InvalidJID as exc:
                return iq_error(req, StanzaErrorCondition.JID_MALFORMED, f"item jid {raw!r}: {exc}")
        owner = session.jid.bare
        if q.tag == f"{_B}block":
            if not jids:
                return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "<block/> needs at least one <item/>")
            try:
                added = await self.store.add(owner.local, owner.domain, [str(j) for j in jids])
            except BlocklistFull as exc:
                return iq_error(req, StanzaErrorCondition.NOT_ALLOWED, f"blocklist full: {exc} (max_blocklist)")
            await self._went_unavailable(owner, [JID.parse(j) for j in added])
            self._lists[owner] = self._lists.get(owner, frozenset()) | frozenset(added)
            self._reply(session, req)
            self._push(owner, "block", [str(j) for j in jids])
            return None
        removed = await self.store.remove(owner.local, owner.domain, [str(j) for j in jids] if jids else None)
        remaining = self._lists.get(owner, frozenset()) - frozenset(removed)
        if remaining:
            self._lists[owner] = remaining
        else:
            self._lists.pop(owner, None)
        self._reply(session, req)
        self._push(owner, "unblock", [str(j) for j in jids])
        await self._available_again(owner, [JID.parse(j) for j in removed])
        return None

    def _reply(self, session, req: Element) -> None:
        reply = Element(f"{C}iq", {"type": "result", "to": str(session.jid)})
        if req.get("id") is not None:
            reply.set("id", req.get("id"))
        session.send_bytes(serialize(reply))

    def _push(self, owner: JID, kind: str, jids: list[str]) -> None:
        for s in self.server.sessions.resources(owner):
            if s not in self._interested:
                continue
            iq = Element(f"{C}iq", {"type": "set", "id": "block-" + secrets.token_hex(6), "to": str(s.jid)})
            el = SubElement(iq, f"{_B}{kind}")
            for j in jids:
                SubElement(el, f"{_B}item", {"jid": j})
            s.send_bytes(serialize(iq))

    # ------------------------------------------------------------ presence side effects
    @staticmethod
    def _matches(blocked: list[JID], jid: JID) -> bool:
        forms = set(jid_forms(jid))
        return any(str(b) in forms for b in blocked)

    async def _audience(self, owner: JID, jids: list[JID]) -> list[JID]:
        """Subscribers and directed-presence targets of ``owner`` matched by ``jids``."""
        roster = getattr(self.server, "roster", None)
        found: list[JID] = []
        if roster is not None:
            found += [c for c in await roster.subscribers(owner) if self._matches(jids, c)]
        for s in self.server.sessions.resources(owner):
            found += [t for t in getattr(s, "directed", ()) if self._matches(jids, t) and t not in found]
        return found

    def _deliver(self, to: JID, data: bytes) -> None:
        if to.resource is not None:
            target = self.server.sessions.get(to)
            targets = [target] if target is not None else []
        else:
            targets = [t for t in self.server.sessions.resources(to) if t.available]
        for t in targets:
            t.send_bytes(data)

    async def _went_unavailable(self, owner: JID, blocked: list[JID]) -> None:
        """XEP-0191 §3.3: the blocked contact sees the user go offline."""
        if not blocked:
            return
        for to in await self._audience(owner, blocked):
            for s in self.server.sessions.resources(owner):
                if s.available:
                    self._deliver(to, _presence_bytes(s.jid, to, "unavailable"))

    async def _available_again(self, owner: JID, unblocked: list[JID]) -> None:
        """XEP-0191 §3.4: unblocked subscribers get the user's current presence again."""
        if not unblocked:
            return
        router = self.server.router
        for to in await self._audience(owner, unblocked):
            for s in self.server.sessions.resources(owner):
                last = getattr(s, "last_presence", None)
                if s.available and last is not None and not router._filtered_in(s.jid, to, last):
                    self._deliver(to, router._bytes_for(last, last.element, {"from": str(s.jid), "to": str(to)}))
