"""Personal Eventing Protocol (XEP-0163): a pubsub service (XEP-0060) on every account's bare JID.

What OMEMO (XEP-0384, legacy ``eu.siacs.conversations.axolotl`` and
``urn:xmpp:omemo:2``), OpenPGP for XMPP (XEP-0373), avatars, bookmarks and
private storage (XEP-0223) need, exactly:

  XEP-0163 §1/§5  disco#info on the bare JID: identity pubsub/pep and the
                 pubsub features (the Conversations Compliance Tester checks
                 ``pubsub#publish-options``)
  XEP-0060 §7.1  publish; item id generated when absent (``item-ids``),
                 ``current`` (§12.20) and any other id kept as sent; one item
                 with exactly one payload per publish; the payload stored and
                 served as the **exact bytes** published
  XEP-0060 §7.1.4 auto-create, with the publish-options as configuration
  XEP-0060 §7.1.5 publish-options as preconditions on an existing node:
                 mismatch or unknown field -> conflict + precondition-not-met,
                 nothing stored; the client then reconfigures (§8.2) and retries
  XEP-0060 §7.2  retract (+ notification when notify_retract or notify='true')
  XEP-0060 §6.5  retrieve items (all, by id, max_items), access checked per
                 §4.5: open (anyone), presence (owner + contacts with
                 subscription from/both: else not-authorized +
                 presence-subscription-required), roster (roster groups: else
                 not-authorized + not-in-roster-group), whitelist (owner +
                 members: else not-allowed + closed-node)
  XEP-0060 §8.1/8.2/8.3/8.4/8.5/8.9 create, configure (node_config form),
                 default configuration, delete, purge, affiliations
                 (whitelist members; XEP-0223 secret nodes stay owner-only)
  XEP-0163 §4    notifications (``type='headline'``, ``from`` the owner's bare
                 JID) to the owner's available resources and to contacts with
                 a presence subscription (from/both) allowed by the access
                 model, each to the full JID of every available resource with
                 non-negative priority whose XEP-0115 caps include
                 ``<node>+notify`` (filtered notifications; caps come from
                 ``modules.caps``); never to strangers, not even for open nodes;
                 never across a block (XEP-0191 in either direction)
  XEP-0163 §4.3.4 the last published item (with ``<delay/>``) to a resource
                 whose caps newly show ``+notify`` for a node, from its own
                 account and from every contact it is subscribed to

Errors carry ``<text/>``; nothing is stored on error.  Named limits
(``[modules.pep]``): ``max_items_per_node`` (``pubsub#max_items = max`` means
this number), ``max_item_bytes`` (-> not-acceptable + payload-too-big),
``max_nodes_per_account``, ``max_members_per_node``, ``max_response_bytes``
(an items answer carries the newest items that fit), and per account over all
its nodes ``max_items_per_account`` / ``max_bytes_per_account`` (a publish
over either -> policy-violation with a <text/>: XEP-0060 §7.1.3 defines no
quota condition; nothing stored, the session goes on).

Not offered: explicit subscriptions (subscribe/unsubscribe/options; PEP
subscriptions come from presence, XEP-0163 §4.1), collection nodes,
``authorize`` access, publishers other than the owner, PEP of remote users.

Files: this one dispatches the requests and runs publish / create / retract /
items; :mod:`.pep_owner` the owner requests (configure, delete, purge,
affiliations); :mod:`.pep_forms` node configuration and publish-options (data
forms, preconditions, :class:`PepError`, request helpers);
:mod:`.pep_audience` access models and notifications.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import uuid
import xml.etree.ElementTree as ET
from typing import Any
from xml.etree.ElementTree import Element, SubElement
from xml.parsers import expat

from ..config import ConfigError
from ..errors import StanzaErrorCondition as E
from ..hooks import PRIO_LATE
from ..jid import JID
from ..storage.pubsub import (
    DEFAULT_MAX_ACCOUNT_BYTES,
    DEFAULT_MAX_ACCOUNT_ITEMS,
    DEFAULT_MAX_ITEM_BYTES,
    DEFAULT_MAX_ITEMS_PER_NODE,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_NODES,
    MAX_ITEM_ID_BYTES,
    AccountQuotaExceeded,
    Item,
    NodeConfig,
    NodeExists,
    PubsubStore,
    TooManyNodes,
)
from ..xml.parser import Stanza
from ..xml.writer import serialize
from ._im import attr
from .base import Module
from .pep_audience import Audience
from .pep_forms import (
    IQ,
    TRUE_VALUES,
    FORM_NODE_CONFIG,
    FORM_PUBLISH_OPTIONS,
    NS_ERRORS,
    NS_EVENT,
    NS_OWNER,
    NS_PUBSUB,
    P,
    X,
    NodeForms,
    PepError,
    existing,
    guard,
    node_name,
    only_owner,
    owner_of,
    result,
    unsupported,
)
from .pep_owner import OwnerRequests
from .roster import KeyedLocks

__all__ = ["Pep", "NS_PUBSUB", "NS_OWNER", "NS_EVENT", "NS_ERRORS", "PEP_FEATURES",
           "payload_span"]

log = logging.getLogger("xmppd.modules.pep")

_START_TAG = re.compile(rb"""<(?:[^'">]++|'[^']*+'|"[^"]*+")*+>""")

#: XEP-0060 §10 features, advertised on the account's bare JID
PEP_FEATURES = (NS_PUBSUB,) + tuple(f"{NS_PUBSUB}#{f}" for f in (
    "access-open", "access-presence", "access-roster", "access-whitelist",
    "auto-create", "auto-subscribe", "config-node", "create-and-configure", "create-nodes",
    "delete-nodes", "filtered-notifications", "item-ids", "last-published",
    "member-affiliation", "modify-affiliations", "persistent-items", "presence-notifications",
    "publish", "publish-options", "purge-nodes", "retract-items", "retrieve-affiliations",
    "retrieve-default", "retrieve-items",
))

#: item ids asked for in one items request
MAX_REQUESTED_IDS = 1000
#: at least this many bytes of an items answer (``max_response_bytes``)
MIN_RESPONSE_BYTES = 64 * 1024


# ---------------------------------------------------------------- exact payload bytes
def payload_span(raw: bytes) -> tuple[int, int] | None:
    """Byte span in ``raw`` (an ``<iq><pubsub><publish><item>`` stanza as
    received) of the single element inside ``<item>``; None if not exactly one."""
    p = expat.ParserCreate("UTF-8")  # no namespace processing: only positions matter
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    path: list[str] = []
    spans: list[tuple[int, int]] = []
    starts: list[int] = []

    def local(name: str) -> str:
        return name.rpartition(":")[2]

    def start(name: str, _attrs: Any) -> None:
        path.append(local(name))
        starts.append(p.CurrentByteIndex)

    def end(_name: str) -> None:
        begin = starts.pop()
        if len(path) == 5 and path[2] == "publish" and path[3] == "item":
            m = _START_TAG.match(raw, begin)
            if m is None:
                raise ValueError("start tag not found")
            if raw[m.end() - 2:m.end()] == b"/>":
                stop = m.end()
            else:
                stop = raw.index(b">", p.CurrentByteIndex) + 1
            spans.append((begin, stop))
        path.pop()

    p.StartElementHandler = start
    p.EndElementHandler = end
    try:
        p.Parse(raw, True)
    except (expat.ExpatError, ValueError):
        return None
    return spans[0] if len(spans) == 1 else None


def exact_payload(stanza: Stanza | None, payload: Element) -> bytes:
    """The payload as the client sent it, if those bytes mean the same on
    their own (no namespace or prefix inherited from outside); otherwise a
    self-contained serialisation of the parsed element."""
    if stanza is not None:
        span = payload_span(stanza.raw)
        if span is not None:
            data = stanza.raw[span[0]:span[1]]
            try:
                alone = ET.fromstring(data)
            except ET.ParseError:
                alone = None
            if alone is not None and alone.tag == payload.tag:
                return data
    return serialize(payload, default_ns="")


class Pep(Module):
    name = "pep"
    xeps = (("0163", "1.2"), ("0060", "1.26 (PEP subset)"), ("0223", "1.1"))
    options_spec = {
        "max_items_per_node": (int, DEFAULT_MAX_ITEMS_PER_NODE),
        "max_item_bytes": (int, DEFAULT_MAX_ITEM_BYTES),
        "max_nodes_per_account": (int, DEFAULT_MAX_NODES),
        "max_members_per_node": (int, DEFAULT_MAX_MEMBERS),
        "max_response_bytes": (int, 4 * 1024 * 1024),
        "max_items_per_account": (int, DEFAULT_MAX_ACCOUNT_ITEMS),
        "max_bytes_per_account": (int, DEFAULT_MAX_ACCOUNT_BYTES),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        for key in ("max_items_per_node", "max_item_bytes", "max_nodes_per_account",
                    "max_members_per_node", "max_items_per_account"):
            if options[key] < 1:
                raise ConfigError(f"modules.pep.{key}", "must be at least 1")
        if options["max_bytes_per_account"] < options["max_item_bytes"]:
            raise ConfigError("modules.pep.max_bytes_per_account", "must be at least max_item_bytes")
        if options["max_response_bytes"] < max(MIN_RESPONSE_BYTES, options["max_item_bytes"]):
            raise ConfigError("modules.pep.max_response_bytes",
                              f"must be at least max_item_bytes and {MIN_RESPONSE_BYTES}")

    def __init__(self, server, options=None) -> None:
        super().__init__(server, options)
        self.store = PubsubStore(server.db_engine)
        self.locks = KeyedLocks()
        self.max_items: int = self.options["max_items_per_node"]
        #: (iq element, stanza) of the last pubsub set seen by stanza_out: the raw bytes
        self._raw: tuple[Element, Stanza] | None = None
        self.forms = NodeForms(self.max_items)
        self.audience = Audience(server, self.store)
        self.owner_requests = OwnerRequests(self)

    def setup(self) -> None:
        h = self.server.hooks
        h.iq(NS_PUBSUB, get=self.pubsub_get, set=self.pubsub_set, account=True, public=True)
        h.iq(NS_OWNER, get=self.owner_requests.owner_get, set=self.owner_requests.owner_set,
             account=True, public=True)
        h.account_identities.add(("pubsub", "pep", ""))
        h.account_features.update(PEP_FEATURES)
        h.on("stanza_out", self._capture, PRIO_LATE)
        h.on("caps_changed", self.audience.caps_changed)
        self.server.pep = self

    async def start(self) -> None:
        self.audience.blocking = next((m for m in self.server.modules if m.name == "blocking"), None)

    def _send_result_bytes(self, session, req: Element, owner: JID, body: bytes) -> None:
        frm = req.get("to") or str(owner)
        head = f"<iq type='result' to='{attr(str(session.jid))}' from='{attr(frm)}'"
        if req.get("id") is not None:
            head += f" id='{attr(req.get('id'))}'"
        session.send_bytes(head.encode() + b">" + body + b"</iq>")

    # ------------------------------------------------------------ raw bytes of a publish
    def _capture(self, session, stanza: Stanza, to) -> bool:
        el = stanza.element
        if el.tag == IQ and len(el) == 1 and el[0].tag == f"{P}pubsub" and el.get("type") == "set":
            self._raw = (el, stanza)
        return False

    def _take_raw(self, req: Element) -> Stanza | None:
        slot, self._raw = self._raw, None
        return slot[1] if slot is not None and slot[0] is req else None

    # ------------------------------------------------------------ pubsub (user namespace)
    def pubsub_get(self, session, req: Element):
        return guard(req, self._pubsub_get(session, req))

    async def _pubsub_get(self, session, req: Element) -> Element | None:
        ps = req[0]
        if ps.tag != f"{P}pubsub" or len(ps) != 1:
            raise PepError(E.BAD_REQUEST, "expected <pubsub/> with one child")
        owner = owner_of(session, req)
        child = ps[0]
        if child.tag == f"{P}items":
            await self._items(session, req, owner, child)
            return None
        if child.tag == f"{P}affiliations":
            return await self._my_affiliations(session, req, owner, child)
        if child.tag == f"{P}subscriptions":
            reply = result(req)
            SubElement(SubElement(reply, f"{P}pubsub"), f"{P}subscriptions")
            return reply  # PEP subscriptions are implicit (presence), none are explicit
        if child.tag in (f"{P}options", f"{P}default"):
            raise unsupported("subscription-options", "subscription options are not offered: "
                               "PEP subscriptions come from presence (XEP-0163 §4.1)")
        raise PepError(E.BAD_REQUEST, f"unknown pubsub request {child.tag}")

    def pubsub_set(self, session, req: Element):
        stanza = self._take_raw(req)
        return guard(req, self._pubsub_set(session, req, stanza))

    async def _pubsub_set(self, session, req: Element, stanza: Stanza | None) -> Element | None:
        ps = req[0]
        if ps.tag != f"{P}pubsub" or len(ps) == 0:
            raise PepError(E.BAD_REQUEST, "expected <pubsub/> with a request inside")
        owner = owner_of(session, req)
        action = ps[0]
        rest = list(ps)[1:]
        if action.tag == f"{P}publish":
            if any(r.tag != f"{P}publish-options" for r in rest) or len(rest) > 1:
                raise PepError(E.BAD_REQUEST, "<publish/> may only be followed by <publish-options/>")
            return await self._publish(session, req, owner, action, rest[0] if rest else None, stanza)
        if action.tag == f"{P}create":
            if any(r.tag != f"{P}configure" for r in rest) or len(rest) > 1:
                raise PepError(E.BAD_REQUEST, "<create/> may only be followed by <configure/>")
            return await self._create(session, req, owner, action, rest[0] if rest else None)
        if rest:
            raise PepError(E.BAD_REQUEST, "one request per <pubsub/>")
        if action.tag == f"{P}retract":
            return await self._retract(session, req, owner, action)
        if action.tag in (f"{P}subscribe", f"{P}unsubscribe", f"{P}options"):
            raise unsupported("subscribe", "explicit subscriptions are not offered: PEP "
                               "subscriptions come from presence and caps +notify (XEP-0163 §4)")
        raise PepError(E.BAD_REQUEST, f"unknown pubsub request {action.tag}")

    # ---- publish
    async def _publish(self, session, req, owner: JID, pub: Element, opts: Element | None,
                       stanza: Stanza | None) -> Element:
        name = node_name(pub)
        only_owner(session, owner, "publish to")
        items = list(pub)
        if not items:
            raise PepError(E.BAD_REQUEST, "a publish to a PEP node carries one <item/>", "item-required")
        if len(items) > 1 or items[0].tag != f"{P}item":
            raise PepError(E.BAD_REQUEST, "exactly one <item/> per publish", "invalid-payload")
        item = items[0]
        if len(item) == 0:
            raise PepError(E.BAD_REQUEST, "the <item/> has no payload", "payload-required")
        if len(item) > 1:
            raise PepError(E.BAD_REQUEST, "the <item/> carries more than one payload element",
                           "invalid-payload")
        item_id = item.get("id") or uuid.uuid4().hex
        if len(item_id.encode("utf-8")) > MAX_ITEM_ID_BYTES:
            raise PepError(E.NOT_ACCEPTABLE, f"item ids are limited to {MAX_ITEM_ID_BYTES} bytes")
        payload = exact_payload(stanza, item[0])
        limit = self.options["max_item_bytes"]
        if len(payload) > limit:
            raise PepError(E.NOT_ACCEPTABLE, f"the payload is {len(payload)} bytes; the limit is "
                           f"{limit}", "payload-too-big")
        x = None
        if opts is not None:
            xs = opts.findall(f"{X}x")
            if len(opts) != len(xs) or len(xs) > 1:
                raise PepError(E.BAD_REQUEST, "<publish-options/> holds one jabber:x:data form")
            x = xs[0] if xs else None
        now = _dt.datetime.now(_dt.timezone.utc)
        async with self.locks(owner):
            node = await self.store.node(owner.local or "", owner.domain, name)
            if node is not None:
                self.forms.check_preconditions(node, x)
                create = node.config
            else:
                create = self.forms.config_from(x, form_type=FORM_PUBLISH_OPTIONS, base=NodeConfig(),
                                                condition=E.CONFLICT, app="precondition-not-met")
            try:
                node, _created = await self.store.publish(
                    owner.local or "", owner.domain, name, item_id, str(owner), payload, now,
                    create_config=create, max_nodes=self.options["max_nodes_per_account"],
                    account_items=self.options["max_items_per_account"],
                    account_bytes=self.options["max_bytes_per_account"])
            except AccountQuotaExceeded as exc:
                raise self._quota_error(owner, exc) from None
            except TooManyNodes:
                raise PepError(E.NOT_ALLOWED, f"an account may have at most "
                               f"{self.options['max_nodes_per_account']} nodes",
                               "max-nodes-exceeded") from None
        await self.audience.notify_items(owner, node, Item(item_id, str(owner), payload, now, 0))
        reply = result(req)
        p = SubElement(SubElement(reply, f"{P}pubsub"), f"{P}publish", {"node": name})
        SubElement(p, f"{P}item", {"id": item_id})
        return reply

    @staticmethod
    def _quota_error(owner: JID, exc: AccountQuotaExceeded) -> PepError:
        """XEP-0060 §7.1.3 has no condition for an account quota: policy-violation
        (RFC 6120 §8.3.3.12, a local service policy, type modify: retract or purge
        items first) with a <text/> naming the quota."""
        if exc.what == "items":
            what = f"{exc.limit} items over all its nodes"
        else:
            what = f"{exc.limit} bytes of item payloads over all its nodes"
        return PepError(E.POLICY_VIOLATION, f"{owner}'s personal eventing storage is full: an account may "
                        f"keep at most {what}; retract or purge items first")

    # ---- create
    async def _create(self, session, req, owner: JID, create: Element, conf: Element | None) -> Element:
        if not create.get("node"):
            raise PepError(E.NOT_ACCEPTABLE, "instant nodes are not offered by PEP: name the node",
                           "nodeid-required")
        name = node_name(create)
        only_owner(session, owner, "create")
        x = None
        if conf is not None:
            xs = conf.findall(f"{X}x")
            if len(conf) != len(xs) or len(xs) > 1:
                raise PepError(E.BAD_REQUEST, "<configure/> holds one jabber:x:data form")
            x = xs[0] if xs else None
        config = self.forms.config_from(x, form_type=FORM_NODE_CONFIG, base=NodeConfig(),
                                        condition=E.NOT_ACCEPTABLE, app=None)
        now = _dt.datetime.now(_dt.timezone.utc)
        async with self.locks(owner):
            try:
                await self.store.create_node(owner.local or "", owner.domain, name, config, now,
                                             max_nodes=self.options["max_nodes_per_account"])
            except NodeExists:
                raise PepError(E.CONFLICT, f"node {name} exists") from None
            except TooManyNodes:
                raise PepError(E.NOT_ALLOWED, f"an account may have at most "
                               f"{self.options['max_nodes_per_account']} nodes",
                               "max-nodes-exceeded") from None
        return result(req)

    # ---- retract
    async def _retract(self, session, req, owner: JID, r: Element) -> Element:
        name = node_name(r)
        only_owner(session, owner, "retract from")
        items = list(r)
        if len(items) != 1 or items[0].tag != f"{P}item" or not items[0].get("id"):
            raise PepError(E.BAD_REQUEST, "<retract/> carries one <item id='...'/>", "item-required")
        item_id = items[0].get("id")
        async with self.locks(owner):
            node = await existing(self.store, owner, name)
            if not await self.store.retract(node.id, item_id):
                raise PepError(E.ITEM_NOT_FOUND, f"node {name} has no item {item_id}")
        if node.config.notify_retract or (r.get("notify") or "").lower() in TRUE_VALUES:
            inner = (f"<items node='{attr(name)}'><retract id='{attr(item_id)}'/></items>").encode()
            await self.audience.notify(owner, node, inner)
        return result(req)

    # ---- items
    async def _items(self, session, req, owner: JID, el: Element) -> None:
        name = node_name(el)
        max_items = None
        if el.get("max_items") is not None:
            try:
                max_items = int(el.get("max_items"))
            except ValueError:
                max_items = 0
            if max_items < 1:
                raise PepError(E.BAD_REQUEST, "max_items must be a positive number")
        ids = None
        if len(el):
            if any(c.tag != f"{P}item" or not c.get("id") for c in el):
                raise PepError(E.BAD_REQUEST, "<items/> may only list <item id='...'/>")
            if len(el) > MAX_REQUESTED_IDS:
                raise PepError(E.POLICY_VIOLATION, f"at most {MAX_REQUESTED_IDS} item ids per request")
            ids = [c.get("id") for c in el]
        node = await existing(self.store, owner, name)
        await self.audience.check_access(node, owner, session.jid.bare)
        items = await self.store.items(node.id, item_ids=ids, max_items=max_items,
                                       max_bytes=self.options["max_response_bytes"])
        body = [f"<pubsub xmlns='{NS_PUBSUB}'><items node='{attr(name)}'>".encode()]
        for it in items:
            body.append(f"<item id='{attr(it.item_id)}'>".encode() + it.payload + b"</item>")
        body.append(b"</items></pubsub>")
        self._send_result_bytes(session, req, owner, b"".join(body))

    async def _my_affiliations(self, session, req, owner: JID, el: Element) -> Element:
        """XEP-0060 §5.7: the requester's affiliations: owner of all its own nodes,
        member of whitelists it is on (only asked of one's own account here)."""
        reply = result(req)
        affs = SubElement(SubElement(reply, f"{P}pubsub"), f"{P}affiliations")
        if session.jid.bare == owner:
            wanted = el.get("node")
            for node in await self.store.nodes(owner.local or "", owner.domain):
                if wanted is None or node.name == wanted:
                    SubElement(affs, f"{P}affiliation", {"node": node.name, "affiliation": "owner"})
        return reply
