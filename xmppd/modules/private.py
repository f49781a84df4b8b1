"""Private XML storage (XEP-0049, ``jabber:iq:private``) on the account's own bare JID.

Spec references:
  XEP-0049 §2     set: <query><elem xmlns='ns'>…</elem></query> stores the element,
                  replacing the previous one of the same name and namespace;
                  get: <query><elem xmlns='ns'/></query> returns the stored one,
                  or the empty element when nothing is stored
  XEP-0049 §3     only the account itself (another user's JID: the router answers
                  service-unavailable as for any non-public account iq); the
                  jabber:client, jabber:server and jabber:iq:private namespaces:
                  not-acceptable

Another module may own one element (``Private.overrides``): XEP-0048 bookmarks
(``{storage:bookmarks}storage``) are served from XEP-0402 PEP bookmarks by
:mod:`xmppd.modules.bookmarks`.  Limits: ``max_bytes`` per element and
``max_entries`` per account (-> not-acceptable / resource-constraint with a text).
A set is answered only after its commit (acknowledged means durable).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Awaitable, Callable
from xml.etree.ElementTree import Element, SubElement

from ..config import ConfigError
from ..errors import StanzaErrorCondition as E
from ..jid import JID
from ..storage.private import PrivateStore, TooManyEntries
from ..stream.c2s import iq_error
from ..xml.writer import serialize
from .base import Module

__all__ = ["Private", "NS_PRIVATE"]

NS_PRIVATE = "jabber:iq:private"
_FORBIDDEN_NS = frozenset({"jabber:client", "jabber:server", NS_PRIVATE, ""})

Getter = Callable[[JID, Element], Awaitable[Element | None]]
#: (session, element): raises ValueError with the reason to refuse it (not-acceptable)
Setter = Callable[[object, Element], Awaitable[None]]


class Private(Module):
    name = "private"
    xeps = (("0049", "1.2"),)
    options_spec = {
        # largest element stored, in bytes; larger: not-acceptable
        "max_bytes": (int, 65536),
        # different elements one account may store; more: resource-constraint
        "max_entries": (int, 100),
    }

    @classmethod
    def check_options(cls, options) -> None:
        if options["max_bytes"] < 256:
            raise ConfigError("modules.private.max_bytes", "must be >= 256")
        if options["max_entries"] < 1:
            raise ConfigError("modules.private.max_entries", "must be >= 1")

    def setup(self) -> None:
        self.store = PrivateStore(self.server.db_engine)
        #: Clark tag -> (get, set) of a module that owns that element
        self.overrides: dict[str, tuple[Getter, Setter]] = {}
        self.server.hooks.iq(NS_PRIVATE, get=self._get, set=self._set, account=True)

    @staticmethod
    def _reply(children: list[Element]) -> Element:
        reply = Element("{jabber:client}iq", {"type": "result"})
        q = SubElement(reply, f"{{{NS_PRIVATE}}}query")
        q.extend(children)
        return reply

    @staticmethod
    def _check(el: Element) -> str | None:
        q = el[0]
        if q.tag != f"{{{NS_PRIVATE}}}query":
            return "expected <query xmlns='jabber:iq:private'/>"
        if len(q) != 1 and el.get("type") == "get":
            return "ask for exactly one element"
        if len(q) == 0:
            return "nothing to store"
        for child in q:
            ns = child.tag[1:].partition("}")[0] if child.tag.startswith("{") else ""
            if ns in _FORBIDDEN_NS:
                return f"elements in the namespace {ns or '(none)'!r} cannot be stored (XEP-0049 §3)"
        return None

    def _get(self, session, el: Element):
        problem = self._check(el)
        if problem:
            return iq_error(el, E.NOT_ACCEPTABLE if "namespace" in problem else E.BAD_REQUEST, problem)
        return self._get_later(session.jid.bare, el)

    async def _get_later(self, owner: JID, el: Element) -> Element:
        want = el[0][0]
        override = self.overrides.get(want.tag)
        if override is not None:
            found = await override[0](owner, want)
            if found is not None:
                return self._reply([found])
        data = await self.store.get(owner.local, owner.domain, want.tag)
        return self._reply([ET.fromstring(data) if data is not None else Element(want.tag)])

    def _set(self, session, el: Element):
        problem = self._check(el)
        if problem:
            return iq_error(el, E.NOT_ACCEPTABLE if "namespace" in problem else E.BAD_REQUEST, problem)
        items = []
        for child in el[0]:
            data = serialize(child)
            if len(data) > self.options["max_bytes"]:
                return iq_error(el, E.NOT_ACCEPTABLE, f"{child.tag} is larger than {self.options['max_bytes']} "
                                                     "bytes (modules.private.max_bytes)")
            items.append((child, data))
        return self._set_later(session, el, items)

    async def _set_later(self, session, el: Element, items) -> Element:
        owner = session.jid.bare
        plain = []
        for child, data in items:
            override = self.overrides.get(child.tag)
            if override is not None:
                try:
                    await override[1](session, child)
                except ValueError as exc:
                    return iq_error(el, E.NOT_ACCEPTABLE, str(exc))
            else:
                plain.append((child.tag, data))
        if plain:
            try:
                await self.store.set_many(owner.local, owner.domain, plain, max_entries=self.options["max_entries"])
            except TooManyEntries:
                return iq_error(el, E.RESOURCE_CONSTRAINT, f"at most {self.options['max_entries']} stored "
                                                           "elements (modules.private.max_entries)")
        return Element("{jabber:client}iq", {"type": "result"})
