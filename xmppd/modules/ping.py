"""XMPP Ping (XEP-0199): the server answers pings to itself and to accounts."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from .base import Module

NS_PING = "urn:xmpp:ping"


def _pong(session, req: Element) -> Element:
    return Element("{jabber:client}iq", {"type": "result"})


class Ping(Module):
    name = "ping"
    xeps = (("0199", "2.0.1"),)
    features = (NS_PING,)

    def setup(self) -> None:
        self.server.hooks.iq(NS_PING, get=_pong)
        self.server.hooks.iq(NS_PING, get=_pong, account=True, public=True)
