"""Messages in a room: groupchat to all, private messages, subject, iq to occupants.

Spec references:
  XEP-0045 §7.4   groupchat from a non-occupant: not-acceptable; visitors in a
                  moderated room: forbidden
  XEP-0045 §7.5   private messages to room@service/nick (from room/sender-nick)
  XEP-0045 §8.1   subject change: moderators, or participants when allowed
  XEP-0045 §7.2.15 history keeps the messages as broadcast
  XEP-0359 §3     the room adds <stanza-id by='room'/>; forged ones are removed (§5)
  XEP-0421 §4     the room adds <occupant-id/>; client-sent ones are removed
  XEP-0410 §3     a ping to one's own occupant JID is answered by the service

Relay is byte for byte: only the start tag is rewritten (``from`` = the
sender's occupant JID, ``to`` = each recipient) and the room's own elements
are inserted before the end tag — an OMEMO ``<encrypted/>`` arrives exactly as
sent.  A message carrying a forged stanza-id / occupant-id is re-serialised
once without them (rare).
"""

from __future__ import annotations

import datetime as _dt
import secrets
from xml.etree.ElementTree import Element

from ...errors import StanzaErrorCondition as E
from ...jid import JID
from ...xml.writer import rewrite_start_tag, serialize
from .._im import NS_SID, attr, insert_before_end, start_tag_len
from .policy import ROOM_REQUIRE_TEXT, ROOM_WARN_TEXT
from .presence import NS_OCCUPANT_ID, NS_USER
from .room import HistoryItem, MucError, Occupant, Room
from .voice import is_request_form

__all__ = ["Messages"]

C = "{jabber:client}"
BODY, SUBJECT = f"{C}body", f"{C}subject"


#: rooms one session is warned about (policy "warn"); past this, further ones are not warned
MAX_WARNED_ROOMS = 1000


