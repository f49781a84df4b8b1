"""Helpers for the MUC integration tests: slixmpp clients with xep_0045, raw clients, instant rooms."""

from __future__ import annotations

import asyncio
import re

from slixmpp import JID
from slixmpp.plugins.xep_0004 import Form

from .rawclient import RawClient

SERVICE = "conference.localhost"
WAIT_S = 15.0


def room_jid(name: str) -> JID:
    return JID(f"{name}@{SERVICE}")


async def muc_client(clients, pki, server, user: str, *, resource: str | None = None):
    """A logged-in slixmpp client (certificate login) with the MUC plugin, available."""
    cert = pki.client(f"muc-{user}", xmpp_addrs=[f"{user}@localhost"])
    jid = f"{user}@localhost" + (f"/{resource}" if resource else "")
    c = clients(jid, cert=cert)
    c.register_plugin("xep_0045")
    c.register_plugin("xep_0004")
    await c.login(server.listener_port(0))
    c.send_presence()
    return c


async def submit_config(client, room: JID, values: dict | None = None) -> None:
    """Owner: submit the room's configuration form with ``values`` (an instant room when empty)."""
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
    for var, value in (values or {}).items():
        form.add_field(var=var, value=value)
    await client.plugin["xep_0045"].set_room_config(room, form)


async def create_room(client, name: str, nick: str, config: dict | None = None) -> JID:
    room = room_jid(name)
    pres, _subject, _occ, _hist = await client.plugin["xep_0045"].join_muc_wait(room, nick, timeout=WAIT_S)
    assert 201 in pres["muc"]["status_codes"], pres
    await submit_config(client, room, config)
    return room


async def raw_user(server, pki, user: str, resource: str = "raw") -> RawClient:
    cert = pki.client(f"muc-{user}", xmpp_addrs=[f"{user}@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    await c.login_external(resource=resource)
    return c


def status_codes(data: bytes) -> set[int]:
    return {int(m) for m in re.findall(rb"<status code='(\d+)'", data)}


async def next_groupchat(client, timeout: float = WAIT_S):
    while True:
        msg = await client.next_message(timeout)
        if msg["type"] in ("groupchat", "error"):
            return msg


async def eventually(predicate, timeout: float = WAIT_S) -> None:
    for _ in range(int(timeout * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never became true")
