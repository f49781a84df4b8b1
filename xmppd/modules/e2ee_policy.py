"""Server-enforced end-to-end-encryption policy: ``none`` / ``warn`` / ``require``.

References: XEP-0384 (OMEMO; legacy ``eu.siacs.conversations.axolotl`` and
``urn:xmpp:omemo:2``), XEP-0373/0374 (OpenPGP for XMPP, ``urn:xmpp:openpgp:0``),
XEP-0027 (legacy ``jabber:x:encrypted``), XEP-0128 (extended disco#info),
RFC 6120 §8.3.3.12 (``policy-violation``).  Prior art: Prosody
``mod_e2e_policy`` (one global level), Mattermost's per-channel rejection.

Resolution, most specific first (the first that is set wins):

1. the conversation: a level the account set for one peer (bare JID);
2. the account: a level the account set for all its conversations;
3. the domain: ``[modules.e2ee_policy] domains = { "example.org" = "require" }``;
4. ``default`` (``"none"``).

A domain at ``require`` is also a floor: its users cannot set a lower level,
and a lower level stored before the domain was tightened is ignored.  JIDs in
``allow`` (bots, gateways; a bare domain exempts the whole domain) are exempt
as sender and as recipient.

A message is checked against the *stricter* of the sender's level for the
conversation and, when the recipient is local, the recipient's level for it:
either side can require encryption of a conversation.

What is checked: only ``<message>`` stanzas that carry content a person reads
— a ``<body>`` (or an XHTML-IM ``<html>``) — and are not ``type='error'``.
Receipts (XEP-0184), chat states (XEP-0085), markers (XEP-0333), errors,
body-less and OMEMO key-transport messages always pass.  A message with a body
is *encrypted* when it also carries one of :data:`ENCRYPTED` with its payload
(OMEMO ``<payload>``, a non-empty OpenPGP/``jabber:x:encrypted`` text), so
the OMEMO fallback body ("I sent you an OMEMO encrypted message...") passes.

* ``require``: plaintext is not routed; the sender gets ``policy-violation``
  (type ``modify``) with a ``<text>`` saying why.
* ``warn``: delivered; the sending session gets one ``headline`` message from
  the server domain per conversation (at most :data:`MAX_WARNED_PEERS` per
  session) saying the message was not end-to-end encrypted.

Users read and set their level with ``urn:xmppd:e2ee-policy:0`` on their own
bare JID (see :class:`E2EEPolicy`), and disco#info on their own bare JID lists
that feature with an XEP-0128 form holding the effective level.

Levels live in memory (loaded at start, written through on change), so the
``stanza_out`` check never waits for the database.  On a cluster, a change
made on one node reaches the others at their next start.
"""

from __future__ import annotations

import logging
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..config import ConfigError
from ..errors import StanzaErrorCondition
from ..hooks import PRIO_EARLY
from ..jid import JID, InvalidJID
from ..storage.e2ee_policy import ACCOUNT, LEVELS, E2EEPolicyStore
from ..stream.c2s import iq_error
from ..xml.writer import serialize
from .base import Module

__all__ = ["E2EEPolicy", "NS_E2EE_POLICY", "ENCRYPTED", "LEVELS", "REQUIRE_TEXT", "is_encrypted",
           "is_plaintext"]

log = logging.getLogger("xmppd.modules.e2ee_policy")

NS_E2EE_POLICY = "urn:xmppd:e2ee-policy:0"
_P = f"{{{NS_E2EE_POLICY}}}"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DATA = "jabber:x:data"
NS_XHTML_IM = "http://jabber.org/protocol/xhtml-im"

MESSAGE = "{jabber:client}message"
BODY = "{jabber:client}body"
HTML = f"{{{NS_XHTML_IM}}}html"

NS_OMEMO_LEGACY = "eu.siacs.conversations.axolotl"
NS_OMEMO_2 = "urn:xmpp:omemo:2"
NS_OX = "urn:xmpp:openpgp:0"
NS_PGP_LEGACY = "jabber:x:encrypted"

#: element tag -> tag of the child that holds the ciphertext (None: the element's own text)
ENCRYPTED: dict[str, str | None] = {
    f"{{{NS_OMEMO_LEGACY}}}encrypted": f"{{{NS_OMEMO_LEGACY}}}payload",
    f"{{{NS_OMEMO_2}}}encrypted": f"{{{NS_OMEMO_2}}}payload",
    f"{{{NS_OX}}}openpgp": None,
    f"{{{NS_PGP_LEGACY}}}x": None,
}

