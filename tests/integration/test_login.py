"""Certificate and password login end to end: real server, real TLS, slixmpp."""

from __future__ import annotations

import json

import pytest

from .harness import AuthFailed
from .rawclient import RawClient


async def add_user(server, user: str, password: str) -> None:
    assert await server.auth_chain.register(user, "localhost", password)


def audit_records(server) -> list[dict]:
    return [json.loads(line) for line in server.config.audit.file.read_text().splitlines()]


async def test_external_login_over_starttls_binds_the_certificate_jid(server, clients, pki):
    cert = pki.client("alice-st", xmpp_addrs=["alice@localhost"], common_name="alice")
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    assert str(alice.boundjid.bare) == "alice@localhost"
    rec = [r for r in audit_records(server) if r["event"] == "auth"][-1]
    assert rec["mechanism"] == "EXTERNAL" and rec["result"] == "success"
    assert rec["cert_fingerprint"] == cert.fingerprint_sha256
    assert rec["jid"] == "alice@localhost"


async def test_external_login_over_direct_tls(server, clients, pki):
    cert = pki.client("alice-dt", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert, direct_tls=True).login(server.listener_port(1))
    assert str(alice.boundjid.bare) == "alice@localhost"


async def test_external_with_authzid_equal_to_the_certificate_jid_is_accepted(server, clients, pki):
    cert = pki.client("alice-az", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert, authzid="alice@localhost").login(server.listener_port(0))
    assert str(alice.boundjid.bare) == "alice@localhost"


async def test_external_with_authzid_of_another_user_fails_with_invalid_authzid(server, clients, pki):
    cert = pki.client("alice-bad-az", xmpp_addrs=["alice@localhost"])
    c = clients("alice@localhost", cert=cert, authzid="bob@localhost", mechanisms=["EXTERNAL"])
    with pytest.raises(AuthFailed) as err:
        await c.login(server.listener_port(0))
    assert err.value.condition == "invalid-authzid"
    assert "authzid-mismatch" in err.value.text


async def test_scram_login_with_a_password_account(server, clients):
    await add_user(server, "bob", "correct horse")
    bob = await clients("bob@localhost", "correct horse").login(server.listener_port(0))
    assert str(bob.boundjid.bare) == "bob@localhost"
    rec = [r for r in audit_records(server) if r["event"] == "auth"][-1]
    assert rec["mechanism"].startswith("SCRAM-SHA-") and rec["result"] == "success"
    assert "correct horse" not in server.config.audit.file.read_text()


async def test_wrong_password_fails_with_not_authorized_and_is_audited(server, clients):
    await add_user(server, "bob", "correct horse")
    c = clients("bob@localhost", "Tr0ub4dor-not-it", mechanisms=["SCRAM-SHA-256"])
    with pytest.raises(AuthFailed) as err:
        await c.login(server.listener_port(0))
    assert err.value.condition == "not-authorized"
    assert "bad-credentials" in err.value.text
    rec = [r for r in audit_records(server) if r["event"] == "auth"][-1]
    assert rec["result"] == "failure" and rec["reason"] == "bad-credentials"
    assert "Tr0ub4dor" not in json.dumps(rec)


async def test_plain_is_not_offered_unless_configured(server, clients):
    await add_user(server, "bob", "pw-plain")
    c = clients("bob@localhost", "pw-plain", mechanisms=["PLAIN"])
    with pytest.raises((AuthFailed, ConnectionError)):
        await c.login(server.listener_port(0), timeout=5)


async def test_plain_over_tls_works_when_configured(make_server, clients):
    server = await make_server({"auth": {"sasl_mechanisms": ["plain"]}})
    await add_user(server, "bob", "pw-plain")
    bob = await clients("bob@localhost", "pw-plain", mechanisms=["PLAIN"]).login(server.listener_port(0))
    assert str(bob.boundjid.bare) == "bob@localhost"


async def test_untrusted_certificate_with_disconnect_on_failure_false_falls_back_to_password(server, clients, pki):
    await add_user(server, "carol", "pw-carol")
    cert = pki.client("carol-untrusted", ca="other", xmpp_addrs=["carol@localhost"])
    carol = await clients("carol@localhost", "pw-carol", cert=cert).login(server.listener_port(0))
    assert str(carol.boundjid.bare) == "carol@localhost"
    recs = audit_records(server)
    rejected = [r for r in recs if r["event"] == "client-cert"]
    assert rejected and rejected[-1]["reason"] == "unknown-ca"
    assert [r for r in recs if r["event"] == "auth"][-1]["mechanism"] != "EXTERNAL"