class Messages:
    def __init__(self, muc) -> None:
        self.muc = muc
        #: session full JID -> rooms it was warned about under the room policy "warn"
        self._warned: dict[JID, set[JID]] = {}

    def forget(self, real: JID) -> None:
        self._warned.pop(real, None)

    # ------------------------------------------------------------ entry
    def handle(self, session, stanza, to: JID) -> None:
        el = stanza.element
        typ = el.get("type") or "normal"
        if typ == "error" or to.local is None:
            return  # errors to the room and messages to the service are dropped
        room = self.muc.rooms.get(to.bare)
        if room is None:
            raise MucError(E.ITEM_NOT_FOUND, "no such room")
        if to.resource is not None:
            self._private(session, stanza, room, to.resource)
            return
        x = el.find(f"{{{NS_USER}}}x")
        if x is not None and (x.find(f"{{{NS_USER}}}invite") is not None
                              or x.find(f"{{{NS_USER}}}decline") is not None):
            self.muc.invites.handle(session, el, room, x)
            return
        form = is_request_form(el)
        if form is not None and typ != "groupchat":
            self.muc.voice.handle(session, room, form)  # XEP-0045 §7.13 / §8.6
            return
        if typ != "groupchat":
            raise MucError(E.BAD_REQUEST, "messages to a room are type='groupchat'")
        occ = room.occupant(session.jid)
        if occ is None:
            raise MucError(E.NOT_ACCEPTABLE, "you are not in this room")
        if el.find(SUBJECT) is not None and el.find(BODY) is None:
            self._subject(session, el, room, occ)
            return
        if room.config.moderated and occ.role == "visitor":
            raise MucError(E.FORBIDDEN, "you have no voice in this moderated room")
        self._check_policy(session, el, room)
        if not self.muc.rate_ok(room, occ):
            raise MucError(E.RESOURCE_CONSTRAINT, "you are sending too fast (modules.muc.message_rate)")
        self.broadcast(session, stanza, room, occ)

    def _check_policy(self, session, el: Element, room: Room) -> None:
        verdict = self.muc.policy(room).verdict(room, el)
        if verdict == "refuse":
            raise MucError(E.POLICY_VIOLATION, ROOM_REQUIRE_TEXT)
        if verdict == "warn":
            seen = self._warned.setdefault(session.jid, set())
            if room.jid not in seen and len(seen) < MAX_WARNED_ROOMS:
                seen.add(room.jid)
                text = attr(ROOM_WARN_TEXT.format(room=room.jid))
                self.muc.send(session.jid, (f"<message type='headline' from='{attr(str(room.jid))}' "
                                            f"to='{attr(str(session.jid))}'><body>{text}</body></message>").encode())

    # ------------------------------------------------------------ groupchat
    def _clean(self, stanza, room: Room) -> tuple[bytes, int]:
        """The client's bytes without room-owned elements it may have forged."""
        el = stanza.element
        forged = [c for c in el if (c.tag == f"{{{NS_SID}}}stanza-id" and c.get("by") == str(room.jid))
                  or c.tag == f"{{{NS_OCCUPANT_ID}}}occupant-id"]
        if forged or not stanza.self_contained:
            for c in forged:
                el.remove(c)
            data = serialize(el)
            return data, start_tag_len(data)
        return stanza.raw, stanza.start_tag_len

    def broadcast(self, session, stanza, room: Room, occ: Occupant) -> None:
        data, stl = self._clean(stanza, room)
        base = rewrite_start_tag(data, stl, {"from": f"{room.jid}/{occ.nick}", "to": str(room.jid)})
        sid = secrets.token_urlsafe(12)
        extra = f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='{attr(occ.occupant_id)}'/>"
        archived = room.config.archive and self.muc.archive.archivable(stanza.element)
        if archived:
            extra += f"<stanza-id xmlns='{NS_SID}' by='{attr(str(room.jid))}' id='{sid}'/>"
        base = insert_before_end(base, extra.encode())
        stl = start_tag_len(base)
        now = _dt.datetime.now(_dt.timezone.utc)
        if archived:
            self.muc.archive.append(session, stanza.element, room, sid, now, occ.nick, base)
        if stanza.element.find(BODY) is not None or archived:
            room.remember(HistoryItem(now, occ.nick, base))
        for other in list(room.occupants.values()):
            self.muc.to_occupant(other, lambda to: rewrite_start_tag(base, stl, {"to": str(to)}))

    def _subject(self, session, el: Element, room: Room, occ: Occupant) -> None:
        if not room.may_change_subject(occ):
            raise MucError(E.FORBIDDEN, "you may not change the subject of this room")
        room.subject = (el.findtext(SUBJECT) or "")[: self.muc.options["max_config_bytes"]]
        room.subject_nick = occ.nick
        if room.config.persistent:
            self.muc.spawn_durable(self.muc.store.set_subject(room.jid.domain, room.jid.local,
                                                              room.subject, room.subject_nick), room.jid)
        frm = attr(f"{room.jid}/{occ.nick}")
        ident = f" id='{attr(el.get('id'))}'" if el.get("id") else ""
        for other in list(room.occupants.values()):
            self.muc.to_occupant(other, lambda to: (
                f"<message type='groupchat' from='{frm}' to='{attr(str(to))}'{ident}>"
                f"<subject>{attr(room.subject)}</subject></message>").encode())

    # ------------------------------------------------------------ private messages
    def _private(self, session, stanza, room: Room, nick: str) -> None:
        el = stanza.element
        if el.get("type") == "groupchat":
            raise MucError(E.BAD_REQUEST, "a groupchat message goes to the room, not to an occupant")
        occ = room.occupant(session.jid)
        if occ is None:
            raise MucError(E.NOT_ACCEPTABLE, "you are not in this room")
        target = room.occupants.get(nick)
        if target is None:
            raise MucError(E.ITEM_NOT_FOUND, f"no occupant {nick!r} in this room")
        if not room.may_send_pm(occ):
            raise MucError(E.NOT_ALLOWED, "private messages are not allowed in this room")
        self._check_policy(session, el, room)
        if not self.muc.rate_ok(room, occ):
            raise MucError(E.RESOURCE_CONSTRAINT, "you are sending too fast (modules.muc.message_rate)")
        data, stl = self._clean(stanza, room)
        # XEP-0045 §7.5: marked as a MUC private message; XEP-0421 id of the sender
        data = insert_before_end(data, (f"<x xmlns='{NS_USER}'/><occupant-id xmlns='{NS_OCCUPANT_ID}' "
                                        f"id='{attr(occ.occupant_id)}'/>").encode())
        self.muc.to_occupant(target, lambda to: rewrite_start_tag(
            data, stl, {"from": f"{room.jid}/{occ.nick}", "to": str(to)}))

    # ------------------------------------------------------------ iq to room@service/nick
    def occupant_iq(self, session, stanza, to: JID, room: Room | None) -> None:
        el = stanza.element
        typ = el.get("type")
        occ = room.occupant(session.jid) if room is not None else None
        if occ is None:
            if typ in ("get", "set"):
                # XEP-0410 §3: not (or no longer) an occupant: the client should rejoin
                raise MucError(E.NOT_ACCEPTABLE, "you are not in this room")
            return
        target = room.occupants.get(to.resource)
        if target is None:
            if typ in ("get", "set"):
                raise MucError(E.ITEM_NOT_FOUND, f"no occupant {to.resource!r} in this room")
            return
        if target is occ and typ == "get" and len(el) == 1 and el[0].tag == "{urn:xmpp:ping}ping":
            self.muc.send(session.jid, self.muc.result(el))  # XEP-0410 self-ping: still joined
            return
        data, stl = (stanza.raw, stanza.start_tag_len) if stanza.self_contained else (serialize(el), None)
        if stl is None:
            stl = start_tag_len(data)
        self.muc.send(target.jid, rewrite_start_tag(data, stl, {"from": f"{room.jid}/{occ.nick}",
                                                                "to": str(target.jid)}))
