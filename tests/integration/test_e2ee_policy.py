"""Server-enforced E2EE policy (modules.e2ee_policy): real server, raw client and slixmpp."""

from __future__ import annotations

import asyncio
import re

import pytest

from xmppd.config import ConfigError
from xmppd.modules.base import parse_module_options
from xmppd.modules.e2ee_policy import NS_E2EE_POLICY, REQUIRE_TEXT, E2EEPolicy

from .rawclient import RawClient

NS = NS_E2EE_POLICY
QUIET_S = 0.6  # how long "nothing arrives" is watched


def policy(**options) -> dict:
    return {"modules": {"e2ee_policy": options}}


@pytest.fixture
async def raw(server_factory_state, pki):
    """raw("alice") -> a RawClient logged in as alice@localhost with a certificate and available."""
    opened: list[RawClient] = []

    async def make(user: str, server=None) -> RawClient:
        server = server or server_factory_state["server"]
        name = f"e2ee-{user}-{len(opened)}"
        cert = pki.client(name, xmpp_addrs=[f"{user}@localhost"])
        c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
        opened.append(c)
        await c.login_external(resource=f"r{len(opened)}")
        await c.send("<presence/>")
        await asyncio.sleep(0.05)
        c.mark()
        return c

    yield make
    for c in opened:
        await c.close()


@pytest.fixture
def server_factory_state():
    return {}


@pytest.fixture
def start(make_server, server_factory_state):
    async def go(**options):
        server = await make_server(policy(**options))
        server_factory_state["server"] = server
        return server

    return go