async def test_untrusted_certificate_with_disconnect_on_failure_true_ends_the_handshake(make_server, clients, pki):
    from .harness import base_config
    server = await make_server({"listen": {}})  # replaced below
    await server.stop()
    tls = {"certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
           "cacertfile": str(pki.ca_path), "disconnect_on_failure": True, "mode": "tls"}
    server = await make_server(listeners=[{"port": 0, "ip_address": "127.0.0.1", "tls": tls}])
    cert = pki.client("carol-untrusted2", ca="other", xmpp_addrs=["carol@localhost"])
    c = clients("carol@localhost", "pw", cert=cert, direct_tls=True)
    with pytest.raises((AuthFailed, ConnectionError, TimeoutError)):
        await c.login(server.listener_port(0), timeout=5)
    recs = audit_records(server)
    assert any(r["event"] == "tls" and r["result"] == "failure" for r in recs)


async def test_cert_user_and_password_user_exchange_messages_and_presence(server, clients, pki):
    await add_user(server, "bob", "pw-bob")
    cert = pki.client("alice-msg", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    bob = await clients("bob@localhost", "pw-bob", direct_tls=True).login(server.listener_port(1))

    alice.send_message(mto=bob.boundjid.full, mbody="hello bob", mtype="chat")
    msg = await bob.next_message()
    assert msg["body"] == "hello bob"
    assert msg["from"] == alice.boundjid  # stamped by the server

    bob.send_presence()  # makes bob available so bare-JID messages reach him
    alice.send_presence(pto="bob@localhost", pstatus="here")
    pres = await bob.next_presence()
    while pres["from"] == bob.boundjid:  # bob's own presence comes back first (RFC 6121 §4.2.2)
        pres = await bob.next_presence()
    assert pres["from"] == alice.boundjid and pres["status"] == "here"

    alice.send_message(mto="bob@localhost", mbody="to your bare jid", mtype="chat")
    msg = await bob.next_message()
    assert msg["body"] == "to your bare jid"

    bob.send_message(mto=alice.boundjid.full, mbody="hi alice")
    assert (await alice.next_message())["body"] == "hi alice"


async def test_message_to_offline_user_bounces_service_unavailable(server, clients, pki):
    cert = pki.client("alice-off", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    alice.send_message(mto="nobody@localhost", mbody="anyone?", mtype="chat")
    msg = await alice.next_message()
    assert msg["type"] == "error"
    assert msg["error"]["condition"] == "service-unavailable"


async def test_from_is_stamped_even_when_the_client_forges_it(server, clients, pki):
    await add_user(server, "bob", "pw-bob")
    cert = pki.client("alice-forge", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    bob = await clients("bob@localhost", "pw-bob").login(server.listener_port(0))
    alice.send_raw(f"<message to='{bob.boundjid.full}' from='mallory@localhost/x'><body>forged?</body></message>")
    msg = await bob.next_message()
    assert msg["from"] == alice.boundjid


async def test_opaque_omemo_payload_arrives_byte_for_byte(server, clients, pki):
    cert_a = pki.client("alice-omemo", xmpp_addrs=["alice@localhost"])
    cert_b = pki.client("bob-omemo", xmpp_addrs=["bob@localhost"])
    alice = await clients("alice@localhost", cert=cert_a).login(server.listener_port(0))
    bob = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert_b)
    try:
        bob_jid = await bob.login_external()
        payload = ("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27183'>"
                   "<key rid='31415' prekey=\"true\">AAECAwQ=</key><iv>BQYHCAkK</iv>"
                   "<future-thing xmlns='urn:example:unknown'  b='2' a='1'>  spaced &amp; kept  </future-thing>"
                   "</header><payload>CwwNDg8Q</payload></encrypted>")
        alice.send_raw(f"<message to='{bob_jid}' id='m1' type='chat'>{payload}"
                       "<store xmlns='urn:xmpp:hints'/></message>")
        got = await bob.read_until(b"</message>")
        assert payload.encode() in got
        assert f"from='{alice.boundjid.full}'".encode() in got or f'from="{alice.boundjid.full}"'.encode() in got
    finally:
        await bob.close()


async def test_server_answers_disco_ping_and_version(server, clients, pki):
    cert = pki.client("alice-disco", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert).login(server.listener_port(0))
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
    feats = info["disco_info"]["features"]
    assert "urn:xmpp:ping" in feats and "jabber:iq:version" in feats
    assert any(i[0] == "server" and i[1] == "im" for i in info["disco_info"]["identities"])
    rtt = await alice.plugin["xep_0199"].ping(jid="localhost", timeout=10)
    assert rtt >= 0
    version = await alice.plugin["xep_0092"].get_version("localhost", timeout=10)
    assert version["software_version"]["name"] == "xmppd"


async def test_binding_the_same_resource_again_replaces_the_old_session(server, clients, pki):
    cert = pki.client("alice-conflict", xmpp_addrs=["alice@localhost"])
    first = await clients("alice@localhost/phone", cert=cert).login(server.listener_port(0))
    errors_seen = first.stream_errors
    second = await clients("alice@localhost/phone", cert=cert).login(server.listener_port(0))
    assert str(second.boundjid) == "alice@localhost/phone"
    for _ in range(50):
        if errors_seen:
            break
        import asyncio
        await asyncio.sleep(0.1)
    assert errors_seen and errors_seen[0]["condition"] == "conflict"
