"""Occupant presence bytes and MUC status codes (XEP-0045 §7.2, §9, §10; XEP-0421).

Pure: functions of the room state, returning the exact bytes to send.

Status codes used (XEP-0045 §15.6 / registrar):
  100 the room is non-anonymous (self-presence on entering)
  110 this presence is about you (self-presence)
  170 the room is archived (MAM, muc#roomconfig_enablelogging)
  201 a new room was created
  210 the service changed your nick (normalised)
  301 banned, 303 nick change, 307 kicked
  321 removed: affiliation change in a members-only room
  322 removed: the room became members-only
  332 removed: the service shuts down
  104 (message) configuration changed; 172 / 173 now non-anonymous / semi-anonymous
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

import precis_i18n

from ...errors import STANZA_ERROR_TYPES, StanzaErrorCondition
from ...jid import JID
from ...xml.writer import serialize
from .._im import attr, parse_xep82
from .room import MucError, Occupant, Room

__all__ = ["NS_MUC", "NS_USER", "NS_ADMIN", "NS_OWNER", "NS_OCCUPANT_ID", "user_x", "occupant_presence",
           "error_stanza", "STATUS", "nickname", "presence_payload", "history_request", "MAX_NICK_BYTES"]

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

STATUS = {"non_anonymous": 100, "self": 110, "logged": 170, "created": 201, "nick_changed_by_service": 210,
          "banned": 301, "nick_change": 303, "kicked": 307, "affiliation_removed": 321,
          "members_only_removed": 322, "shutdown": 332, "config_changed": 104,
          "now_non_anonymous": 172, "now_semi_anonymous": 173}


def user_x(room: Room, occ: Occupant, *, show_jid: bool, codes: tuple[int, ...] = (),
           new_nick: str | None = None, actor_nick: str | None = None, reason: str | None = None,
           role: str | None = None, affiliation: str | None = None) -> str:
    """``<x xmlns='…muc#user'><item …/><status code/>…</x>``."""
    aff = affiliation if affiliation is not None else room.affiliation(occ.jid)
    item = f"<item affiliation='{aff}' role='{role or occ.role}'"
    if show_jid:
        item += f" jid='{attr(str(occ.jid))}'"
    if new_nick is not None:
        item += f" nick='{attr(new_nick)}'"
    inner = ""
    if actor_nick is not None:
        inner += f"<actor nick='{attr(actor_nick)}'/>"
    if reason:
        inner += f"<reason>{attr(reason)}</reason>"
    item += f">{inner}</item>" if inner else "/>"
    status = "".join(f"<status code='{c}'/>" for c in sorted(set(codes)))
    return f"<x xmlns='{NS_USER}'>{item}{status}</x>"


def occupant_presence(room: Room, occ: Occupant, to: JID, *, viewer: Occupant | None,
                      unavailable: bool = False, codes: tuple[int, ...] = (), new_nick: str | None = None,
                      actor_nick: str | None = None, reason: str | None = None, role: str | None = None,
                      affiliation: str | None = None, extra: str = "") -> bytes:
    """The presence of ``occ`` as ``to`` receives it (``viewer``: the recipient's occupant)."""
    me = viewer is occ
    show_jid = me or room.sees_real_jids(viewer)
    codes = tuple(codes) + ((STATUS["self"],) if me else ())
    frm = f"{room.jid}/{occ.nick}"
    head = f"<presence from='{attr(frm)}' to='{attr(str(to))}'"
    if unavailable:
        head += " type='unavailable'"
    body = b"" if unavailable else occ.presence
    x = user_x(room, occ, show_jid=show_jid, codes=codes, new_nick=new_nick, actor_nick=actor_nick,
               reason=reason, role=role or ("none" if unavailable else None), affiliation=affiliation)
    oid = f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='{attr(occ.occupant_id)}'/>"
    return head.encode() + b">" + body + (x + oid + extra).encode() + b"</presence>"


def error_stanza(kind: str, *, frm: str, to: str, stanza_id: str | None, condition: StanzaErrorCondition,
                 text: str, echo: str = "", by: str | None = None) -> bytes:
    """An error ``<presence/>``/``<message/>``/``<iq/>`` (RFC 6120 §8.3) from the room.

    ``echo``: children of the request to include (XEP-0045 examples echo ``<x xmlns='…muc'/>``,
    which is also how clients recognise a failed join)."""
    ident = f" id='{attr(stanza_id)}'" if stanza_id is not None else ""
    err_by = f" by='{attr(by)}'" if by else ""
    err = (f"<error type='{STANZA_ERROR_TYPES[condition]}'{err_by}><{condition.value} xmlns='{NS_STANZAS}'/>"
           f"<text xmlns='{NS_STANZAS}'>{attr(text)}</text></error>")
    return (f"<{kind} from='{attr(frm)}' to='{attr(to)}' type='error'{ident}>{echo}{err}</{kind}>").encode()


#: presence children never rebroadcast from a client (the room adds its own)
_STRIPPED = frozenset({f"{{{NS_MUC}}}x", f"{{{NS_USER}}}x", f"{{{NS_OCCUPANT_ID}}}occupant-id"})
#: RFC 8266 nicknames (case preserved, as shown to others); longest nick in UTF-8 bytes
_NICKNAME = precis_i18n.get_profile("NicknameCasePreserved")
MAX_NICK_BYTES = 256


def nickname(text: str) -> str:
    """PRECIS Nickname profile (RFC 8266, case preserved): width-mapped, spaces folded;
    XEP-0045 §7.2.1 jid-malformed when nothing valid is left."""
    try:
        nick = _NICKNAME.enforce(text)
    except Exception:  # noqa: BLE001 - precis_i18n raises UnicodeError / ValueError subclasses
        raise MucError(StanzaErrorCondition.JID_MALFORMED, "not a valid nickname (RFC 8266)") from None
    if not nick or len(nick.encode()) > MAX_NICK_BYTES:
        raise MucError(StanzaErrorCondition.JID_MALFORMED, f"a nickname has 1..{MAX_NICK_BYTES} bytes")
    return nick


def presence_payload(el: Element) -> bytes:
    """What the room rebroadcasts of a client's presence: every child but the MUC ones."""
    return b"".join(serialize(c) for c in el if c.tag not in _STRIPPED)


def history_request(x: Element | None) -> dict:
    """``<history maxstanzas|seconds|maxchars|since/>`` (XEP-0045 §7.2.15) as arguments of
    :meth:`Room.history_for`; unparsable values are ignored (the default history is sent)."""
    hist = x.find(f"{{{NS_MUC}}}history") if x is not None else None
    args: dict = {}
    if hist is None:
        return args
    for key in ("maxstanzas", "seconds", "maxchars"):
        value = hist.get(key)
        if value is not None:
            try:
                args[key] = max(0, int(value))
            except ValueError:
                pass
    since = hist.get("since")
    if since:
        try:
            args["since"] = parse_xep82(since)
        except ValueError:
            pass
    return args
