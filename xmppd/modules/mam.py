"""Message Archive Management (XEP-0313, urn:xmpp:mam:2) with stanza ids (XEP-0359).

Spec references:
  XEP-0313 §4     query: iq set <query queryid/> to the own account; data form
                  filters with/start/end (and before-id/after-id, "#extended");
                  RSM (XEP-0059) max/after/before paging
  XEP-0313 §4.2   results: <message><result queryid id><forwarded><delay/>msg
                  </forwarded></result></message>, then <fin complete><set/></fin>
  XEP-0313 §5     preferences <prefs default='always|never|roster'/>
  XEP-0313 §7     archive 1:1 messages a user sends or receives (body, or here
                  also an encrypted payload / <store/> hint); never <no-store/>,
                  <no-permanent-store/> (XEP-0334), groupchat, headline, error
  XEP-0359 §3     the recipient's copy carries <stanza-id by='bare jid' id/>;
  XEP-0359 §5     a client-sent stanza-id claiming to be ours is removed
  XEP-0059 §2.5   <before/> empty = last page; pages are returned oldest first

What is archived is the exact bytes that were relayed (``from`` stamped,
payload untouched): an OMEMO ``<encrypted/>`` comes back byte-identical
inside ``<forwarded/>``.  The stanza-id is inserted into the delivered bytes
by byte insertion (hook ``message_stamp``), not stored in the archived copy.

Quota: ``max_per_user`` messages per account, enforced when the writer
commits a batch: the account's oldest messages are dropped in the same
transaction (a ring: the newest messages, the ones clients sync, are always
archived; refusing would lose exactly those).  The hourly purge still trims
too, as a safety net.  See storage.mam for how this avoids a count per row.

Preferences: only the default is kept, per account.  ``always`` and
``roster`` both archive 1:1 messages (there is no roster check: "roster" is
treated as "always", and the reply says ``default='roster'`` as stored);
``never`` stops archiving for the account.  Per-JID ``<always/>``/``<never/>``
lists are not supported: the reply returns them empty.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import logging
import secrets
import time
from xml.etree.ElementTree import Element, SubElement

from ..errors import StanzaErrorCondition
from ..jid import JID, InvalidJID
from ..router import Router
from ..storage.mam import PREF_DEFAULTS, MamStore, UnknownId
from ..stream.c2s import iq_error
from ..xml.writer import serialize
from ._im import NS_DELAY, NS_SID, archivable, account_exists, attr, forwarded, insert_before_end, parse_xep82, xep82
from .base import Module

__all__ = ["Mam", "NS_MAM", "NS_RSM", "MAX_PENDING_WRITES", "MAX_PENDING_WRITES_HARD", "WRITE_BATCH_ROWS",
           "PURGE_INTERVAL_S"]

log = logging.getLogger("xmppd.modules.mam")

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_DATA = "jabber:x:data"
#: archive rows queued for the writer; at this many, the sending session stops being read
#: (backpressure: TCP pushes back on the client) until the queue is below half of it
MAX_PENDING_WRITES = 10_000
#: absolute bound on the queue.  Only reachable when rows keep arriving from sessions that
#: are already paused (stanzas parsed from data read before the pause, server-generated
#: messages) while the database does not keep up; beyond it a row is not archived, counted,
#: and reported by a warning at most every ``ARCHIVE_WARN_INTERVAL_S``
MAX_PENDING_WRITES_HARD = 4 * MAX_PENDING_WRITES
#: rows per INSERT transaction of the writer (one executemany)
WRITE_BATCH_ROWS = 500
#: a failed batch is retried this many times (after ``WRITE_RETRY_S``), then dropped (logged as ERROR)
WRITE_RETRIES = 3
WRITE_RETRY_S = 1.0
#: at most one "archive backed up" warning per this many seconds (with the counts since the last)
ARCHIVE_WARN_INTERVAL_S = 10.0
#: seconds between retention / size purges
PURGE_INTERVAL_S = 3600.0
#: accounts with default='never' kept in memory (the stamp hook must decide synchronously)
MAX_NEVER_CACHE = 100_000
#: longest a query waits for archive writes still in flight
WRITE_WAIT_S = 5.0
_FORM_FIELDS = ("with", "start", "end", "after-id", "before-id")


def _new_id() -> str:
    return secrets.token_urlsafe(12)


class Mam(Module):
    name = "mam"
    xeps = (("0313", "1.1.1 (urn:xmpp:mam:2)"), ("0359", "0.7.0"), ("0059", "1.0"))
    options_spec = {
        # largest RSM <max/> a client may ask for; above it: bad-request
        "max_page_size": (int, 250),
        # page size when the query has no <max/>
        "default_page_size": (int, 50),
        # delete archived messages older than this many days (0 = keep forever)
        "retention_days": (int, 0),
        # most messages kept per account, enforced at write: an archive write that takes an
        # account over it drops that account's oldest messages (a ring) (0 = no limit)
        "max_per_user": (int, 100_000),
    }

    @classmethod
    def check_options(cls, options) -> None:
        from ..config import ConfigError

        if options["max_page_size"] < 1:
            raise ConfigError("modules.mam.max_page_size", "must be >= 1")
        if not 1 <= options["default_page_size"] <= options["max_page_size"]:
            raise ConfigError("modules.mam.default_page_size", "must be 1..max_page_size")
        for key in ("retention_days", "max_per_user"):
            if options[key] < 0:
                raise ConfigError(f"modules.mam.{key}", "must be >= 0")

    def setup(self) -> None:
        o = self.options
        self.store = MamStore(self.server.db_engine)
        self.max_page_size: int = max(1, o["max_page_size"])
        self.default_page_size: int = max(1, min(o["default_page_size"], self.max_page_size))
        self.retention_days: int = max(0, o["retention_days"])
        self.max_per_user: int = max(0, o["max_per_user"])
        self._never: set[JID] = set()
        #: (stanza, to_bare, stanza-id, stamped bytes, archived bytes) of the last stamped message
        self._last: tuple | None = None
        # one writer task drains this queue of rows (owner, archive_id, peer, data, check, ts)
        self._queue: collections.deque = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None
        self._stopping = False
        self._enqueued = 0  # rows ever queued
        self._done = 0  # rows ever handled by the writer (written, skipped or dropped)
        #: (row count, future): queries and routed messages waiting for the writer; the counts
        #: only grow (``_enqueued`` at the time), so the deque is ordered
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()
        self._paused: set = set()  # sessions not read because of backpressure
        self._dropped = 0  # rows over MAX_PENDING_WRITES_HARD since the last warning
        self._last_warn = 0.0
        self._purger: asyncio.Task | None = None
        h = self.server.hooks
        h.account_features.update({NS_MAM, NS_MAM + "#extended", NS_SID})
        # one handler pair per namespace: <query/> and <prefs/> are told apart inside
        h.iq(NS_MAM, get=self._form, set=self._query, account=True)
        h.on("message_stamp", self._stamp)
        h.on("message_delivered", self._archive)

    async def start(self) -> None:
        for user, domain in await self.store.accounts_with_default("never", limit=MAX_NEVER_CACHE):
            self._never.add(JID(user, domain))
        if self.retention_days or self.max_per_user:
            self._purge_stop = asyncio.Event()
            self._purger = asyncio.create_task(self._purge_loop())

    async def stop(self) -> None:
        if self._purger is not None:
            # never cancel a purge mid-query: a connection abandoned by a cancelled task is
            # garbage-collected later, and aiosqlite's close then waits forever
            self._purge_stop.set()
            done, _ = await asyncio.wait([self._purger], timeout=WRITE_WAIT_S)
            if not done:
                self._purger.cancel()
            self._purger = None
        self._stopping = True
        writer = self._writer
        if writer is not None and not writer.done():
            assert self._wakeup is not None
            self._wakeup.set()
            done, _ = await asyncio.wait([writer], timeout=WRITE_WAIT_S)
            if not done:
                writer.cancel()
                log.error("archive writer did not finish within %.0f s: %d message copies not archived",
                          WRITE_WAIT_S, len(self._queue))
        self._writer = None
        self._release_paused()

    # ------------------------------------------------------------ archiving
    def _stamp(self, sender: JID, to_bare: JID, stanza, data: bytes) -> bytes:
        last = self._last
        if last is not None and last[0] is stanza and last[1] == to_bare:
            return last[3]  # idempotent: carbons ask for the same bytes again
        el = stanza.element
        if not archivable(el) or to_bare in self._never:
            return data
        by = str(to_bare)
        forged = [c for c in el.findall(f"{{{NS_SID}}}stanza-id") if c.get("by") == by]
        if forged:  # XEP-0359 §5: never pass on a stanza-id that claims to be ours (rare: re-serialised)
            for child in forged:
                el.remove(child)
            data = serialize(el)
        sid = _new_id()
        out = insert_before_end(data, f"<stanza-id xmlns='{NS_SID}' by='{attr(by)}' id='{sid}'/>".encode())
        self._last = (stanza, to_bare, sid, out, data)
        return out

    def _archive(self, sender: JID, to_bare: JID, stanza, targets: list) -> None:
        el = stanza.element
        if not archivable(el):
            return
        last = self._last
        rows = []
        if last is not None and last[0] is stanza and last[1] == to_bare:
            plain = last[4]
            # the recipient's copy; offline (no targets): only for an account that exists
            rows.append((to_bare, last[2], sender, plain, not targets))
        else:
            plain = Router._bytes_for(stanza, el, {"from": str(sender)})
        sender_bare = sender.bare
        if sender_bare != to_bare and sender_bare not in self._never:
            to_text = el.get("to")
            try:
                peer = JID.parse(to_text) if to_text else to_bare
            except InvalidJID:
                peer = to_bare
            rows.append((sender_bare, _new_id(), peer, plain, False))
        if not rows:
            return
        self._enqueue(rows, sender)

    # The writer: one task per server drains ``_queue`` in order (archive order,
    # ``seq``, is relay order) and inserts up to WRITE_BATCH_ROWS rows per
    # transaction.  Backpressure instead of loss: at MAX_PENDING_WRITES queued
    # rows the sending session's transport stops being read until the queue
    # is below half of it (the client's TCP window fills up, its sends block).
    def _enqueue(self, rows: list, sender: JID) -> None:
        queue = self._queue
        if len(queue) + len(rows) > MAX_PENDING_WRITES_HARD:
            self._dropped += len(rows)
            self._warn_backed_up()
            return
        now = _dt.datetime.now(_dt.timezone.utc)
        for owner, archive_id, peer, data, check in rows:
            queue.append((owner, archive_id, peer, data, check, now))
        self._enqueued += len(rows)
        # the message is handled (XEP-0198 h) once its rows are written: Router.defer
        written = asyncio.get_running_loop().create_future()
        self._waiters.append((self._enqueued, written))
        self.server.router.defer(written)
        if self._writer is None or self._writer.done():
            if self._stopping:  # after stop(): nothing will drain the queue
                self._dropped += len(rows)
                self._warn_backed_up()
                return
            self._wakeup = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        assert self._wakeup is not None
        self._wakeup.set()
        if len(queue) >= MAX_PENDING_WRITES:
            session = self.server.sessions.get(sender)
            pause = getattr(session, "pause_input", None)
            if pause is not None and session not in self._paused:
                pause()
                self._paused.add(session)
                self._warn_backed_up()

    def _warn_backed_up(self) -> None:
        now = time.monotonic()
        if now - self._last_warn < ARCHIVE_WARN_INTERVAL_S:
            return
        self._last_warn = now
        if self._dropped:
            log.warning("archive backed up: %d rows queued, %d senders paused; %d message copies over "
                        "the hard limit of %d were NOT archived", len(self._queue), len(self._paused),
                        self._dropped, MAX_PENDING_WRITES_HARD)
            self._dropped = 0
        else:
            log.warning("archive backed up: %d rows queued (limit %d): pausing senders until it drains",
                        len(self._queue), MAX_PENDING_WRITES)

    def _release_paused(self) -> None:
        paused, self._paused = self._paused, set()
        for session in paused:
            resume = getattr(session, "resume_input", None)
            if resume is not None:
                resume()

    def _settle(self) -> None:
        """Wake the queries waiting for rows the writer has now handled."""
        if len(self._queue) <= MAX_PENDING_WRITES // 2 and self._paused:
            self._release_paused()
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._done:
            fut = waiters.popleft()[1]
            if not fut.done():
                fut.set_result(None)

    async def _write_loop(self) -> None:
        queue = self._queue
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            if not queue:
                if self._stopping:
                    return
                wakeup.clear()
                await wakeup.wait()
                continue
            n = min(len(queue), WRITE_BATCH_ROWS)
            batch = [queue.popleft() for _ in range(n)]
            try:
                await self._write_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the writer must survive a bad batch
                log.exception("archive write failed: %d message copies NOT archived", len(batch))
            self._done += n
            self._settle()

    async def _write_batch(self, batch: list) -> None:
        rows = []
        known: dict[JID, bool] = {}
        for owner, archive_id, peer, data, check, now in batch:
            if check:  # the recipient was offline: archive only for an account that exists
                exists = known.get(owner)
                if exists is None:
                    exists = known[owner] = await account_exists(self.server, owner)
                if not exists:
                    continue
            rows.append((owner.local, owner.domain, archive_id, now, str(peer.bare), peer.resource, data))
        for attempt in range(WRITE_RETRIES + 1):
            try:
                await self.store.append_many(rows, max_per_user=self.max_per_user)
                return
            except Exception:  # noqa: BLE001 - database busy/unreachable: retry, then row by row
                if attempt == WRITE_RETRIES:
                    break
                log.warning("archive write of %d rows failed (attempt %d), retrying in %.1f s",
                            len(rows), attempt + 1, WRITE_RETRY_S, exc_info=True)
                await asyncio.sleep(WRITE_RETRY_S)
        lost = 0
        for row in rows:  # one bad row must not take the whole batch with it
            try:
                await self.store.append_many([row], max_per_user=self.max_per_user)
            except Exception:  # noqa: BLE001
                lost += 1
        if lost:
            log.error("archive write failed: %d message copies NOT archived", lost)

    async def wait_written(self, timeout: float = WRITE_WAIT_S) -> None:
        """Until every row queued so far has been handled by the writer (or ``timeout``)."""
        target = self._enqueued
        if self._done >= target or self._writer is None or self._writer.done():
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass

    # ------------------------------------------------------------ retention
    async def purge_once(self, now: _dt.datetime | None = None) -> int:
        now = now or _dt.datetime.now(_dt.timezone.utc)
        removed = 0
        if self.retention_days:
            removed += await self.store.purge_before(now - _dt.timedelta(days=self.retention_days))
        if self.max_per_user:
            removed += await self.store.trim(self.max_per_user)
        return removed

    async def _purge_loop(self) -> None:
        while True:
            try:
                n = await self.purge_once()
                if n:
                    log.info("archive purge removed %d messages", n)
            except Exception:  # noqa: BLE001 - keep purging later
                log.exception("archive purge failed")
            try:
                await asyncio.wait_for(self._purge_stop.wait(), PURGE_INTERVAL_S)
                return  # stop() asked
            except TimeoutError:
                pass

    # ------------------------------------------------------------ query
    def _form(self, session, req: Element) -> Element:
        if req[0].tag == f"{{{NS_MAM}}}prefs":
            return self._prefs_get(session, req)
        reply = Element("{jabber:client}iq", {"type": "result"})
        q = SubElement(reply, f"{{{NS_MAM}}}query")
        x = SubElement(q, f"{{{NS_DATA}}}x", {"type": "form"})
        ft = SubElement(x, f"{{{NS_DATA}}}field", {"type": "hidden", "var": "FORM_TYPE"})
        SubElement(ft, f"{{{NS_DATA}}}value").text = NS_MAM
        SubElement(x, f"{{{NS_DATA}}}field", {"type": "jid-single", "var": "with"})
        for var in ("start", "end", "after-id", "before-id"):
            SubElement(x, f"{{{NS_DATA}}}field", {"type": "text-single", "var": var})
        return reply

    def _query(self, session, req: Element):
        if req[0].tag == f"{{{NS_MAM}}}prefs":
            return self._prefs_set(session, req)
        try:
            args = self._parse(req[0])
        except ValueError as exc:
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, str(exc))
        return self._run_query(session, req, args)

    def _parse(self, q: Element) -> dict:
        args: dict = {}
        x = q.find(f"{{{NS_DATA}}}x")
        if x is not None:
            for field in x.findall(f"{{{NS_DATA}}}field"):
                var = field.get("var", "")
                value = (field.findtext(f"{{{NS_DATA}}}value") or "").strip()
                if var == "FORM_TYPE":
                    if value != NS_MAM:
                        raise ValueError(f"FORM_TYPE must be {NS_MAM}")
                    continue
                if var not in _FORM_FIELDS:
                    raise ValueError(f"unsupported filter field {var!r}")
                if not value:
                    continue
                if var == "with":
                    try:
                        jid = JID.parse(value)
                    except InvalidJID as exc:
                        raise ValueError(f"'with' is not a JID: {exc}") from None
                    args["with_bare"] = str(jid.bare)
                    args["with_resource"] = jid.resource
                elif var in ("start", "end"):
                    try:
                        args[var] = parse_xep82(value)
                    except ValueError:
                        raise ValueError(f"'{var}' is not an XEP-0082 date-time: {value!r}") from None
                else:
                    args[var.replace("-", "_")] = value
        rsm = q.find(f"{{{NS_RSM}}}set")
        max_items = self.default_page_size
        if rsm is not None:
            if rsm.find(f"{{{NS_RSM}}}index") is not None:
                raise ValueError("RSM <index/> is not supported; page with <after/> or <before/>")
            max_text = rsm.findtext(f"{{{NS_RSM}}}max")
            if max_text is not None:
                try:
                    max_items = int(max_text.strip())
                except ValueError:
                    raise ValueError(f"RSM <max/> is not an integer: {max_text!r}") from None
                if max_items < 0:
                    raise ValueError("RSM <max/> must not be negative")
                if max_items > self.max_page_size:
                    raise ValueError(f"RSM <max/> {max_items} is above this server's limit of {self.max_page_size}")
            after = rsm.find(f"{{{NS_RSM}}}after")
            before = rsm.find(f"{{{NS_RSM}}}before")
            if after is not None and before is not None:
                raise ValueError("RSM <after/> and <before/> cannot be combined")
            if after is not None:
                if not (after.text or "").strip():
                    raise ValueError("RSM <after/> needs an id")
                args["rsm_after"] = after.text.strip()
            if before is not None:
                args["rsm_before"] = (before.text or "").strip()
        args["max_items"] = max_items
        return args

    async def _run_query(self, session, req: Element, args: dict) -> Element:
        owner: JID = session.jid.bare
        await self.wait_written()  # a message just relayed must be findable by the id the client got
        try:
            page = await self.store.query(owner.local, owner.domain, **args)
        except UnknownId as exc:
            return iq_error(req, StanzaErrorCondition.ITEM_NOT_FOUND,
                            f"no message with id {exc.archive_id!r} in this archive")
        queryid = req[0].get("queryid")
        qattr = f" queryid='{attr(queryid)}'" if queryid is not None else ""
        head = f"<message to='{attr(str(session.jid))}' from='{attr(str(owner))}' id='"
        for item in page.items:
            delay = f"<delay xmlns='{NS_DELAY}' stamp='{xep82(item.ts)}'/>".encode()
            session.send_bytes(
                (head + f"{_new_id()}'><result xmlns='{NS_MAM}'{qattr} id='{attr(item.archive_id)}'>").encode()
                + forwarded(item.data, delay) + b"</result></message>")
        reply = Element("{jabber:client}iq", {"type": "result"})
        fin = SubElement(reply, f"{{{NS_MAM}}}fin")
        if page.complete:
            fin.set("complete", "true")
        rsm = SubElement(fin, f"{{{NS_RSM}}}set")
        if page.items:
            first = SubElement(rsm, f"{{{NS_RSM}}}first", {"index": str(page.first_index or 0)})
            first.text = page.items[0].archive_id
            SubElement(rsm, f"{{{NS_RSM}}}last").text = page.items[-1].archive_id
        SubElement(rsm, f"{{{NS_RSM}}}count").text = str(page.count)
        return reply

    # ------------------------------------------------------------ preferences
    async def _prefs_reply(self, owner: JID) -> Element:
        default = await self.store.get_default(owner.local, owner.domain) or "always"
        reply = Element("{jabber:client}iq", {"type": "result"})
        prefs = SubElement(reply, f"{{{NS_MAM}}}prefs", {"default": default})
        SubElement(prefs, f"{{{NS_MAM}}}always")
        SubElement(prefs, f"{{{NS_MAM}}}never")
        return reply

    def _prefs_get(self, session, req: Element):
        return self._prefs_reply(session.jid.bare)

    def _prefs_set(self, session, req: Element):
        default = req[0].get("default")
        if default not in PREF_DEFAULTS:
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST,
                            "default must be 'always', 'never' or 'roster'")
        owner: JID = session.jid.bare
        if default == "never":
            if len(self._never) >= MAX_NEVER_CACHE:
                return iq_error(req, StanzaErrorCondition.RESOURCE_CONSTRAINT, "too many accounts opted out")
            self._never.add(owner)
        else:
            self._never.discard(owner)

        async def save() -> Element:
            await self.store.set_default(owner.local, owner.domain, default)
            return await self._prefs_reply(owner)

        return save()
