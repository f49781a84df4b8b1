"""Software Version (XEP-0092)."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from .. import __version__
from .base import Module

NS_VERSION = "jabber:iq:version"


class Version(Module):
    name = "version"
    xeps = (("0092", "1.1"),)
    features = (NS_VERSION,)

    def setup(self) -> None:
        self.server.hooks.iq(NS_VERSION, get=self.version)

    def version(self, session, req: Element) -> Element:
        reply = Element("{jabber:client}iq", {"type": "result"})
        q = SubElement(reply, f"{{{NS_VERSION}}}query")
        SubElement(q, f"{{{NS_VERSION}}}name").text = "xmppd"
        SubElement(q, f"{{{NS_VERSION}}}version").text = __version__
        return reply
