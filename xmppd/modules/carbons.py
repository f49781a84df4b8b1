"""Message Carbons (XEP-0280, urn:xmpp:carbons:2).

Spec references:
  XEP-0280 §4     <enable/>/<disable/> per session (iq set to the server or the account)
  XEP-0280 §6     eligibility: chat; normal with a body or IM payload; not <private/>;
                  not <no-copy/> (XEP-0334); body-less chat (OMEMO key transport) is eligible
  XEP-0280 §7.1   received copies: to the recipient's other carbons-enabled resources
  XEP-0280 §7.2   sent copies: to the sender's other carbons-enabled resources
  XEP-0297 §3     <forwarded/>: the copied stanza keeps from/to and namespace jabber:client

The copied message is the exact bytes the recipient got (received) or the
sender's bytes with ``from`` stamped (sent), wrapped byte-for-byte: only its
start tag gains ``xmlns='jabber:client'`` (and ``to`` when the client left it
out); the payload is untouched.
"""

from __future__ import annotations

import logging
from xml.etree.ElementTree import Element

from ..errors import StanzaErrorCondition
from ..hooks import PRIO_LATE
from ..jid import JID
from ..router import Router
from ..stanza import error_reply
from ._im import NS_CARBONS, attr, carbons_eligible, forwarded, message_type
from .base import Module

__all__ = ["Carbons"]

log = logging.getLogger("xmppd.modules.carbons")

_MESSAGE = "{jabber:client}message"


def _result(session, req: Element) -> Element:
    return Element("{jabber:client}iq", {"type": "result"})


class Carbons(Module):
    name = "carbons"
    xeps = (("0280", "1.0.1"), ("0297", "1.0"))
    features = (NS_CARBONS,)

    def setup(self) -> None:
        #: bound sessions that enabled carbons (bounded by the session registry)
        self.enabled: set = set()
        h = self.server.hooks
        for account in (False, True):  # to the server, or no 'to' / own bare JID
            h.iq(NS_CARBONS, set=self._iq_set, account=account)
        h.on("session_closed", self.enabled.discard)
        # late: blocking / policy hooks decide first whether the message goes out at all
        h.on("stanza_out", self._sent, priority=PRIO_LATE)
        h.on("message_delivered", self._received)

    def _iq_set(self, session, req: Element) -> Element:
        payload = req[0]
        if payload.tag == f"{{{NS_CARBONS}}}enable":
            self.enabled.add(session)
        elif payload.tag == f"{{{NS_CARBONS}}}disable":
            self.enabled.discard(session)
        else:
            return error_reply(req, StanzaErrorCondition.BAD_REQUEST, "expected <enable/> or <disable/>")
        return _result(session, req)

    def _others(self, bare: JID, exclude) -> list:
        return [s for s in self.server.sessions.resources(bare) if s in self.enabled and s not in exclude]

    @staticmethod
    def _wrap(kind: str, owner: JID, to: JID, typ: str, inner: bytes) -> bytes:
        return (f"<message from='{attr(str(owner))}' to='{attr(str(to))}' type='{typ}'>"
                f"<{kind} xmlns='{NS_CARBONS}'>").encode() + forwarded(inner) + f"</{kind}></message>".encode()

    # ------------------------------------------------------------ sent (§7.2)
    def _sent(self, session, stanza, to: JID | None) -> bool:
        el = stanza.element
        if el.tag != _MESSAGE or not self.enabled:
            return False
        sender: JID = session.jid
        bare = sender.bare
        if to is not None and to.bare == bare:
            return False  # to one's own account: the other resources get 'received' copies
        others = self._others(bare, (session,))
        if not others or not carbons_eligible(el):
            return False
        attrs = {"from": str(sender)}
        if el.get("to") is None:
            attrs["to"] = str(to or bare)
        inner = Router.bytes_for(stanza, el, attrs)
        typ = message_type(el)
        for other in others:
            other.send_bytes(self._wrap("sent", bare, other.jid, typ, inner))
        return False

    # ------------------------------------------------------------ received (§7.1)
    def _received(self, sender: JID, to_bare: JID, stanza, targets: list) -> None:
        if not self.enabled:
            return
        el = stanza.element
        exclude = set(targets)
        others = [s for s in self._others(to_bare, exclude) if s.jid != sender]
        if not others or not carbons_eligible(el):
            return
        inner = self.server.router.message_bytes(sender, to_bare, stanza)
        typ = message_type(el)
        for other in others:
            other.send_bytes(self._wrap("received", to_bare, other.jid, typ, inner))
