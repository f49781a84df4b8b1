"""Offline messages (XEP-0160) with delay stamps (XEP-0203) and hints (XEP-0334).

Spec references:
  XEP-0160 §3     store normal/chat messages for an account with no available
                  resource; deliver on its next available presence; never store
                  groupchat, headline or error messages
  XEP-0160 §4     a delivered offline message carries <delay/> (XEP-0203)
  XEP-0334 §4.1   <no-store/>: not stored (the router bounces it)
  XEP-0085 §5.6   standalone chat states are not stored (dropped silently)
  RFC 6121 §8.5.2.1.1  unknown account: service-unavailable
  RFC 6121 §8.5.2.2 / XEP-0160 §2  the server stores the message or returns an
                  error: a store over its quota answers resource-constraint
                  (type wait: the store drains when the recipient comes back)
                  with a <text/> naming the quota.  XEP-0160's example names
                  service-unavailable for a full queue; resource-constraint
                  tells the sender why and that it is temporary (QUOTA_CONDITION)

What is stored is the exact bytes to deliver: the router's bytes for the
recipient (start tag rewritten, payload untouched — an OMEMO ``<encrypted/>``
with unknown children stays byte-identical) with ``<delay/>`` inserted just
before the end tag.

The claim (``message_undeliverable``) is decided synchronously from the
message itself; whether the account exists and whether its store is full
needs the database, so those are checked when storing.  Stores and
deliveries of one account run one after another (a per-account chain), so a
delivery never overtakes a store that was claimed before it.

Quotas (``[modules.offline]``), per recipient account, checked when storing
(see storage.offline for how, without a query per message):
``max_per_user`` messages, ``max_bytes_per_user`` bytes, and one sender
(bare JID) holds at most ``max_sender_share`` of either — a stranger cannot
fill someone's store and lock their contacts out.  The backlog is per
account too: at most ``max_pending_per_sender`` stores from one sending
account wait for the database; beyond, that sender (only) gets
resource-constraint "try again".  There is no node-wide backlog limit a
flood from one account could exhaust for everybody else: the backlog is
bounded by the number of sessions times ``max_pending_per_sender``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging

from ..errors import StanzaErrorCondition
from ..jid import JID
from ..storage.offline import MAX_FETCH, OfflineStore, Stored
from ..xml.writer import rewrite_start_tag
from ._im import (
    account_exists,
    delay_element,
    has_hint,
    insert_before_end,
    is_standalone_chat_state,
    message_type,
    start_tag_len,
)
from .base import Module

__all__ = ["Offline", "QUOTA_CONDITION"]

log = logging.getLogger("xmppd.modules.offline")

#: the error a sender gets when the recipient's offline store refuses its message
QUOTA_CONDITION = StanzaErrorCondition.RESOURCE_CONSTRAINT


class Offline(Module):
    name = "offline"
    xeps = (("0160", "1.0.1"), ("0203", "2.0"), ("0334", "0.3.0 no-store"))
    features = ("msgoffline",)
    options_spec = {
        # messages kept per account; beyond, resource-constraint "offline store ... is full"
        "max_per_user": (int, 1000),
        # bytes of messages kept per account (as delivered, with <delay/>)
        "max_bytes_per_user": (int, 16 * 1024 * 1024),
        # fraction (0 < f <= 1) of max_per_user and of max_bytes_per_user one sender may hold
        "max_sender_share": (float, 0.5),
        # stores from one sending account waiting for the database; beyond, resource-constraint
        "max_pending_per_sender": (int, 500),
    }

    @classmethod
    def check_options(cls, options) -> None:
        from ..config import ConfigError

        for key in ("max_per_user", "max_pending_per_sender"):
            if options[key] < 1:
                raise ConfigError(f"modules.offline.{key}", "must be >= 1")
        if options["max_bytes_per_user"] < 1024:
            raise ConfigError("modules.offline.max_bytes_per_user", "must be >= 1024")
        if not 0.0 < options["max_sender_share"] <= 1.0:
            raise ConfigError("modules.offline.max_sender_share", "must be > 0 and <= 1")

    def setup(self) -> None:
        self.store = OfflineStore(self.server.db_engine)
        o = self.options
        self.max_per_user: int = o["max_per_user"]
        self.max_bytes: int = o["max_bytes_per_user"]
        self.sender_share: float = o["max_sender_share"]
        self.max_pending_per_sender: int = o["max_pending_per_sender"]
        self._tails: dict[JID, asyncio.Future] = {}
        #: stores waiting for the database, per sending account (bare JID)
        self._pending: dict[JID, int] = {}
        h = self.server.hooks
        h.on("message_undeliverable", self._undeliverable)
        h.on("initial_presence", self._initial_presence)

    # ------------------------------------------------------------ store
    def _undeliverable(self, router, session, bare: JID, stanza) -> bool:
        el = stanza.element
        if message_type(el) not in ("chat", "normal"):
            return False  # XEP-0160 §3: groupchat/headline/error are never stored
        if has_hint(el, "no-store"):
            return False  # XEP-0334 §4.1: the router bounces it
        if is_standalone_chat_state(el):
            return True  # XEP-0085 §5.6: no use later; dropped without an error
        sender = session.jid.bare
        # a redelivery (XEP-0198: unacknowledged when its session ended) has no live sender to
        # tell, and is bounded by that session's unacked queue: only live senders are limited
        live = getattr(session, "bound", False)
        if live and self._pending.get(sender, 0) >= self.max_pending_per_sender:
            # this sender's backlog only: other accounts' messages are still stored
            router.bounce(session, el, StanzaErrorCondition.RESOURCE_CONSTRAINT,
                          f"too many of your messages are waiting to be stored offline "
                          f"(limit {self.max_pending_per_sender}); try again later", from_=str(bare))
            return True
        now = _dt.datetime.now(_dt.timezone.utc)
        data = router.message_bytes(session.jid, bare, stanza)
        if el.get("to") is None:  # a message to one's own account: say whom it was for
            data = rewrite_start_tag(data, start_tag_len(data), {"to": str(bare)})
        data = insert_before_end(data, delay_element(bare.domain, now))
        # handled (XEP-0198 h) only once committed: Router.defer
        router.defer(self._enqueue(bare, self._store, (router, session, el, bare, data, now), sender=sender))
        return True

    async def _store(self, router, session, el, bare: JID, data: bytes, now: _dt.datetime) -> None:
        if not await account_exists(self.server, bare):
            # what the router says for an unclaimed message (RFC 6121 §8.5.2.1.1)
            router.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE,
                          f"{bare} is not online", from_=str(bare))
            return
        stored = await self.store.store(bare.local, bare.domain, str(session.jid), data, now,
                                        max_per_user=self.max_per_user, max_bytes=self.max_bytes,
                                        sender_share=self.sender_share)
        if not stored:
            level = logging.INFO if getattr(session, "bound", False) else logging.WARNING
            log.log(level, "offline store of %s refused a message from %s: %s%s", bare, session.jid.bare,
                    stored.value, "" if level == logging.INFO else " (a redelivery: nobody to tell, dropped)")
            router.bounce(session, el, QUOTA_CONDITION, self._refusal_text(bare, stored), from_=str(bare))

    def _refusal_text(self, bare: JID, why: Stored) -> str:
        if why is Stored.COUNT:
            return f"the offline store of {bare} is full ({self.max_per_user} messages)"
        if why is Stored.BYTES:
            return f"the offline store of {bare} is full ({self.max_bytes} bytes)"
        return (f"the offline store of {bare} is full for you: one sender may hold at most "
                f"{self.sender_share:.0%} of it")

    # ------------------------------------------------------------ deliver
    def _initial_presence(self, session) -> None:
        if session.priority < 0:
            return  # RFC 6121 §4.7.2.3: negative priority gets no bare-JID messages
        self._enqueue(session.jid.bare, self._deliver, (session,))

    async def _deliver(self, session) -> None:
        bare = session.jid.bare
        while True:  # bounded: each round deletes what it sent; the store is bounded by max_per_user
            rows = await self.store.fetch(bare.local, bare.domain, MAX_FETCH)
            if not rows or not session.bound or not session.available:
                return
            for row in rows:
                self.server.router.deliver_to(session, row.data)  # re-routed if never acknowledged
            await self.store.delete(bare.local, bare.domain, [r.seq for r in rows])
            if len(rows) < MAX_FETCH:
                return

    # ------------------------------------------------------------ per-account chain
    def _enqueue(self, bare: JID, fn, args: tuple, *, sender: JID | None = None) -> asyncio.Future:
        """Run ``fn(*args)`` after the account's previous store/delivery.  The
        coroutine is created only when it runs: work the server refuses to start
        (after stop) leaves no coroutine behind that is never awaited."""
        prev = self._tails.get(bare)
        if sender is not None:
            self._pending[sender] = self._pending.get(sender, 0) + 1
        task = self.server.spawn(self._after(prev, fn, args))
        self._tails[bare] = task

        def done(t: asyncio.Future, b: JID = bare) -> None:
            if sender is not None:
                n = self._pending.get(sender, 0) - 1
                if n > 0:
                    self._pending[sender] = n
                else:
                    self._pending.pop(sender, None)
            if self._tails.get(b) is t:
                del self._tails[b]

        task.add_done_callback(done)
        return task

    @staticmethod
    async def _after(prev, fn, args: tuple) -> None:
        try:
            if prev is not None:
                await asyncio.wait([prev])
        finally:
            await fn(*args)
