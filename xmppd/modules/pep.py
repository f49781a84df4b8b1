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
(an items answer carries the newest items that fit).

Not offered: explicit subscriptions (subscribe/unsubscribe/options; PEP
subscriptions come from presence, XEP-0163 §4.1), collection nodes,
``authorize`` access, publishers other than the owner, PEP of remote users.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any, Callable
from xml.etree.ElementTree import Element, SubElement
from xml.parsers import expat

from ..config import ConfigError
from ..errors import StanzaErrorCondition as E
from ..hooks import PRIO_LATE
from ..jid import JID, InvalidJID
from ..storage.pubsub import (
    ACCESS_MODELS,
    DEFAULT_MAX_ITEM_BYTES,
    DEFAULT_MAX_ITEMS_PER_NODE,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_NODES,
    MAX_ITEM_ID_BYTES,
    MAX_NODE_BYTES,
    MAX_ROSTER_GROUPS,
    PUBLISH_MODELS,
    SEND_LAST_VALUES,
    Item,
    Node,
    NodeConfig,
    NodeExists,
    PubsubStore,
    TooManyMembers,
    TooManyNodes,
)
from ..stream.c2s import iq_error
from ..xml.parser import Stanza
from ..xml.writer import serialize
from ._im import attr, delay_element
from .base import Module
from .roster import KeyedLocks

__all__ = ["Pep", "NS_PUBSUB", "NS_OWNER", "NS_EVENT", "NS_ERRORS", "PEP_FEATURES",
           "payload_span"]

log = logging.getLogger("xmppd.modules.pep")

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_EVENT = NS_PUBSUB + "#event"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_XDATA = "jabber:x:data"
FORM_NODE_CONFIG = NS_PUBSUB + "#node_config"
FORM_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
P, O, X = f"{{{NS_PUBSUB}}}", f"{{{NS_OWNER}}}", f"{{{NS_XDATA}}}"
IQ = "{jabber:client}iq"
MESSAGE = "{jabber:client}message"

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

_TRUE, _FALSE = frozenset({"1", "true"}), frozenset({"0", "false"})
_START_TAG = re.compile(rb"""<(?:[^'">]++|'[^']*+'|"[^"]*+")*+>""")


class PepError(Exception):
    """An error reply: condition, text, optional pubsub#errors element."""

    def __init__(self, condition: E, text: str, app: str | None = None,
                 app_attrs: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text
        self.app = app
        self.app_attrs = app_attrs or {}

    def reply(self, req: Element) -> Element:
        el = iq_error(req, self.condition, self.text)
        if self.app:
            el.find("{jabber:client}error").append(Element(f"{{{NS_ERRORS}}}{self.app}", self.app_attrs))
        return el


def _unsupported(feature: str, text: str) -> PepError:
    return PepError(E.FEATURE_NOT_IMPLEMENTED, text, "unsupported", {"feature": feature})


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


# ---------------------------------------------------------------- data forms
def form_fields(x: Element) -> tuple[str | None, dict[str, list[str]]]:
    """(FORM_TYPE, {var: values}) of a ``jabber:x:data`` form."""
    form_type = None
    fields: dict[str, list[str]] = {}
    for f in x.findall(f"{X}field"):
        var = f.get("var")
        if not var:
            continue
        values = [v.text or "" for v in f.findall(f"{X}value")]
        if var == "FORM_TYPE":
            form_type = values[0] if values else ""
        else:
            fields[var] = values
    return form_type, fields


def _one(values: list[str]) -> str:
    if len(values) != 1:
        raise ValueError("expects exactly one value")
    return values[0].strip()


def _bool(values: list[str]) -> bool:
    v = _one(values).lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{v!r} is not a boolean")


def _choice(options: tuple[str, ...]) -> Callable[[list[str]], str]:
    def parse(values: list[str]) -> str:
        v = _one(values)
        if v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(options)}")
        return v
    return parse


def _text(values: list[str]) -> str:
    v = values[0] if values else ""
    if len(values) > 1 or len(v) > 1024:
        raise ValueError("expects one value of at most 1024 characters")
    return v


