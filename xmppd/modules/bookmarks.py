"""Bookmarks: XEP-0402 (PEP native bookmarks) and XEP-0048 over XEP-0049, kept as one list.

XEP-0402 needs nothing but PEP (:mod:`xmppd.modules.pep`): the client publishes
one item per room to ``urn:xmpp:bookmarks:1`` (item id = room JID, payload
``<conference xmlns='urn:xmpp:bookmarks:1' name autojoin><nick/><password/></conference>``)
with publish-options ``pubsub#persist_items``, ``pubsub#max_items = max``,
``pubsub#send_last_published_item = never``, ``pubsub#access_model = whitelist``.

XEP-0402 §3.4 compatibility (feature ``urn:xmpp:bookmarks:1#compat`` on the
account): older clients (aioxmpp, Pidgin...) store XEP-0048 bookmarks as
``<storage xmlns='storage:bookmarks'/>`` in private XML storage (XEP-0049).
Both views show the same rooms, with the PEP node as the one source of truth:

* a private-storage *get* of ``storage:bookmarks`` is built from the PEP items
  (when the node exists; ``<url/>`` bookmarks, which XEP-0402 has no place for,
  come from the private copy);
* a private-storage *set* publishes one PEP item per ``<conference/>`` (the node
  created with the configuration above when missing), retracts the rooms no
  longer listed, and keeps the element itself in private storage for its
  ``<url/>`` entries.  The publishes go through PEP's own request handler, so
  the account's other resources get the usual notifications.

Not done: XEP-0048 over PEP (``storage:bookmarks`` as a PEP node — the
``#compat-pep`` feature).
"""

from __future__ import annotations

import inspect
import xml.etree.ElementTree as ET
from xml.etree.ElementTree import Element, SubElement

from ..jid import JID, InvalidJID
from ..xml.writer import serialize
from .base import Module

__all__ = ["Bookmarks", "NS_BOOKMARKS2", "NS_LEGACY"]

NS_BOOKMARKS2 = "urn:xmpp:bookmarks:1"
NS_LEGACY = "storage:bookmarks"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
LEGACY_TAG = f"{{{NS_LEGACY}}}storage"
#: conferences converted from one XEP-0048 <storage/>; more: not-acceptable
MAX_CONFERENCES = 1000


