"""Pure room state (XEP-0045): configuration, affiliations, occupants, roles, history.

Rules of this file: no I/O, no clock (``now`` is passed in), no XML.  The
service asks a :class:`Room` what is allowed and what changed; it builds and
sends the stanzas itself.  Errors a user causes are :class:`MucError` with the
stanza error condition and a human-readable text (XEP-0045 §7.2 table).

Spec references:
  XEP-0045 §5.1   affiliations owner > admin > member > none > outcast
  XEP-0045 §5.2   roles moderator > participant > visitor; default role by affiliation
  XEP-0045 §7.2.6 banned users cannot enter (forbidden)
  XEP-0045 §7.2.7 members-only rooms: registration-required for non-members
  XEP-0045 §7.2.8 conflict when the nick is taken (or reserved by another member)
  XEP-0045 §7.2.9 max users: service-unavailable
  XEP-0045 §7.2.10 locked room: item-not-found until the owner configured it
  XEP-0045 §7.2.5 password: not-authorized
"""

from __future__ import annotations

import collections
import datetime as _dt
from dataclasses import asdict, dataclass, field, fields

from ...errors import StanzaErrorCondition as E
from ...jid import JID

__all__ = ["AFFILIATIONS", "ROLES", "RoomConfig", "Occupant", "HistoryItem", "Room", "MucError",
           "AFF_RANK", "ROLE_RANK"]

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")
AFF_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}
ALLOW_PM = ("anyone", "participants", "moderators", "none")
WHOIS = ("moderators", "anyone")