def _groups(values: list[str]) -> tuple[str, ...]:
    if len(values) > MAX_ROSTER_GROUPS:
        raise ValueError(f"at most {MAX_ROSTER_GROUPS} groups")
    return tuple(sorted(set(values)))


class Pep(Module):
    name = "pep"
    xeps = (("0163", "1.2"), ("0060", "1.26 (PEP subset)"), ("0223", "1.1"))
    options_spec = {
        "max_items_per_node": (int, DEFAULT_MAX_ITEMS_PER_NODE),
        "max_item_bytes": (int, DEFAULT_MAX_ITEM_BYTES),
        "max_nodes_per_account": (int, DEFAULT_MAX_NODES),
        "max_members_per_node": (int, DEFAULT_MAX_MEMBERS),
        "max_response_bytes": (int, 4 * 1024 * 1024),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        for key in ("max_items_per_node", "max_item_bytes", "max_nodes_per_account",
                    "max_members_per_node"):
            if options[key] < 1:
                raise ConfigError(f"modules.pep.{key}", "must be at least 1")
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
        self._blocking = None
        self._fields: dict[str, tuple[str, str, Callable[[list[str]], Any]]] = {
            "pubsub#title": ("title", "text-single", _text),
            "pubsub#deliver_notifications": ("deliver_notifications", "boolean", _bool),
            "pubsub#deliver_payloads": ("deliver_payloads", "boolean", _bool),
            "pubsub#notify_retract": ("notify_retract", "boolean", _bool),
            "pubsub#notify_delete": ("notify_delete", "boolean", _bool),
            "pubsub#persist_items": ("persist_items", "boolean", self._persist),
            "pubsub#max_items": ("max_items", "text-single", self._max_items),
            "pubsub#access_model": ("access_model", "list-single", _choice(ACCESS_MODELS)),
            "pubsub#roster_groups_allowed": ("roster_groups_allowed", "list-multi", _groups),
            "pubsub#publish_model": ("publish_model", "list-single", _choice(PUBLISH_MODELS)),
            "pubsub#send_last_published_item": ("send_last_published_item", "list-single",
                                                _choice(SEND_LAST_VALUES)),
        }

    def setup(self) -> None:
        h = self.server.hooks
        h.iq(NS_PUBSUB, get=self.pubsub_get, set=self.pubsub_set, account=True, public=True)
        h.iq(NS_OWNER, get=self.owner_get, set=self.owner_set, account=True, public=True)
        h.account_identities.add(("pubsub", "pep", ""))
        h.account_features.update(PEP_FEATURES)
        h.on("stanza_out", self._capture, PRIO_LATE)
        h.on("caps_changed", self._caps_changed)
        self.server.pep = self

    async def start(self) -> None:
        self._blocking = next((m for m in self.server.modules if m.name == "blocking"), None)

    # ------------------------------------------------------------ option parsers
    def _max_items(self, values: list[str]) -> int:
        v = _one(values).lower()
        if v == "max":
            return self.max_items
        try:
            n = int(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a number or 'max'") from None
        if not 1 <= n <= self.max_items:
            raise ValueError(f"must be between 1 and {self.max_items} (or 'max')")
        return n

    @staticmethod
    def _persist(values: list[str]) -> bool:
        # XEP-0384's server requirements say 'max' for persist_items: read it as true
        if _one(values).lower() == "max":
            return True
        return _bool(values)

    def _apply_form(self, config: NodeConfig, fields: dict[str, list[str]], *,
                    unknown: E, app: str | None) -> NodeConfig:
        changes: dict[str, Any] = {}
        for var, values in fields.items():
            spec = self._fields.get(var)
            if spec is None:
                raise PepError(unknown, f"unsupported node configuration field {var}", app)
            try:
                changes[spec[0]] = spec[2](values)
            except ValueError as exc:
                raise PepError(unknown, f"{var}: {exc}", app) from None
        return replace(config, **changes)

    def _config_from(self, x: Element | None, *, form_type: str, base: NodeConfig,
                     condition: E, app: str | None) -> NodeConfig:
        if x is None:
            return base
        if x.get("type") not in ("submit", None):
            raise PepError(E.BAD_REQUEST, "the data form must be of type 'submit'")
        ft, fields = form_fields(x)
        if ft is not None and ft != form_type:
            raise PepError(E.BAD_REQUEST, f"FORM_TYPE must be {form_type}")
        return self._apply_form(base, fields, unknown=condition, app=app)

    # ------------------------------------------------------------ dispatch helpers
    @staticmethod
    def _owner(session, req: Element) -> JID:
        to = req.get("to")
        if to is None:
            return session.jid.bare
        return JID.parse(to).bare  # the router parsed it already

    def _node_name(self, el: Element, *, required: bool = True) -> str:
        name = el.get("node")
        if not name:
            if required:
                raise PepError(E.BAD_REQUEST, f"<{el.tag.partition('}')[2]}/> needs a 'node' attribute",
                               "nodeid-required")
            return ""
        if len(name.encode("utf-8")) > MAX_NODE_BYTES:
            raise PepError(E.NOT_ACCEPTABLE, f"node names are limited to {MAX_NODE_BYTES} bytes")
        return name

    @staticmethod
    def _only_owner(session, owner: JID, what: str) -> None:
        if session.jid.bare != owner:
            raise PepError(E.FORBIDDEN, f"only {owner} may {what} its personal eventing nodes")

    async def _existing(self, owner: JID, name: str) -> Node:
        node = await self.store.node(owner.local or "", owner.domain, name)
        if node is None:
            raise PepError(E.ITEM_NOT_FOUND, f"{owner} has no node {name}")
        return node

    async def _guard(self, req: Element, coro) -> Element | None:
        try:
            return await coro
        except PepError as err:
            return err.reply(req)

    @staticmethod
    def _result(req: Element) -> Element:
        return Element(IQ, {"type": "result"})

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
        return self._guard(req, self._pubsub_get(session, req))

    async def _pubsub_get(self, session, req: Element) -> Element | None:
        ps = req[0]
        if ps.tag != f"{P}pubsub" or len(ps) != 1:
            raise PepError(E.BAD_REQUEST, "expected <pubsub/> with one child")
        owner = self._owner(session, req)
        child = ps[0]
        if child.tag == f"{P}items":
            await self._items(session, req, owner, child)
            return None
        if child.tag == f"{P}affiliations":
            return await self._my_affiliations(session, req, owner, child)
        if child.tag == f"{P}subscriptions":
            reply = self._result(req)
            SubElement(SubElement(reply, f"{P}pubsub"), f"{P}subscriptions")
            return reply  # PEP subscriptions are implicit (presence), none are explicit
        if child.tag in (f"{P}options", f"{P}default"):
            raise _unsupported("subscription-options", "subscription options are not offered: "
                               "PEP subscriptions come from presence (XEP-0163 §4.1)")
        raise PepError(E.BAD_REQUEST, f"unknown pubsub request {child.tag}")

    def pubsub_set(self, session, req: Element):
        stanza = self._take_raw(req)
        return self._guard(req, self._pubsub_set(session, req, stanza))

    async def _pubsub_set(self, session, req: Element, stanza: Stanza | None) -> Element | None:
        ps = req[0]
        if ps.tag != f"{P}pubsub" or len(ps) == 0:
            raise PepError(E.BAD_REQUEST, "expected <pubsub/> with a request inside")
        owner = self._owner(session, req)
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
            raise _unsupported("subscribe", "explicit subscriptions are not offered: PEP "
                               "subscriptions come from presence and caps +notify (XEP-0163 §4)")
        raise PepError(E.BAD_REQUEST, f"unknown pubsub request {action.tag}")

    # ---- publish
    async def _publish(self, session, req, owner: JID, pub: Element, opts: Element | None,
                       stanza: Stanza | None) -> Element:
        name = self._node_name(pub)
        self._only_owner(session, owner, "publish to")
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
                self._check_preconditions(node, x)
                create = node.config
            else:
                create = self._config_from(x, form_type=FORM_PUBLISH_OPTIONS, base=NodeConfig(),
                                           condition=E.CONFLICT, app="precondition-not-met")
            try:
                node, _created = await self.store.publish(
                    owner.local or "", owner.domain, name, item_id, str(owner), payload, now,
                    create_config=create, max_nodes=self.options["max_nodes_per_account"])
            except TooManyNodes:
                raise PepError(E.NOT_ALLOWED, f"an account may have at most "
                               f"{self.options['max_nodes_per_account']} nodes",
                               "max-nodes-exceeded") from None
        await self._notify_items(owner, node, Item(item_id, str(owner), payload, now, 0))
        reply = self._result(req)
        p = SubElement(SubElement(reply, f"{P}pubsub"), f"{P}publish", {"node": name})
        SubElement(p, f"{P}item", {"id": item_id})
        return reply

    def _check_preconditions(self, node: Node, x: Element | None) -> None:
        """XEP-0060 §7.1.5: every publish-option must equal the node's configuration."""
        if x is None:
            return
        if x.get("type") not in ("submit", None):
            raise PepError(E.BAD_REQUEST, "the publish-options form must be of type 'submit'")
        ft, fields = form_fields(x)
        if ft is not None and ft != FORM_PUBLISH_OPTIONS:
            raise PepError(E.BAD_REQUEST, f"FORM_TYPE must be {FORM_PUBLISH_OPTIONS}")
        for var, values in fields.items():
            spec = self._fields.get(var)
            if spec is None:
                raise PepError(E.CONFLICT, f"unsupported publish option {var}", "precondition-not-met")
            try:
                wanted = spec[2](values)
            except ValueError as exc:
                raise PepError(E.CONFLICT, f"{var}: {exc}", "precondition-not-met") from None
            have = getattr(node.config, spec[0])
            if wanted != have:
                raise PepError(E.CONFLICT, f"node {node.name}: {var} is {self._show(have)}, the "
                               f"publish-options ask for {self._show(wanted)}; reconfigure the node "
                               f"first", "precondition-not-met")

    @staticmethod
    def _show(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value) or "(none)"
        return str(value)

    # ---- create
    async def _create(self, session, req, owner: JID, create: Element, conf: Element | None) -> Element:
        if not create.get("node"):
            raise PepError(E.NOT_ACCEPTABLE, "instant nodes are not offered by PEP: name the node",
                           "nodeid-required")
        name = self._node_name(create)
        self._only_owner(session, owner, "create")
        x = None
        if conf is not None:
            xs = conf.findall(f"{X}x")
            if len(conf) != len(xs) or len(xs) > 1:
                raise PepError(E.BAD_REQUEST, "<configure/> holds one jabber:x:data form")
            x = xs[0] if xs else None
        config = self._config_from(x, form_type=FORM_NODE_CONFIG, base=NodeConfig(),
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
        return self._result(req)

    # ---- retract
    async def _retract(self, session, req, owner: JID, r: Element) -> Element:
        name = self._node_name(r)
        self._only_owner(session, owner, "retract from")
        items = list(r)
        if len(items) != 1 or items[0].tag != f"{P}item" or not items[0].get("id"):
            raise PepError(E.BAD_REQUEST, "<retract/> carries one <item id='...'/>", "item-required")
        item_id = items[0].get("id")
        async with self.locks(owner):
            node = await self._existing(owner, name)
            if not await self.store.retract(node.id, item_id):
                raise PepError(E.ITEM_NOT_FOUND, f"node {name} has no item {item_id}")
        if node.config.notify_retract or (r.get("notify") or "").lower() in _TRUE:
            inner = (f"<items node='{attr(name)}'><retract id='{attr(item_id)}'/></items>").encode()
            await self._notify(owner, node, inner)
        return self._result(req)

    # ---- items
    async def _items(self, session, req, owner: JID, el: Element) -> None:
        name = self._node_name(el)
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
        node = await self._existing(owner, name)
        await self._check_access(node, owner, session.jid.bare)
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
        reply = self._result(req)
        affs = SubElement(SubElement(reply, f"{P}pubsub"), f"{P}affiliations")
        if session.jid.bare == owner:
            wanted = el.get("node")
            for node in await self.store.nodes(owner.local or "", owner.domain):
                if wanted is None or node.name == wanted:
                    SubElement(affs, f"{P}affiliation", {"node": node.name, "affiliation": "owner"})
        return reply

    # ------------------------------------------------------------ access (XEP-0060 §4.5)
    def _blocked(self, owner: JID, other: JID) -> bool:
        b = self._blocking
        return b is not None and (b.blocks(owner, other) or b.blocks(other, owner))

    async def _allowed(self, node: Node, owner: JID, who: JID, *, subscribed: bool | None = None) -> str | None:
        """None if ``who`` (bare) may read ``node``, else the refusal's pubsub#errors name."""
        if who == owner:
            return None
        model = node.config.access_model
        if model == "open":
            return None
        roster = getattr(self.server, "roster", None)
        if model == "presence":
            if subscribed is None:
                subscribed = roster is not None and \
                    await roster.subscription(owner, who) in ("from", "both")
            return None if subscribed else "presence-subscription-required"
        if model == "roster":
            if roster is not None:
                item = await roster.store.item(owner.local or "", owner.domain, str(who))
                if item is not None and set(item.groups) & set(node.config.roster_groups_allowed):
                    return None
            return "not-in-roster-group"
        if model == "whitelist":
            if await self.store.affiliation(node.id, str(who)) in ("member", "publisher", "owner"):
                return None
            return "closed-node"
        return "closed-node"  # pragma: no cover - unknown models are never stored

    async def _check_access(self, node: Node, owner: JID, who: JID) -> None:
        if who != owner and self._blocked(owner, who):
            raise PepError(E.SERVICE_UNAVAILABLE, f"{owner} is unavailable")
        refusal = await self._allowed(node, owner, who)
        if refusal == "presence-subscription-required":
            raise PepError(E.NOT_AUTHORIZED, f"node {node.name} is for {owner}'s presence "
                           "subscribers", refusal)
        if refusal == "not-in-roster-group":
            raise PepError(E.NOT_AUTHORIZED, f"node {node.name} is for some of {owner}'s roster "
                           "groups", refusal)
        if refusal is not None:
            raise PepError(E.NOT_ALLOWED, f"node {node.name} is restricted to its whitelist", refusal)

    # ------------------------------------------------------------ owner namespace
    def owner_get(self, session, req: Element):
        return self._guard(req, self._owner_get(session, req))

    def owner_set(self, session, req: Element):
        return self._guard(req, self._owner_set(session, req))

    async def _owner_get(self, session, req: Element) -> Element:
        ps = req[0]
        if ps.tag != f"{O}pubsub" or len(ps) != 1:
            raise PepError(E.BAD_REQUEST, "expected <pubsub xmlns='...#owner'/> with one child")
        owner = self._owner(session, req)
        child = ps[0]
        if child.tag == f"{O}default":
            reply = self._result(req)
            d = SubElement(SubElement(reply, f"{O}pubsub"), f"{O}default")
            d.append(self._config_form(NodeConfig()))
            return reply
        if child.tag == f"{O}configure":
            name = self._node_name(child)
            self._only_owner(session, owner, "configure")
            node = await self._existing(owner, name)
            reply = self._result(req)
            c = SubElement(SubElement(reply, f"{O}pubsub"), f"{O}configure", {"node": name})
            c.append(self._config_form(node.config))
            return reply
        if child.tag == f"{O}affiliations":
            name = self._node_name(child)
            self._only_owner(session, owner, "list the affiliations of")
            node = await self._existing(owner, name)
            reply = self._result(req)
            a = SubElement(SubElement(reply, f"{O}pubsub"), f"{O}affiliations", {"node": name})
            SubElement(a, f"{O}affiliation", {"jid": str(owner), "affiliation": "owner"})
            for jid, aff in (await self.store.affiliations(node.id)).items():
                SubElement(a, f"{O}affiliation", {"jid": jid, "affiliation": aff})
            return reply
        if child.tag == f"{O}subscriptions":
            raise _unsupported("manage-subscriptions", "PEP subscriptions come from presence")
        raise PepError(E.BAD_REQUEST, f"unknown pubsub#owner request {child.tag}")

    async def _owner_set(self, session, req: Element) -> Element:
        ps = req[0]
        if ps.tag != f"{O}pubsub" or len(ps) != 1:
            raise PepError(E.BAD_REQUEST, "expected <pubsub xmlns='...#owner'/> with one child")
        owner = self._owner(session, req)
        child = ps[0]
        tag = child.tag
        if tag not in (f"{O}configure", f"{O}delete", f"{O}purge", f"{O}affiliations"):
            if tag == f"{O}subscriptions":
                raise _unsupported("manage-subscriptions", "PEP subscriptions come from presence")
            raise PepError(E.BAD_REQUEST, f"unknown pubsub#owner request {tag}")
        name = self._node_name(child)
        self._only_owner(session, owner, "manage")
        if tag == f"{O}configure":
            return await self._configure(req, owner, name, child)
        if tag == f"{O}delete":
            async with self.locks(owner):
                node = await self._existing(owner, name)
                await self.store.delete_node(node.id)
            if node.config.notify_delete:
                await self._notify(owner, node, f"<delete node='{attr(name)}'/>".encode())
            return self._result(req)
        if tag == f"{O}purge":
            async with self.locks(owner):
                node = await self._existing(owner, name)
                await self.store.purge(node.id)
            if node.config.notify_retract:
                await self._notify(owner, node, f"<purge node='{attr(name)}'/>".encode())
            return self._result(req)
        return await self._set_affiliations(req, owner, name, child)

    async def _configure(self, req, owner: JID, name: str, el: Element) -> Element:
        xs = el.findall(f"{X}x")
        if len(xs) != 1 or len(el) != 1:
            raise PepError(E.BAD_REQUEST, "<configure/> carries one jabber:x:data form")
        x = xs[0]
        if x.get("type") == "cancel":
            await self._existing(owner, name)
            return self._result(req)
        async with self.locks(owner):
            node = await self._existing(owner, name)
            config = self._config_from(x, form_type=FORM_NODE_CONFIG, base=node.config,
                                       condition=E.NOT_ACCEPTABLE, app=None)
            await self.store.configure(node.id, config)
        return self._result(req)

    async def _set_affiliations(self, req, owner: JID, name: str, el: Element) -> Element:
        changes: dict[str, str | None] = {}
        for a in el:
            if a.tag != f"{O}affiliation" or not a.get("jid") or not a.get("affiliation"):
                raise PepError(E.BAD_REQUEST, "<affiliations/> lists <affiliation jid= affiliation=/>")
            try:
                jid = JID.parse(a.get("jid")).bare
            except InvalidJID as exc:
                raise PepError(E.JID_MALFORMED, str(exc)) from None
            aff = a.get("affiliation")
            if jid == owner:
                if aff != "owner":
                    raise PepError(E.NOT_ACCEPTABLE, "the owner's affiliation cannot change")
                continue
            if aff == "none":
                changes[str(jid)] = None
            elif aff in ("member", "publisher"):
                if aff == "publisher":
                    raise PepError(E.NOT_ACCEPTABLE, "only the owner publishes to a PEP node")
                changes[str(jid)] = aff
            else:
                raise PepError(E.NOT_ACCEPTABLE, f"affiliation {aff!r} is not offered (member or none)")
        async with self.locks(owner):
            node = await self._existing(owner, name)
            try:
                await self.store.set_affiliations(node.id, changes,
                                                  max_members=self.options["max_members_per_node"])
            except TooManyMembers:
                raise PepError(E.NOT_ALLOWED, f"a node may have at most "
                               f"{self.options['max_members_per_node']} members") from None
        return self._result(req)

    def _config_form(self, config: NodeConfig) -> Element:
        x = Element(f"{X}x", {"type": "form"})
        f = SubElement(x, f"{X}field", {"var": "FORM_TYPE", "type": "hidden"})
        SubElement(f, f"{X}value").text = FORM_NODE_CONFIG
        options = {"pubsub#access_model": ACCESS_MODELS, "pubsub#publish_model": PUBLISH_MODELS,
                   "pubsub#send_last_published_item": SEND_LAST_VALUES}
        for var, (attr_name, typ, _parse) in self._fields.items():
            f = SubElement(x, f"{X}field", {"var": var, "type": typ})
            value = getattr(config, attr_name)
            for opt in options.get(var, ()):
                SubElement(SubElement(f, f"{X}option"), f"{X}value").text = opt
            if isinstance(value, tuple):
                for v in value:
                    SubElement(f, f"{X}value").text = v
            else:
                SubElement(f, f"{X}value").text = self._show(value) if not isinstance(value, str) else value
        return x

    # ------------------------------------------------------------ notifications (XEP-0163 §4)
    def _interested(self, jid: JID, feature: str) -> list:
        caps = getattr(self.server, "caps", None)
        if caps is None:
            return []
        return [s for s in self.server.sessions.resources(jid)
                if s.available and s.priority >= 0 and caps.wants(s, feature)]

    async def _audience(self, owner: JID, node: Node) -> list:
        """Sessions a notification of ``node`` goes to."""
        if not node.config.deliver_notifications:
            return []
        feature = node.name + "+notify"
        targets = list(self._interested(owner, feature))
        roster = getattr(self.server, "roster", None)
        if roster is None:
            return targets
        for contact in await roster.subscribers(owner):
            if contact.domain not in self.server.router.hosts:
                continue  # no s2s
            sessions = self._interested(contact, feature)
            if not sessions or self._blocked(owner, contact):
                continue
            if await self._allowed(node, owner, contact, subscribed=True) is None:
                targets.extend(sessions)
        return targets

    def _send_event(self, owner: JID, session, inner: bytes, delay: bytes = b"") -> None:
        attrs = {"from": str(owner), "to": str(session.jid), "type": "headline",
                 "id": uuid.uuid4().hex}
        router = self.server.router
        if router._filtered_in(owner, session.jid, Stanza(Element(MESSAGE, attrs), b"", 0, False, 0)):
            return
        head = "<message " + " ".join(f"{k}='{attr(v)}'" for k, v in attrs.items()) + ">"
        session.send_bytes(head.encode() + f"<event xmlns='{NS_EVENT}'>".encode() + inner
                           + b"</event>" + delay + b"</message>")

    async def _notify(self, owner: JID, node: Node, inner: bytes) -> None:
        for s in await self._audience(owner, node):
            self._send_event(owner, s, inner)

    def _items_event(self, node: Node, item: Item) -> bytes:
        head = f"<items node='{attr(node.name)}'><item id='{attr(item.item_id)}'".encode()
        if not node.config.deliver_payloads:
            return head + b"/></items>"
        return head + b">" + item.payload + b"</item></items>"

    async def _notify_items(self, owner: JID, node: Node, item: Item) -> None:
        await self._notify(owner, node, self._items_event(node, item))

    # ---- last published item for a newly interested resource (XEP-0163 §4.3.4)
    def _caps_changed(self, session, features: frozenset[str], previous: frozenset[str]) -> None:
        wanted = sorted(f[:-7] for f in features - previous if f.endswith("+notify") and len(f) > 7)
        if wanted and session.available and session.priority >= 0:
            self.server.spawn(self._send_last(session, wanted))

    async def _send_last(self, session, names: list[str]) -> None:
        user = session.jid.bare
        roster = getattr(self.server, "roster", None)
        owners = [user]
        if roster is not None:
            owners += [c for c in await roster.contacts_to_probe(user)
                       if c.domain in self.server.router.hosts and c.local and c != user]
        nodes = await self.store.find_nodes([(o.local or "", o.domain) for o in owners], names)
        chosen = []
        for node in nodes:
            cfg = node.config
            if cfg.send_last_published_item != "on_sub_and_presence" or not cfg.deliver_notifications:
                continue
            owner = JID(node.user, node.domain)
            if owner != user:
                if self._blocked(owner, user):
                    continue
                # contacts_to_probe: the user is subscribed to the owner's presence
                if await self._allowed(node, owner, user, subscribed=True) is not None:
                    continue
            chosen.append((owner, node))
        if not chosen:
            return
        last = await self.store.last_items([n.id for _, n in chosen])
        for owner, node in chosen:
            item = last.get(node.id)
            if item is None or not session.available:
                continue
            self._send_event(owner, session, self._items_event(node, item),
                             delay_element(str(owner), item.updated_at))
