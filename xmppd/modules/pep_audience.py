"""Who sees a PEP node: access models (XEP-0060 §4.5) and notifications (XEP-0163 §4).

Part of :mod:`xmppd.modules.pep`: whether a bare JID may read a node
(open / presence / roster / whitelist, never across a block), the audience
of a notification (the owner's and its presence subscribers' resources whose
caps ask for ``<node>+notify``), building and sending ``<event/>`` messages,
and the last published item for a resource that newly shows ``+notify``
(XEP-0163 §4.3.4).
"""

from __future__ import annotations

import uuid
from xml.etree.ElementTree import Element

from ..errors import StanzaErrorCondition as E
from ..jid import JID
from ..storage.pubsub import Item, Node, PubsubStore
from ..xml.parser import Stanza
from ._im import attr, delay_element
from .pep_forms import NS_EVENT, PepError

__all__ = ["Audience"]

MESSAGE = "{jabber:client}message"


class Audience:
    """Access checks and notifications for the PEP nodes in ``store``."""

    def __init__(self, server, store: PubsubStore) -> None:
        self.server = server
        self.store = store
        #: the blocking module (XEP-0191), found at start; None without it
        self.blocking = None

    # ------------------------------------------------------------ access (XEP-0060 §4.5)
    def blocked(self, owner: JID, other: JID) -> bool:
        b = self.blocking
        return b is not None and (b.blocks(owner, other) or b.blocks(other, owner))

    async def allowed(self, node: Node, owner: JID, who: JID, *, subscribed: bool | None = None) -> str | None:
        """None if ``who`` (bare) may read ``node``, else the refusal's pubsub#errors name."""
        if who == owner:
            return None
        model = node.config.access_model
        if model == "open":
            return None
        roster = getattr(self.server, "roster", None)
        if model == "presence":
            if subscribed is None:
                subscribed = roster is not None and \
                    await roster.subscription(owner, who) in ("from", "both")
            return None if subscribed else "presence-subscription-required"
        if model == "roster":
            if roster is not None:
                item = await roster.store.item(owner.local or "", owner.domain, str(who))
                if item is not None and set(item.groups) & set(node.config.roster_groups_allowed):
                    return None
            return "not-in-roster-group"
        if model == "whitelist":
            if await self.store.affiliation(node.id, str(who)) in ("member", "publisher", "owner"):
                return None
            return "closed-node"
        return "closed-node"  # pragma: no cover - unknown models are never stored

    async def check_access(self, node: Node, owner: JID, who: JID) -> None:
        if who != owner and self.blocked(owner, who):
            raise PepError(E.SERVICE_UNAVAILABLE, f"{owner} is unavailable")
        refusal = await self.allowed(node, owner, who)
        if refusal == "presence-subscription-required":
            raise PepError(E.NOT_AUTHORIZED, f"node {node.name} is for {owner}'s presence "
                           "subscribers", refusal)
        if refusal == "not-in-roster-group":
            raise PepError(E.NOT_AUTHORIZED, f"node {node.name} is for some of {owner}'s roster "
                           "groups", refusal)
        if refusal is not None:
            raise PepError(E.NOT_ALLOWED, f"node {node.name} is restricted to its whitelist", refusal)


    # ------------------------------------------------------------ notifications (XEP-0163 §4)
    def interested(self, jid: JID, feature: str) -> list:
        caps = getattr(self.server, "caps", None)
        if caps is None:
            return []
        return [s for s in self.server.sessions.resources(jid)
                if s.available and s.priority >= 0 and caps.wants(s, feature)]

    async def audience(self, owner: JID, node: Node) -> list:
        """Sessions a notification of ``node`` goes to."""
        if not node.config.deliver_notifications:
            return []
        feature = node.name + "+notify"
        targets = list(self.interested(owner, feature))
        roster = getattr(self.server, "roster", None)
        if roster is None:
            return targets
        for contact in await roster.subscribers(owner):
            if contact.domain not in self.server.router.hosts:
                continue  # no s2s
            sessions = self.interested(contact, feature)
            if not sessions or self.blocked(owner, contact):
                continue
            if await self.allowed(node, owner, contact, subscribed=True) is None:
                targets.extend(sessions)
        return targets

    def send_event(self, owner: JID, session, inner: bytes, delay: bytes = b"") -> None:
        attrs = {"from": str(owner), "to": str(session.jid), "type": "headline",
                 "id": uuid.uuid4().hex}
        router = self.server.router
        if router._filtered_in(owner, session.jid, Stanza(Element(MESSAGE, attrs), b"", 0, False, 0)):
            return
        head = "<message " + " ".join(f"{k}='{attr(v)}'" for k, v in attrs.items()) + ">"
        session.send_bytes(head.encode() + f"<event xmlns='{NS_EVENT}'>".encode() + inner
                           + b"</event>" + delay + b"</message>")

    async def notify(self, owner: JID, node: Node, inner: bytes) -> None:
        for s in await self.audience(owner, node):
            self.send_event(owner, s, inner)

    def items_event(self, node: Node, item: Item) -> bytes:
        head = f"<items node='{attr(node.name)}'><item id='{attr(item.item_id)}'".encode()
        if not node.config.deliver_payloads:
            return head + b"/></items>"
        return head + b">" + item.payload + b"</item></items>"

    async def notify_items(self, owner: JID, node: Node, item: Item) -> None:
        await self.notify(owner, node, self.items_event(node, item))

    # ---- last published item for a newly interested resource (XEP-0163 §4.3.4)
    def caps_changed(self, session, features: frozenset[str], previous: frozenset[str]) -> None:
        wanted = sorted(f[:-7] for f in features - previous if f.endswith("+notify") and len(f) > 7)
        if wanted and session.available and session.priority >= 0:
            self.server.spawn(self.send_last(session, wanted))

    async def send_last(self, session, names: list[str]) -> None:
        user = session.jid.bare
        roster = getattr(self.server, "roster", None)
        owners = [user]
        if roster is not None:
            owners += [c for c in await roster.contacts_to_probe(user)
                       if c.domain in self.server.router.hosts and c.local and c != user]
        nodes = await self.store.find_nodes([(o.local or "", o.domain) for o in owners], names)
        chosen = []
        for node in nodes:
            cfg = node.config
            if cfg.send_last_published_item != "on_sub_and_presence" or not cfg.deliver_notifications:
                continue
            owner = JID(node.user, node.domain)
            if owner != user:
                if self.blocked(owner, user):
                    continue
                # contacts_to_probe: the user is subscribed to the owner's presence
                if await self.allowed(node, owner, user, subscribed=True) is not None:
                    continue
            chosen.append((owner, node))
        if not chosen:
            return
        last = await self.store.last_items([n.id for _, n in chosen])
        for owner, node in chosen:
            item = last.get(node.id)
            if item is None or not session.available:
                continue
            self.send_event(owner, session, self.items_event(node, item),
                             delay_element(str(owner), item.updated_at))
