"""Admin and owner requests (XEP-0045 §8, §9, §10): roles, affiliations, configuration, destroy.

Spec references:
  XEP-0045 §8.2-8.6  kick (role none, 307), voice (participant/visitor), moderator list
  XEP-0045 §9.1-9.8  ban (outcast, 301), member/admin/owner lists get and set
  XEP-0045 §9.3/9.4  removing a member from a members-only room removes the occupant (321)
  XEP-0045 §10.1.2   instant room: empty submitted form; §10.1.3 reserved room: the form
  XEP-0045 §10.2     configuration form (muc#roomconfig); becoming members-only removes
                     non-members (322); 104/172/173 status messages to the occupants
  XEP-0045 §10.9     destroy, with reason and alternate venue, to every occupant
  XEP-0045 §10.13    the last owner cannot be removed (conflict)

Every change to a persistent room is committed before the iq is answered (and
the stanza is settled, XEP-0198, only then: ``Router.defer``).
"""

from __future__ import annotations

import datetime as _dt
import json
from xml.etree.ElementTree import Element, SubElement

from ...errors import StanzaErrorCondition as E
from ...xml.writer import serialize
from .._im import attr
from .policy import CONFIG_VAR, LEVELS
from .presence import NS_ADMIN, NS_OWNER, NS_USER, STATUS, occupant_presence
from .room import AFF_RANK, AFFILIATIONS, ALLOW_PM, ROLE_RANK, WHOIS, MucError, Room, RoomConfig

__all__ = ["Admin", "config_form"]

NS_DATA = "jabber:x:data"
FORM_TYPE = "http://jabber.org/protocol/muc#roomconfig"
_X = f"{{{NS_DATA}}}"

#: muc#roomconfig var -> (RoomConfig attribute, kind)
FIELDS = {
    "muc#roomconfig_roomname": ("name", "text-single"),
    "muc#roomconfig_roomdesc": ("description", "text-single"),
    "muc#roomconfig_lang": ("lang", "text-single"),
    "muc#roomconfig_persistentroom": ("persistent", "boolean"),
    "muc#roomconfig_publicroom": ("public", "boolean"),
    "muc#roomconfig_membersonly": ("members_only", "boolean"),
    "muc#roomconfig_moderatedroom": ("moderated", "boolean"),
    "muc#roomconfig_passwordprotectedroom": (None, "boolean"),
    "muc#roomconfig_roomsecret": ("password", "text-private"),
    "muc#roomconfig_maxusers": ("max_users", "text-single"),
    "muc#roomconfig_whois": ("whois", "list-single"),
    "muc#roomconfig_changesubject": ("change_subject", "boolean"),
    "muc#roomconfig_allowinvites": ("allow_invites", "boolean"),
    "muc#roomconfig_allowpm": ("allow_pm", "list-single"),
    "muc#roomconfig_enablelogging": ("archive", "boolean"),
    CONFIG_VAR: ("e2ee", "list-single"),
}
_OPTIONS = {"whois": WHOIS, "allow_pm": ALLOW_PM, "e2ee": LEVELS}