_RANK = {level: i for i, level in enumerate(LEVELS)}

REQUIRE_TEXT = ("this conversation requires end-to-end encryption (OMEMO or OpenPGP); "
                "the message was not delivered")
#: conversations a session is warned about; past this, further ones are not warned
MAX_WARNED_PEERS = 1000
#: longest accepted ``peer`` attribute (a bare JID: two 1023-octet parts and '@')
MAX_PEER_LEN = 2047


def is_encrypted(message: Element) -> bool:
    """True if ``message`` carries an OMEMO / OpenPGP payload (not just a key transport)."""
    for child in message:
        if child.tag in ENCRYPTED:
            inner = ENCRYPTED[child.tag]
            if inner is None:
                if (child.text or "").strip():
                    return True
            elif child.find(inner) is not None:
                return True
    return False


def _has_content(message: Element) -> bool:
    for child in message:
        if child.tag == BODY or child.tag == HTML:
            return True
    return False


def is_plaintext(message: Element) -> bool:
    """True if ``message`` carries content a person reads (``<body>``/``<html>``) and no
    encrypted payload: what ``require`` refuses (used by the MUC room policy too)."""
    return message.get("type") != "error" and _has_content(message) and not is_encrypted(message)


def _stricter(a: tuple[str, str], b: tuple[str, str]) -> tuple[str, str]:
    return b if _RANK[b[0]] > _RANK[a[0]] else a


