"""PEP node configuration and publish-options (XEP-0060 §16.4.4, §7.1.5), as data forms.

Part of :mod:`xmppd.modules.pep`: the pubsub#node_config fields PEP honours,
how a submitted form (node configuration or publish-options) becomes a
:class:`~xmppd.storage.pubsub.NodeConfig`, the precondition check of a
publish to an existing node, and the configuration form a client is shown.
Also the error type every PEP request raises (:class:`PepError`) and the
small request helpers the request handlers share (node name, owner checks).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable
from xml.etree.ElementTree import Element, SubElement

from ..errors import StanzaErrorCondition as E
from ..jid import JID
from ..storage.pubsub import (
    ACCESS_MODELS,
    MAX_NODE_BYTES,
    MAX_ROSTER_GROUPS,
    PUBLISH_MODELS,
    SEND_LAST_VALUES,
    Node,
    NodeConfig,
    PubsubStore,
)
from ..stream.c2s import iq_error

__all__ = ["NS_PUBSUB", "NS_OWNER", "NS_EVENT", "NS_ERRORS", "NS_XDATA", "FORM_NODE_CONFIG",
           "FORM_PUBLISH_OPTIONS", "IQ", "P", "O", "X", "TRUE_VALUES", "PepError", "NodeForms", "form_fields",
           "unsupported", "owner_of", "node_name", "only_owner", "existing", "guard", "result"]

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_EVENT = NS_PUBSUB + "#event"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_XDATA = "jabber:x:data"
FORM_NODE_CONFIG = NS_PUBSUB + "#node_config"
FORM_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
IQ = "{jabber:client}iq"
P, O, X = f"{{{NS_PUBSUB}}}", f"{{{NS_OWNER}}}", f"{{{NS_XDATA}}}"

TRUE_VALUES, FALSE_VALUES = frozenset({"1", "true"}), frozenset({"0", "false"})


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


def unsupported(feature: str, text: str) -> PepError:
    return PepError(E.FEATURE_NOT_IMPLEMENTED, text, "unsupported", {"feature": feature})


# ---------------------------------------------------------------- request helpers
def owner_of(session, req: Element) -> JID:
    """The account whose PEP service ``req`` is for (``to``, else the sender's own)."""
    to = req.get("to")
    if to is None:
        return session.jid.bare
    return JID.parse(to).bare  # the router parsed it already


def node_name(el: Element, *, required: bool = True) -> str:
    name = el.get("node")
    if not name:
        if required:
            raise PepError(E.BAD_REQUEST, f"<{el.tag.partition('}')[2]}/> needs a 'node' attribute",
                           "nodeid-required")
        return ""
    if len(name.encode("utf-8")) > MAX_NODE_BYTES:
        raise PepError(E.NOT_ACCEPTABLE, f"node names are limited to {MAX_NODE_BYTES} bytes")
    return name


def only_owner(session, owner: JID, what: str) -> None:
    if session.jid.bare != owner:
        raise PepError(E.FORBIDDEN, f"only {owner} may {what} its personal eventing nodes")


async def existing(store: PubsubStore, owner: JID, name: str) -> Node:
    node = await store.node(owner.local or "", owner.domain, name)
    if node is None:
        raise PepError(E.ITEM_NOT_FOUND, f"{owner} has no node {name}")
    return node


async def guard(req: Element, coro) -> Element | None:
    """Await a request handler; a :class:`PepError` becomes its error reply."""
    try:
        return await coro
    except PepError as err:
        return err.reply(req)


def result(req: Element) -> Element:
    return Element(IQ, {"type": "result"})


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
    if v in TRUE_VALUES:
        return True
    if v in FALSE_VALUES:
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


class NodeForms:
    """Node configuration forms, with ``max_items`` the configured ceiling
    (``pubsub#max_items = max`` means that number)."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.fields: dict[str, tuple[str, str, Callable[[list[str]], Any]]] = {
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

    def apply_form(self, config: NodeConfig, fields: dict[str, list[str]], *,
                   unknown: E, app: str | None) -> NodeConfig:
        changes: dict[str, Any] = {}
        for var, values in fields.items():
            spec = self.fields.get(var)
            if spec is None:
                raise PepError(unknown, f"unsupported node configuration field {var}", app)
            try:
                changes[spec[0]] = spec[2](values)
            except ValueError as exc:
                raise PepError(unknown, f"{var}: {exc}", app) from None
        return replace(config, **changes)

    def config_from(self, x: Element | None, *, form_type: str, base: NodeConfig,
                    condition: E, app: str | None) -> NodeConfig:
        if x is None:
            return base
        if x.get("type") not in ("submit", None):
            raise PepError(E.BAD_REQUEST, "the data form must be of type 'submit'")
        ft, fields = form_fields(x)
        if ft is not None and ft != form_type:
            raise PepError(E.BAD_REQUEST, f"FORM_TYPE must be {form_type}")
        return self.apply_form(base, fields, unknown=condition, app=app)

    def check_preconditions(self, node: Node, x: Element | None) -> None:
        """XEP-0060 §7.1.5: every publish-option must equal the node's configuration."""
        if x is None:
            return
        if x.get("type") not in ("submit", None):
            raise PepError(E.BAD_REQUEST, "the publish-options form must be of type 'submit'")
        ft, fields = form_fields(x)
        if ft is not None and ft != FORM_PUBLISH_OPTIONS:
            raise PepError(E.BAD_REQUEST, f"FORM_TYPE must be {FORM_PUBLISH_OPTIONS}")
        for var, values in fields.items():
            spec = self.fields.get(var)
            if spec is None:
                raise PepError(E.CONFLICT, f"unsupported publish option {var}", "precondition-not-met")
            try:
                wanted = spec[2](values)
            except ValueError as exc:
                raise PepError(E.CONFLICT, f"{var}: {exc}", "precondition-not-met") from None
            have = getattr(node.config, spec[0])
            if wanted != have:
                raise PepError(E.CONFLICT, f"node {node.name}: {var} is {self.show(have)}, the "
                               f"publish-options ask for {self.show(wanted)}; reconfigure the node "
                               f"first", "precondition-not-met")

    @staticmethod
    def show(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value) or "(none)"
        return str(value)

    def config_form(self, config: NodeConfig) -> Element:
        x = Element(f"{X}x", {"type": "form"})
        f = SubElement(x, f"{X}field", {"var": "FORM_TYPE", "type": "hidden"})
        SubElement(f, f"{X}value").text = FORM_NODE_CONFIG
        options = {"pubsub#access_model": ACCESS_MODELS, "pubsub#publish_model": PUBLISH_MODELS,
                   "pubsub#send_last_published_item": SEND_LAST_VALUES}
        for var, (attr_name, typ, _parse) in self.fields.items():
            f = SubElement(x, f"{X}field", {"var": var, "type": typ})
            value = getattr(config, attr_name)
            for opt in options.get(var, ()):
                SubElement(SubElement(f, f"{X}option"), f"{X}value").text = opt
            if isinstance(value, tuple):
                for v in value:
                    SubElement(f, f"{X}value").text = v
            else:
                SubElement(f, f"{X}value").text = self.show(value) if not isinstance(value, str) else value
        return x
