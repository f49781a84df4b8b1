"""RFC 3921 §3 session establishment, kept as an optional no-op (RFC 6121 Appendix E).

Old clients send ``<session/>`` after binding and stop if it fails; the
feature is advertised as ``<optional/>`` during negotiation and answered here
once the session is bound.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from .base import Module

NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"


class LegacySession(Module):
    name = "session"
    xeps = ()

    def setup(self) -> None:
        # clients send it without 'to' (the account) or to the server domain
        self.server.hooks.iq(NS_SESSION, set=self._session)
        self.server.hooks.iq(NS_SESSION, set=self._session, account=True)

    @staticmethod
    def _session(session, req: Element) -> Element:
        return Element("{jabber:client}iq", {"type": "result"})