def _bool(text: str) -> bool:
    if text in ("1", "true"):
        return True
    if text in ("0", "false", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def config_form(room: Room) -> Element:
    x = Element(f"{_X}x", {"type": "form"})
    SubElement(x, f"{_X}title").text = f"Configuration of {room.jid}"
    ft = SubElement(x, f"{_X}field", {"var": "FORM_TYPE", "type": "hidden"})
    SubElement(ft, f"{_X}value").text = FORM_TYPE
    c = room.config
    for var, (name, kind) in FIELDS.items():
        f = SubElement(x, f"{_X}field", {"var": var, "type": kind})
        value = bool(c.password) if name is None else getattr(c, name)
        if isinstance(value, bool):
            value = "1" if value else "0"
        SubElement(f, f"{_X}value").text = str(value)
        for opt in _OPTIONS.get(name or "", ()):
            o = SubElement(f, f"{_X}option", {"label": opt})
            SubElement(o, f"{_X}value").text = opt
    return x


class Admin:
    def __init__(self, muc) -> None:
        self.muc = muc

    def handle(self, session, el: Element, room: Room, ns: str) -> None:
        typ = el.get("type")
        q = el[0]
        if ns == NS_ADMIN:
            if typ == "get":
                self._list(session, el, room, q)
            else:
                self._admin_set(session, el, room, q)
            return
        if room.affiliation(session.jid) != "owner":
            raise MucError(E.FORBIDDEN, "only an owner may configure or destroy this room")
        if typ == "get":
            out = Element(f"{{{NS_OWNER}}}query")
            out.append(config_form(room))
            self.muc.send(session.jid, self.muc.result(el, serialize(out).decode()))
            return
        destroy = q.find(f"{{{NS_OWNER}}}destroy")
        if destroy is not None:
            self._destroy(session, el, room, destroy)
            return
        x = q.find(f"{_X}x")
        if x is None:
            raise MucError(E.BAD_REQUEST, "expected a data form or <destroy/>")
        if x.get("type") == "cancel":
            if room.locked:
                self.muc.rooms.pop(room.jid, None)
                for occ in list(room.occupants.values()):
                    self.muc.leave(room, occ)
                self.muc.rooms.pop(room.jid, None)
            self.muc.send(session.jid, self.muc.result(el))
            return
        if x.get("type") != "submit":
            raise MucError(E.BAD_REQUEST, "the form must be type='submit' or 'cancel'")
        self._configure(session, el, room, x)

    # ------------------------------------------------------------ lists
    def _list(self, session, el: Element, room: Room, q: Element) -> None:
        items = q.findall(f"{{{NS_ADMIN}}}item")
        if len(items) != 1:
            raise MucError(E.BAD_REQUEST, "ask for one affiliation or one role")
        aff, role = items[0].get("affiliation"), items[0].get("role")
        out = Element(f"{{{NS_ADMIN}}}query")
        if aff is not None:
            if aff not in AFFILIATIONS or aff == "none":
                raise MucError(E.BAD_REQUEST, f"unknown affiliation list {aff!r}")
            if not room.may_read_member_list(session.jid) or (
                    aff == "outcast" and AFF_RANK[room.affiliation(session.jid)] < AFF_RANK["admin"]):
                raise MucError(E.FORBIDDEN, "you may not read this room's affiliation lists")
            for jid, a in sorted(room.affiliations.items()):
                if a == aff:
                    attrs = {"affiliation": a, "jid": jid}
                    if jid in room.nicks:
                        attrs["nick"] = room.nicks[jid]
                    SubElement(out, f"{{{NS_ADMIN}}}item", attrs)
        elif role in ("moderator", "participant", "visitor"):
            me = room.occupant(session.jid)
            if me is None or me.role != "moderator":
                raise MucError(E.FORBIDDEN, "only moderators may read role lists")
            for occ in room.occupants.values():
                if occ.role == role:
                    SubElement(out, f"{{{NS_ADMIN}}}item", {"role": role, "nick": occ.nick, "jid": str(occ.jid),
                                                           "affiliation": room.affiliation(occ.jid)})
        else:
            raise MucError(E.BAD_REQUEST, "an item needs affiliation or role")
        self.muc.send(session.jid, self.muc.result(el, serialize(out).decode()))

    # ------------------------------------------------------------ changes
    def _admin_set(self, session, el: Element, room: Room, q: Element) -> None:
        items = q.findall(f"{{{NS_ADMIN}}}item")
        if not items:
            raise MucError(E.BAD_REQUEST, "no item")
        actor = room.occupant(session.jid)
        actor_aff = room.affiliation(session.jid)
        aff_changes: list[tuple[str, str, str | None, str | None]] = []
        role_changes = []
        for item in items:
            reason = item.findtext(f"{{{NS_ADMIN}}}reason")
            if item.get("affiliation") is not None:
                jid = self.muc.parse_jid(item.get("jid")).bare
                aff = item.get("affiliation")
                if aff not in AFFILIATIONS:
                    raise MucError(E.BAD_REQUEST, f"unknown affiliation {aff!r}")
                self._may_set_affiliation(room, actor_aff, str(jid), aff)
                aff_changes.append((str(jid), aff, item.get("nick"), reason))
            elif item.get("role") is not None and item.get("nick") is not None:
                role = item.get("role")
                target = room.occupants.get(item.get("nick"))
                if role not in ROLE_RANK:
                    raise MucError(E.BAD_REQUEST, f"unknown role {role!r}")
                if target is None:
                    raise MucError(E.ITEM_NOT_FOUND, f"no occupant {item.get('nick')!r}")
                self._may_set_role(room, actor, actor_aff, target, role)
                role_changes.append((target, role, reason))
            else:
                raise MucError(E.BAD_REQUEST, "an item needs jid + affiliation or nick + role")
        owners = {j for j, a in room.affiliations.items() if a == "owner"}
        for jid, aff, _n, _r in aff_changes:
            (owners.add if aff == "owner" else owners.discard)(jid)
        if not owners:
            raise MucError(E.CONFLICT, "a room needs at least one owner")
        new = [c for c in aff_changes if c[0] not in room.affiliations]
        if len(room.affiliations) + len(new) > self.muc.options["max_affiliations"]:
            raise MucError(E.RESOURCE_CONSTRAINT, "too many affiliations (modules.muc.max_affiliations)")
        actor_nick = actor.nick if actor is not None else None
        for target, role, reason in role_changes:
            self._apply_role(room, target, role, actor_nick, reason)
        if not aff_changes:
            self.muc.send(session.jid, self.muc.result(el))
            return
        for jid, aff, nick, reason in aff_changes:
            room.set_affiliation(jid, aff, nick)
        for jid, aff, _nick, reason in aff_changes:
            self.apply_affiliation(room, jid, aff, actor_nick, reason)
        self.commit_then_answer(session, el, room, aff_changes)

    def commit_then_answer(self, session, el: Element, room: Room, changes) -> None:
        if not room.config.persistent:
            self.muc.send(session.jid, self.muc.result(el))
            return

        async def commit() -> None:
            await self.muc.store.set_affiliations(room.jid.domain, room.jid.local, changes)
            self.muc.send(session.jid, self.muc.result(el))

        self.muc.spawn_durable(commit(), room.jid)

    @staticmethod
    def _may_set_affiliation(room: Room, actor_aff: str, jid: str, aff: str) -> None:
        if AFF_RANK[actor_aff] < AFF_RANK["admin"]:
            raise MucError(E.FORBIDDEN, "only admins and owners may change affiliations")
        current = room.affiliations.get(jid, "none")
        if actor_aff != "owner" and (aff in ("owner", "admin") or current in ("owner", "admin")):
            raise MucError(E.NOT_ALLOWED, "only an owner may grant or revoke owner and admin")

    @staticmethod
    def _may_set_role(room: Room, actor, actor_aff: str, target, role: str) -> None:
        if actor is None or actor.role != "moderator":
            raise MucError(E.FORBIDDEN, "only moderators may change roles")
        target_aff = room.affiliation(target.jid)
        if role == "moderator" or target.role == "moderator":
            if AFF_RANK[actor_aff] < AFF_RANK["admin"]:
                raise MucError(E.NOT_ALLOWED, "only admins and owners may grant or revoke moderator")
        if AFF_RANK[target_aff] >= AFF_RANK["admin"] and role != "moderator":
            raise MucError(E.NOT_ALLOWED, "an admin or owner cannot be kicked or silenced")

    def _apply_role(self, room: Room, target, role: str, actor_nick, reason) -> None:
        if role == "none":
            self.muc.leave(room, target, codes=(STATUS["kicked"],), actor_nick=actor_nick, reason=reason)
            return
        target.role = role
        self.muc.broadcast_presence(room, target)

    def apply_affiliation(self, room: Room, jid: str, aff: str, actor_nick=None, reason=None) -> None:
        """Occupants of ``jid`` after its affiliation became ``aff`` (already set on the room)."""
        for occ in room.occupants_of(jid):
            if aff == "outcast":
                self.muc.leave(room, occ, codes=(STATUS["banned"],), actor_nick=actor_nick, reason=reason,
                               affiliation="outcast")
            elif room.config.members_only and AFF_RANK[aff] < AFF_RANK["member"]:
                self.muc.leave(room, occ, codes=(STATUS["affiliation_removed"],), affiliation=aff)
            else:
                role = room.default_role(aff)  # XEP-0045 §9: the role follows the new affiliation
                if not (role == "visitor" and occ.role == "participant"):  # a voice given stays
                    occ.role = role
                self.muc.broadcast_presence(room, occ)

    # ------------------------------------------------------------ configuration
    def _configure(self, session, el: Element, room: Room, x: Element) -> None:
        config = RoomConfig.from_dict(room.config.to_dict())
        protected = None
        for field in x.findall(f"{_X}field"):
            var = field.get("var", "")
            if var == "FORM_TYPE" or var not in FIELDS:
                continue  # unknown fields are ignored (clients send their own, XEP-0004 §3.2)
            name, kind = FIELDS[var]
            value = (field.findtext(f"{_X}value") or "").strip() if kind != "text-private" \
                else field.findtext(f"{_X}value") or ""
            try:
                if kind == "boolean":
                    if name is None:
                        protected = _bool(value)
                        continue
                    setattr(config, name, _bool(value))
                elif name == "max_users":
                    n = int(value or 0)
                    if n < 0:
                        raise ValueError("must be >= 0")
                    config.max_users = min(n, self.muc.options["max_occupants"])
                elif name in _OPTIONS:
                    if value not in _OPTIONS[name]:
                        raise ValueError(f"expected one of {', '.join(_OPTIONS[name])}")
                    setattr(config, name, value)
                else:
                    setattr(config, name, value)
            except ValueError as exc:
                raise MucError(E.NOT_ACCEPTABLE, f"{var}: {exc}") from None
        if protected is False:
            config.password = ""
        elif protected and not config.password:
            raise MucError(E.NOT_ACCEPTABLE, "a password-protected room needs muc#roomconfig_roomsecret")
        if config.e2ee != room.config.e2ee:  # only an explicit choice is checked against the floor
            reason = self.muc.policy(room).check_choice(room, config.e2ee)
            if reason is not None:
                raise MucError(E.NOT_ACCEPTABLE, reason)
        if len(json.dumps(config.to_dict())) > self.muc.options["max_config_bytes"]:
            raise MucError(E.NOT_ACCEPTABLE, "the configuration is too large (modules.muc.max_config_bytes)")
        old = room.config
        room.config = config
        was_locked, room.locked = room.locked, False
        self._after_config(room, old, was_locked)
        if config.persistent:
            async def commit() -> None:
                await self.muc.persist(room)
                self.muc.send(session.jid, self.muc.result(el))
            self.muc.spawn_durable(commit(), room.jid)
        else:
            if old.persistent:
                self.muc.spawn_durable(self.muc.store.delete_room(room.jid.domain, room.jid.local,
                                                                  keep_archive=True), room.jid)
            self.muc.send(session.jid, self.muc.result(el))

    def _after_config(self, room: Room, old: RoomConfig, was_locked: bool) -> None:
        new = room.config
        if new.members_only and not old.members_only:
            for occ in list(room.occupants.values()):
                if AFF_RANK[room.affiliation(occ.jid)] < AFF_RANK["member"]:
                    self.muc.leave(room, occ, codes=(STATUS["members_only_removed"],))
        if new.moderated != old.moderated:
            for occ in room.occupants.values():
                aff = room.affiliation(occ.jid)
                if aff == "none" and occ.role in ("participant", "visitor"):
                    occ.role = room.default_role(aff)
        if was_locked:
            return
        codes = [STATUS["config_changed"]]
        if new.non_anonymous != old.non_anonymous:
            codes.append(STATUS["now_non_anonymous"] if new.non_anonymous else STATUS["now_semi_anonymous"])
        if new.archive != old.archive:
            codes.append(STATUS["logged"] if new.archive else 171)
        status = "".join(f"<status code='{c}'/>" for c in codes)
        for occ in list(room.occupants.values()):
            self.muc.to_occupant(occ, lambda to: (f"<message type='groupchat' from='{attr(str(room.jid))}' "
                                                  f"to='{attr(str(to))}'><x xmlns='{NS_USER}'>{status}</x></message>"
                                                  ).encode())

    # ------------------------------------------------------------ destroy
    def _destroy(self, session, el: Element, room: Room, destroy: Element) -> None:
        reason = destroy.findtext(f"{{{NS_OWNER}}}reason")
        alt = destroy.get("jid")
        d = f"<destroy jid='{attr(alt)}'>" if alt else "<destroy>"
        d += (f"<reason>{attr(reason)}</reason>" if reason else "") + "</destroy>"
        self.muc.rooms.pop(room.jid, None)
        for occ in list(room.occupants.values()):
            self.muc.to_occupant(occ, lambda to, o=occ: occupant_presence(
                room, o, to, viewer=o, unavailable=True, affiliation="none").replace(b"</x>", d.encode() + b"</x>", 1))
            room.remove(occ.jid)
            for real in occ.sessions:
                self.muc._forget(real, room.jid)

        destroyed = _dt.datetime.now(_dt.timezone.utc)

        async def commit() -> None:
            await self.muc.store.delete_room(room.jid.domain, room.jid.local, archive_before=destroyed)
            self.muc.send(session.jid, self.muc.result(el))

        self.muc.spawn_durable(commit(), room.jid)
