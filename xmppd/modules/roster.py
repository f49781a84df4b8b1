"""Rosters and presence subscriptions (RFC 6121 §2, §3), roster versioning (XEP-0237).

Spec references:
  RFC 6121 §2.1.3  roster get; §2.1.6 roster push to *interested* resources
                   (those that asked for the roster)
  RFC 6121 §2.3.3  roster set errors; §2.5.2/§2.5.3 removal cancels subscriptions
  RFC 6121 §3      subscription requests, approvals, cancellations; server
                   processing of outbound and inbound subscription stanzas
  RFC 6121 App. A  the subscription states and their transitions (here as data:
                   :data:`OUTBOUND` and :data:`INBOUND`)
  RFC 6121 §2.6 / XEP-0237  ``ver``: an empty result when the client's version
                   is current, else the full roster (the "full roster" variant)

Every account served here is local, so one subscription stanza runs the
user's *outbound* transition and then the contact's *inbound* transition in
the same process.  Each account's changes run under its own lock, taken one
at a time (never nested), so presence and roster changes of one account keep
their order.

Other modules use this one through ``server.roster`` (see :class:`Roster`):
``subscription``, ``subscribers``, ``contacts_to_probe``, ``pending_requests``,
``locks``.

Pre-approval (RFC 6121 §3.4) is not offered: an unsolicited ``subscribed``
is ignored, as §3.4 requires of servers without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import secrets
from dataclasses import dataclass
from typing import AsyncIterator
from xml.etree.ElementTree import Element, SubElement

from ..config import ConfigError
from ..errors import StanzaErrorCondition
from ..jid import JID, InvalidJID
from ..stanza import presence_bytes as _presence_bytes, synthetic_presence  # shared helpers (xmppd.stanza)
from ..storage.roster import (
    BOTH,
    DEFAULT_MAX_ROSTER_ITEMS,
    FROM,
    MAX_PENDING_STANZA_CHARS,
    NONE,
    TO,
    RosterFull,
    RosterItem,
    RosterStore,
)
from ..stream.c2s import iq_error
from ..xml.parser import Stanza
from ..xml.writer import serialize
from .base import Module

__all__ = ["RosterModule", "KeyedLocks", "SubState", "OUTBOUND", "INBOUND", "NS_ROSTER",
           "MAX_GROUPS_PER_ITEM", "MAX_GROUP_CHARS", "MAX_NAME_CHARS", "synthetic_presence"]

log = logging.getLogger("xmppd.modules.roster")

NS_ROSTER = "jabber:iq:roster"
NS_ROSTERVER = "urn:xmpp:features:rosterver"
_R = f"{{{NS_ROSTER}}}"
C = "{jabber:client}"

#: <group/> elements per roster item
MAX_GROUPS_PER_ITEM = 64
#: characters of one group name / of an item's name (RFC 6121 §2.3.3 lets the server limit both)
MAX_GROUP_CHARS = 1023
MAX_NAME_CHARS = 1023

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})


# ---------------------------------------------------------------- state machine (RFC 6121 App. A)
@dataclass(frozen=True, slots=True)
class SubState:
    """One side's view of a subscription: ``sub`` (none/to/from/both),
    ``out`` (our request pending: "Pending Out"), ``in_`` (their request
    pending: "Pending In")."""

    sub: str = NONE
    out: bool = False
    in_: bool = False


def _s(sub: str, out: bool = False, in_: bool = False) -> SubState:
    return SubState(sub, out, in_)


_ALL = [_s(NONE), _s(NONE, out=True), _s(NONE, in_=True), _s(NONE, True, True),
        _s(TO), _s(TO, in_=True), _s(FROM), _s(FROM, out=True), _s(BOTH)]

#: outbound (the user's server, user -> contact): state -> (new state, route?)
#: (RFC 6121 §3.1.2, §3.1.5, §3.2.2, §3.3.2; Appendix A.2-A.5 "outbound")
OUTBOUND: dict[str, dict[SubState, tuple[SubState, bool]]] = {
    "subscribe": {
        _s(NONE): (_s(NONE, out=True), True),
        _s(NONE, out=True): (_s(NONE, out=True), True),
        _s(NONE, in_=True): (_s(NONE, True, True), True),
        _s(NONE, True, True): (_s(NONE, True, True), True),
        _s(TO): (_s(TO), True),
        _s(TO, in_=True): (_s(TO, in_=True), True),
        _s(FROM): (_s(FROM, out=True), True),
        _s(FROM, out=True): (_s(FROM, out=True), True),
        _s(BOTH): (_s(BOTH), True),
    },
    # approving a pending request; without one there is nothing to approve (no pre-approval)
    "subscribed": {
        _s(NONE, in_=True): (_s(FROM), True),
        _s(NONE, True, True): (_s(FROM, out=True), True),
        _s(TO, in_=True): (_s(BOTH), True),
        **{st: (st, False) for st in (_s(NONE), _s(NONE, out=True), _s(TO), _s(FROM),
                                      _s(FROM, out=True), _s(BOTH))},
    },
    # the user stops (or stops asking for) its subscription to the contact
    "unsubscribe": {
        _s(NONE): (_s(NONE), True),
        _s(NONE, out=True): (_s(NONE), True),
        _s(NONE, in_=True): (_s(NONE, in_=True), True),
        _s(NONE, True, True): (_s(NONE, in_=True), True),
        _s(TO): (_s(NONE), True),
        _s(TO, in_=True): (_s(NONE, in_=True), True),
        _s(FROM): (_s(FROM), True),
        _s(FROM, out=True): (_s(FROM), True),
        _s(BOTH): (_s(FROM), True),
    },
    # the user cancels (or denies) the contact's subscription to the user
    "unsubscribed": {
        _s(NONE): (_s(NONE), True),
        _s(NONE, out=True): (_s(NONE, out=True), True),
        _s(NONE, in_=True): (_s(NONE), True),
        _s(NONE, True, True): (_s(NONE, out=True), True),
        _s(TO): (_s(TO), True),
        _s(TO, in_=True): (_s(TO), True),
        _s(FROM): (_s(NONE), True),
        _s(FROM, out=True): (_s(NONE, out=True), True),
        _s(BOTH): (_s(TO), True),
    },
}

#: inbound (the contact's server, from the user): state -> (new state, deliver?, auto-reply)
#: (RFC 6121 §3.1.3, §3.1.6, §3.2.3, §3.3.3; Appendix A.2-A.5 "inbound")
INBOUND: dict[str, dict[SubState, tuple[SubState, bool, str | None]]] = {
    "subscribe": {
        _s(NONE): (_s(NONE, in_=True), True, None),
        _s(NONE, out=True): (_s(NONE, True, True), True, None),
        _s(NONE, in_=True): (_s(NONE, in_=True), False, None),
        _s(NONE, True, True): (_s(NONE, True, True), False, None),
        _s(TO): (_s(TO, in_=True), True, None),
        _s(TO, in_=True): (_s(TO, in_=True), False, None),
        # already subscribed: the server answers for the contact (§3.1.3)
        _s(FROM): (_s(FROM), False, "subscribed"),
        _s(FROM, out=True): (_s(FROM, out=True), False, "subscribed"),
        _s(BOTH): (_s(BOTH), False, "subscribed"),
    },
    "subscribed": {
        _s(NONE, out=True): (_s(TO), True, None),
        _s(NONE, True, True): (_s(TO, in_=True), True, None),
        _s(FROM, out=True): (_s(BOTH), True, None),
        **{st: (st, False, None) for st in (_s(NONE), _s(NONE, in_=True), _s(TO), _s(TO, in_=True),
                                            _s(FROM), _s(BOTH))},
    },
    "unsubscribe": {
        _s(NONE, in_=True): (_s(NONE), True, None),
        _s(NONE, True, True): (_s(NONE, out=True), True, None),
        _s(TO, in_=True): (_s(TO), True, None),
        _s(FROM): (_s(NONE), True, None),
        _s(FROM, out=True): (_s(NONE, out=True), True, None),
        _s(BOTH): (_s(TO), True, None),
        **{st: (st, False, None) for st in (_s(NONE), _s(NONE, out=True), _s(TO))},
    },
    "unsubscribed": {
        _s(NONE, out=True): (_s(NONE), True, None),
        _s(NONE, True, True): (_s(NONE, in_=True), True, None),
        _s(TO): (_s(NONE), True, None),
        _s(TO, in_=True): (_s(NONE, in_=True), True, None),
        _s(FROM, out=True): (_s(FROM), True, None),
        _s(BOTH): (_s(FROM), True, None),
        **{st: (st, False, None) for st in (_s(NONE), _s(NONE, in_=True), _s(FROM))},
    },
}

for _table in (*OUTBOUND.values(), *INBOUND.values()):  # every state has a transition
    assert set(_table) == set(_ALL), _table


# ---------------------------------------------------------------- helpers
class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it
    (so the table is bounded by the operations in flight)."""

    def __init__(self) -> None:
        self._locks: dict[object, list] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, key: object) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


