"""Voice requests in moderated rooms (XEP-0045 §7.13, §8.6).

A visitor sends the room a ``muc#request`` form asking for ``participant``; the
room forwards an approval form (``muc#role``, ``muc#jid`` when the moderator may
see it, ``muc#roomnick``, ``muc#request_allow``) to every moderator.  A moderator
who submits it back with ``muc#request_allow`` true gives the occupant voice, as
an admin ``role='participant'`` change would.  Requests are bounded by the
occupant's message rate.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from ...errors import StanzaErrorCondition as E
from .._im import attr
from .room import MucError, Room

__all__ = ["Voice", "FORM_TYPE", "is_request_form"]

NS_DATA = "jabber:x:data"
FORM_TYPE = "http://jabber.org/protocol/muc#request"


def _fields(x: Element) -> dict[str, str]:
    return {f.get("var", ""): (f.findtext(f"{{{NS_DATA}}}value") or "").strip()
            for f in x.findall(f"{{{NS_DATA}}}field")}


def is_request_form(el: Element) -> Element | None:
    x = el.find(f"{{{NS_DATA}}}x")
    if x is not None and _fields(x).get("FORM_TYPE") == FORM_TYPE:
        return x
    return None


class Voice:
    def __init__(self, muc) -> None:
        self.muc = muc

    def handle(self, session, room: Room, x: Element) -> None:
        occ = room.occupant(session.jid)
        if occ is None:
            raise MucError(E.NOT_ACCEPTABLE, "you are not in this room")
        fields = _fields(x)
        if "muc#request_allow" in fields:
            self._answer(room, occ, fields)
            return
        if fields.get("muc#role") != "participant":
            raise MucError(E.BAD_REQUEST, "a voice request asks for muc#role = participant")
        if not room.config.moderated or occ.role != "visitor":
            raise MucError(E.NOT_ALLOWED, "you have voice already, or the room is not moderated")
        if not self.muc.rate_ok(room, occ):
            raise MucError(E.RESOURCE_CONSTRAINT, "you are sending too fast (modules.muc.message_rate)")
        for mod in [o for o in room.occupants.values() if o.role == "moderator"]:
            jid_field = (f"<field var='muc#jid' type='jid-single'><value>{attr(str(occ.jid))}</value></field>"
                         if room.sees_real_jids(mod) else "")
            form = (f"<x xmlns='{NS_DATA}' type='form'><title>Voice request</title>"
                    f"<field var='FORM_TYPE' type='hidden'><value>{FORM_TYPE}</value></field>"
                    "<field var='muc#role' type='list-single'><value>participant</value></field>"
                    f"{jid_field}<field var='muc#roomnick' type='text-single'><value>{attr(occ.nick)}</value>"
                    "</field><field var='muc#request_allow' type='boolean'><value>false</value></field></x>")
            self.muc.to_occupant(mod, lambda to: (f"<message from='{attr(str(room.jid))}' to='{attr(str(to))}'>"
                                                  f"{form}</message>").encode())

    def _answer(self, room: Room, moderator, fields: dict[str, str]) -> None:
        if moderator.role != "moderator":
            raise MucError(E.FORBIDDEN, "only moderators answer voice requests")
        if fields["muc#request_allow"] not in ("1", "true"):
            return
        target = room.occupants.get(fields.get("muc#roomnick", ""))
        if target is None:
            raise MucError(E.ITEM_NOT_FOUND, "no such occupant")
        if target.role == "visitor":
            target.role = "participant"
            self.muc.broadcast_presence(room, target)