class MucError(Exception):
    """A request the room refuses: ``condition`` (RFC 6120 §8.3.3) and a ``text`` for the user."""

    def __init__(self, condition: E, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(slots=True)
class RoomConfig:
    """``muc#roomconfig`` (XEP-0045 §10.2) — the stored configuration."""

    name: str = ""
    description: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""  # empty: no password (muc_unsecured)
    max_users: int = 0  # 0: the service's limit
    whois: str = "moderators"  # "anyone" = non-anonymous
    change_subject: bool = False  # participants may change the subject
    allow_invites: bool = False  # members may invite (and so add members) in members-only rooms
    allow_pm: str = "anyone"
    archive: bool = True  # muc#roomconfig_enablelogging: XEP-0313 archive on the room JID
    e2ee: str = "none"  # per-room encryption policy (policy.py): none | warn | require
    e2ee_floor: str = "none"  # set at creation under create_encrypted_only; the owner cannot go below
    lang: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RoomConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def non_anonymous(self) -> bool:
        return self.whois == "anyone"


@dataclass(slots=True)
class Occupant:
    """One nick in the room.  Several sessions of the same account may share it
    (XEP-0045 §7.2 multi-session: each gets everything the room sends)."""

    nick: str
    jid: JID  # the real full JID of the first session (shown in items)
    role: str
    occupant_id: str  # XEP-0421
    #: serialised presence children to rebroadcast (show, status, caps...; no MUC elements)
    presence: bytes = b""
    #: message rate limit: token bucket (tokens, last refill time)
    tokens: float = 0.0
    refilled: float = 0.0
    #: further sessions of the same account under this nick
    extra: list = field(default_factory=list)

    @property
    def sessions(self) -> list[JID]:
        return [self.jid, *self.extra]


@dataclass(frozen=True, slots=True)
class HistoryItem:
    ts: _dt.datetime
    nick: str
    data: bytes  # the message as broadcast (from = room/nick), without 'to'


@dataclass
class Room:
    jid: JID  # bare room JID
    config: RoomConfig
    created_at: _dt.datetime
    history_size: int = 20
    #: bare JID text -> affiliation (never "none": absent means none)
    affiliations: dict[str, str] = field(default_factory=dict)
    #: bare JID text -> reserved nick (XEP-0045 §7.12)
    nicks: dict[str, str] = field(default_factory=dict)
    occupants: dict[str, Occupant] = field(default_factory=dict)  # nick -> occupant
    by_jid: dict[JID, str] = field(default_factory=dict)  # real full JID -> nick
    subject: str = ""
    subject_nick: str = ""
    locked: bool = False  # created, not yet configured by its owner (XEP-0045 §10.1)
    history: collections.deque = field(default_factory=collections.deque)

    # ------------------------------------------------------------ affiliations / roles
    def affiliation(self, real: JID) -> str:
        return self.affiliations.get(str(real.bare), "none")

    def owners(self) -> list[str]:
        return [j for j, a in self.affiliations.items() if a == "owner"]

    def default_role(self, affiliation: str) -> str:
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "outcast":
            return "none"
        if affiliation == "none" and self.config.moderated:
            return "visitor"
        return "participant"

    def set_affiliation(self, bare: str, affiliation: str, nick: str | None = None) -> None:
        if affiliation == "none":
            self.affiliations.pop(bare, None)
            self.nicks.pop(bare, None)
        else:
            self.affiliations[bare] = affiliation
            if nick:
                self.nicks[bare] = nick

    def occupants_of(self, bare: str) -> list[Occupant]:
        return [o for o in self.occupants.values() if str(o.jid.bare) == bare]

    # ------------------------------------------------------------ join / leave
    def check_join(self, real: JID, nick: str, password: str | None, *, max_users: int) -> None:
        """Raise MucError when ``real`` may not enter as ``nick`` (XEP-0045 §7.2 order of checks)."""
        aff = self.affiliation(real)
        if self.locked and aff != "owner":
            raise MucError(E.ITEM_NOT_FOUND, "this room is locked: its owner has not configured it yet")
        if aff == "outcast":
            raise MucError(E.FORBIDDEN, "you are banned from this room")
        if self.config.members_only and AFF_RANK[aff] < AFF_RANK["member"]:
            raise MucError(E.REGISTRATION_REQUIRED, "this room is members-only and you are not a member")
        current = self.occupants.get(nick)
        if current is not None and current.jid.bare != real.bare:
            raise MucError(E.CONFLICT, "this nickname is already in use in the room")
        for bare, reserved in self.nicks.items():
            if reserved == nick and bare != str(real.bare):
                raise MucError(E.CONFLICT, "this nickname is reserved by another member")
        if self.config.password and aff not in ("owner", "admin") and password != self.config.password:
            raise MucError(E.NOT_AUTHORIZED, "this room needs a password")
        limit = min(self.config.max_users or max_users, max_users)
        if len(self.occupants) >= limit and aff not in ("owner", "admin") and current is None:
            raise MucError(E.SERVICE_UNAVAILABLE, f"the room is full ({limit} occupants)")

    def add(self, occupant: Occupant) -> None:
        self.occupants[occupant.nick] = occupant
        self.by_jid[occupant.jid] = occupant.nick

    def attach(self, occupant: Occupant, real: JID, *, max_sessions: int) -> None:
        """Another session of the occupant's account joins under the same nick."""
        if real.bare != occupant.jid.bare:
            raise MucError(E.CONFLICT, "this nickname is already in use in the room")
        if len(occupant.extra) + 1 >= max_sessions:
            raise MucError(E.RESOURCE_CONSTRAINT, f"at most {max_sessions} sessions may share one nick")
        occupant.extra.append(real)
        self.by_jid[real] = occupant.nick

    def detach(self, real: JID) -> Occupant | None:
        """Remove one session of a multi-session occupant; None when it was the only one
        (the caller then removes the occupant with :meth:`remove`)."""
        occ = self.occupant(real)
        if occ is None or not occ.extra:
            return None
        if occ.jid == real:
            occ.jid = occ.extra.pop(0)
        else:
            occ.extra.remove(real)
        del self.by_jid[real]
        return occ

    def remove(self, real: JID) -> Occupant | None:
        """Remove the occupant (all its sessions) that ``real`` is a session of."""
        nick = self.by_jid.get(real)
        if nick is None:
            return None
        occ = self.occupants.pop(nick, None)
        if occ is not None:
            for s in occ.sessions:
                self.by_jid.pop(s, None)
        return occ

    def occupant(self, real: JID) -> Occupant | None:
        nick = self.by_jid.get(real)
        return self.occupants.get(nick) if nick is not None else None

    def rename(self, occupant: Occupant, new_nick: str) -> None:
        if self.occupants.get(new_nick) not in (None, occupant):
            raise MucError(E.CONFLICT, "this nickname is already in use in the room")
        for bare, reserved in self.nicks.items():
            if reserved == new_nick and bare != str(occupant.jid.bare):
                raise MucError(E.CONFLICT, "this nickname is reserved by another member")
        del self.occupants[occupant.nick]
        occupant.nick = new_nick
        self.occupants[new_nick] = occupant
        for s in occupant.sessions:
            self.by_jid[s] = new_nick

    @property
    def empty(self) -> bool:
        return not self.occupants

    # ------------------------------------------------------------ who sees what
    def sees_real_jids(self, viewer: Occupant | None) -> bool:
        """Non-anonymous rooms show real JIDs to everyone, semi-anonymous only to moderators."""
        return self.config.non_anonymous or (viewer is not None and viewer.role == "moderator")

    def may_read_member_list(self, real: JID) -> bool:
        """Admins and owners always; members too in members-only rooms that are non-anonymous
        (what OMEMO group chats need: every member's devices, XEP-0384 §5.6)."""
        aff = AFF_RANK[self.affiliation(real)]
        if aff >= AFF_RANK["admin"]:
            return True
        return aff >= AFF_RANK["member"] and self.config.members_only and self.config.non_anonymous

    def may_send_pm(self, sender: Occupant) -> bool:
        rule = self.config.allow_pm
        if rule == "anyone":
            return True
        if rule == "none":
            return False
        return ROLE_RANK[sender.role] >= ROLE_RANK["participant" if rule == "participants" else "moderator"]

    def may_change_subject(self, occupant: Occupant) -> bool:
        if occupant.role == "moderator":
            return True
        return self.config.change_subject and occupant.role == "participant"

    def may_invite(self, real: JID) -> bool:
        if not self.config.members_only:
            return True
        aff = AFF_RANK[self.affiliation(real)]
        return aff >= AFF_RANK["admin"] or (self.config.allow_invites and aff >= AFF_RANK["member"])

    # ------------------------------------------------------------ rate limit
    def take_token(self, occupant: Occupant, now: float, *, rate: float, burst: int) -> bool:
        """Token bucket per occupant: ``rate`` messages/s, ``burst`` at once."""
        if rate <= 0:
            return True
        if occupant.refilled == 0.0:
            occupant.tokens, occupant.refilled = float(burst), now
        occupant.tokens = min(float(burst), occupant.tokens + (now - occupant.refilled) * rate)
        occupant.refilled = now
        if occupant.tokens < 1.0:
            return False
        occupant.tokens -= 1.0
        return True

    # ------------------------------------------------------------ history (XEP-0045 §7.2.15)
    def remember(self, item: HistoryItem) -> None:
        if self.history_size <= 0:
            return
        self.history.append(item)
        while len(self.history) > self.history_size:
            self.history.popleft()

    def history_for(self, now: _dt.datetime, *, maxstanzas: int | None = None, seconds: int | None = None,
                    since: _dt.datetime | None = None, maxchars: int | None = None) -> list[HistoryItem]:
        items = list(self.history)
        if seconds is not None:
            cut = now - _dt.timedelta(seconds=max(0, seconds))
            items = [i for i in items if i.ts >= cut]
        if since is not None:
            items = [i for i in items if i.ts >= since]
        if maxstanzas is not None:
            items = items[-maxstanzas:] if maxstanzas > 0 else []
        if maxchars is not None:
            out, total = [], 0
            for item in reversed(items):
                total += len(item.data)
                if total > maxchars:
                    break
                out.append(item)
            items = list(reversed(out))
        return items