class Bookmarks(Module):
    name = "bookmarks"
    xeps = (("0402", "1.1 (on PEP, #compat with XEP-0048)"), ("0048", "1.2 over XEP-0049"))

    def setup(self) -> None:
        mods = {m.name: m for m in self.server.modules}
        self.pep = mods.get("pep")
        self.private = mods.get("private")
        if self.pep is None or self.private is None:
            return  # XEP-0402 needs PEP, the compat view needs private storage as well
        self.server.hooks.account_features.add(f"{NS_BOOKMARKS2}#compat")
        self.private.overrides[LEGACY_TAG] = (self._legacy_get, self._legacy_set)

    # ------------------------------------------------------------ XEP-0048 view of the PEP node
    async def _legacy_get(self, owner: JID, _want: Element) -> Element | None:
        store = self.pep.store
        node = await store.node(owner.local, owner.domain, NS_BOOKMARKS2)
        if node is None:
            return None  # nothing in PEP: whatever private storage holds
        out = Element(LEGACY_TAG)
        for item in await store.items(node.id):
            try:
                conf = ET.fromstring(item.payload)
            except ET.ParseError:
                continue
            if conf.tag != f"{{{NS_BOOKMARKS2}}}conference":
                continue
            attrs = {"jid": item.item_id, "autojoin": "true" if conf.get("autojoin") in ("1", "true") else "false"}
            if conf.get("name"):
                attrs["name"] = conf.get("name")
            c = SubElement(out, f"{{{NS_LEGACY}}}conference", attrs)
            for child in ("nick", "password"):
                text = conf.findtext(f"{{{NS_BOOKMARKS2}}}{child}")
                if text:
                    SubElement(c, f"{{{NS_LEGACY}}}{child}").text = text
        data = await self.private.store.get(owner.local, owner.domain, LEGACY_TAG)
        if data is not None:
            for url in ET.fromstring(data).findall(f"{{{NS_LEGACY}}}url"):
                out.append(url)
        return out

    async def _legacy_set(self, session, storage: Element) -> None:
        owner: JID = session.jid.bare
        confs = storage.findall(f"{{{NS_LEGACY}}}conference")
        if len(confs) > MAX_CONFERENCES:
            raise ValueError(f"at most {MAX_CONFERENCES} bookmarks")
        wanted: dict[str, Element] = {}
        for conf in confs:
            try:
                room = JID.parse(conf.get("jid", ""))
            except InvalidJID:
                raise ValueError(f"bookmark jid {conf.get('jid')!r} is not a JID") from None
            item = Element(f"{{{NS_BOOKMARKS2}}}conference")
            if conf.get("name"):
                item.set("name", conf.get("name"))
            item.set("autojoin", "true" if conf.get("autojoin") in ("1", "true") else "false")
            for child in ("nick", "password"):
                text = conf.findtext(f"{{{NS_LEGACY}}}{child}")
                if text:
                    SubElement(item, f"{{{NS_BOOKMARKS2}}}{child}").text = text
            wanted[str(room.bare)] = item
        # through PEP's own request handler, as a XEP-0402 client would publish: same checks,
        # same notifications to the account's other resources
        node = await self.pep.store.node(owner.local, owner.domain, NS_BOOKMARKS2)
        existing = {i.item_id for i in await self.pep.store.items(node.id)} if node is not None else set()
        for room, payload in wanted.items():
            ps = Element(f"{{{NS_PUBSUB}}}pubsub")
            pub = SubElement(ps, f"{{{NS_PUBSUB}}}publish", {"node": NS_BOOKMARKS2})
            SubElement(pub, f"{{{NS_PUBSUB}}}item", {"id": room}).append(payload)
            if node is None:  # created private, as XEP-0402 §3.2 asks (a node a client made is kept as is)
                ps.append(_publish_options())
                node = True
            await self._pep_request(session, ps)
        for room in sorted(existing - set(wanted)):
            ps = Element(f"{{{NS_PUBSUB}}}pubsub")
            retract = SubElement(ps, f"{{{NS_PUBSUB}}}retract", {"node": NS_BOOKMARKS2, "notify": "true"})
            SubElement(retract, f"{{{NS_PUBSUB}}}item", {"id": room})
            await self._pep_request(session, ps)
        # the element itself (its <url/> bookmarks) stays in private storage
        await self.private.store.set_many(owner.local, owner.domain, [(LEGACY_TAG, serialize(storage))],
                                          max_entries=self.private.options["max_entries"] + 1)

    async def _pep_request(self, session, payload: Element) -> None:
        iq = Element("{jabber:client}iq", {"type": "set", "from": str(session.jid),
                                           "to": str(session.jid.bare), "id": "bookmarks-compat"})
        iq.append(payload)
        result = self.pep.pubsub_set(session, iq)
        if inspect.isawaitable(result):
            result = await result
        if result is not None and result.get("type") == "error":
            text = result.findtext(".//{urn:ietf:params:xml:ns:xmpp-stanzas}text") or "PEP refused the bookmark"
            raise ValueError(f"bookmarks ({NS_BOOKMARKS2}): {text}")


def _publish_options() -> Element:
    """XEP-0402 §3.2: persistent, every item kept, never sent on presence, owner only."""
    opts = Element(f"{{{NS_PUBSUB}}}publish-options")
    x = SubElement(opts, "{jabber:x:data}x", {"type": "submit"})
    for var, value in (("FORM_TYPE", f"{NS_PUBSUB}#publish-options"), ("pubsub#persist_items", "true"),
                       ("pubsub#max_items", "max"), ("pubsub#send_last_published_item", "never"),
                       ("pubsub#access_model", "whitelist")):
        f = SubElement(x, "{jabber:x:data}field", {"var": var})
        SubElement(f, "{jabber:x:data}value").text = value
    return opts
