"""Registering with a room (XEP-0045 §7.10) and discovering one's reserved nick (§7.12).

* ``<iq type='get'><query xmlns='jabber:iq:register'/></iq>`` to the room: the
  ``muc#register`` form (field ``muc#register_roomnick``), or ``<registered/>``
  with the nick when the account is already a member;
* ``type='set'`` with the submitted form: the account becomes a member with that
  nick reserved (committed before the answer).  Conflicts: a nick in use or
  reserved by another account.  Banned: forbidden.  A members-only room does not
  take registrations (only its admins add members): not-allowed;
* ``<remove/>``: a member gives up its membership (owners and admins cannot;
  ask another owner);
* disco#info with ``node='x-roomuser-item'``: the reserved nick as the identity name.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from ...errors import StanzaErrorCondition as E
from ...xml.writer import serialize
from .presence import nickname
from .room import AFF_RANK, MucError, Room

__all__ = ["Registration", "NS_REGISTER"]

NS_REGISTER = "jabber:iq:register"
NS_DATA = "jabber:x:data"
FORM_TYPE = "http://jabber.org/protocol/muc#register"
NICK_VAR = "muc#register_roomnick"


class Registration:
    def __init__(self, muc) -> None:
        self.muc = muc

    def handle(self, session, el: Element, room: Room) -> None:
        real = session.jid
        bare = str(real.bare)
        aff = room.affiliation(real)
        if aff == "outcast":
            raise MucError(E.FORBIDDEN, "you are banned from this room")
        q = el[0]
        if el.get("type") == "get":
            out = Element(f"{{{NS_REGISTER}}}query")
            if AFF_RANK[aff] >= AFF_RANK["member"]:
                SubElement(out, f"{{{NS_REGISTER}}}registered")
                SubElement(out, f"{{{NS_REGISTER}}}username").text = room.nicks.get(bare, "")
            else:
                x = SubElement(out, f"{{{NS_DATA}}}x", {"type": "form"})
                ft = SubElement(x, f"{{{NS_DATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
                SubElement(ft, f"{{{NS_DATA}}}value").text = FORM_TYPE
                f = SubElement(x, f"{{{NS_DATA}}}field", {"var": NICK_VAR, "type": "text-single",
                                                         "label": "Nickname"})
                SubElement(f, f"{{{NS_DATA}}}required")
            self.muc.send(real, self.muc.result(el, serialize(out).decode()))
            return
        if q.find(f"{{{NS_REGISTER}}}remove") is not None:
            if aff in ("owner", "admin"):
                raise MucError(E.NOT_ALLOWED, "an owner or admin cannot unregister; another owner can change it")
            if aff == "none":
                raise MucError(E.ITEM_NOT_FOUND, "you are not registered with this room")
            self._set(session, el, room, bare, "none", None)
            return
        nick = None
        x = q.find(f"{{{NS_DATA}}}x")
        for field in (x.findall(f"{{{NS_DATA}}}field") if x is not None else ()):
            if field.get("var") == NICK_VAR:
                nick = field.findtext(f"{{{NS_DATA}}}value")
        if not nick:
            raise MucError(E.BAD_REQUEST, f"the form needs {NICK_VAR}")
        nick = nickname(nick)
        for other, reserved in room.nicks.items():
            if reserved == nick and other != bare:
                raise MucError(E.CONFLICT, "this nickname is reserved by another member")
        current = room.occupants.get(nick)
        if current is not None and current.jid.bare != real.bare:
            raise MucError(E.CONFLICT, "this nickname is in use in the room")
        if room.config.members_only and AFF_RANK[aff] < AFF_RANK["member"]:
            raise MucError(E.NOT_ALLOWED, "this members-only room takes no registrations: ask an admin")
        if bare not in room.affiliations and len(room.affiliations) >= self.muc.options["max_affiliations"]:
            raise MucError(E.RESOURCE_CONSTRAINT, "too many affiliations (modules.muc.max_affiliations)")
        self._set(session, el, room, bare, aff if AFF_RANK[aff] >= AFF_RANK["member"] else "member", nick)

    def _set(self, session, el: Element, room: Room, bare: str, aff: str, nick: str | None) -> None:
        room.set_affiliation(bare, aff, nick)
        if nick is None:
            room.nicks.pop(bare, None)
        self.muc.admin.apply_affiliation(room, bare, aff)
        self.muc.admin.commit_then_answer(session, el, room, [(bare, aff, nick, None)])

    @staticmethod
    def reserved_nick_info(room: Room, real) -> Element:
        """disco#info node x-roomuser-item (§7.12): the reserved nick, if any."""
        out = Element("{http://jabber.org/protocol/disco#info}query", {"node": "x-roomuser-item"})
        nick = room.nicks.get(str(real.bare))
        if nick:
            SubElement(out, "{http://jabber.org/protocol/disco#info}identity",
                       {"category": "conference", "type": "text", "name": nick})
        return out