def _item_element(parent: Element, item: RosterItem | None, contact: str) -> Element:
    el = SubElement(parent, f"{_R}item", {"jid": contact})
    if item is None:
        el.set("subscription", "remove")
        return el
    if item.name:
        el.set("name", item.name)
    el.set("subscription", item.subscription)
    if item.ask:
        el.set("ask", "subscribe")
    for g in item.groups:
        SubElement(el, f"{_R}group").text = g
    return el


def _result(req: Element) -> Element:
    return Element(f"{C}iq", {"type": "result"})


class RosterModule(Module):
    """``jabber:iq:roster`` plus the subscription state machine; ``server.roster``."""

    name = "roster"
    xeps = (("0237", "1.3 (full-roster variant)"),)
    features: tuple[str, ...] = ()  # roster versioning is a stream feature, not disco
    options_spec = {"max_roster_items": (int, DEFAULT_MAX_ROSTER_ITEMS)}

    def __init__(self, server, options=None) -> None:
        super().__init__(server, options)
        limit = self.options["max_roster_items"]
        if limit < 1:
            raise ConfigError("modules.roster.max_roster_items", "must be at least 1")
        self.store = RosterStore(server.db_engine, max_items=limit)
        self.locks = KeyedLocks()
        import weakref

        #: sessions that asked for the roster: they get roster pushes (RFC 6121 §2.1.6)
        self._interested: "weakref.WeakSet" = weakref.WeakSet()

    def setup(self) -> None:
        h = self.server.hooks
        h.iq(NS_ROSTER, get=self.handle_get, set=self.handle_set, account=True)
        h.on("presence_out", self.presence_out)
        h.on("session_closed", self._interested.discard)
        features = getattr(h, "stream_features", None)
        if features is not None:  # XEP-0237 §2: advertised next to <bind/>
            features.append(f"<ver xmlns='{NS_ROSTERVER}'/>".encode())
        self.server.roster = self

    # ------------------------------------------------------------ API for other modules
    async def subscription(self, owner_bare: JID, contact_bare: JID) -> str:
        """``none`` / ``to`` / ``from`` / ``both`` of ``contact_bare`` in ``owner_bare``'s roster."""
        item = await self.store.item(owner_bare.local, owner_bare.domain, str(contact_bare.bare))
        return item.subscription if item is not None else NONE

    async def subscribers(self, owner_bare: JID) -> list[JID]:
        """Contacts that receive ``owner_bare``'s presence (subscription from/both)."""
        return self._jids(await self.store.contacts(owner_bare.local, owner_bare.domain, (FROM, BOTH)))

    async def contacts_to_probe(self, owner_bare: JID) -> list[JID]:
        """Contacts whose presence ``owner_bare`` receives (subscription to/both)."""
        return self._jids(await self.store.contacts(owner_bare.local, owner_bare.domain, (TO, BOTH)))

    async def pending_requests(self, owner_bare: JID) -> list[bytes]:
        """Stored inbound subscription requests, to re-deliver at login (RFC 6121 §3.1.3)."""
        return [xml.encode() for _, xml in await self.store.pending(owner_bare.local, owner_bare.domain)]

    @staticmethod
    def _jids(values: list[str]) -> list[JID]:
        out = []
        for v in values:
            try:
                out.append(JID.parse(v))
            except InvalidJID:  # stored before a PRECIS change; skip rather than fail the broadcast
                log.warning("unparsable roster contact %r skipped", v)
        return out

    # ------------------------------------------------------------ roster get / set
    async def handle_get(self, session, req: Element) -> Element:
        bare = session.jid.bare
        self._interested.add(session)
        ver = req[0].get("ver")
        version, items = await self.store.items(bare.local, bare.domain)
        if ver is not None and ver == str(version):
            return _result(req)  # XEP-0237 §3: up to date, nothing to send
        reply = _result(req)
        q = SubElement(reply, f"{_R}query", {"ver": str(version)})
        for item in items:
            _item_element(q, item, item.contact)
        return reply

    async def handle_set(self, session, req: Element) -> Element | None:
        q = req[0]
        bad = StanzaErrorCondition.BAD_REQUEST
        if q.tag != f"{_R}query":
            return iq_error(req, bad, "expected <query xmlns='jabber:iq:roster'/>")
        if len(q) != 1 or q[0].tag != f"{_R}item":
            return iq_error(req, bad, "a roster set carries exactly one <item/> (RFC 6121 §2.3.3)")
        el = q[0]
        raw_jid = el.get("jid")
        if not raw_jid:
            return iq_error(req, bad, "the <item/> has no 'jid' attribute")
        try:
            contact = JID.parse(raw_jid)
        except InvalidJID as exc:
            return iq_error(req, StanzaErrorCondition.JID_MALFORMED, f"item jid {raw_jid!r}: {exc}")
        if contact.resource is not None:
            return iq_error(req, StanzaErrorCondition.JID_MALFORMED,
                            "a roster item's jid is a bare JID (no resource)")
        owner = session.jid.bare
        if el.get("subscription") == "remove":
            return await self._remove(session, req, owner, contact)
        name = el.get("name") or None
        if name is not None and len(name) > MAX_NAME_CHARS:
            return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE,
                            f"the item name is longer than {MAX_NAME_CHARS} characters")
        groups: list[str] = []
        for g in el:
            if g.tag != f"{_R}group":
                continue
            text = g.text or ""
            if not text.strip():
                return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE, "a <group/> is empty")
            if len(text) > MAX_GROUP_CHARS:
                return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE,
                                f"a group name is longer than {MAX_GROUP_CHARS} characters")
            if text in groups:
                return iq_error(req, bad, f"group {text!r} appears twice")
            groups.append(text)
        if len(groups) > MAX_GROUPS_PER_ITEM:
            return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE,
                            f"more than {MAX_GROUPS_PER_ITEM} groups in one item")
        key = str(contact)
        async with self.locks(owner):
            old = await self.store.item(owner.local, owner.domain, key)
            # 'subscription' other than remove and 'ask' are the server's business: ignored (§2.1.2)
            new = (old or RosterItem(key)).evolve(name=name, groups=tuple(groups))
            try:
                version = await self.store.put(owner.local, owner.domain, new)
            except RosterFull as exc:
                return iq_error(req, StanzaErrorCondition.NOT_ALLOWED,
                                f"roster full: {exc} (max_roster_items)")
            self._reply(session, req)
            self.push(owner, key, new, version)
        return None

    async def _remove(self, session, req: Element, owner: JID, contact: JID) -> Element | None:
        key = str(contact)
        async with self.locks(owner):
            item = await self.store.item(owner.local, owner.domain, key)
            pending_in = await self.store.has_pending(owner.local, owner.domain, key)
            if item is None and not pending_in:
                return iq_error(req, StanzaErrorCondition.ITEM_NOT_FOUND, f"{key} is not in the roster")
            if pending_in:
                await self.store.remove_pending(owner.local, owner.domain, key)
            version = await self.store.remove(owner.local, owner.domain, key) if item is not None else None
            self._reply(session, req)
            if version is not None:
                self.push(owner, key, None, version)
        # RFC 6121 §2.5.3: cancel both directions on the contact's side
        if item is not None and (item.has_to or item.ask):
            await self._inbound(owner, contact, "unsubscribe", None)
        if (item is not None and item.has_from) or pending_in:
            await self._inbound(owner, contact, "unsubscribed", None)
            if item is not None and item.has_from:
                self._unavailable_of(owner, contact)
        return None

    def _reply(self, session, req: Element) -> None:
        reply = _result(req)
        if req.get("id") is not None:
            reply.set("id", req.get("id"))
        reply.set("to", str(session.jid))
        session.send_bytes(serialize(reply))

    def push(self, owner: JID, contact: str, item: RosterItem | None, version: int) -> None:
        """Roster push (RFC 6121 §2.1.6) to every interested resource of ``owner``."""
        for s in self.server.sessions.resources(owner):
            if s not in self._interested:
                continue
            iq = Element(f"{C}iq", {"type": "set", "id": "push-" + secrets.token_hex(6), "to": str(s.jid)})
            _item_element(SubElement(iq, f"{_R}query", {"ver": str(version)}), item, contact)
            s.send_bytes(serialize(iq))

    # ------------------------------------------------------------ subscription stanzas
    def presence_out(self, session, stanza: Stanza, to: JID | None, typ: str | None) -> bool:
        if typ not in SUBSCRIPTION_TYPES:
            return False
        if to is None:
            return True  # a subscription stanza needs a contact: nothing to do
        self.server.spawn(self._outbound(session, stanza, to.bare, typ))
        return True

    def _state(self, item: RosterItem | None, pending_in: bool) -> SubState:
        if item is None:
            return SubState(NONE, False, pending_in)
        return SubState(item.subscription, item.ask, pending_in)

    async def _save(self, owner: JID, contact: str, item: RosterItem | None, old: SubState,
                    new: SubState, stored: str | None = None) -> None:
        """Write ``new`` (roster item + pending-in row) and push a changed item."""
        if new.in_ != old.in_:
            if new.in_:
                await self.store.add_pending(owner.local, owner.domain, contact, stored or "",
                                             _dt.datetime.now(_dt.timezone.utc))
            else:
                await self.store.remove_pending(owner.local, owner.domain, contact)
        if (new.sub, new.out) == (old.sub, old.out):
            return
        base = item or RosterItem(contact)
        updated = base.evolve(subscription=new.sub, ask=new.out)
        version = await self.store.put(owner.local, owner.domain, updated)
        self.push(owner, contact, updated, version)

    async def _outbound(self, session, stanza: Stanza, contact: JID, typ: str) -> None:
        user = session.jid.bare
        key = str(contact)
        async with self.locks(user):
            item = await self.store.item(user.local, user.domain, key)
            pending_in = await self.store.has_pending(user.local, user.domain, key)
            old = self._state(item, pending_in)
            new, route = OUTBOUND[typ][old]
            try:
                await self._save(user, key, item, old, new)
            except RosterFull as exc:
                self.server.router.bounce(session, stanza.element, StanzaErrorCondition.NOT_ALLOWED,
                                          f"roster full: {exc} (max_roster_items)", from_=key)
                return
        if route:
            data = self.server.router._bytes_for(stanza, stanza.element, {"from": str(user), "to": key})
            await self._inbound(user, contact, typ, data)
        if typ == "subscribed" and route:
            self._presence_of(user, contact)  # §3.1.5: the user's presence to the new subscriber
        elif typ == "unsubscribed" and old.sub in (FROM, BOTH):
            self._unavailable_of(user, contact)  # §3.2.2

    async def _inbound(self, user: JID, contact: JID, typ: str, data: bytes | None) -> None:
        """``contact``'s server processes ``typ`` from ``user`` (both local)."""
        if contact.domain not in self.server.router.hosts or contact.local is None:
            return
        if data is None:
            data = _presence_bytes(user, contact, typ)
        probe = synthetic_presence({"from": str(user), "to": str(contact), "type": typ})
        if self.server.router._filtered_in(user, contact, probe):
            return  # e.g. the contact blocks the user: no answer at all (XEP-0191 §3.4)
        key = str(user)
        reply = None
        async with self.locks(contact):
            item = await self.store.item(contact.local, contact.domain, key)
            pending_in = await self.store.has_pending(contact.local, contact.domain, key)
            old = self._state(item, pending_in)
            new, deliver, reply = INBOUND[typ][old]
            stored = None
            if typ == "subscribe":
                stored = data.decode("utf-8", "replace")
                if len(stored) > MAX_PENDING_STANZA_CHARS:
                    stored = _presence_bytes(user, contact, "subscribe").decode()
            try:
                await self._save(contact, key, item, old, new, stored)
            except RosterFull:
                log.info("%s: roster full, %s from %s not applied", contact, typ, user)
                return
            if deliver:
                for s in self.server.sessions.resources(contact):
                    if s.available:
                        s.send_bytes(data)
            if typ == "unsubscribe" and old.sub in (FROM, BOTH):
                self._unavailable_of(contact, user)  # §3.3.3
        if reply == "subscribed":
            await self._inbound(contact, user, "subscribed", None)
            self._presence_of(contact, user)

    # ------------------------------------------------------------ presence side effects
    def _presence_of(self, owner: JID, to: JID) -> None:
        """The current presence of each of ``owner``'s available resources, to ``to``'s."""
        router = self.server.router
        targets = [t for t in self.server.sessions.resources(to) if t.available]
        if not targets:
            return
        for s in self.server.sessions.resources(owner):
            last = getattr(s, "last_presence", None)
            if not s.available or last is None or router._filtered_in(s.jid, to, last):
                continue
            data = router._bytes_for(last, last.element, {"from": str(s.jid), "to": str(to)})
            for t in targets:
                t.send_bytes(data)

    def _unavailable_of(self, owner: JID, to: JID) -> None:
        targets = [t for t in self.server.sessions.resources(to) if t.available]
        for s in self.server.sessions.resources(owner):
            if s.available:
                data = _presence_bytes(s.jid, to, "unavailable")
                for t in targets:
                    t.send_bytes(data)
