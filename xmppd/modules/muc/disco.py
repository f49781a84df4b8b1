"""Service discovery of the MUC service and its rooms (XEP-0045 §6, XEP-0030, XEP-0128).

* the server's disco#items lists each service (``conference.<domain>``);
* the service: identity ``conference/text``, feature ``http://jabber.org/protocol/muc``;
  its items are the public rooms (hidden and locked rooms are not listed, §6.3);
* a room: identity ``conference/text`` with the room name, one feature per
  property (``muc_persistent``/``muc_temporary``, ``muc_public``/``muc_hidden``,
  ``muc_membersonly``/``muc_open``, ``muc_moderated``/``muc_unmoderated``,
  ``muc_nonanonymous``/``muc_semianonymous``, ``muc_passwordprotected``/``muc_unsecured``),
  MAM / stanza-id / occupant-id when offered, and a ``muc#roominfo`` form
  (XEP-0128) with the description, occupant count, subject and the room's
  encryption level ``xmppd#e2ee_policy`` (so clients can show an encrypted room).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from ...errors import StanzaErrorCondition as E
from ...xml.writer import serialize
from .policy import ROOMINFO_VAR
from .presence import NS_MUC, NS_OCCUPANT_ID
from .register import NS_REGISTER, Registration
from .room import MucError, Room

__all__ = ["MucDisco", "room_features"]

NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DATA = "jabber:x:data"
#: public rooms listed in one disco#items answer
MAX_ITEMS = 1000


def room_features(room: Room) -> list[str]:
    c = room.config
    feats = [NS_MUC, NS_INFO, NS_ITEMS, NS_OCCUPANT_ID, NS_REGISTER, "urn:xmpp:ping",
             "muc_persistent" if c.persistent else "muc_temporary",
             "muc_public" if c.public else "muc_hidden",
             "muc_membersonly" if c.members_only else "muc_open",
             "muc_moderated" if c.moderated else "muc_unmoderated",
             "muc_nonanonymous" if c.non_anonymous else "muc_semianonymous",
             "muc_passwordprotected" if c.password else "muc_unsecured",
             f"{NS_MUC}#stable_id", f"{NS_MUC}#self-ping-optimization"]
    if c.archive:
        feats += ["urn:xmpp:mam:2", "urn:xmpp:sid:0"]
    return sorted(set(feats))


class MucDisco:
    def __init__(self, muc) -> None:
        self.muc = muc

    def setup(self, hooks) -> None:
        # the server's own disco#items gains the services (wrapping the disco module's handler)
        items = hooks.iq_server.get((NS_ITEMS, "get"))
        if items is None:
            return

        def server_items(session, req: Element, _items=items):
            result = _items(session, req)
            if result is not None and not req[0].get("node") and len(result):
                for service in sorted(self.muc.services):
                    SubElement(result[0], f"{{{NS_ITEMS}}}item", {"jid": service, "name": "Chatrooms"})
            return result

        hooks.iq_server[(NS_ITEMS, "get")] = server_items

    def _reply(self, el: Element, payload: Element) -> None:
        self.muc.send(el_from(el), self.muc.result(el, serialize(payload).decode()))

    def service_iq(self, session, el: Element) -> None:
        if el.get("type") != "get" or len(el) != 1:
            raise MucError(E.SERVICE_UNAVAILABLE, "not supported by this service")
        q = el[0]
        if q.tag == f"{{{NS_INFO}}}query" and not q.get("node"):
            out = Element(f"{{{NS_INFO}}}query")
            SubElement(out, f"{{{NS_INFO}}}identity", {"category": "conference", "type": "text",
                                                      "name": "Chatrooms"})
            for f in (NS_INFO, NS_ITEMS, NS_MUC, NS_OCCUPANT_ID):  # MAM is on each room, not here
                SubElement(out, f"{{{NS_INFO}}}feature", {"var": f})
            self._reply(el, out)
        elif q.tag == f"{{{NS_ITEMS}}}query" and not q.get("node"):
            out = Element(f"{{{NS_ITEMS}}}query")
            service = el.get("to")
            listed = [r for r in self.muc.rooms.values()
                      if r.jid.domain == service and r.config.public and not r.locked]
            for room in sorted(listed, key=lambda r: str(r.jid))[:MAX_ITEMS]:
                SubElement(out, f"{{{NS_ITEMS}}}item", {"jid": str(room.jid),
                                                       "name": room.config.name or room.jid.local})
            self._reply(el, out)
        elif q.tag in (f"{{{NS_INFO}}}query", f"{{{NS_ITEMS}}}query"):
            raise MucError(E.ITEM_NOT_FOUND, "no such node")
        else:
            raise MucError(E.SERVICE_UNAVAILABLE, "not supported by this service")

    def room_iq(self, session, el: Element, room: Room) -> None:
        if el.get("type") != "get":
            raise MucError(E.BAD_REQUEST, "disco is get only")
        q = el[0]
        if q.get("node") == "x-roomuser-item" and q.tag == f"{{{NS_INFO}}}query":
            self._reply(el, Registration.reserved_nick_info(room, session.jid))  # XEP-0045 §7.12
            return
        if q.get("node"):
            raise MucError(E.ITEM_NOT_FOUND, "no such node")
        if room.locked and room.affiliation(session.jid) != "owner":
            raise MucError(E.ITEM_NOT_FOUND, "no such room")
        if q.tag == f"{{{NS_ITEMS}}}query":
            self._reply(el, Element(f"{{{NS_ITEMS}}}query"))  # occupants are not listed (privacy, §6.5)
            return
        out = Element(f"{{{NS_INFO}}}query")
        SubElement(out, f"{{{NS_INFO}}}identity", {"category": "conference", "type": "text",
                                                  "name": room.config.name or room.jid.local})
        for f in room_features(room):
            SubElement(out, f"{{{NS_INFO}}}feature", {"var": f})
        x = SubElement(out, f"{{{NS_DATA}}}x", {"type": "result"})
        level = self.muc.policy(room).effective(room)
        for var, value, typ in (("FORM_TYPE", f"{NS_MUC}#roominfo", "hidden"),
                                ("muc#roominfo_description", room.config.description, None),
                                ("muc#roominfo_occupants", str(len(room.occupants)), None),
                                ("muc#roominfo_subject", room.subject, None),
                                ("muc#roominfo_lang", room.config.lang, None),
                                (ROOMINFO_VAR, level, None)):
            f = SubElement(x, f"{{{NS_DATA}}}field", {"var": var})
            if typ:
                f.set("type", typ)
            SubElement(f, f"{{{NS_DATA}}}value").text = value
        self._reply(el, out)


def el_from(el: Element):
    from ...jid import JID

    return JID.parse(el.get("from", ""))

