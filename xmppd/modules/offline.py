"""Offline messages (XEP-0160) with delay stamps (XEP-0203) and hints (XEP-0334).

Spec references:
  XEP-0160 §3     store normal/chat messages for an account with no available
                  resource; deliver on its next available presence; never store
                  groupchat, headline or error messages
  XEP-0160 §4     a delivered offline message carries <delay/> (XEP-0203)
  XEP-0334 §4.1   <no-store/>: not stored (the router bounces it)
  XEP-0085 §5.6   standalone chat states are not stored (dropped silently)
  RFC 6121 §8.5.2.1.1  unknown account or full store: service-unavailable

What is stored is the exact bytes to deliver: the router's bytes for the
recipient (start tag rewritten, payload untouched — an OMEMO ``<encrypted/>``
with unknown children stays byte-identical) with ``<delay/>`` inserted just
before the end tag.

The claim (``message_undeliverable``) is decided synchronously from the
message itself; whether the account exists and whether its store is full
needs the database, so those are checked when storing and answered with the
same ``service-unavailable`` the router would send.  Stores and deliveries of
one account run one after another (a per-account chain), so a delivery never
overtakes a store that was claimed before it.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging

from ..errors import StanzaErrorCondition
from ..jid import JID
from ..storage.offline import MAX_FETCH, OfflineStore
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

__all__ = ["Offline", "MAX_PENDING_STORES", "FULL_TEXT"]

log = logging.getLogger("xmppd.modules.offline")

#: offline stores/deliveries in flight on this node; beyond, messages bounce (resource-constraint)
MAX_PENDING_STORES = 10_000
FULL_TEXT = "offline storage full"


class Offline(Module):
    name = "offline"
    xeps = (("0160", "1.0.1"), ("0203", "2.0"), ("0334", "0.3.0 no-store"))
    features = ("msgoffline",)
    options_spec = {
        # messages kept per account; beyond, service-unavailable "offline storage full"
        "max_per_user": (int, 1000),
    }

    @classmethod
    def check_options(cls, options) -> None:
        from ..config import ConfigError

        if options["max_per_user"] < 1:
            raise ConfigError("modules.offline.max_per_user", "must be >= 1")

    def setup(self) -> None:
        self.store = OfflineStore(self.server.db_engine)
        self.max_per_user: int = max(1, self.options["max_per_user"])
        self._tails: dict[JID, asyncio.Future] = {}
        self._pending = 0
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
        if self._pending >= MAX_PENDING_STORES:
            router.bounce(session, el, StanzaErrorCondition.RESOURCE_CONSTRAINT,
                          "offline storage busy, try again", from_=str(bare))
            return True
        now = _dt.datetime.now(_dt.timezone.utc)
        data = router.message_bytes(session.jid, bare, stanza)
        if el.get("to") is None:  # a message to one's own account: say whom it was for
            data = rewrite_start_tag(data, start_tag_len(data), {"to": str(bare)})
        data = insert_before_end(data, delay_element(bare.domain, now))
        self._enqueue(bare, self._store(router, session, el, bare, data, now))
        return True

    async def _store(self, router, session, el, bare: JID, data: bytes, now: _dt.datetime) -> None:
        if not await account_exists(self.server, bare):
            # what the router says for an unclaimed message (RFC 6121 §8.5.2.1.1)
            router.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE,
                          f"{bare} is not online", from_=str(bare))
            return
        stored = await self.store.store(bare.local, bare.domain, str(session.jid), data, now,
                                        max_per_user=self.max_per_user)
        if not stored:
            log.info("offline store of %s is full (%d)", bare, self.max_per_user)
            router.bounce(session, el, StanzaErrorCondition.SERVICE_UNAVAILABLE, FULL_TEXT,
                          from_=str(bare))

    # ------------------------------------------------------------ deliver
    def _initial_presence(self, session) -> None:
        if session.priority < 0:
            return  # RFC 6121 §4.7.2.3: negative priority gets no bare-JID messages
        self._enqueue(session.jid.bare, self._deliver(session))

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
    def _enqueue(self, bare: JID, coro) -> None:
        prev = self._tails.get(bare)
        self._pending += 1
        task = self.server.spawn(self._after(prev, coro))
        self._tails[bare] = task

        def done(t: asyncio.Future, b: JID = bare) -> None:
            self._pending -= 1
            if self._tails.get(b) is t:
                del self._tails[b]

        task.add_done_callback(done)

    @staticmethod
    async def _after(prev, coro) -> None:
        try:
            if prev is not None:
                await asyncio.wait([prev])
        finally:
            await coro
