"""The MUC service module (XEP-0045) at ``conference.<domain>``: hooks, rooms, occupancy.

Spec references:
  XEP-0045 §6     disco of the service (identity conference/text) and of rooms
  XEP-0045 §7.1   order on entering: others' presence, own presence (110), history, subject
  XEP-0045 §7.2.1 a presence without a nick: jid-malformed
  XEP-0045 §7.6   nick change: unavailable with 303 and the new nick, then available
  XEP-0045 §7.14  exiting: unavailable presence to every occupant (110 to oneself)
  XEP-0045 §10.1  creating a room: 201; locked until configured (instant or reserved)
  XEP-0421        occupant ids (stable per room and real bare JID)

How stanzas reach it: client stanzas to the service domain are claimed in the
``stanza_out`` hook (the router never sees them); everything a room sends
goes out through ``Router.send_to`` — the one place a cluster extends to
occupants on other nodes.  Rooms live in memory on the node that serves the
service; persistent rooms (configuration, affiliations, subject) and the
archive are in the database and loaded at start.  Durable work a client
stanza causes (archive row, affiliation/config commit) is handed to
``Router.defer`` so XEP-0198 acknowledges it only once committed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import hashlib
import logging
import time
from xml.etree.ElementTree import Element

from ...config import ConfigError
from ...errors import StanzaErrorCondition as E
from ...jid import JID, InvalidJID
from ...storage.muc import MucStore
from ...xml.writer import rewrite_start_tag
from .._im import attr, delay_element, insert_before_end, start_tag_len
from ..base import Module
from .admin import Admin
from .archive import RoomArchive
from .disco import MucDisco
from .invites import Invites
from .messages import Messages
from .options import OPTIONS_SPEC, check_options
from .register import NS_REGISTER, Registration
from .voice import Voice
from .policy import RoomPolicy
from .presence import (NS_MUC, STATUS, error_stanza, history_request, nickname, occupant_presence,
                       presence_payload)
from .room import HistoryItem, MucError, Occupant, Room, RoomConfig

__all__ = ["Muc"]

log = logging.getLogger("xmppd.modules.muc")

C = "{jabber:client}"
PRESENCE, MESSAGE, IQ = f"{C}presence", f"{C}message", f"{C}iq"
#: sessions of one account that may share a nick in a room (multi-session occupants)
MAX_SESSIONS_PER_NICK = 10


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class Muc(Module):
    name = "muc"
    xeps = (("0045", "1.35 core, admin, owner"), ("0249", "direct invitations pass"), ("0313", "on room JIDs"),
            ("0359", "stanza-id by the room"), ("0410", "self-ping"), ("0421", "occupant ids"),
            ("0128", "muc#roominfo"))
    options_spec = OPTIONS_SPEC

    @classmethod
    def check_options(cls, options) -> None:
        check_options(options)

    # ------------------------------------------------------------ wiring
    def setup(self) -> None:
        o = self.options
        #: service domain -> served parent domain
        hosts = self.server.config.general.hosts
        self.services: dict[str, str] = {o["host"].replace("@HOST@", h): h for h in hosts}
        for service in self.services:
            if service in hosts:  # the service would swallow every stanza to that domain's users
                raise ConfigError("modules.muc.host", f"{service} is a served domain; use e.g. conference.@HOST@")
        self.store = MucStore(self.server.db_engine)
        #: room bare JID -> Room
        self.rooms: dict[JID, Room] = {}
        #: real full JID -> rooms it occupies
        self.joined: dict[JID, set[JID]] = {}
        #: room JID -> its last database write in flight (writes of one room run in order)
        self._tails: dict[JID, asyncio.Future] = {}
        #: service -> XEP-0421 occupant-id secret (stored, so ids survive restarts and nodes)
        self._secrets: dict[str, bytes] = {}
        e2ee = next((m for m in self.server.modules if m.name == "e2ee_policy"), None)
        self.policies = {svc: RoomPolicy(service_floor=o["e2ee_policy"], parent_domain=parent,
                                         domain_level=(lambda d, m=e2ee: m.domain_level(d)[0]) if e2ee else None)
                         for svc, parent in self.services.items()}
        self.archive = RoomArchive(self)
        self.admin = Admin(self)
        self.invites = Invites(self)
        self.messages = Messages(self)
        self.disco = MucDisco(self)
        self.registration = Registration(self)
        self.voice = Voice(self)
        h = self.server.hooks
        h.on("stanza_out", self._stanza_out)
        h.on("session_closed", self._session_closed)
        h.on("presence_out", self._presence_out)
        self.disco.setup(h)

    async def start(self) -> None:
        for service in self.services:
            self._secrets[service] = (await self.store.service_secret(service)).encode()
        for service in self.services:
            for stored in await self.store.load_rooms(service):
                room = self.new_room(JID(stored.name, service), RoomConfig.from_dict(stored.config),
                                     stored.created_at)
                room.subject, room.subject_nick = stored.subject, stored.subject_nick
                for bare, (aff, nick) in stored.affiliations.items():
                    room.set_affiliation(bare, aff, nick)
                if room.config.archive and room.history_size:
                    for item in await self.store.last(service, stored.name, room.history_size):
                        room.remember(HistoryItem(item.ts, item.nick, item.data))
                self.rooms[room.jid] = room
        if self.rooms:
            log.info("muc: %d persistent room(s) loaded", len(self.rooms))

    def before_stop(self) -> None:
        # XEP-0045 §15.6: 332, removed because the service is shutting down (sessions still open)
        for room in list(self.rooms.values()):
            for occ in list(room.occupants.values()):
                self.to_occupant(occ, lambda to, o=occ, r=room: occupant_presence(
                    r, o, to, viewer=o, unavailable=True, codes=(STATUS["shutdown"],)))
            room.occupants.clear()
            room.by_jid.clear()
        self.joined.clear()

    async def stop(self) -> None:
        await self.archive.stop()

    # ------------------------------------------------------------ helpers used by the parts
    def send(self, to: JID, data: bytes) -> bool:
        """Every stanza a room sends goes through the router (cluster: remote occupants)."""
        return self.server.router.send_to(to, data)

    def to_occupant(self, occ: Occupant, data_for) -> None:
        """To every session of an occupant; ``data_for(full JID)`` -> bytes."""
        for real in occ.sessions:
            self.send(real, data_for(real))

    def send_bare(self, to: JID, data_for) -> int:
        """To an account (bare JID): each available resource; ``data_for(full)`` -> bytes."""
        n = 0
        for s in self.server.sessions.resources(to):
            if s.available and self.send(s.jid, data_for(s.jid)):
                n += 1
        return n

    def error(self, session, el: Element, condition: E, text: str, *, echo: str = "") -> None:
        if el.get("type") == "error":
            return  # never answer an error with an error (RFC 6120 §8.3.1)
        kind = el.tag.rpartition("}")[2]
        frm = el.get("to") or ""
        self.send(session.jid, error_stanza(kind, frm=frm, to=str(session.jid), stanza_id=el.get("id"),
                                            condition=condition, text=text, echo=echo, by=str(JID.parse(frm).bare)
                                            if frm else None))

    def policy(self, room: Room) -> RoomPolicy:
        return self.policies[room.jid.domain]

    def defer(self, fut) -> None:
        self.server.router.defer(fut)

    def occupant_id(self, room_jid: JID, real: JID) -> str:
        secret = self._secrets.get(room_jid.domain, b"")
        digest = hashlib.sha256(secret + b"\0" + str(room_jid).encode() + b"\0" + str(real.bare).encode())
        return base64.urlsafe_b64encode(digest.digest()[:18]).decode()

    def new_room(self, jid: JID, config: RoomConfig, created_at: _dt.datetime) -> Room:
        return Room(jid=jid, config=config, created_at=created_at, history_size=self.options["history_size"])

    def rooms_owned(self, bare: str) -> int:
        return sum(1 for r in self.rooms.values() if r.affiliations.get(bare) == "owner")

    def persist(self, room: Room):
        """Save a persistent room's row and affiliations (a coroutine to await or spawn)."""
        return self.store.save_room(room.jid.domain, room.jid.local, room.config.to_dict(),
                                    subject=room.subject, subject_nick=room.subject_nick,
                                    created_at=room.created_at,
                                    affiliations={j: (a, room.nicks.get(j)) for j, a in room.affiliations.items()})

    def spawn_durable(self, coro, key: JID | None = None) -> asyncio.Future:
        """Run ``coro`` (a commit, then its answer); the client stanza is settled when it is done.

        With ``key`` (a room JID) the room's writes run one after another, in the order
        they were asked for: a configuration snapshot never overtakes a later change."""
        if key is None:
            fut = self.server.spawn(coro)
        else:
            prev = self._tails.get(key)
            fut = self.server.spawn(self._after(prev, coro))
            self._tails[key] = fut
            fut.add_done_callback(lambda f, k=key: self._tails.get(k) is f and self._tails.pop(k, None))
        self.defer(fut)
        return fut

    @staticmethod
    async def _after(prev, coro) -> None:
        try:
            if prev is not None:
                await asyncio.wait([prev])
        finally:
            await coro

    # ------------------------------------------------------------ dispatch
    def _stanza_out(self, session, stanza, to: JID | None) -> bool:
        if to is None or to.domain not in self.services:
            return False
        el = stanza.element
        try:
            if el.tag == PRESENCE:
                self._presence(session, stanza, to)
            elif el.tag == MESSAGE:
                self.messages.handle(session, stanza, to)
            elif el.tag == IQ:
                self._iq(session, stanza, to)
        except MucError as exc:
            self.error(session, el, exc.condition, exc.text,
                       echo=f"<x xmlns='{NS_MUC}'/>" if el.tag == PRESENCE else "")
        except Exception:  # noqa: BLE001 - a bug must cost one stanza, never the stream
            log.exception("muc: %s to %s failed", el.tag, to)
            self.error(session, el, E.INTERNAL_SERVER_ERROR, "the room could not handle this stanza")
        return True

    def _iq(self, session, stanza, to: JID) -> None:
        el = stanza.element
        typ = el.get("type")
        if typ not in ("get", "set", "result", "error"):
            raise MucError(E.BAD_REQUEST, "unknown iq type")
        if to.local is None:
            if typ in ("get", "set"):
                self.disco.service_iq(session, el)
            return
        room = self.rooms.get(to.bare)
        if to.resource is not None:
            self.messages.occupant_iq(session, stanza, to, room)
            return
        if typ not in ("get", "set"):
            return
        if len(el) != 1:
            raise MucError(E.BAD_REQUEST, "an iq get/set carries exactly one payload element")
        ns = el[0].tag[1:].partition("}")[0]
        if room is None:
            raise MucError(E.ITEM_NOT_FOUND, "no such room")
        if ns in ("http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items"):
            self.disco.room_iq(session, el, room)
        elif ns in (f"{NS_MUC}#admin", f"{NS_MUC}#owner"):
            self.admin.handle(session, el, room, ns)
        elif ns == "urn:xmpp:mam:2":
            self.archive.handle(session, el, room)
        elif ns == NS_REGISTER:
            self.registration.handle(session, el, room)
        elif ns == "urn:xmpp:ping":
            self.send(session.jid, self.result(el))
        else:
            raise MucError(E.SERVICE_UNAVAILABLE, "not supported by this room")

    @staticmethod
    def result(el: Element, payload: str = "") -> bytes:
        ident = f" id='{attr(el.get('id'))}'" if el.get("id") is not None else ""
        return (f"<iq type='result' from='{attr(el.get('to', ''))}' to='{attr(el.get('from', ''))}'{ident}>"
                f"{payload}</iq>").encode()

    # ------------------------------------------------------------ presence
    def _presence(self, session, stanza, to: JID) -> None:
        el = stanza.element
        typ = el.get("type")
        if to.local is None:
            return  # presence to the service itself: nothing to do
        if typ not in (None, "unavailable"):
            return  # subscriptions and errors to rooms are ignored (XEP-0045 §7.2)
        real = session.jid
        room = self.rooms.get(to.bare)
        occ = room.occupant(real) if room is not None else None
        if typ == "unavailable":
            if occ is not None:
                self.leave_session(room, occ, real, status=el.findtext(f"{C}status"))
            return
        if to.resource is None:
            raise MucError(E.JID_MALFORMED, "a nickname is required to enter a room (room@service/nick)")
        to = to.bare.with_resource(nickname(to.resource))
        if occ is not None:
            if occ.nick != to.resource:
                self._change_nick(session, room, occ, to.resource, el)
            elif el.find(f"{{{NS_MUC}}}x") is not None:
                self._rejoin(room, occ, real, el, to)
            else:
                occ.presence = presence_payload(el)
                self.broadcast_presence(room, occ)
            return
        self._join(session, stanza, to, room)

    def _join(self, session, stanza, to: JID, room: Room | None) -> None:
        el = stanza.element
        real = session.jid
        o = self.options
        x = el.find(f"{{{NS_MUC}}}x")
        password = x.findtext(f"{{{NS_MUC}}}password") if x is not None else None
        if len(self.joined.get(real, ())) >= o["max_joins_per_user"]:
            raise MucError(E.RESOURCE_CONSTRAINT, f"you are in {o['max_joins_per_user']} rooms already "
                                                  "(modules.muc.max_joins_per_user)")
        created = room is None
        now = _now()
        if created:
            room = self._create(session, to, now)
        try:
            room.check_join(real, to.resource, password, max_users=o["max_occupants"])
        except MucError:
            if created:
                del self.rooms[room.jid]
            raise
        aff = room.affiliation(real)
        current = room.occupants.get(to.resource)
        if current is not None:  # another session of the same account (check_join checked the bare JID)
            room.attach(current, real, max_sessions=MAX_SESSIONS_PER_NICK)
            occ = current
        else:
            occ = Occupant(nick=to.resource, jid=real, role=room.default_role(aff),
                           occupant_id=self.occupant_id(room.jid, real), presence=presence_payload(el))
        # XEP-0045 §7.2.3: the others' presence first, then ours to everyone (ours to us last)
        for other in room.occupants.values():
            if other is not occ:
                self.send(real, occupant_presence(room, other, real, viewer=occ))
        if current is None:
            room.add(occ)
        self.joined.setdefault(real, set()).add(room.jid)
        codes = self._join_codes(room, el, to, created=created)
        if current is None:
            self.broadcast_presence(room, occ, self_codes=codes)
        else:  # the others already see this nick: only the new session hears about itself
            self.send(real, occupant_presence(room, occ, real, viewer=occ, codes=codes))
        self._history_and_subject(room, occ, real, x, now)

    @staticmethod
    def _join_codes(room: Room, el: Element, to: JID, *, created: bool = False) -> tuple[int, ...]:
        codes = []
        if room.config.non_anonymous:
            codes.append(STATUS["non_anonymous"])
        if room.config.archive:
            codes.append(STATUS["logged"])
        if created:
            codes.append(STATUS["created"])
        if el.get("to", "").partition("/")[2] != to.resource:
            codes.append(STATUS["nick_changed_by_service"])
        return tuple(codes)

    def _rejoin(self, room: Room, occ: Occupant, real: JID, el: Element, to: JID) -> None:
        """A join presence from a session already in the room (its client lost track, e.g. after
        a reconnect): the room state again, as on entering; the others see a presence update."""
        for other in room.occupants.values():
            if other is not occ:
                self.send(real, occupant_presence(room, other, real, viewer=occ))
        occ.presence = presence_payload(el)
        for other in list(room.occupants.values()):
            if other is not occ:
                self.to_occupant(other, lambda t, v=other: occupant_presence(room, occ, t, viewer=v))
        self.send(real, occupant_presence(room, occ, real, viewer=occ, codes=self._join_codes(room, el, to)))
        self._history_and_subject(room, occ, real, el.find(f"{{{NS_MUC}}}x"), _now())

    def _history_and_subject(self, room: Room, occ: Occupant, real: JID, x: Element | None,
                             now: _dt.datetime) -> None:
        self._send_history(room, real, x, now)
        # XEP-0045 §7.2.15: the subject (possibly empty) always ends the join
        subj_from = f"{room.jid}/{room.subject_nick}" if room.subject_nick else str(room.jid)
        self.send(real, (f"<message type='groupchat' from='{attr(subj_from)}' to='{attr(str(real))}' "
                         f"id='subject-{attr(occ.occupant_id[:8])}'><subject>{attr(room.subject)}</subject>"
                         f"</message>").encode())

    def _create(self, session, to: JID, now: _dt.datetime) -> Room:
        o = self.options
        bare = str(session.jid.bare)
        if len(self.rooms) >= o["max_rooms"]:
            raise MucError(E.RESOURCE_CONSTRAINT, "this service has reached its room limit (modules.muc.max_rooms)")
        if self.rooms_owned(bare) >= o["max_rooms_per_owner"]:
            raise MucError(E.NOT_ALLOWED, f"you own {o['max_rooms_per_owner']} rooms already "
                                          "(modules.muc.max_rooms_per_owner)")
        config = RoomConfig(archive=o["archive_default"])
        if o["create_encrypted_only"]:
            config.e2ee = config.e2ee_floor = "require"
        room = self.new_room(to.bare, config, now)
        config.e2ee = self.policies[room.jid.domain].effective(room)  # the form shows the floor
        room.locked = True  # XEP-0045 §10.1.1: until the owner accepts an instant room or configures it
        room.set_affiliation(bare, "owner")
        self.rooms[room.jid] = room
        log.debug("muc: %s created by %s", room.jid, bare)
        return room

    def _send_history(self, room: Room, real: JID, x: Element | None, now: _dt.datetime) -> None:
        for item in room.history_for(now, **history_request(x)):
            data = rewrite_start_tag(item.data, start_tag_len(item.data), {"to": str(real)})
            self.send(real, insert_before_end(data, delay_element(str(room.jid), item.ts)))

    def broadcast_presence(self, room: Room, occ: Occupant, *, self_codes: tuple[int, ...] = ()) -> None:
        for other in list(room.occupants.values()):
            codes = self_codes if other is occ else ()
            self.to_occupant(other, lambda to, v=other, c=codes: occupant_presence(room, occ, to, viewer=v, codes=c))

    def _change_nick(self, session, room: Room, occ: Occupant, new_nick: str, el: Element) -> None:
        old = occ.nick
        room.rename(occ, new_nick)  # raises conflict
        tmp = Occupant(nick=old, jid=occ.jid, role=occ.role, occupant_id=occ.occupant_id)
        for other in list(room.occupants.values()):
            viewer = tmp if other is occ else other
            self.to_occupant(other, lambda to, v=viewer: occupant_presence(
                room, tmp, to, viewer=v, unavailable=True, codes=(STATUS["nick_change"],), new_nick=new_nick,
                role=occ.role))
        occ.presence = presence_payload(el)
        self.broadcast_presence(room, occ)

    def leave(self, room: Room, occ: Occupant, *, status: str | None = None, codes: tuple[int, ...] = (),
              actor_nick: str | None = None, reason: str | None = None, affiliation: str | None = None,
              extra: str = "") -> None:
        """Remove ``occ``: unavailable presence to everyone still there and to itself."""
        extra_status = f"<status>{attr(status)}</status>".encode() if status else b""

        def data_for(to: JID, viewer: Occupant) -> bytes:
            data = occupant_presence(room, occ, to, viewer=viewer, unavailable=True, codes=codes,
                                     actor_nick=actor_nick, reason=reason, affiliation=affiliation, extra=extra)
            return data.replace(b">", b">" + extra_status, 1) if extra_status else data

        for other in list(room.occupants.values()):
            self.to_occupant(other, lambda to, v=other: data_for(to, v))
        room.remove(occ.jid)
        for real in occ.sessions:
            self._forget(real, room.jid)
        if room.empty and not room.config.persistent:
            self.end_room(room)

    def end_room(self, room: Room) -> None:
        """A temporary room ends with its last occupant (XEP-0045 §10.1.3): its archive goes too."""
        if self.rooms.get(room.jid) is room:
            del self.rooms[room.jid]
        self.spawn_durable(self.store.delete_room(room.jid.domain, room.jid.local, archive_before=_now()),
                           room.jid)

    def _forget(self, real: JID, room_jid: JID) -> None:
        rooms = self.joined.get(real)
        if rooms is not None:
            rooms.discard(room_jid)
            if not rooms:
                del self.joined[real]

    def leave_session(self, room: Room, occ: Occupant, real: JID, *, status: str | None = None) -> None:
        """One session goes: the occupant stays while its account has other sessions in the room."""
        if room.detach(real) is None:
            self.leave(room, occ, status=status)
            return
        self._forget(real, room.jid)
        self.send(real, occupant_presence(room, occ, real, viewer=occ, unavailable=True))

    def _session_closed(self, session) -> None:
        self._leave_all(session.jid)
        self.messages.forget(session.jid)

    def _presence_out(self, session, stanza, to, typ) -> bool:
        if to is None and typ == "unavailable":
            self._leave_all(session.jid)  # unavailable broadcast: out of every room too
        return False

    def _leave_all(self, real: JID) -> None:
        for room_jid in list(self.joined.get(real, ())):
            room = self.rooms.get(room_jid)
            occ = room.occupant(real) if room is not None else None
            if occ is not None:
                self.leave_session(room, occ, real)
        self.joined.pop(real, None)

    def rate_ok(self, room: Room, occ: Occupant) -> bool:
        return room.take_token(occ, time.monotonic(), rate=self.options["message_rate"],
                               burst=self.options["message_burst"])

    def parse_jid(self, text: str | None) -> JID:
        try:
            return JID.parse(text or "")
        except InvalidJID as exc:
            raise MucError(E.JID_MALFORMED, f"not a JID: {exc}") from None
