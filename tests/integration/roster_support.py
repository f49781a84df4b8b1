"""Helpers for the roster / presence / blocking integration tests."""

from __future__ import annotations

import asyncio

from xmppd.jid import JID

from .harness import WAIT_S


async def login(server, clients, name: str, resource: str | None = None, *, roster: bool = True,
                presence: bool = True, blocking: bool = False):
    """A slixmpp client for ``name@localhost`` (password account), with automatic
    subscription handling off so each test drives the protocol itself."""
    await server.auth_chain.register(name, "localhost", f"pw-{name}")
    jid = f"{name}@localhost" + (f"/{resource}" if resource else "")
    c = clients(jid, f"pw-{name}")
    c.roster.auto_authorize = None
    c.roster.auto_subscribe = False
    if blocking:
        c.register_plugin("xep_0191")
    await c.login(server.listener_port(0))
    if roster:
        await c.get_roster()
    if presence:
        c.send_presence()
    return c


async def presence_from(c, jid: str, typ: str = "available", timeout: float = WAIT_S):
    """The next presence of ``typ`` from ``jid`` (bare: any of its resources)."""
    async with asyncio.timeout(timeout):
        while True:
            p = await c.presences.get()
            frm = str(p["from"]) if "/" in jid else str(p["from"].bare)
            if frm == jid and p["type"] == typ:
                return p


async def no_presence_from(c, jid: str, typ: str | None = None, wait: float = 0.7) -> None:
    """Nothing (of ``typ``) from ``jid`` arrives within ``wait`` seconds."""
    try:
        async with asyncio.timeout(wait):
            while True:
                p = await c.presences.get()
                if str(p["from"].bare) == jid and (typ is None or p["type"] == typ):
                    raise AssertionError(f"unexpected presence {p}")
    except TimeoutError:
        pass


async def eventually(check, timeout: float = WAIT_S):
    """Await ``check()`` (a coroutine function) until it returns a truthy value."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)


async def subscription(server, owner: str, contact: str) -> str:
    return await server.roster.subscription(JID.parse(owner), JID.parse(contact))


async def state(server, owner: str, contact: str) -> tuple[str, bool, bool]:
    """(subscription, pending out, pending in) as stored for ``owner``."""
    o = JID.parse(owner)
    store = server.roster.store
    item = await store.item(o.local, o.domain, contact)
    pending_in = await store.has_pending(o.local, o.domain, contact)
    if item is None:
        return ("none", False, pending_in)
    return (item.subscription, item.ask, pending_in)


async def until_state(server, owner: str, contact: str, expected: tuple[str, bool, bool]):
    async def check():
        return await state(server, owner, contact) == expected
    try:
        await eventually(check)
    except TimeoutError:
        raise AssertionError(f"{owner} -> {contact}: {await state(server, owner, contact)} != {expected}")
