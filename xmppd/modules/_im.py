"""Shared by the IM modules (offline, carbons, MAM, CSI): byte-level stanza
edits that leave the payload untouched, message eligibility rules, account
existence.

Byte edits follow "Routing fast path" (DESIGN.md): the bytes a recipient gets
are the sender's bytes with only the start tag rewritten; the helpers here add
*one* element before the end tag (``<delay/>``, ``<stanza-id/>``) or wrap the
whole stanza (``<forwarded/>``, XEP-0297) — never re-serialise the payload.

Spec references:
  XEP-0297 §3     the forwarded stanza carries its own namespace (jabber:client)
  XEP-0203 §3     <delay xmlns='urn:xmpp:delay' from stamp/> (XEP-0082 date-time)
  XEP-0334 §4     hints: <no-store/>, <no-permanent-store/>, <no-copy/>, <store/>
  XEP-0280 §6     carbons eligibility
  XEP-0085 §5.6   standalone chat states are not stored offline
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ..xml.writer import rewrite_start_tag

if TYPE_CHECKING:
    from ..jid import JID
    from ..server import Server

__all__ = [
    "NS_CLIENT", "NS_DELAY", "NS_FORWARD", "NS_HINTS", "NS_CARBONS", "NS_CHATSTATES", "NS_SID",
    "start_tag_len", "insert_before_end", "with_client_ns", "forwarded", "delay_element",
    "xep82", "parse_xep82", "attr", "message_type", "has_hint", "has_body", "has_encrypted",
    "is_standalone_chat_state", "carbons_eligible", "archivable", "account_exists",
]

log = logging.getLogger("xmppd.modules.im")

NS_CLIENT = "jabber:client"
NS_DELAY = "urn:xmpp:delay"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_SID = "urn:xmpp:sid:0"
#: end-to-end encrypted payloads a server relays without reading (reference §2a, §2b)
ENCRYPTED = frozenset({
    "{eu.siacs.conversations.axolotl}encrypted",  # OMEMO 0.3 (deployed)
    "{urn:xmpp:omemo:2}encrypted",  # OMEMO 0.9
    "{urn:xmpp:openpgp:0}openpgp",  # OX (XEP-0374)
    "{jabber:x:encrypted}x",  # legacy OpenPGP (XEP-0027)
    "{urn:xmpp:eme:0}encryption",  # XEP-0380 marker
})
#: payloads "typically used in IM" (XEP-0280 §6): chat states, receipts, markers, corrections
_IM_PAYLOAD_NS = frozenset({NS_CHATSTATES, "urn:xmpp:receipts", "urn:xmpp:chat-markers:0",
                            "urn:xmpp:message-correct:0"})

# One complete start tag (the parser already checked it; this only finds its end).
_START_TAG = re.compile(rb"""<(?:[^'">]++|'[^']*+'|"[^"]*+")*+>""")
_TAG_NAME = re.compile(rb"<([^\s/>]+)")


def start_tag_len(data: bytes) -> int:
    m = _START_TAG.match(data)
    if m is None:
        raise ValueError("data does not start with a start tag")
    return m.end()


def insert_before_end(data: bytes, child: bytes) -> bytes:
    """``data`` (one element) with ``child`` inserted just before its end tag.

    A self-closing element (``<message .../>``) is opened and closed around
    ``child``.  Every other byte is unchanged.
    """
    if data.endswith(b"/>") and start_tag_len(data) == len(data):
        name = _TAG_NAME.match(data)
        assert name is not None
        return data[:-2] + b">" + child + b"</" + name.group(1) + b">"
    end = data.rfind(b"</")
    if end < 0:
        raise ValueError("no end tag")
    return data[:end] + child + data[end:]


def with_client_ns(data: bytes) -> bytes:
    """The stanza with ``xmlns='jabber:client'`` on its start tag, so it keeps
    its namespace when embedded in another one (XEP-0297 §3); payload untouched."""
    return rewrite_start_tag(data, start_tag_len(data), {"xmlns": NS_CLIENT})


def forwarded(data: bytes, delay: bytes = b"") -> bytes:
    """``<forwarded xmlns='urn:xmpp:forward:0'>[delay]stanza</forwarded>`` (XEP-0297)."""
    return b"<forwarded xmlns='" + NS_FORWARD.encode() + b"'>" + delay + with_client_ns(data) + b"</forwarded>"


def xep82(when: _dt.datetime) -> str:
    """XEP-0082 DateTime in UTC, with microseconds when there are any."""
    when = when.astimezone(_dt.timezone.utc)
    spec = "microseconds" if when.microsecond else "seconds"
    return when.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def parse_xep82(text: str) -> _dt.datetime:
    """XEP-0082 DateTime (zone required) -> aware datetime; ValueError if malformed."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    value = _dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("a time zone is required (XEP-0082)")
    return value.astimezone(_dt.timezone.utc)


def attr(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


def delay_element(domain: str, when: _dt.datetime) -> bytes:
    """``<delay xmlns='urn:xmpp:delay' from='domain' stamp='...'/>`` (XEP-0203 §3)."""
    return f"<delay xmlns='{NS_DELAY}' from='{attr(domain)}' stamp='{xep82(when)}'/>".encode()


# ---------------------------------------------------------------- eligibility
def message_type(el: Element) -> str:
    typ = el.get("type") or "normal"
    return typ if typ in ("chat", "error", "groupchat", "headline", "normal") else "normal"


def has_hint(el: Element, name: str) -> bool:
    return el.find(f"{{{NS_HINTS}}}{name}") is not None


def has_body(el: Element) -> bool:
    return el.find(f"{{{NS_CLIENT}}}body") is not None


def has_encrypted(el: Element) -> bool:
    return any(child.tag in ENCRYPTED for child in el)


def is_standalone_chat_state(el: Element) -> bool:
    """A message carrying only a chat state (XEP-0085 §5.6): no body, no encrypted payload."""
    if has_body(el) or has_encrypted(el):
        return False
    return any(child.tag.startswith(f"{{{NS_CHATSTATES}}}") for child in el)


def carbons_eligible(el: Element) -> bool:
    """XEP-0280 §6: chat; normal with a body or an IM payload; never <private/>,
    <no-copy/> (XEP-0334), groupchat/headline/error, or a carbon itself."""
    typ = message_type(el)
    if typ not in ("chat", "normal"):
        return False
    for child in el:
        tag = child.tag
        if tag.startswith(f"{{{NS_CARBONS}}}"):
            return False  # <private/>, or an already-wrapped <sent/>/<received/>
        if tag == f"{{{NS_HINTS}}}no-copy":
            return False
    if typ == "chat":
        return True  # also body-less OMEMO key transport (reference §2a)
    if has_body(el) or has_encrypted(el):
        return True
    return any(child.tag[1:].partition("}")[0] in _IM_PAYLOAD_NS for child in el if child.tag[0] == "{")


def archivable(el: Element) -> bool:
    """MAM (XEP-0313 §7 business rules): 1:1 chat/normal messages with a body or an
    encrypted payload (or a <store/> hint); not <no-store/>/<no-permanent-store/>."""
    if message_type(el) not in ("chat", "normal"):
        return False
    if has_hint(el, "no-store") or has_hint(el, "no-permanent-store"):
        return False
    return has_body(el) or has_encrypted(el) or has_hint(el, "store")


async def account_exists(server: "Server", jid: "JID") -> bool:
    """Does local account ``jid`` exist?  The auth chain, or the accounts seen
    at login (``pki`` cannot enumerate accounts: see storage.accounts)."""
    user, domain = jid.local or "", jid.domain
    if not user:
        return False
    try:
        if await server.auth_chain.user_exists(user, domain):
            return True
    except Exception as exc:  # noqa: BLE001 - a backend down: fall back to the accounts table
        log.warning("user_exists(%s@%s) failed: %s", user, domain, exc)
    return await server.accounts.exists(user, domain)
