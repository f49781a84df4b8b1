"""PEP node owner requests (XEP-0060 §8, the ``pubsub#owner`` namespace).

Part of :mod:`xmppd.modules.pep`: default configuration (§8.3), configure
(§8.2), delete (§8.4), purge (§8.5) and whitelist affiliations (§8.9) of the
account's own nodes.  Subscription management is not offered (PEP
subscriptions come from presence).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from ..errors import StanzaErrorCondition as E
from ..jid import JID, InvalidJID
from ..storage.pubsub import NodeConfig, TooManyMembers
from ._im import attr
from .pep_forms import (
    FORM_NODE_CONFIG,
    O,
    X,
    PepError,
    existing,
    guard,
    node_name,
    only_owner,
    owner_of,
    result,
    unsupported,
)

if TYPE_CHECKING:
    from .pep import Pep

__all__ = ["OwnerRequests"]


class OwnerRequests:
    """The ``pubsub#owner`` iq handlers of a :class:`~xmppd.modules.pep.Pep` module."""

    def __init__(self, pep: "Pep") -> None:
        self.pep = pep

    def owner_get(self, session, req: Element):
        return guard(req, self._owner_get(session, req))

    def owner_set(self, session, req: Element):
        return guard(req, self._owner_set(session, req))

    async def _owner_get(self, session, req: Element) -> Element:
        ps = req[0]
        if ps.tag != f"{O}pubsub" or len(ps) != 1:
            raise PepError(E.BAD_REQUEST, "expected <pubsub xmlns='...#owner'/> with one child")
        owner = owner_of(session, req)
        child = ps[0]
        if child.tag == f"{O}default":
            reply = result(req)
            d = SubElement(SubElement(reply, f"{O}pubsub"), f"{O}default")
            d.append(self.pep.forms.config_form(NodeConfig()))
            return reply
        if child.tag == f"{O}configure":
            name = node_name(child)
            only_owner(session, owner, "configure")
            node = await existing(self.pep.store, owner, name)
            reply = result(req)
            c = SubElement(SubElement(reply, f"{O}pubsub"), f"{O}configure", {"node": name})
            c.append(self.pep.forms.config_form(node.config))
            return reply
        if child.tag == f"{O}affiliations":
            name = node_name(child)
            only_owner(session, owner, "list the affiliations of")
            node = await existing(self.pep.store, owner, name)
            reply = result(req)
            a = SubElement(SubElement(reply, f"{O}pubsub"), f"{O}affiliations", {"node": name})
            SubElement(a, f"{O}affiliation", {"jid": str(owner), "affiliation": "owner"})
            for jid, aff in (await self.pep.store.affiliations(node.id)).items():
                SubElement(a, f"{O}affiliation", {"jid": jid, "affiliation": aff})
            return reply
        if child.tag == f"{O}subscriptions":
            raise unsupported("manage-subscriptions", "PEP subscriptions come from presence")
        raise PepError(E.BAD_REQUEST, f"unknown pubsub#owner request {child.tag}")

    async def _owner_set(self, session, req: Element) -> Element:
        ps = req[0]
        if ps.tag != f"{O}pubsub" or len(ps) != 1:
            raise PepError(E.BAD_REQUEST, "expected <pubsub xmlns='...#owner'/> with one child")
        owner = owner_of(session, req)
        child = ps[0]
        tag = child.tag
        if tag not in (f"{O}configure", f"{O}delete", f"{O}purge", f"{O}affiliations"):
            if tag == f"{O}subscriptions":
                raise unsupported("manage-subscriptions", "PEP subscriptions come from presence")
            raise PepError(E.BAD_REQUEST, f"unknown pubsub#owner request {tag}")
        name = node_name(child)
        only_owner(session, owner, "manage")
        if tag == f"{O}configure":
            return await self._configure(req, owner, name, child)
        if tag == f"{O}delete":
            async with self.pep.locks(owner):
                node = await existing(self.pep.store, owner, name)
                await self.pep.store.delete_node(node.id)
            if node.config.notify_delete:
                await self.pep.audience.notify(owner, node, f"<delete node='{attr(name)}'/>".encode())
            return result(req)
        if tag == f"{O}purge":
            async with self.pep.locks(owner):
                node = await existing(self.pep.store, owner, name)
                await self.pep.store.purge(node.id)
            if node.config.notify_retract:
                await self.pep.audience.notify(owner, node, f"<purge node='{attr(name)}'/>".encode())
            return result(req)
        return await self._set_affiliations(req, owner, name, child)

    async def _configure(self, req, owner: JID, name: str, el: Element) -> Element:
        xs = el.findall(f"{X}x")
        if len(xs) != 1 or len(el) != 1:
            raise PepError(E.BAD_REQUEST, "<configure/> carries one jabber:x:data form")
        x = xs[0]
        if x.get("type") == "cancel":
            await existing(self.pep.store, owner, name)
            return result(req)
        async with self.pep.locks(owner):
            node = await existing(self.pep.store, owner, name)
            config = self.pep.forms.config_from(x, form_type=FORM_NODE_CONFIG, base=node.config,
                                                condition=E.NOT_ACCEPTABLE, app=None)
            await self.pep.store.configure(node.id, config)
        return result(req)

    async def _set_affiliations(self, req, owner: JID, name: str, el: Element) -> Element:
        changes: dict[str, str | None] = {}
        for a in el:
            if a.tag != f"{O}affiliation" or not a.get("jid") or not a.get("affiliation"):
                raise PepError(E.BAD_REQUEST, "<affiliations/> lists <affiliation jid= affiliation=/>")
            try:
                jid = JID.parse(a.get("jid")).bare
            except InvalidJID as exc:
                raise PepError(E.JID_MALFORMED, str(exc)) from None
            aff = a.get("affiliation")
            if jid == owner:
                if aff != "owner":
                    raise PepError(E.NOT_ACCEPTABLE, "the owner's affiliation cannot change")
                continue
            if aff == "none":
                changes[str(jid)] = None
            elif aff in ("member", "publisher"):
                if aff == "publisher":
                    raise PepError(E.NOT_ACCEPTABLE, "only the owner publishes to a PEP node")
                changes[str(jid)] = aff
            else:
                raise PepError(E.NOT_ACCEPTABLE, f"affiliation {aff!r} is not offered (member or none)")
        async with self.pep.locks(owner):
            node = await existing(self.pep.store, owner, name)
            try:
                await self.pep.store.set_affiliations(
                    node.id, changes, max_members=self.pep.options["max_members_per_node"])
            except TooManyMembers:
                raise PepError(E.NOT_ALLOWED, f"a node may have at most "
                               f"{self.pep.options['max_members_per_node']} members") from None
        return result(req)
