"""The room archive: XEP-0313 (urn:xmpp:mam:2) on the room JID, with XEP-0359 stanza ids.

Spec references:
  XEP-0313 §4     query: iq set <query queryid/> to the room JID; form fields
                  with (an occupant JID room@service/nick), start, end,
                  after-id, before-id; RSM max/after/before (XEP-0059)
  XEP-0313 §5.1.3 (MUC) results come from the room's bare JID
  XEP-0313 §6     who may query: occupants; members in members-only rooms;
                  anyone not banned in open rooms
  XEP-0359 §3     the archive id is the <stanza-id by='room'/> every occupant got

What is archived is the exact bytes the room broadcast (``from`` = the
sender's occupant JID, payload untouched — OMEMO stays ciphertext).  Rows go
through a group-commit writer (xmppd.storage.writer); the message is settled
(XEP-0198) only when its row is committed (``Router.defer``).  A full writer
queue refuses the message with ``resource-constraint`` instead of dropping it.
"""

from __future__ import annotations

import asyncio
import logging
from xml.etree.ElementTree import Element, SubElement

from ...errors import StanzaErrorCondition as E
from ...jid import JID, InvalidJID
from ...storage.muc import UnknownArchiveId
from ...storage.writer import GroupCommitWriter, WriterFull, WriterStopped
from ...xml.writer import serialize
from .._im import NS_DELAY, attr, forwarded, has_body, has_encrypted, has_hint, parse_xep82, xep82
from .room import AFF_RANK, MucError, Room

__all__ = ["RoomArchive", "MAX_PAGE_SIZE", "DEFAULT_PAGE_SIZE", "STOP_CEILING_S"]

log = logging.getLogger("xmppd.modules.muc.archive")

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_DATA = "jabber:x:data"
#: largest RSM <max/> a room query may ask for, and the page size without <max/>
MAX_PAGE_SIZE = 250
DEFAULT_PAGE_SIZE = 50
#: how long stop() waits for queued archive rows to be committed
STOP_CEILING_S = 10.0
#: longest a query waits for rows still in the writer
WRITE_WAIT_S = 5.0


