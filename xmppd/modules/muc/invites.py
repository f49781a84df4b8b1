"""Mediated invitations (XEP-0045 §7.8.2) and declines (§7.8.3).

A user sends ``<message to='room'><x xmlns='…muc#user'><invite to='jid'><reason/></invite></x>``;
the room sends the invitee ``<invite from='real JID of the inviter'>`` (plus the
room password, if any).  In a members-only room the inviter must be allowed
to invite (admins/owners; members when ``muc#roomconfig_allowinvites``), and
the invitee becomes a member (§7.8.2: "the service MAY add the invitee to
the member list") — committed before the invitation goes out.

Direct invitations (XEP-0249, ``<x xmlns='jabber:x:conference'/>`` in a
message to the invitee) are client to client: the router relays them untouched.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from ...errors import StanzaErrorCondition as E
from .._im import attr
from .presence import NS_USER
from .room import AFF_RANK, MucError, Room

__all__ = ["Invites", "MAX_INVITES_PER_MESSAGE"]

#: <invite/> elements handled in one message
MAX_INVITES_PER_MESSAGE = 10


class Invites:
    def __init__(self, muc) -> None:
        self.muc = muc

    def handle(self, session, el: Element, room: Room, x: Element) -> None:
        decline = x.find(f"{{{NS_USER}}}decline")
        if decline is not None:
            self._decline(session, room, decline)
            return
        invites = x.findall(f"{{{NS_USER}}}invite")[:MAX_INVITES_PER_MESSAGE]
        real = session.jid
        if room.occupant(real) is None and AFF_RANK[room.affiliation(real)] < AFF_RANK["member"]:
            raise MucError(E.NOT_ACCEPTABLE, "only occupants and members may invite to this room")
        if not room.may_invite(real):
            raise MucError(E.FORBIDDEN, "you may not invite to this members-only room")
        occ = room.occupant(real)
        if occ is not None and not self.muc.rate_ok(room, occ):  # invitations count as messages
            raise MucError(E.RESOURCE_CONSTRAINT, "you are sending too fast (modules.muc.message_rate)")
        targets = []
        for inv in invites:
            target = self.muc.parse_jid(inv.get("to")).bare
            targets.append((target, inv.findtext(f"{{{NS_USER}}}reason") or ""))
        added = []
        if room.config.members_only:
            for target, _ in targets:
                if room.affiliation(target) == "none":
                    room.set_affiliation(str(target), "member")
                    added.append((str(target), "member", None, None))
        password = f"<password>{attr(room.config.password)}</password>" if room.config.password else ""

        def send_all() -> None:
            for target, reason in targets:
                r = f"<reason>{attr(reason)}</reason>" if reason else ""
                self.muc.send_bare(target, lambda full: (
                    f"<message from='{attr(str(room.jid))}' to='{attr(str(full))}'>"
                    f"<x xmlns='{NS_USER}'><invite from='{attr(str(real))}'>{r}</invite>{password}</x>"
                    f"<body>{attr(str(real.bare))} invites you to the room {attr(str(room.jid))}"
                    f"{': ' + attr(reason) if reason else ''}</body></message>").encode())

        if added and room.config.persistent:
            async def commit() -> None:
                await self.muc.store.set_affiliations(room.jid.domain, room.jid.local, added)
                send_all()
            self.muc.spawn_durable(commit(), room.jid)
        else:
            send_all()

    def _decline(self, session, room: Room, decline: Element) -> None:
        to = self.muc.parse_jid(decline.get("to"))
        reason = decline.findtext(f"{{{NS_USER}}}reason") or ""
        r = f"<reason>{attr(reason)}</reason>" if reason else ""
        data_for = lambda full: (  # noqa: E731
            f"<message from='{attr(str(room.jid))}' to='{attr(str(full))}'><x xmlns='{NS_USER}'>"
            f"<decline from='{attr(str(session.jid.bare))}'>{r}</decline></x></message>").encode()
        if to.resource is not None:
            self.muc.send(to, data_for(to))
        else:
            self.muc.send_bare(to, data_for)