class E2EEPolicy(Module):
    name = "e2ee_policy"
    xeps = (("0384", "relay policy"), ("0373", "relay policy"), ("0128", "1.0"))
    features = ()  # shown on the account's own disco#info, not the server's
    options_spec = {
        "default": (str, "none"),
        "domains": (dict, {}),
        "allow": (list, []),
        "max_conversation_rules": (int, 1000),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        p = f"modules.{cls.name}"
        if options["default"] not in LEVELS:
            raise ConfigError(f"{p}.default", f"expected one of {', '.join(LEVELS)}")
        for domain, level in options["domains"].items():
            if level not in LEVELS:
                raise ConfigError(f"{p}.domains.{domain}", f"expected one of {', '.join(LEVELS)}")
            try:
                jid = JID.parse(domain)
            except InvalidJID as exc:
                raise ConfigError(f"{p}.domains.{domain}", f"not a domain: {exc}") from None
            if jid.local is not None or jid.resource is not None:
                raise ConfigError(f"{p}.domains.{domain}", "expected a domain name, not a JID")
        for i, entry in enumerate(options["allow"]):
            key = f"{p}.allow[{i}]"
            if not isinstance(entry, str):
                raise ConfigError(key, "expected a bare JID string")
            try:
                jid = JID.parse(entry)
            except InvalidJID as exc:
                raise ConfigError(key, f"not a JID: {exc}") from None
            if jid.resource is not None:
                raise ConfigError(key, "expected a bare JID (user@domain) or a domain, not a full JID")
        if not 0 <= options["max_conversation_rules"] <= 100_000:
            raise ConfigError(f"{p}.max_conversation_rules", "expected 0..100000")

    def __init__(self, server, options=None) -> None:
        super().__init__(server, options)
        o = self.options
        self.default: str = o["default"]
        self.domains: dict[str, str] = {str(JID.parse(d)): lvl for d, lvl in o["domains"].items()}
        allow = [JID.parse(a) for a in o["allow"]]
        self.allow_jids = frozenset(str(j) for j in allow if j.local is not None)
        self.allow_domains = frozenset(j.domain for j in allow if j.local is None)
        self.max_conversation_rules: int = o["max_conversation_rules"]
        self.store = E2EEPolicyStore(server.db_engine)
        #: bare JID -> {peer bare JID or ACCOUNT: level}
        self._rules: dict[str, dict[str, str]] = {}
        #: session -> peers it was warned about (warn level)
        self._warned: dict[Any, set[str]] = {}
        #: nothing can ever be checked: skip the message inspection entirely
        self._idle = self.default == "none" and not any(v != "none" for v in self.domains.values())

    # ------------------------------------------------------------ wiring
    def setup(self) -> None:
        h = self.server.hooks
        h.on("stanza_out", self.stanza_out, PRIO_EARLY)
        h.on("session_closed", self._session_closed)
        h.iq(NS_E2EE_POLICY, get=self.handle_get, set=self.handle_set, account=True)
        # extend the account's own disco#info with our feature and form (XEP-0128)
        info = h.iq_account.get((NS_DISCO_INFO, "get"))
        if info is not None:
            def account_info(session, req: Element, _info=info):
                result = _info(session, req)
                if not self._is_owner(session, req) or req[0].get("node"):
                    return result
                if hasattr(result, "__await__"):
                    return self._extend_info_later(session, result)
                return self._extend_info(session, result)

            h.iq_account[(NS_DISCO_INFO, "get")] = account_info

    async def start(self) -> None:
        await self.store.create()
        count = 0
        async for row in self.store.iter_all():
            self._rules.setdefault(f"{row.user}@{row.domain}", {})[row.peer] = row.level
            count += 1
        if count:
            log.info("e2ee_policy: %d stored level(s) loaded", count)

    def _session_closed(self, session) -> None:
        self._warned.pop(session, None)

    # ------------------------------------------------------------ resolution
    def _allowed(self, bare: str, domain: str) -> bool:
        return bare in self.allow_jids or domain in self.allow_domains

    def domain_level(self, domain: str) -> tuple[str, str]:
        level = self.domains.get(domain)
        return (level, "domain") if level is not None else (self.default, "default")

    def effective(self, account: JID, peer: JID | None = None) -> tuple[str, str]:
        """(level, source) for ``account`` (bare) talking to ``peer`` (bare, optional).

        source: ``conversation`` | ``account`` | ``domain`` | ``default`` | ``allow``.
        """
        acc = str(account)
        if self._allowed(acc, account.domain):
            return "none", "allow"
        if peer is not None and self._allowed(str(peer), peer.domain):
            return "none", "allow"
        base = self.domain_level(account.domain)
        rules = self._rules.get(acc)
        chosen = None
        if rules:
            if peer is not None and str(peer) in rules:
                chosen = (rules[str(peer)], "conversation")
            elif ACCOUNT in rules:
                chosen = (rules[ACCOUNT], "account")
        if chosen is None:
            return base
        if base[0] == "require" and chosen[0] != "require":
            return base  # the domain's require is a floor
        return chosen

    # ------------------------------------------------------------ enforcement
    def stanza_out(self, session, stanza, to: JID | None) -> bool:
        el = stanza.element
        if el.tag != MESSAGE or el.get("type") == "error":
            return False
        if self._idle and not self._rules:
            return False
        if not _has_content(el) or is_encrypted(el):
            return False
        sender = session.jid.bare
        peer = to.bare if to is not None else sender
        level, source = self.effective(sender, peer)
        if peer.local is not None and peer.domain in self.server.router.hosts and source != "allow":
            level, source = _stricter((level, source), self.effective(peer, sender))
        if level == "none":
            return False
        if level == "require":
            log.debug("e2ee_policy: plaintext from %s to %s refused (%s)", sender, peer, source)
            self.server.router.bounce(session, el, StanzaErrorCondition.POLICY_VIOLATION, REQUIRE_TEXT,
                                      from_=str(to) if to is not None else str(sender))
            return True
        self._warn(session, peer)
        return False

    def _warn(self, session, peer: JID) -> None:
        seen = self._warned.setdefault(session, set())
        key = str(peer)
        if key in seen or len(seen) >= MAX_WARNED_PEERS:
            return
        seen.add(key)
        msg = Element(MESSAGE, {"type": "headline", "from": session.jid.domain, "to": str(session.jid)})
        body = SubElement(msg, BODY)
        body.text = (f"Your message to {key} was not end-to-end encrypted: this server's policy asks "
                     "for OMEMO or OpenPGP in this conversation. It was delivered; you are told once "
                     "per conversation and session.")
        SubElement(msg, f"{_P}warning", {"peer": key, "level": "warn"})
        session.send_bytes(serialize(msg))

    # ------------------------------------------------------------ disco#info
    @staticmethod
    def _is_owner(session, req: Element) -> bool:
        to = req.get("to")
        if to is None:
            return True
        try:
            return JID.parse(to).bare == session.jid.bare
        except InvalidJID:
            return False

    async def _extend_info_later(self, session, awaitable) -> Element | None:
        result = await awaitable
        return self._extend_info(session, result)

    def _extend_info(self, session, result: Element | None) -> Element | None:
        if result is None or result.get("type") != "result" or len(result) == 0:
            return result
        q = result[0]
        if q.find(f"{{{NS_DISCO_INFO}}}feature[@var='{NS_E2EE_POLICY}']") is None:
            SubElement(q, f"{{{NS_DISCO_INFO}}}feature", {"var": NS_E2EE_POLICY})
        level, source = self.effective(session.jid.bare)
        form = SubElement(q, f"{{{NS_DATA}}}x", {"type": "result"})
        for var, value, typ in (("FORM_TYPE", NS_E2EE_POLICY, "hidden"), ("level", level, None),
                                ("source", source, None)):
            f = SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
            if typ:
                f.set("type", typ)
            SubElement(f, f"{{{NS_DATA}}}value").text = value
        return result

    # ------------------------------------------------------------ iq urn:xmppd:e2ee-policy:0
    def _peer(self, req: Element) -> JID | None:
        """The ``peer`` attribute as a bare JID; raises ValueError with a reason."""
        text = req[0].get("peer")
        if text is None:
            return None
        if len(text) > MAX_PEER_LEN:
            raise ValueError("peer is too long")
        try:
            jid = JID.parse(text)
        except InvalidJID as exc:
            raise ValueError(f"peer is not a JID: {exc}") from None
        if jid.resource is not None:
            raise ValueError("peer must be a bare JID (a conversation is with an account, not a resource)")
        return jid

    def handle_get(self, session, req: Element) -> Element:
        """``<policy xmlns='urn:xmppd:e2ee-policy:0' [peer='bob@host']/>`` → the effective
        level and its source, the domain's level and every level the account set."""
        try:
            peer = self._peer(req)
        except ValueError as exc:
            return iq_error(req, StanzaErrorCondition.JID_MALFORMED, str(exc))
        me = session.jid.bare
        level, source = self.effective(me, peer)
        reply = Element("{jabber:client}iq", {"type": "result"})
        attrs = {"level": level, "source": source}
        if peer is not None:
            attrs["peer"] = str(peer)
        q = SubElement(reply, f"{_P}policy", attrs)
        dlevel, dsource = self.domain_level(me.domain)
        SubElement(q, f"{_P}domain", {"level": dlevel, "source": dsource, "floor": str(dlevel == "require").lower()})
        rules = self._rules.get(str(me), {})
        if ACCOUNT in rules:
            SubElement(q, f"{_P}account", {"level": rules[ACCOUNT]})
        for p in sorted(k for k in rules if k != ACCOUNT):
            SubElement(q, f"{_P}conversation", {"peer": p, "level": rules[p]})
        return reply

    async def handle_set(self, session, req: Element) -> Element:
        """``<policy level='none|warn|require|default' [peer='bob@host']/>``: the account's
        level (no peer) or the conversation's; ``default`` removes the setting."""
        try:
            peer = self._peer(req)
        except ValueError as exc:
            return iq_error(req, StanzaErrorCondition.JID_MALFORMED, str(exc))
        level = req[0].get("level")
        if level not in LEVELS and level != "default":
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST,
                            f"level must be one of {', '.join(LEVELS)} or default")
        me = session.jid.bare
        if peer == me:
            peer = None  # talking to oneself is the account's own level
        key = str(peer) if peer is not None else ACCOUNT
        dlevel, _ = self.domain_level(me.domain)
        if dlevel == "require" and level in ("none", "warn"):
            return iq_error(req, StanzaErrorCondition.NOT_ALLOWED,
                            f"the domain {me.domain} requires end-to-end encryption; "
                            f"a user cannot lower it to {level}")
        rules = self._rules.get(str(me), {})
        if level == "default":
            await self.store.clear(me.local, me.domain, key)
            rules.pop(key, None)
            if not rules:
                self._rules.pop(str(me), None)
            return Element("{jabber:client}iq", {"type": "result"})
        if key != ACCOUNT and key not in rules:
            if sum(1 for k in rules if k != ACCOUNT) >= self.max_conversation_rules:
                return iq_error(req, StanzaErrorCondition.RESOURCE_CONSTRAINT,
                                f"at most {self.max_conversation_rules} per-conversation levels "
                                "(modules.e2ee_policy.max_conversation_rules)")
        await self.store.set(me.local, me.domain, key, level)
        self._rules.setdefault(str(me), {})[key] = level
        return Element("{jabber:client}iq", {"type": "result"})