async def quiet(client: RawClient, pattern: str, seconds: float = QUIET_S) -> None:
    """Assert nothing matching ``pattern`` arrives within ``seconds``."""
    try:
        got = await client.read_until(pattern, timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {pattern!r} in {got[-600:]!r}")


async def collect(client: RawClient, seconds: float = QUIET_S) -> bytes:
    """Everything received within ``seconds`` (plus what was buffered)."""
    try:
        await client.read_until(r"(?!)", timeout=seconds)
    except TimeoutError:
        pass
    return bytes(client.buf)


async def iq(client: RawClient, iq_id: str, payload: str, typ: str = "get", to: str | None = None) -> bytes:
    to_attr = f" to='{to}'" if to else ""
    client.mark()
    await client.send(f"<iq type='{typ}' id='{iq_id}'{to_attr}>{payload}</iq>")
    data = await client.read_until(rf"<iq[^>]*id='{iq_id}'[^>]*(/>|>.*?</iq>)")
    m = re.search(rf"<iq[^>]*id='{iq_id}'[^>]*(/>|>.*?</iq>)".encode(), data, re.S)
    client.mark()
    return m.group(0)


async def set_level(client: RawClient, level: str, peer: str | None = None, iq_id: str = "set1") -> bytes:
    peer_attr = f" peer='{peer}'" if peer else ""
    return await iq(client, iq_id, f"<policy xmlns='{NS}' level='{level}'{peer_attr}/>", "set")


def payload_of(stanza: str) -> bytes:
    """The children's bytes (between start and end tag): what must arrive unchanged.
    The server may append its own elements (XEP-0359 <stanza-id/>) before the end tag."""
    assert stanza.endswith("</message>")
    return stanza[stanza.index(">") + 1:-len("</message>")].encode()


PLAIN = "<message to='{to}' type='chat' id='{id}'><body>{text}</body></message>"

ENCRYPTED = {
    "omemo-legacy-with-fallback-body": (
        "<message to='bob@localhost' type='chat' id='enc1'>"
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27183'>"
        "<key rid='31415'>BASE64ENCODED...</key><iv>BASE64ENCODED...</iv></header>"
        "<payload>BASE64ENCODED</payload></encrypted>"
        "<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl' name='OMEMO'/>"
        "<body>I sent you an OMEMO encrypted message but your client doesn\u2019t seem to support that. "
        "Find more information on https://conversations.im/omemo</body>"
        "<store xmlns='urn:xmpp:hints'/></message>"),
    "omemo-2": (
        "<message to='bob@localhost' type='chat' id='enc2'>"
        "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='27183'><keys jid='bob@localhost'>"
        "<key rid='31415' kex='true'>b64encoded</key></keys></header>"
        "<payload>b64encoded</payload></encrypted>"
        "<body>You received a message encrypted with OMEMO but your client doesn't support OMEMO.</body>"
        "</message>"),
    "omemo-2-without-body": (
        "<message to='bob@localhost' type='chat' id='enc3'>"
        "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='bob@localhost'>"
        "<key rid='2'>AAAA</key></keys></header><payload>BBBB</payload></encrypted></message>"),
    "openpgp-ox": (
        "<message to='bob@localhost' type='chat' id='enc4'>"
        "<openpgp xmlns='urn:xmpp:openpgp:0'>BASE64_OPENPGP_MESSAGE_CONTAINING_SIGNCRYPT_ELEMENT</openpgp>"
        "<body>This message is encrypted with OpenPGP for XMPP.</body></message>"),
    "legacy-jabber-x-encrypted": (
        "<message to='bob@localhost' type='chat' id='enc5'><body>This message is encrypted.</body>"
        "<x xmlns='jabber:x:encrypted'>hQEMA8M6Iq7rDBfDAQf/ZWVhbXBsZQ==</x></message>"),
}

ALWAYS_PASS = {
    "receipt": ("<message to='bob@localhost' id='r1'>"
                "<received xmlns='urn:xmpp:receipts' id='orig1'/></message>"),
    "chat-state": ("<message to='bob@localhost' type='chat' id='cs1'>"
                   "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
    "marker": ("<message to='bob@localhost' type='chat' id='mk1'>"
               "<displayed xmlns='urn:xmpp:chat-markers:0' id='orig2'/></message>"),
    "error": ("<message to='bob@localhost/r2' type='error' id='err1'><body>quoted text</body>"
              "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
              "</error></message>"),
    "omemo-key-transport": (
        "<message to='bob@localhost' type='chat' id='kt1'>"
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='9'><key rid='8' prekey='true'>"
        "AAAA</key><iv>BBBB</iv></header></encrypted><store xmlns='urn:xmpp:hints'/></message>"),
}


# ------------------------------------------------------------------ require
async def test_require_bounces_plaintext_with_policy_violation_and_an_explaining_text(start, raw):
    await start(domains={"localhost": "require"})
    alice, bob = await raw("alice"), await raw("bob")
    await alice.send(PLAIN.format(to="bob@localhost", id="p1", text="secret-plaintext-1"))
    err = await alice.read_until(r"<message[^>]*type='error'.*?</message>")
    assert b"id='p1'" in err
    assert b"<error type='modify'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" in err
    assert REQUIRE_TEXT.encode() in err
    assert b"from='bob@localhost'" in err
    await quiet(bob, "secret-plaintext-1")


async def test_require_bounce_reaches_a_slixmpp_sender_as_a_message_error(start, raw, clients, pki):
    server = await start(domains={"localhost": "require"})
    bob = await raw("bob")
    cert = pki.client("e2ee-slix-alice", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    alice.send_message(mto="bob@localhost", mbody="secret-plaintext-2", mtype="chat")
    err = await alice.next_message()
    assert err["type"] == "error"
    # slixmpp 1.17's Error.conditions lacks RFC 6120's policy-violation: read the XML
    cond = err.xml.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}policy-violation")
    assert cond is not None
    assert err["error"]["type"] == "modify"
    assert "requires end-to-end encryption" in err["error"]["text"]
    await quiet(bob, "secret-plaintext-2")


@pytest.mark.parametrize("kind", list(ENCRYPTED))
async def test_encrypted_messages_pass_require_byte_for_byte(start, raw, kind):
    await start(domains={"localhost": "require"})
    alice, bob = await raw("alice"), await raw("bob")
    stanza = ENCRYPTED[kind]
    await alice.send(stanza)
    got = await bob.read_until(r"</message>")
    assert payload_of(stanza) in got, got
    assert b"from='alice@localhost/" in got
    await quiet(alice, "type='error'")


@pytest.mark.parametrize("kind", list(ALWAYS_PASS))
async def test_receipts_chat_states_markers_errors_and_key_transport_always_pass(start, raw, kind):
    await start(domains={"localhost": "require"})
    alice, bob = await raw("alice"), await raw("bob")
    stanza = ALWAYS_PASS[kind]
    if kind == "error":
        stanza = stanza.replace("bob@localhost/r2", bob.jid)
    await alice.send(stanza)
    got = await bob.read_until(r"</message>")
    assert payload_of(stanza) in got, got
    await quiet(alice, "policy-violation")


async def test_an_empty_encrypted_element_next_to_a_body_does_not_count_as_encrypted(start, raw):
    await start(domains={"localhost": "require"})
    alice, bob = await raw("alice"), await raw("bob")
    await alice.send("<message to='bob@localhost' type='chat' id='fake1'><body>sneaky-plain</body>"
                     "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>"
                     "</message>")
    err = await alice.read_until(r"policy-violation.*?</message>")
    assert b"id='fake1'" in err
    await quiet(bob, "sneaky-plain")


async def test_allow_listed_bot_passes_as_sender_and_as_recipient(start, raw):
    await start(domains={"localhost": "require"}, allow=["bot@localhost"])
    alice, bot = await raw("alice"), await raw("bot")
    await bot.send(PLAIN.format(to="alice@localhost", id="b1", text="bot-says-hello"))
    assert b"bot-says-hello" in await alice.read_until("bot-says-hello")
    await alice.send(PLAIN.format(to="bot@localhost", id="b2", text="alice-tells-bot"))
    assert b"alice-tells-bot" in await bot.read_until("alice-tells-bot")
    await quiet(alice, "policy-violation", 0.3)
    await quiet(bot, "policy-violation", 0.3)


async def test_a_recipient_requiring_encryption_refuses_plaintext_from_anyone(start, raw):
    await start()  # default none everywhere
    alice, bob = await raw("alice"), await raw("bob")
    assert b"type='result'" in await set_level(bob, "require")
    await alice.send(PLAIN.format(to="bob@localhost", id="rq1", text="to-a-careful-bob"))
    err = await alice.read_until(r"policy-violation.*?</message>")
    assert REQUIRE_TEXT.encode() in err
    await quiet(bob, "to-a-careful-bob")


# ------------------------------------------------------------------ precedence
async def test_conversation_level_beats_account_level_beats_domain_level(start, raw):
    await start(domains={"localhost": "warn"})
    alice, bob, carol = await raw("alice"), await raw("bob"), await raw("carol")
    # bob and carol opt out on their side (warn is no floor), so only alice's choices matter
    assert b"type='result'" in await set_level(bob, "none")
    assert b"type='result'" in await set_level(carol, "none")

    # domain: warn -> delivered with a warning
    await alice.send(PLAIN.format(to="bob@localhost", id="d1", text="domain-level-msg"))
    await bob.read_until("domain-level-msg")
    warn = await alice.read_until(r"<message[^>]*type='headline'.*?</message>")
    assert b"was not end-to-end encrypted" in warn
    assert re.search(rb"from='localhost'", warn)

    # account: require beats the domain's warn
    assert b"type='result'" in await set_level(alice, "require", iq_id="s2")
    await alice.send(PLAIN.format(to="bob@localhost", id="a1", text="account-level-msg"))
    assert b"id='a1'" in await alice.read_until(r"policy-violation.*?</message>")
    await quiet(bob, "account-level-msg", 0.3)

    # conversation: none with bob beats the account's require; carol still under require
    assert b"type='result'" in await set_level(alice, "none", peer="bob@localhost", iq_id="s3")
    alice.mark()
    await alice.send(PLAIN.format(to="bob@localhost", id="c1", text="conversation-level-msg"))
    await bob.read_until("conversation-level-msg")
    await alice.send(PLAIN.format(to="carol@localhost", id="c2", text="to-carol-msg"))
    assert b"id='c2'" in await alice.read_until(r"policy-violation.*?</message>")
    await quiet(carol, "to-carol-msg", 0.3)

    res = await iq(alice, "g1", f"<policy xmlns='{NS}' peer='bob@localhost'/>")
    assert b"level='none'" in res and b"source='conversation'" in res
    res = await iq(alice, "g2", f"<policy xmlns='{NS}' peer='carol@localhost'/>")
    assert b"level='require'" in res and b"source='account'" in res
    assert b"<conversation peer='bob@localhost' level='none'/>" in res

    # "default" removes a choice: back to the account level for bob
    assert b"type='result'" in await set_level(alice, "default", peer="bob@localhost", iq_id="s4")
    res = await iq(alice, "g3", f"<policy xmlns='{NS}' peer='bob@localhost'/>")
    assert b"level='require'" in res and b"source='account'" in res


async def test_a_user_cannot_lower_a_domain_require(start, raw):
    await start(domains={"localhost": "require"})
    alice, bob = await raw("alice"), await raw("bob")
    for i, (level, peer) in enumerate([("none", None), ("warn", None), ("none", "bob@localhost")]):
        res = await set_level(alice, level, peer=peer, iq_id=f"low{i}")
        assert b"type='error'" in res
        assert b"<not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" in res
        assert b"requires end-to-end encryption" in res
    assert b"type='result'" in await set_level(alice, "require", iq_id="ok1")
    await alice.send(PLAIN.format(to="bob@localhost", id="x1", text="still-plain"))
    assert b"id='x1'" in await alice.read_until(r"policy-violation.*?</message>")
    await quiet(bob, "still-plain")
    res = await iq(alice, "g1", f"<policy xmlns='{NS}'/>")
    assert b"level='require'" in res and b"floor='true'" in res


async def test_set_rejects_unknown_levels_and_full_jids(start, raw):
    await start()
    alice = await raw("alice")
    res = await set_level(alice, "maybe", iq_id="bad1")
    assert b"<bad-request " in res and b"level must be one of" in res
    res = await set_level(alice, "require", peer="bob@localhost/phone", iq_id="bad2")
    assert b"<jid-malformed " in res and b"bare JID" in res


async def test_max_conversation_rules_is_enforced(start, raw):
    await start(max_conversation_rules=2)
    alice = await raw("alice")
    for i in range(2):
        assert b"type='result'" in await set_level(alice, "require", peer=f"p{i}@localhost", iq_id=f"m{i}")
    res = await set_level(alice, "require", peer="p9@localhost", iq_id="m9")
    assert b"<resource-constraint " in res and b"max_conversation_rules" in res
    # changing an existing one is still fine
    assert b"type='result'" in await set_level(alice, "warn", peer="p0@localhost", iq_id="m10")


async def test_levels_survive_a_restart(make_server, pki, tmp_path):
    from .harness import base_config, deep_merge
    from xmppd.config import parse_config
    from xmppd.server import Server

    d = tmp_path / "restart"
    d.mkdir()
    data = deep_merge(base_config(d, pki), policy())
    s1 = Server(parse_config(data))
    await s1.start()
    try:
        cert = pki.client("e2ee-restart", xmpp_addrs=["alice@localhost"])
        c = await RawClient.open(s1.listener_port(0), ca=pki.ca_path, cert=cert)
        await c.login_external()
        assert b"type='result'" in await set_level(c, "require", peer="bob@localhost")
        await c.close()
    finally:
        await s1.stop()
    s2 = Server(parse_config(data))
    await s2.start()
    try:
        mod = next(m for m in s2.modules if m.name == "e2ee_policy")
        from xmppd.jid import JID
        assert mod.effective(JID.parse("alice@localhost"), JID.parse("bob@localhost")) == ("require", "conversation")
    finally:
        await s2.stop()


# ------------------------------------------------------------------ warn
async def test_warn_delivers_and_warns_the_sender_once_per_conversation(start, raw):
    await start(default="warn")
    alice, bob, carol = await raw("alice"), await raw("bob"), await raw("carol")
    for i in range(3):
        await alice.send(PLAIN.format(to="bob@localhost", id=f"w{i}", text=f"warned-msg-{i}"))
    got = await bob.read_until("warned-msg-2")
    assert b"warned-msg-0" in got and b"warned-msg-1" in got
    warnings = re.findall(rb"<message[^>]*type='headline'.*?</message>", await collect(alice), re.S)
    assert len(warnings) == 1, alice.buf
    assert b"bob@localhost" in warnings[0] and f"xmlns='{NS}'".encode() in warnings[0]
    assert b"policy-violation" not in alice.buf
    alice.mark()
    await alice.send(PLAIN.format(to="carol@localhost", id="w9", text="to-carol"))
    await carol.read_until("to-carol")
    warn = await alice.read_until(r"<message[^>]*type='headline'.*?</message>")
    assert b"carol@localhost" in warn
    # encrypted messages are not warned about
    alice.mark()
    await alice.send(ENCRYPTED["omemo-2"].replace("enc2", "w10").replace("bob@localhost", "dave@localhost"))
    await quiet(alice, "type='headline'")


# ------------------------------------------------------------------ query
async def test_query_returns_the_effective_level_and_disco_lists_feature_and_form(start, raw, clients, pki):
    server = await start(domains={"localhost": "require"})
    alice = await raw("alice")
    res = await iq(alice, "q1", f"<policy xmlns='{NS}'/>")
    assert b"level='require'" in res and b"source='domain'" in res

    cert = pki.client("e2ee-slix-disco", xmpp_addrs=["erin@localhost"])
    erin = await clients("erin@localhost", cert=cert).login(server.listener_port(0))
    info = await erin.plugin["xep_0030"].get_info(jid="erin@localhost", timeout=10)
    assert NS in info["disco_info"]["features"]
    form = info.xml.find("{http://jabber.org/protocol/disco#info}query/{jabber:x:data}x")
    assert form is not None and form.get("type") == "result"
    values = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form}
    assert values == {"FORM_TYPE": NS, "level": "require", "source": "domain"}

    # someone else's disco#info does not reveal the policy
    other = await erin.plugin["xep_0030"].get_info(jid="alice@localhost", timeout=10)
    assert NS not in other["disco_info"]["features"]

    # the iq via slixmpp too, after raising erin's level is a no-op (already require)
    iq_ = erin.make_iq_get(ito="erin@localhost")
    from slixmpp.xmlstream import ET
    iq_.append(ET.Element(f"{{{NS}}}policy"))
    res = await iq_.send(timeout=10)
    el = res.xml.find(f"{{{NS}}}policy")
    assert el.get("level") == "require" and el.get("source") == "domain"


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("options, key", [
    ({"default": "maybe"}, "modules.e2ee_policy.default"),
    ({"domains": {"localhost": "strict"}}, "modules.e2ee_policy.domains.localhost"),
    ({"domains": "localhost"}, "modules.e2ee_policy.domains"),
    ({"allow": ["bot@localhost/res"]}, "modules.e2ee_policy.allow[0]"),
    ({"allow": [3]}, "modules.e2ee_policy.allow[0]"),
    ({"max_conversation_rules": -1}, "modules.e2ee_policy.max_conversation_rules"),
])
def test_bad_options_name_the_toml_key(options, key):
    with pytest.raises(ConfigError) as err:
        parse_module_options(E2EEPolicy, options)
    assert err.value.key == key
