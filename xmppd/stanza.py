"""Stanzas the server itself writes: error replies and bodiless presence.

Pure helpers (no I/O), shared by the c2s machine, the router and the modules
— so that none of them borrows another's private function.

Spec references:
  RFC 6120 §8.3.1  an error reply swaps the addresses: its 'from' is the
                   original 'to', its 'to' the original 'from'; same 'id'
  RFC 6120 §8.3.2  <error type='...'> with one defined condition and an
                   optional <text/>
  RFC 6121 §4      presence the server generates on a user's behalf
                   (unavailable when a stream ends, probes, subscription states)
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from .errors import NS_STANZAS, STANZA_ERROR_TYPES, StanzaErrorCondition
from .xml.parser import Stanza
from .xml.writer import serialize

if TYPE_CHECKING:
    from .jid import JID

__all__ = ["error_reply", "presence_bytes", "synthetic_presence", "NS_CLIENT"]

NS_CLIENT = "jabber:client"


def error_reply(elem: Element, condition: StanzaErrorCondition, text: str = "", *,
                from_: str | None = None) -> Element:
    """The error reply to ``elem`` (RFC 6120 §8.3.1).

    ``from`` is the original ``to``, exactly as the sender wrote it, so that a
    client matching replies by address recognises it; ``from_`` is used only
    when the original had no ``to`` (the stanza was handled on behalf of the
    sender's account or server: pass that bare JID or domain).  ``to`` is the
    original ``from`` (the router stamps it with the sender's full JID).
    """
    reply = Element(elem.tag)
    if "id" in elem.attrib:
        reply.set("id", elem.attrib["id"])
    if "from" in elem.attrib:
        reply.set("to", elem.attrib["from"])
    original_to = elem.attrib.get("to")
    if original_to is not None:
        reply.set("from", original_to)
    elif from_ is not None:
        reply.set("from", from_)
    reply.set("type", "error")
    err = Element(f"{{{NS_CLIENT}}}error", {"type": STANZA_ERROR_TYPES[condition]})
    err.append(Element(f"{{{NS_STANZAS}}}{condition.value}"))
    if text:
        t = Element(f"{{{NS_STANZAS}}}text")
        t.text = text
        err.append(t)
    reply.append(err)
    return reply


def presence_bytes(from_: "JID | str", to: "JID | str | None", typ: str | None = None) -> bytes:
    """``<presence from to [type]/>`` as bytes (no ``to`` when ``to`` is None)."""
    attrs = {"from": str(from_)}
    if to is not None:
        attrs["to"] = str(to)
    if typ:
        attrs["type"] = typ
    return serialize(Element(f"{{{NS_CLIENT}}}presence", attrs))


def synthetic_presence(attrs: dict[str, str]) -> Stanza:
    """A server-generated presence as a parsed Stanza (for the ``stanza_in`` filters)."""
    return Stanza(Element(f"{{{NS_CLIENT}}}presence", attrs), b"", 0, False, 0)
