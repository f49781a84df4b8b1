"""Stream Management (XEP-0198, ``urn:xmpp:sm:3``): acks and resumption.

* ``<enable/>`` after bind turns counting on; with ``resume='true'`` the
  session survives a lost connection for ``resume_timeout_s``.
* Every stanza the server sends is kept until the client acknowledges it
  (``<a h='…'/>``); at most ``max_unacked`` are kept — a client that never
  acknowledges is disconnected rather than letting the queue grow.
* ``<resume previd h/>`` (instead of bind, after SASL) re-attaches the
  detached session to the new connection and re-sends what the client did not
  acknowledge, in order, once.
* When a resumable session times out, or a stream ends with unacknowledged
  messages, those messages are delivered to the account's other resources or
  stored offline (RFC 6121 §8.5.2 "undeliverable") — never silently lost, and
  never twice: only messages the router handed over (``sessions.Delivery``) are
  re-routed, and only when no other resource holds or took the same message
  (a bare-JID message that also went to a live resource is not re-sent to it).
  Copies and server output (carbons, archive results, PEP events, presence)
  are not re-routed; iq requests get ``service-unavailable`` for the requester.
* While a session is detached the router does not pick it for bare-JID
  messages when a live resource is there (``Router.message_targets``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from ..errors import StanzaErrorCondition, StreamErrorCondition
from ..xml.parser import Stanza, StreamParser
from .base import Module

if TYPE_CHECKING:
    from ..net.connection import C2SConnection
    from ..sessions import Delivery

__all__ = ["StreamManagement", "SMState", "NS_SM"]

log = logging.getLogger("xmppd.sm")

NS_SM = "urn:xmpp:sm:3"
_MESSAGE = "{jabber:client}message"
_IQ = "{jabber:client}iq"
_STANZA_TAGS = frozenset({"{jabber:client}message", "{jabber:client}presence", "{jabber:client}iq"})
_H_MOD = 2 ** 32
#: how often detached sessions are checked for expiry
EXPIRY_SWEEP_S = 1.0
#: ``<r/>`` requests one session may have waiting for settlement; beyond, answered at once
MAX_WAITING_ACK_REQUESTS = 64


def _failed(condition: StanzaErrorCondition, text: str = "", h: int | None = None) -> bytes:
    attr = f" h='{h}'" if h is not None else ""
    body = f"<{condition.value} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
    if text:
        body += f"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{text}</text>"
    return f"<failed xmlns='{NS_SM}'{attr}>{body}</failed>".encode()


class SMState:
    """Per-session counters and the queue of unacknowledged outbound stanzas.

    Inbound: ``received`` counts the client's stanzas, ``h_in`` the prefix of them
    that is *settled* (delivered to every live recipient and committed wherever it
    had to be stored: see Router.collect).  Only ``h_in`` is ever sent as ``h``,
    so what the server acknowledges is durable.  ``inflight`` holds
    ``[count, unfinished futures]`` for stanzas not settled yet, in order.
    """

    __slots__ = ("id", "resumable", "h_in", "received", "inflight", "ack_waiting", "conn", "h_out",
                 "unacked", "detached_at", "since_request")

    def __init__(self, sm_id: str | None, conn: "C2SConnection | None" = None) -> None:
        self.id = sm_id
        self.resumable = sm_id is not None
        self.h_in = 0  # stanzas received from the client and settled (acknowledgeable)
        self.received = 0  # stanzas received from the client
        self.inflight: collections.deque[list[int]] = collections.deque()
        #: ``<r/>`` requests waiting for the settled count to reach what had been received
        self.ack_waiting: collections.deque[int] = collections.deque()
        self.conn = conn  # the connection that carries the session now (changes on resume)
        self.h_out = 0  # stanzas sent to the client
        #: (h_out of the stanza, its bytes, the router's Delivery when it is a routed message)
        self.unacked: collections.deque[tuple[int, bytes, Delivery | None]] = collections.deque()
        self.detached_at: float | None = None
        self.since_request = 0

    def ack(self, h: int) -> bool:
        """Drop everything up to ``h``; False if ``h`` acknowledges more than was sent."""
        if (self.h_out - h) % _H_MOD > len(self.unacked):
            return False
        while self.unacked and (h - self.unacked[0][0]) % _H_MOD < _H_MOD // 2:
            delivery = self.unacked.popleft()[2]
            if delivery is not None:  # the client has it: no other copy is re-routed
                delivery.taken = True
                delivery.holding -= 1
        return True


class StreamManagement(Module):
    name = "stream_management"
    xeps = (("0198", "1.6.1"),)
    features = ()
    options_spec = {
        "resume_timeout_s": ((int, float), 300.0),
        "max_unacked": (int, 1000),
        "ack_every": (int, 10),
    }

    def __init__(self, server, options=None) -> None:
        super().__init__(server, options)
        self.resumable: dict[str, "C2SConnection"] = {}
        self._sweeper: asyncio.Task | None = None

    def setup(self) -> None:
        h = self.server.hooks
        h.stream_features.append(f"<sm xmlns='{NS_SM}'/>".encode())
        h.nonza[f"{{{NS_SM}}}enable"] = self._enable
        h.nonza[f"{{{NS_SM}}}r"] = self._request
        h.nonza[f"{{{NS_SM}}}a"] = self._answer
        self.server.sm = self
        self.server.router.acks = self

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.resumable.values()):
            if conn.transport is None:
                self._expire(conn)

    # ------------------------------------------------------------ nonzas
    def _enable(self, conn: "C2SConnection", el: Any) -> None:
        if conn.sm is not None:
            conn.write_raw(_failed(StanzaErrorCondition.UNEXPECTED_REQUEST, "already enabled"))
            return
        resume = el.get("resume") in ("true", "1")
        sm_id = secrets.token_urlsafe(18) if resume else None
        conn.sm = SMState(sm_id, conn)
        if sm_id is not None:
            self.resumable[sm_id] = conn
            timeout = int(self.options["resume_timeout_s"])
            conn.write_raw(f"<enabled xmlns='{NS_SM}' id='{sm_id}' resume='true' max='{timeout}'/>".encode())
        else:
            conn.write_raw(f"<enabled xmlns='{NS_SM}'/>".encode())

    def _request(self, conn: "C2SConnection", el: Any) -> None:
        if conn.sm is None:
            conn.write_raw(_failed(StanzaErrorCondition.UNEXPECTED_REQUEST, "stream management is not enabled"))
            return
        sm = conn.sm
        if sm.h_in >= sm.received or len(sm.ack_waiting) >= MAX_WAITING_ACK_REQUESTS:
            conn.write_raw(f"<a xmlns='{NS_SM}' h='{sm.h_in % _H_MOD}'/>".encode())
        else:  # answered once everything received so far is settled (durable)
            sm.ack_waiting.append(sm.received)

    def _answer(self, conn: "C2SConnection", el: Any) -> None:
        sm = conn.sm
        if sm is None:
            return
        try:
            h = int(el.get("h", ""))
        except ValueError:
            conn.close_stream(StreamErrorCondition.BAD_FORMAT, "<a/> needs a numeric h")
            return
        if not sm.ack(h % _H_MOD):
            # XEP-0198 §4: acknowledging more than was sent is an error
            conn.close_stream(StreamErrorCondition.UNDEFINED_CONDITION,
                              f"handled-count-too-high: h={h} but only {sm.h_out} stanzas were sent")

    # ------------------------------------------------------------ counting (called by the connection)
    def counted_in(self, conn: "C2SConnection", tag: str) -> int:
        """Count a stanza received from the client; its number (0: not a counted stanza)."""
        if tag not in _STANZA_TAGS:
            return 0
        sm = conn.sm
        sm.received += 1
        return sm.received

    def settle(self, conn: "C2SConnection", seq: int, futures: list) -> None:
        """Stanza ``seq`` was routed; it is settled once ``futures`` are done."""
        if not seq:
            return
        sm = conn.sm
        if not futures:
            if not sm.inflight:
                sm.h_in = seq
                return
            sm.inflight.append([seq, 0])
            return
        entry = [seq, len(futures)]
        sm.inflight.append(entry)

        def one_done(_f: Any, entry: list[int] = entry, sm: SMState = sm) -> None:
            entry[1] -= 1
            if entry[1] == 0:
                self._advance(sm)

        for fut in futures:
            fut.add_done_callback(one_done)

    @staticmethod
    def _advance(sm: SMState) -> None:
        inflight = sm.inflight
        while inflight and inflight[0][1] == 0:
            sm.h_in = inflight.popleft()[0]
        waiting = sm.ack_waiting
        conn = sm.conn
        while waiting and waiting[0] <= sm.h_in:
            waiting.popleft()
            if conn is not None and conn.sm is sm:
                conn.write_raw(f"<a xmlns='{NS_SM}' h='{sm.h_in % _H_MOD}'/>".encode())

    def sent(self, conn: "C2SConnection", data: bytes) -> bool:
        """Record an outbound stanza; False if the client must be disconnected."""
        sm = conn.sm
        sm.h_out = (sm.h_out + 1) % _H_MOD
        sm.unacked.append((sm.h_out, data, None))
        over = len(sm.unacked) - self.options["max_unacked"]
        if over > 0:
            if conn.transport is not None:
                return False  # the client is told (resource-constraint) and disconnected
            if over == 1:
                # detached: nobody to tell, and the queue must not grow while it waits; the
                # session ends now and what it holds is re-routed (after this stanza is recorded)
                asyncio.get_running_loop().call_soon(self._expire, conn, "too many unacknowledged stanzas")
            return True
        sm.since_request += 1
        if sm.since_request >= self.options["ack_every"] and conn.transport is not None:
            sm.since_request = 0
            conn.write_raw(f"<r xmlns='{NS_SM}'/>".encode())
        return True

    # ------------------------------------------------------------ the router's view (Router.acks)
    @staticmethod
    def keeps(session: Any) -> bool:
        """Stanzas sent to ``session`` now are kept until its client acknowledges
        them (also while it is detached), and re-routed if it never does."""
        return getattr(session, "sm", None) is not None

    @staticmethod
    def holds(session: Any, data: bytes, delivery: "Delivery") -> bool:
        """``data`` was just sent to ``session`` as part of ``delivery``: record it
        with the unacknowledged stanza.  False if the session does not keep it
        (no stream management, or a module held the bytes back)."""
        sm = getattr(session, "sm", None)
        if sm is None or not sm.unacked or sm.unacked[-1][1] is not data:
            return False
        seq, _data, _old = sm.unacked[-1]
        sm.unacked[-1] = (seq, data, delivery)
        delivery.holding += 1
        return True

    # ------------------------------------------------------------ detach / resume / expire
    def detach(self, conn: "C2SConnection") -> bool:
        """The transport of a bound session is gone: keep it if resumable."""
        sm = conn.sm
        if sm is None or not sm.resumable or sm.id not in self.resumable:
            return False
        sm.detached_at = time.monotonic()
        log.info("%s detached, resumable for %ss", conn.jid, self.options["resume_timeout_s"])
        return True

    def resume(self, new: "C2SConnection", username: str, domain: str, previd: str, h_text: str) -> bool:
        old = self.resumable.get(previd)
        if old is None or old.jid is None or old.jid.local != username or old.jid.domain != domain:
            new.write_raw(_failed(StanzaErrorCondition.ITEM_NOT_FOUND, "unknown or expired session"))
            return False
        try:
            h = int(h_text) % _H_MOD
        except ValueError:
            new.write_raw(_failed(StanzaErrorCondition.BAD_REQUEST, "h must be a number"))
            return False
        sm = old.sm
        if not sm.ack(h):
            new.write_raw(_failed(StanzaErrorCondition.UNEXPECTED_REQUEST, "handled-count-too-high"))
            return False
        old.hand_over_to(new)  # closes the old transport if it is still there, moves session state
        new.sm = sm
        sm.conn = new
        sm.ack_waiting.clear()  # the <resumed h/> below answers them
        sm.detached_at = None
        sm.since_request = 0
        self.resumable[previd] = new
        new.write_raw(f"<resumed xmlns='{NS_SM}' previd='{previd}' h='{sm.h_in % _H_MOD}'/>".encode())
        for _seq, data, _delivery in list(sm.unacked):
            new.write_raw(data)  # re-sent as they were; still unacknowledged
        log.info("%s resumed, %d stanzas re-sent", new.jid, len(sm.unacked))
        return True

    def ended(self, conn: "C2SConnection") -> None:
        """The session is over for good: forget it and redeliver what the client never acknowledged."""
        sm = conn.sm
        if sm is None:
            return
        if sm.id is not None and self.resumable.get(sm.id) is conn:
            del self.resumable[sm.id]
        pending, sm.unacked = list(sm.unacked), collections.deque()
        router = self.server.router
        for _seq, data, delivery in pending:
            if delivery is not None:
                delivery.holding -= 1
                if delivery.taken or delivery.holding > 0:
                    continue  # another resource took it, or still holds it: not a second copy
            elif not data.startswith(b"<iq"):
                continue  # not a routed message (a copy, server output, presence): nothing to redo
            stanza = _reparse(data)
            if stanza is None:
                continue
            if delivery is not None and stanza.element.tag == _MESSAGE:
                router.redeliver(conn, stanza)
            elif delivery is None and stanza.element.tag == _IQ:
                router.unanswerable(conn, stanza)

    def _expire(self, conn: "C2SConnection", why: str = "resumption window over") -> None:
        if conn.bound and conn.transport is None:
            log.info("%s: %s", conn.jid, why)
        conn.end_detached()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_S)
            now = time.monotonic()
            limit = self.options["resume_timeout_s"]
            for conn in list(self.resumable.values()):
                sm = conn.sm
                if sm is not None and sm.detached_at is not None and now - sm.detached_at > limit:
                    self._expire(conn)


def _reparse(data: bytes) -> Stanza | None:
    """Turn the bytes we sent back into a Stanza (to redeliver it)."""
    parser = StreamParser(max_stanza_bytes=len(data) + 1024)
    try:
        events = parser.feed(b"<stream:stream xmlns='jabber:client' "
                             b"xmlns:stream='http://etherx.jabber.org/streams'>" + data)
    except Exception:  # noqa: BLE001 - our own bytes; a failure here is logged, not fatal
        log.exception("cannot re-parse an unacknowledged stanza")
        return None
    return next((e for e in events if isinstance(e, Stanza)), None)
