"""Service discovery (XEP-0030) for the server and for accounts."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from .base import Module

NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"


class Disco(Module):
    name = "disco"
    xeps = (("0030", "2.5rc3"),)
    features = (NS_INFO, NS_ITEMS)

    def setup(self) -> None:
        h = self.server.hooks
        h.identities.add(("server", "im", "xmppd"))
        h.iq(NS_INFO, get=self.server_info)
        h.iq(NS_ITEMS, get=self.server_items)
        h.iq(NS_INFO, get=self.account_info, account=True, public=True)
        h.iq(NS_ITEMS, get=self.account_items, account=True, public=True)

    @staticmethod
    def _reply(req: Element) -> tuple[Element, Element]:
        reply = Element("{jabber:client}iq", {"type": "result"})
        q = SubElement(reply, req[0].tag)
        node = req[0].get("node")
        if node:
            q.set("node", node)
        return reply, q

    def server_info(self, session, req: Element) -> Element:
        reply, q = self._reply(req)
        if req[0].get("node"):
            from ..stream.c2s import iq_error
            from ..errors import StanzaErrorCondition
            return iq_error(req, StanzaErrorCondition.ITEM_NOT_FOUND, "no such node")
        for cat, typ, name in sorted(self.server.hooks.identities):
            SubElement(q, f"{{{NS_INFO}}}identity", {"category": cat, "type": typ, "name": name})
        for feat in sorted(self.server.hooks.features):
            SubElement(q, f"{{{NS_INFO}}}feature", {"var": feat})
        return reply

    def server_items(self, session, req: Element) -> Element:
        reply, _ = self._reply(req)
        return reply

    def account_info(self, session, req: Element) -> Element:
        reply, q = self._reply(req)
        h = self.server.hooks
        for cat, typ, name in sorted(h.account_identities | {("account", "registered", "")}):
            attrs = {"category": cat, "type": typ}
            if name:
                attrs["name"] = name
            SubElement(q, f"{{{NS_INFO}}}identity", attrs)
        for feat in sorted(h.account_features | {NS_INFO}):
            SubElement(q, f"{{{NS_INFO}}}feature", {"var": feat})
        return reply

    def account_items(self, session, req: Element) -> Element:
        reply, _ = self._reply(req)
        return reply
