"""vcard-temp (XEP-0054): an account sets and gets its own vCard; anyone may read it.

Spec references:
  XEP-0054 §3.1   get own vCard: iq get <vCard xmlns='vcard-temp'/> with no 'to';
                  none stored → an empty <vCard/>
  XEP-0054 §3.2   set: iq set with the whole vCard (replaces the stored one)
  XEP-0054 §3.3   get another user's vCard: iq get to their bare JID, answered by
                  the server; none stored → item-not-found

The vCard is stored as sent (serialized element), limited to ``max_bytes``
per account (the quota: one vCard per account, so this bounds the account's
vCard storage).  XEP-0054 names no error for it ("an IQ-result (or an
IQ-error)"); a set over the limit gets ``not-acceptable`` (type modify) with a
<text/> giving the size and the limit, as XEP-0060 §7.1.3.4 answers a payload
over a service-defined limit (a vCard avatar is the same data as a PEP one),
and the stored vCard is kept.
"""

from __future__ import annotations

import datetime as _dt
from xml.etree.ElementTree import Element, fromstring

from ..errors import StanzaErrorCondition
from ..jid import JID, InvalidJID
from ..storage.vcard import VCardStore
from ..stream.c2s import iq_error
from ..xml.writer import serialize
from .base import Module

__all__ = ["VCard", "NS_VCARD"]

NS_VCARD = "vcard-temp"


class VCard(Module):
    name = "vcard"
    xeps = (("0054", "1.2"),)
    features = (NS_VCARD,)
    options_spec = {
        # largest vCard an account may store, in bytes as serialized; beyond: not-acceptable
        "max_bytes": (int, 64 * 1024),
    }

    @classmethod
    def check_options(cls, options) -> None:
        from ..config import ConfigError

        if options["max_bytes"] < 256:
            raise ConfigError("modules.vcard.max_bytes", "must be >= 256")

    def setup(self) -> None:
        self.store = VCardStore(self.server.db_engine)
        self.max_bytes: int = self.options["max_bytes"]
        h = self.server.hooks
        h.account_features.add(NS_VCARD)
        h.iq(NS_VCARD, get=self._get, set=self._set, account=True, public=True)

    @staticmethod
    def _target(session, req: Element) -> JID:
        to = req.get("to")
        if not to:
            return session.jid.bare
        try:
            return JID.parse(to).bare
        except InvalidJID:
            return session.jid.bare

    async def _get(self, session, req: Element) -> Element:
        owner = self._target(session, req)
        data = await self.store.get(owner.local or "", owner.domain)
        reply = Element("{jabber:client}iq", {"type": "result"})
        if data is None:
            if owner != session.jid.bare:
                return iq_error(req, StanzaErrorCondition.ITEM_NOT_FOUND, f"{owner} has no vCard")
            reply.append(Element(f"{{{NS_VCARD}}}vCard"))
        else:
            reply.append(fromstring(data))
        return reply

    def _set(self, session, req: Element):
        owner = self._target(session, req)
        if owner != session.jid.bare:
            return iq_error(req, StanzaErrorCondition.FORBIDDEN, "only the account itself may set its vCard")
        vcard = req[0]
        if vcard.tag != f"{{{NS_VCARD}}}vCard":
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "expected <vCard xmlns='vcard-temp'/>")
        data = serialize(vcard)  # self-contained: declares xmlns='vcard-temp'
        if len(data) > self.max_bytes:
            return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE,
                            f"vCard too large: {len(data)} bytes, the limit is {self.max_bytes}")

        async def save() -> Element:
            await self.store.set(owner.local, owner.domain, data, _dt.datetime.now(_dt.timezone.utc))
            return Element("{jabber:client}iq", {"type": "result"})

        return save()
