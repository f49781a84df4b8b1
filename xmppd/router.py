"""Stanza routing between local sessions (RFC 6120 §8, RFC 6121 §8.5).

The server always stamps ``from`` with the sender's full JID
(RFC 6120 §8.1.2.1).  Payloads are relayed byte-for-byte: only the start tag
of the stanza is rewritten ("Routing fast path" in DESIGN.md); a stanza that
uses a namespace prefix declared outside itself is re-serialised instead.

Spec references:
  RFC 6120 §8.3.1    every error the router returns comes *from* the original
                     'to' (as the sender wrote it) and goes to the sender
  RFC 6121 §4.2.2, §4.4.2  available presence goes to all of the user's
                     available resources, the sending one included
  RFC 6121 §4.5.2    unavailable presence to the user's other available resources
  RFC 6121 §8.5.2    a message to a bare JID: the available resources of
                     non-negative priority (highest priority; all for headline),
                     else offline storage — each resource gets it at most once
  XEP-0198           a session waiting to be resumed ("detached") keeps what it
                     was sent, but is a target only when no live resource is;
                     what it never acknowledged is routed again once, and only
                     if no other resource has the same message (sessions.Delivery)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any
from xml.etree.ElementTree import Element

from .errors import StanzaErrorCondition, StreamErrorCondition
from .hooks import Hooks
from .jid import JID, InvalidJID
from .sessions import AbsentSender, AckTracker, Delivery, Session, SessionRegistry
from .stanza import error_reply, presence_bytes
from .xml.parser import Stanza
from .xml.writer import rewrite_start_tag, serialize

__all__ = ["Router"]

log = logging.getLogger("xmppd.router")

C = "{jabber:client}"
MESSAGE, PRESENCE, IQ = f"{C}message", f"{C}presence", f"{C}iq"
_IQ_TYPES = frozenset({"get", "set", "result", "error"})
_MESSAGE_TYPES = frozenset({"chat", "error", "groupchat", "headline", "normal"})
_PRESENCE_TYPES = frozenset({None, "unavailable", "subscribe", "subscribed", "unsubscribe",
                             "unsubscribed", "probe", "error"})
#: limit on directed-presence targets remembered per session (for unavailable on close)
MAX_DIRECTED_PRESENCE = 1000
#: server-originated iq requests (e.g. caps disco#info) in flight, and how long each may wait
MAX_PENDING_IQ = 10_000
IQ_TIMEOUT_S = 30.0


class Router:
    def __init__(self, hosts: frozenset[str], sessions: SessionRegistry, hooks: Hooks) -> None:
        self.hosts = hosts
        self.sessions = sessions
        self.hooks = hooks
        #: the stream-management module when loaded (it registers itself, ``modules.sm``)
        self.acks: AckTracker | None = None
        self._tasks: set[asyncio.Task] = set()
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self._iq_seq = 0
        #: futures the stanza being routed now waits for (see collect / defer)
        self._deferred: list[asyncio.Future] | None = None
        #: the stanza being re-routed: its bytes are already final (see message_bytes)
        self._rerouting: Stanza | None = None

    # ------------------------------------------------------------ settlement
    # A stanza is *settled* when it has been written to every live recipient's
    # output and everything it caused that must be durable (offline store,
    # archive, an iq's write) has been committed.  The connection routes each
    # client stanza between collect() and settled(); modules that start durable
    # work for it call defer(future).  XEP-0198 counts the stanza in ``h`` only
    # once all those futures are done (xmppd.modules.sm).
    def collect(self) -> None:
        self._deferred = []

    def settled(self) -> list[asyncio.Future]:
        """The futures deferred since collect() (usually none)."""
        out, self._deferred = self._deferred, None
        return out or []

    def defer(self, fut: "asyncio.Future") -> None:
        """The stanza being routed is handled only when ``fut`` is done."""
        if self._deferred is not None:
            self._deferred.append(fut)

    # ------------------------------------------------------------ output
    @staticmethod
    def bytes_for(stanza: Stanza | None, element: Element, attrs: dict[str, str]) -> bytes:
        """The stanza's bytes with ``attrs`` set on its start tag, payload untouched."""
        if stanza is not None and stanza.self_contained:
            return rewrite_start_tag(stanza.raw, stanza.start_tag_len, attrs)
        for k, v in attrs.items():
            element.set(k, v)
        return serialize(element)

    _bytes_for = bytes_for  # the name modules used before it was public

    def message_bytes(self, sender: JID, to_bare: JID, stanza: Stanza) -> bytes:
        """The exact bytes a message to local account ``to_bare`` is delivered
        (or stored offline) as: ``from`` stamped, then the ``message_stamp``
        hooks (e.g. XEP-0359 ``<stanza-id/>`` inserted by MAM).  A message being
        re-routed (``redeliver``) already is those bytes: it is not stamped twice."""
        if stanza is self._rerouting:
            return stanza.raw
        data = self.bytes_for(stanza, stanza.element, {"from": str(sender)})
        for hook in self.hooks.handlers("message_stamp"):
            data = hook(sender, to_bare, stanza, data)
        return data

    def send_to(self, to: JID, data: bytes) -> bool:
        """Deliver ``data`` (a complete stanza) to the bound session ``to`` (a full
        JID): False when there is no such session.  Services (MUC) send every
        stanza through here, so remote nodes can be added in one place."""
        target = self.sessions.get(to)
        if target is None:
            return False
        target.send_bytes(data)
        return True

    def send_element(self, session: Session, element: Element) -> None:
        session.send_bytes(serialize(element))

    def bounce(self, session: Session | None, element: Element, condition: StanzaErrorCondition,
               text: str = "", *, from_: str | None = None) -> None:
        """Reply with an error to the sender (never for errors: RFC 6120 §8.3.1).

        The error comes from the original ``to``; ``from_`` only stands in when
        the stanza had none (the sender's account or server handled it)."""
        if element.get("type") == "error" or session is None:
            return
        session.send_bytes(serialize(error_reply(element, condition, text, from_=from_)))

    def deliver_to(self, session: Session, data: bytes) -> Delivery:
        """Hand a message for the user to one of its sessions (e.g. a stored offline
        message): if the session ends before its client acknowledged it, it is
        routed again, once."""
        return self._hand_over([session], data)

    def _hand_over(self, targets: list[Session], data: bytes) -> Delivery:
        delivery = Delivery()
        acks = self.acks
        for target in targets:
            target.send_bytes(data)
            if acks is None or not acks.holds(target, data, delivery):
                delivery.taken = True  # on a stream without acknowledgements: delivered
        return delivery

    def _reachable(self, session: Session) -> bool:
        """A stanza sent now reaches the client, or is kept for it until acknowledged."""
        return session.writable or (self.acks is not None and self.acks.keeps(session))

    def message_targets(self, bare: JID, typ: str, exclude: Session | None = None) -> list[Session]:
        """RFC 6121 §8.5.2.1.1: available resources with non-negative priority, the
        highest-priority ones (all of them for a headline).  Sessions on the wire
        come first; a session waiting to be resumed (XEP-0198) is a target only when
        there is no such session, so that a message is not in two places at once."""
        available = [s for s in self.sessions.resources(bare)
                     if s is not exclude and s.available and s.priority >= 0]
        pool = [s for s in available if s.writable]
        if not pool and self.acks is not None:
            pool = [s for s in available if self.acks.keeps(s)]
        if not pool or typ == "headline":
            return pool
        top = max(s.priority for s in pool)
        return [s for s in pool if s.priority == top]

    # ------------------------------------------------------------ input
    def from_client(self, session: Session, stanza: Stanza) -> None:
        el = stanza.element
        tag = el.tag
        sender = session.jid
        if tag not in (MESSAGE, PRESENCE, IQ):
            nonza = self.hooks.nonza.get(tag)
            if nonza is not None:  # e.g. XEP-0352 <active/>: a module's business
                nonza(session, el)
                return
            # RFC 6120 §8.1: only the three stanza kinds after negotiation
            session.close_stream(StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, f"unsupported stanza {tag}")
            return
        el.set("from", str(sender))
        typ = el.get("type")
        to_text = el.get("to")
        if to_text is None:
            to = None
        else:
            try:
                to = JID.parse(to_text)
            except InvalidJID as exc:
                # §8.3.1 even here: the reply is 'from' what the sender wrote, so it can match it
                self.bounce(session, el, StanzaErrorCondition.JID_MALFORMED, str(exc))
                return
        for hook in self.hooks.handlers("stanza_out"):
            if hook(session, stanza, to):
                return
        if tag == IQ:
            if typ not in _IQ_TYPES or (typ in ("get", "set") and len(el) != 1):
                self.bounce(session, el, StanzaErrorCondition.BAD_REQUEST,
                            "an iq get/set carries exactly one payload element", from_=str(sender.bare))
                return
            self._iq(session, stanza, to)
        elif tag == MESSAGE:
            if typ is not None and typ not in _MESSAGE_TYPES:
                typ = "normal"
            self._message(session, stanza, to or sender.bare, typ or "normal")
        else:
            if typ not in _PRESENCE_TYPES:
                self.bounce(session, el, StanzaErrorCondition.BAD_REQUEST, "unknown presence type",
                            from_=str(sender.bare))
                return
            self._presence(session, stanza, to, typ)

    # ------------------------------------------------------------ iq
    def _iq(self, session: Session, stanza: Stanza, to: JID | None) -> None:
        el = stanza.element
        sender = session.jid
        typ = el.get("type")
        if to is None or (to.local is None and to.resource is None and to.domain in self.hosts):
            # to the server itself (RFC 6120 §10.3); no 'to' means the account, handled like the server
            table = self.hooks.iq_server if to is not None else self.hooks.iq_account
            self._dispatch_iq(session, el, table, default_from=(to and str(to)) or str(sender.bare))
            return
        if to.domain not in self.hosts:
            self.bounce(session, el, StanzaErrorCondition.REMOTE_SERVER_NOT_FOUND, f"no route to {to.domain}")
            return
        if to.local is None:
            self.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            return
        if to.resource is None:
            # RFC 6121 §8.5.2.1.3 / §8.5.1: handled by the server on behalf of the account
            self._dispatch_iq(session, el, self.hooks.iq_account, default_from=str(to),
                              other=to != sender.bare)
            return
        if self.filtered_in(sender, to, stanza):
            return
        target = self.sessions.get(to)
        if target is None or not self._reachable(target):
            if typ in ("get", "set"):
                self.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            return  # results/errors to gone resources are dropped (RFC 6121 §8.5.3.2.2)
        target.send_bytes(self.bytes_for(stanza, el, {"from": str(sender)}))

    def _dispatch_iq(self, session: Session, el: Element, table: dict, *, default_from: str,
                     other: bool = False) -> None:
        typ = el.get("type")
        if typ in ("result", "error"):
            self._answer_pending(session, el)
            return
        payload = el[0]
        ns = payload.tag[1:].partition("}")[0] if payload.tag.startswith("{") else ""
        handler = table.get((ns, typ))
        if handler is None or (other and (ns, typ) not in self.hooks.iq_account_public):
            self.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE, from_=default_from)
            return
        try:
            result = handler(session, el)
        except Exception:
            log.exception("iq handler for %s failed", ns)
            self.bounce(session, el, StanzaErrorCondition.INTERNAL_SERVER_ERROR, from_=default_from)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._finish_iq(session, el, result, default_from))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self.defer(task)  # e.g. a roster set: handled once written and answered
        elif result is not None:
            self._send_iq_reply(session, el, result, default_from)

    async def _finish_iq(self, session: Session, el: Element, awaitable: Any, default_from: str) -> None:
        try:
            result = await awaitable
        except Exception:
            log.exception("iq handler failed")
            self.bounce(session, el, StanzaErrorCondition.INTERNAL_SERVER_ERROR, from_=default_from)
            return
        if result is not None:
            self._send_iq_reply(session, el, result, default_from)
    # ------------------------------------------------------------ server-originated iq
    def request(self, session: Session, iq: Element, *, from_: str, timeout: float = IQ_TIMEOUT_S
                ) -> "asyncio.Future[Element]":
        """Send an iq get/set from the server (``from_``: the domain or an account's
        bare JID) to a bound session; the future resolves with the result/error
        element, or raises TimeoutError."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        if len(self._pending) >= MAX_PENDING_IQ:
            fut.set_exception(RuntimeError("too many server iq requests in flight"))
            return fut
        self._iq_seq += 1
        iq_id = f"xmppd-{self._iq_seq}"
        iq.set("id", iq_id)
        iq.set("from", from_)
        iq.set("to", str(session.jid))
        key = (iq_id, str(session.jid))
        self._pending[key] = fut
        handle = loop.call_later(timeout, self._expire_pending, key)
        fut.add_done_callback(lambda _f: (handle.cancel(), self._pending.pop(key, None)))
        session.send_bytes(serialize(iq))
        return fut

    def _expire_pending(self, key: tuple[str, str]) -> None:
        fut = self._pending.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError(f"no answer to iq {key[0]}"))

    def _answer_pending(self, session: Session, el: Element) -> None:
        fut = self._pending.pop((el.get("id", ""), str(session.jid)), None)
        if fut is not None and not fut.done():
            fut.set_result(el)

    def _send_iq_reply(self, session: Session, request: Element, reply: Element, default_from: str) -> None:
        if reply.get("id") is None and request.get("id") is not None:
            reply.set("id", request.get("id"))
        reply.set("to", str(session.jid))
        if reply.get("from") is None:
            reply.set("from", request.get("to") or default_from)
        session.send_bytes(serialize(reply))

    # ------------------------------------------------------------ message
    def _message(self, session: Session, stanza: Stanza, to: JID, typ: str) -> None:
        el = stanza.element
        sender = session.jid
        if to.domain not in self.hosts:
            self.bounce(session, el, StanzaErrorCondition.REMOTE_SERVER_NOT_FOUND, f"no route to {to.domain}")
            return
        if to.local is None:
            return  # messages to the server itself: nothing to do (RFC 6121 §8.5.1)
        if self.filtered_in(sender, to, stanza):
            return
        if to.resource is not None:
            target = self.sessions.get(to)
            if target is not None and self._reachable(target):
                self._hand_over([target], self.message_bytes(sender, to.bare, stanza))
                self._delivered(sender, to.bare, stanza, [target])
                return
            # RFC 6121 §8.5.3.2.1: no such resource — treat as bare for normal/chat/headline
            if typ in ("groupchat", "error"):
                if typ == "groupchat":
                    self.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE)
                return
        bare = to.bare
        if typ == "error":
            return  # RFC 6121 §8.5.2.1.1: errors to the bare JID are dropped silently when no match
        if typ == "groupchat":
            self.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE, from_=str(bare))
            return
        targets = self.message_targets(bare, typ)
        if targets:
            self._hand_over(targets, self.message_bytes(sender, bare, stanza))
            self._delivered(sender, bare, stanza, targets)
            return
        for handler in self.hooks.handlers("message_undeliverable"):
            if handler(self, session, bare, stanza):
                self._delivered(sender, bare, stanza, [])
                return
        self.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE, f"{bare} is not online",
                    from_=str(bare))

    def redeliver(self, gone: Session, stanza: Stanza) -> None:
        """A message ``gone`` held and its client never acknowledged (XEP-0198), that
        no other resource has (see Delivery): route it again, once — to the account's
        other resources, else offline storage (RFC 6121 §8.5.2).  The bytes are the
        ones ``gone`` had (``from``, ``<stanza-id/>`` already set).  Errors,
        groupchat and headlines are dropped, as they are never stored."""
        el = stanza.element
        typ = el.get("type") or "normal"
        if el.tag != MESSAGE or typ in ("error", "groupchat", "headline"):
            return
        typ = typ if typ in _MESSAGE_TYPES else "normal"
        bare = gone.jid.bare
        targets = self.message_targets(bare, typ, exclude=gone)
        if targets:
            self._hand_over(targets, stanza.raw)
            return
        try:
            sender = AbsentSender(JID.parse(el.get("from", "")))
        except InvalidJID:
            return
        self._rerouting = stanza
        try:
            for handler in self.hooks.handlers("message_undeliverable"):
                if handler(self, sender, bare, stanza):
                    return
        finally:
            self._rerouting = None
        log.info("unacknowledged message to %s dropped: no resource and no offline storage", gone.jid)

    def unanswerable(self, gone: Session, stanza: Stanza) -> None:
        """An iq request ``gone`` held and its client never acknowledged: the
        requester gets ``service-unavailable`` from the resource (RFC 6121
        §8.5.3.2.1) instead of waiting for an answer that cannot come."""
        el = stanza.element
        if el.tag != IQ or el.get("type") not in ("get", "set"):
            return
        sender_text = el.get("from", "")
        if sender_text in self.hosts:  # our own request (Router.request): fail it now
            fut = self._pending.pop((el.get("id", ""), str(gone.jid)), None)
            if fut is not None and not fut.done():
                fut.set_exception(TimeoutError(f"{gone.jid} went away before answering"))
            return
        try:
            requester = self.sessions.get(JID.parse(sender_text))
        except InvalidJID:
            return
        if requester is not None:
            self.bounce(requester, el, StanzaErrorCondition.SERVICE_UNAVAILABLE, f"{gone.jid} went away")

    # ------------------------------------------------------------ presence
    def _presence(self, session: Session, stanza: Stanza, to: JID | None, typ: str | None) -> None:
        el = stanza.element
        sender = session.jid
        if to is not None:
            if to.domain not in self.hosts:
                self.bounce(session, el, StanzaErrorCondition.REMOTE_SERVER_NOT_FOUND,
                            f"no route to {to.domain}")
                return
            if to.local is None:
                return
        # modules own presence policy: roster (subscriptions), presence (broadcast, probes)
        for hook in self.hooks.handlers("presence_out"):
            if hook(session, stanza, to, typ):
                return
        if to is None:
            if typ is None or typ == "unavailable":
                self.broadcast_own(session, stanza, typ)
            return  # subscription management without 'to' is meaningless
        if self.filtered_in(sender, to, stanza):
            return
        data = self.bytes_for(stanza, el, {"from": str(sender)})
        if typ in (None, "unavailable"):
            directed = getattr(session, "directed", None)
            if directed is not None:
                if typ is None and len(directed) < MAX_DIRECTED_PRESENCE:
                    directed.add(to)
                elif typ == "unavailable":
                    directed.discard(to)
        if to.resource is not None:
            target = self.sessions.get(to)
            if target is not None:
                target.send_bytes(data)
            return
        for target in self.sessions.resources(to):
            if target.available or typ not in (None, "unavailable"):
                target.send_bytes(data)

    def filtered_in(self, sender: JID, to: JID, stanza: Stanza) -> bool:
        """Would a ``stanza_in`` hook (blocking, policy) stop this stanza to ``to``?"""
        for hook in self.hooks.handlers("stanza_in"):
            if hook(sender, to, stanza):
                return True
        return False

    _filtered_in = filtered_in  # the name modules used before it was public

    def _delivered(self, sender: JID, to_bare: JID, stanza: Stanza, targets: list) -> None:
        for hook in self.hooks.handlers("message_delivered"):
            hook(sender, to_bare, stanza, targets)

    def broadcast_own(self, session: Session, stanza: Stanza, typ: str | None) -> None:
        """Presence broadcast to the user's own resources; records the session's
        availability, priority and last presence.  The presence module adds the
        roster audience (subscribers, probes).

        Available presence (initial or subsequent, RFC 6121 §4.2.2, §4.4.2) goes
        to every available resource of the account *including the one that sent
        it*: clients wait for that echo.  Unavailable presence (§4.5.2) goes to
        the other available resources."""
        el = stanza.element
        sender = session.jid
        was_available = session.available
        if typ is None:
            prio = el.findtext(f"{C}priority")
            try:
                session.priority = max(-128, min(127, int(prio))) if prio else 0
            except ValueError:
                session.priority = 0
            session.available = True
            session.last_presence = stanza  # type: ignore[attr-defined]
        else:
            session.available = False
            session.last_presence = None  # type: ignore[attr-defined]
        others = [s for s in self.sessions.resources(sender.bare) if s is not session and s.available]
        if typ is None:
            session.send_bytes(self.bytes_for(stanza, el, {"from": str(sender), "to": str(sender)}))
        for other in others:
            other.send_bytes(self.bytes_for(stanza, el, {"from": str(sender), "to": str(other.jid)}))
            if typ is None and not was_available:
                # the new resource learns about the others (initial presence)
                last = getattr(other, "last_presence", None)
                if last is not None:
                    session.send_bytes(self.bytes_for(
                        last, last.element, {"from": str(other.jid), "to": str(sender)}))
        if typ == "unavailable":
            self._unavailable_to_directed(session)
        elif not was_available:
            for hook in self.hooks.handlers("initial_presence"):  # e.g. offline delivery
                hook(session)

    def _unavailable_to_directed(self, session: Session) -> None:
        directed = getattr(session, "directed", None)
        if not directed:
            return
        for to in list(directed):
            if to.resource is not None:
                target = self.sessions.get(to)
                targets = [target] if target else []
            else:
                targets = self.sessions.resources(to)
            for t in targets:
                t.send_bytes(presence_bytes(session.jid, t.jid, "unavailable"))
        directed.clear()

    def session_ended(self, session: Session) -> None:
        """Called once when a bound session goes away (any reason): its other
        available resources learn it is unavailable (RFC 6121 §4.5.2)."""
        if session.available:
            session.available = False
            for other in self.sessions.resources(session.jid.bare):
                if other is not session and other.available:
                    other.send_bytes(presence_bytes(session.jid, other.jid, "unavailable"))
        self._unavailable_to_directed(session)
