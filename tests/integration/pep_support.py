"""Helpers for the PEP / caps integration tests (slixmpp peers with XEP-0060/0115/0163)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from .harness import WAIT_S
from .roster_support import presence_from, until_state

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_EVENT = NS_PUBSUB + "#event"
AXOLOTL = "eu.siacs.conversations.axolotl"
DEVICELIST = AXOLOTL + ".devicelist"
OMEMO2 = "urn:xmpp:omemo:2"
OX = "urn:xmpp:openpgp:0"


async def pep_login(server, clients, name: str, resource: str | None = None, *,
                    notify: tuple[str, ...] = (), presence: bool = True):
    """A slixmpp client for ``name@localhost`` with the pubsub plugins and
    XEP-0115 caps advertising ``<node>+notify`` for each of ``notify``."""
    await server.auth_chain.register(name, "localhost", f"pw-{name}")
    jid = f"{name}@localhost" + (f"/{resource}" if resource else "")
    c = clients(jid, f"pw-{name}")
    c.roster.auto_authorize = None
    c.roster.auto_subscribe = False
    for plugin in ("xep_0004", "xep_0060", "xep_0115", "xep_0163"):
        c.register_plugin(plugin)
    c.events = asyncio.Queue()
    for ev in ("pubsub_publish", "pubsub_retract", "pubsub_delete", "pubsub_purge"):
        c.add_event_handler(ev, lambda m, ev=ev: c.events.put_nowait((ev, m)))
    await c.login(server.listener_port(0))
    await c.get_roster()
    for node in notify:
        c.plugin["xep_0030"].add_feature(f"{node}+notify")
    await c.plugin["xep_0115"].update_caps()
    if presence:
        c.send_presence()
    return c


async def subscribe_both(server, a, b) -> None:
    """Mutual presence subscription between two logged-in clients."""
    ja, jb = str(a.boundjid.bare), str(b.boundjid.bare)
    a.send_presence(pto=jb, ptype="subscribe")
    await presence_from(b, ja, "subscribe")
    b.send_presence(pto=ja, ptype="subscribed")
    await until_state(server, ja, jb, ("to", False, False))
    b.send_presence(pto=ja, ptype="subscribe")
    await presence_from(a, jb, "subscribe")
    a.send_presence(pto=jb, ptype="subscribed")
    await until_state(server, ja, jb, ("both", False, False))
    await until_state(server, jb, ja, ("both", False, False))


def options(c, **fields) -> object:
    """A publish-options form: pubsub#<name>=value for each keyword."""
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_PUBSUB + "#publish-options")
    for k, v in fields.items():
        form.add_field(var=f"pubsub#{k}", value=v)
    return form


def config_form(c, **fields) -> object:
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_PUBSUB + "#node_config")
    for k, v in fields.items():
        form.add_field(var=f"pubsub#{k}", value=v)
    return form


def devicelist(*ids: int, ns: str = AXOLOTL) -> ET.Element:
    lst = ET.Element(f"{{{ns}}}list")
    for i in ids:
        ET.SubElement(lst, f"{{{ns}}}device", {"id": str(i)})
    return lst


def bundle(device: int, ns: str = AXOLOTL) -> ET.Element:
    b = ET.Element(f"{{{ns}}}bundle")
    ET.SubElement(b, f"{{{ns}}}signedPreKeyPublic", {"signedPreKeyId": "1"}).text = f"spk{device}"
    ET.SubElement(b, f"{{{ns}}}identityKey").text = f"ik{device}"
    pks = ET.SubElement(b, f"{{{ns}}}prekeys")
    for n in range(3):
        ET.SubElement(pks, f"{{{ns}}}preKeyPublic", {"preKeyId": str(n)}).text = f"pk{device}-{n}"
    return b


async def items_of(c, owner: str, node: str, **kw) -> list[tuple[str, ET.Element]]:
    iq = await c.plugin["xep_0060"].get_items(owner, node, timeout=WAIT_S, **kw)
    return [(it["id"], it.xml[0] if len(it.xml) else None) for it in iq["pubsub"]["items"]]


async def iq_error(coro) -> tuple[str, str | None, str]:
    """(condition, pubsub#errors element name or None, text) of a failing request."""
    try:
        await coro
    except IqError as exc:
        err = exc.iq.xml.find("{jabber:client}error")
        app = None
        for child in err:
            if child.tag.startswith(f"{{{NS_ERRORS}}}"):
                app = child.tag.partition("}")[2]
        return exc.iq["error"]["condition"], app, exc.iq["error"]["text"]
    raise AssertionError("the request succeeded")


def _node_of(ev: str, msg) -> str:
    e = msg["pubsub_event"]
    if ev == "pubsub_delete":
        return e["delete"]["node"]
    if ev == "pubsub_purge":
        return e["purge"]["node"]
    return e["items"]["node"]


async def next_event(c, kind: str = "pubsub_publish", node: str | None = None, timeout: float = WAIT_S):
    """The next pubsub notification of ``kind`` (for ``node``) ``c`` received."""
    async with asyncio.timeout(timeout):
        while True:
            ev, msg = await c.events.get()
            if ev == kind and (node is None or _node_of(ev, msg) == node):
                return msg


async def no_event(c, wait: float = 0.8) -> None:
    try:
        async with asyncio.timeout(wait):
            ev, msg = await c.events.get()
            raise AssertionError(f"unexpected {ev}: {msg}")
    except TimeoutError:
        pass


def same_xml(a: ET.Element, b: ET.Element) -> bool:
    return ET.tostring(a) == ET.tostring(b)
