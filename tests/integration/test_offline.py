"""Offline messages (XEP-0160): stored as exact bytes, delivered with <delay/> on
the next available presence; limits and hints.  Raw client where bytes matter."""

from __future__ import annotations

import asyncio
import re

from xmppd.jid import JID

from .rawclient import RawClient

OMEMO = ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27183'>"
         "<key rid='31415' prekey=\"true\">AAECAwQ=</key><iv>BQYHCAkK</iv>"
         "<future-thing xmlns='urn:example:unknown'  b='2' a='1'>  spaced &amp; kept  </future-thing>"
         "</header><payload>CwwNDg8Q</payload></encrypted>")


async def raw_login(server, pki, user: str, resource: str = "raw") -> RawClient:
    cert = pki.client(f"{user}-{resource}-off", xmpp_addrs=[f"{user}@localhost"])
    raw = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    await raw.login_external(resource=resource)
    return raw


async def known_account(server, pki, user: str) -> None:
    """Log the account in once (the accounts table then knows it), then log out."""
    raw = await raw_login(server, pki, user, "first")
    await raw.close()
    for _ in range(100):
        if await server.accounts.exists(user, "localhost") and not server.sessions.has_bare(
                JID.parse(f"{user}@localhost")):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user} never became a known account / never logged out")


async def offline_count(server, user: str, expect: int | None = None) -> int:
    """Messages stored for ``user``; with ``expect``, wait (bounded) until that many are."""
    mod = next(m for m in server.modules if m.name == "offline")
    n = -1
    for _ in range(100):  # stores are asynchronous
        await asyncio.sleep(0.05)
        if mod._tails:
            continue
        n = await mod.store.count(user, "localhost")
        if expect is None or n == expect:
            break
    return n


async def test_offline_message_is_delivered_with_delay_on_next_available_presence_payload_byte_identical(
        server, clients, pki):
    await known_account(server, pki, "bob")
    alice = await clients("alice@localhost", cert=pki.client("alice-off1", xmpp_addrs=["alice@localhost"])
                          ).login(server.listener_port(0))
    alice.send_raw(f"<message to='bob@localhost' id='o1' type='chat'>{OMEMO}"
                   "<store xmlns='urn:xmpp:hints'/></message>")
    alice.send_raw("<message to='bob@localhost' id='o2' type='chat'><body>second</body></message>")
    assert await offline_count(server, "bob", 2) == 2

    bob = await raw_login(server, pki, "bob")
    try:
        # bound but not yet available: nothing is delivered (session_bound is too early)
        await asyncio.sleep(0.3)
        assert b"<message" not in bob.buf
        await bob.send("<presence/>")
        got = await bob.read_until(rb"id='o2'.*?</message>")
        first = got[got.index(b"<message"):got.index(b"</message>") + len(b"</message>")]
        # exact bytes: the sender's payload untouched, from stamped, delay just before </message>
        # (MAM, when on, inserts its <stanza-id/> first: the offline copy carries the archive id)
        assert re.search(re.escape(OMEMO.encode() + b"<store xmlns='urn:xmpp:hints'/>")
                         + rb"(<stanza-id [^>]*/>)?<delay xmlns='urn:xmpp:delay' from='localhost' stamp='", first), first
        assert first.endswith(b"'/></message>")
        assert f"from='{alice.boundjid.full}'".encode() in first
        m = re.search(rb"stamp='([^']+)'", first)
        assert m and m.group(1).endswith(b"Z")
        assert got.index(b"id='o1'") < got.index(b"id='o2'")  # arrival order kept
        assert await offline_count(server, "bob", 0) == 0  # deleted once sent
    finally:
        await bob.close()


async def test_offline_message_is_delivered_to_a_slixmpp_client_with_a_delay_stamp(server, clients, pki):
    await known_account(server, pki, "bob")
    alice = await clients("alice@localhost", cert=pki.client("alice-off2", xmpp_addrs=["alice@localhost"])
                          ).login(server.listener_port(0))
    alice.send_message(mto="bob@localhost", mbody="while you were away", mtype="chat")
    assert await offline_count(server, "bob", 1) == 1
    bob = clients("bob@localhost", cert=pki.client("bob-off2", xmpp_addrs=["bob@localhost"]))
    bob.register_plugin("xep_0203")
    bob.add_event_handler("session_start", lambda _e: bob.send_presence())
    await bob.login(server.listener_port(0))
    msg = await bob.next_message()
    assert msg["body"] == "while you were away"
    assert msg["delay"]["from"] == "localhost" and msg["delay"]["stamp"] is not None


async def test_offline_store_beyond_max_per_user_bounces_service_unavailable_offline_storage_full(
        make_server, clients, pki):
    server = await make_server({"modules": {"offline": {"max_per_user": 2}}})
    await known_account(server, pki, "bob")
    alice = await clients("alice@localhost", cert=pki.client("alice-off3", xmpp_addrs=["alice@localhost"])
                          ).login(server.listener_port(0))
    for i in range(3):
        alice.send_message(mto="bob@localhost", mbody=f"m{i}", mtype="chat")
    err = await alice.next_message()
    assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
    assert err["error"]["text"] == "offline storage full"
    assert await offline_count(server, "bob", 2) == 2


async def test_no_store_hint_is_honoured_message_bounces_and_nothing_is_stored(server, clients, pki):
    await known_account(server, pki, "bob")
    alice = await clients("alice@localhost", cert=pki.client("alice-off4", xmpp_addrs=["alice@localhost"])
                          ).login(server.listener_port(0))
    alice.send_raw("<message to='bob@localhost' type='chat'><body>ephemeral</body>"
                   "<no-store xmlns='urn:xmpp:hints'/></message>")
    err = await alice.next_message()
    assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
    assert await offline_count(server, "bob") == 0


async def test_headline_and_standalone_chat_states_are_not_stored(server, clients, pki):
    await known_account(server, pki, "bob")
    alice = await clients("alice@localhost", cert=pki.client("alice-off5", xmpp_addrs=["alice@localhost"])
                          ).login(server.listener_port(0))
    alice.send_raw("<message to='bob@localhost' type='headline'><body>news</body></message>")
    alice.send_raw("<message to='bob@localhost' type='chat'>"
                   "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    err = await alice.next_message()  # the headline bounces; the chat state is dropped silently
    assert err["type"] == "error"
    await asyncio.sleep(0.2)
    assert alice.messages.empty()
    assert await offline_count(server, "bob") == 0


async def test_message_to_an_account_that_never_existed_bounces_and_is_not_stored(server, clients, pki):
    alice = await clients("alice@localhost", cert=pki.client("alice-off6", xmpp_addrs=["alice@localhost"])
                          ).login(server.listener_port(0))
    alice.send_message(mto="ghost@localhost", mbody="anyone?", mtype="chat")
    err = await alice.next_message()
    assert err["type"] == "error" and err["error"]["condition"] == "service-unavailable"
    assert await offline_count(server, "ghost") == 0