class RoomArchive:
    def __init__(self, muc) -> None:
        self.muc = muc
        self.writer = GroupCommitWriter(self.muc.store.append_many, name="muc-archive")
        self._last: asyncio.Future | None = None

    @staticmethod
    def archivable(el: Element) -> bool:
        if has_hint(el, "no-store") or has_hint(el, "no-permanent-store"):
            return False
        return has_body(el) or has_encrypted(el) or has_hint(el, "store")

    def append(self, session, el: Element, room: Room, archive_id: str, ts, nick: str, data: bytes) -> None:
        row = (room.jid.domain, room.jid.local, archive_id, ts, nick, data)
        try:
            fut = self.writer.submit(row, key=str(room.jid))
        except (WriterFull, WriterStopped) as exc:
            log.warning("muc archive: %s not archived: %s", room.jid, exc)
            raise MucError(E.RESOURCE_CONSTRAINT, "the room archive is busy, try again") from None
        self._last = fut
        self.muc.defer(fut)

    async def stop(self) -> None:
        report = await self.writer.stop(STOP_CEILING_S)
        if report.left or report.failed:
            log.error("muc archive: %d rows failed, %d left unwritten at stop", report.failed, report.left)

    # ------------------------------------------------------------ query
    def _may_query(self, room: Room, real: JID) -> bool:
        aff = room.affiliation(real)
        if aff == "outcast":
            return False
        if room.occupant(real) is not None:
            return True
        return AFF_RANK[aff] >= AFF_RANK["member"] or not room.config.members_only

    def handle(self, session, el: Element, room: Room) -> None:
        q = el[0]
        if not room.config.archive:
            raise MucError(E.SERVICE_UNAVAILABLE, "this room is not archived")
        if not self._may_query(room, session.jid):
            raise MucError(E.FORBIDDEN, "you may not read this room's archive")
        if el.get("type") == "get":
            out = Element(f"{{{NS_MAM}}}query")
            x = SubElement(out, f"{{{NS_DATA}}}x", {"type": "form"})
            ft = SubElement(x, f"{{{NS_DATA}}}field", {"type": "hidden", "var": "FORM_TYPE"})
            SubElement(ft, f"{{{NS_DATA}}}value").text = NS_MAM
            for var in ("with", "start", "end", "after-id", "before-id"):
                SubElement(x, f"{{{NS_DATA}}}field", {"type": "text-single", "var": var})
            self.muc.send(session.jid, self.muc.result(el, serialize(out).decode()))
            return
        if q.tag != f"{{{NS_MAM}}}query":
            raise MucError(E.FEATURE_NOT_IMPLEMENTED, "room archives have no preferences")
        try:
            args = self._parse(room, q)
        except ValueError as exc:
            raise MucError(E.BAD_REQUEST, str(exc)) from None
        self.muc.spawn_durable(self._run(session, el, room, args))

    @staticmethod
    def _parse(room: Room, q: Element) -> dict:
        args: dict = {}
        x = q.find(f"{{{NS_DATA}}}x")
        for field in (x.findall(f"{{{NS_DATA}}}field") if x is not None else ()):
            var = field.get("var", "")
            value = (field.findtext(f"{{{NS_DATA}}}value") or "").strip()
            if var == "FORM_TYPE" or not value:
                continue
            if var == "with":
                try:
                    jid = JID.parse(value)
                except InvalidJID as exc:
                    raise ValueError(f"'with' is not a JID: {exc}") from None
                if jid.bare != room.jid or jid.resource is None:
                    raise ValueError("'with' must be an occupant JID of this room (room@service/nick)")
                args["with_nick"] = jid.resource
            elif var in ("start", "end"):
                try:
                    args[var] = parse_xep82(value)
                except ValueError:
                    raise ValueError(f"'{var}' is not an XEP-0082 date-time") from None
            elif var in ("after-id", "before-id"):
                args[var.replace("-", "_")] = value
            else:
                raise ValueError(f"unsupported filter field {var!r}")
        max_items = DEFAULT_PAGE_SIZE
        rsm = q.find(f"{{{NS_RSM}}}set")
        if rsm is not None:
            text = rsm.findtext(f"{{{NS_RSM}}}max")
            if text is not None:
                try:
                    max_items = int(text.strip())
                except ValueError:
                    raise ValueError("RSM <max/> is not an integer") from None
                if not 0 <= max_items <= MAX_PAGE_SIZE:
                    raise ValueError(f"RSM <max/> must be 0..{MAX_PAGE_SIZE}")
            after, before = rsm.find(f"{{{NS_RSM}}}after"), rsm.find(f"{{{NS_RSM}}}before")
            if after is not None:
                args["after_id"] = (after.text or "").strip()
            if before is not None:
                args["before_id"] = (before.text or "").strip()
        args["max_items"] = max_items
        return args

    async def _run(self, session, el: Element, room: Room, args: dict) -> None:
        last = self._last
        if last is not None and not last.done():  # a message just relayed must be findable
            await asyncio.wait([last], timeout=WRITE_WAIT_S)
        # only this incarnation of the room: an earlier room of the same name is not its history
        start = args.get("start")
        args["start"] = max(start, room.created_at) if start is not None else room.created_at
        try:
            page = await self.muc.store.query(room.jid.domain, room.jid.local, **args)
        except UnknownArchiveId as exc:
            self.muc.error(session, el, E.ITEM_NOT_FOUND, f"no message with id {exc.archive_id!r} in this archive")
            return
        queryid = el[0].get("queryid")
        qattr = f" queryid='{attr(queryid)}'" if queryid is not None else ""
        head = f"<message to='{attr(str(session.jid))}' from='{attr(str(room.jid))}'>"
        for item in page.items:
            delay = f"<delay xmlns='{NS_DELAY}' from='{attr(str(room.jid))}' stamp='{xep82(item.ts)}'/>".encode()
            self.muc.send(session.jid, (head + f"<result xmlns='{NS_MAM}'{qattr} id='{attr(item.archive_id)}'>")
                          .encode() + forwarded(item.data, delay) + b"</result></message>")
        fin = Element(f"{{{NS_MAM}}}fin")
        if page.complete:
            fin.set("complete", "true")
        rsm = SubElement(fin, f"{{{NS_RSM}}}set")
        if page.items:
            SubElement(rsm, f"{{{NS_RSM}}}first").text = page.items[0].archive_id
            SubElement(rsm, f"{{{NS_RSM}}}last").text = page.items[-1].archive_id
        SubElement(rsm, f"{{{NS_RSM}}}count").text = str(page.count)
        self.muc.send(session.jid, self.muc.result(el, serialize(fin).decode()))
