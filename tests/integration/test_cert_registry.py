"""Per-account certificate registry: login policies and XEP-0257 management, end to end.

A real server serving two domains (localhost, example.org) and slixmpp clients
with the ``xep_0257`` plugin as the peer.
"""

from __future__ import annotations

import asyncio
import base64
import itertools

import pytest
from cryptography.hazmat.primitives import serialization
from slixmpp.exceptions import IqError

from tests.support.pki import PKIFactory
from xmppd.audit import read_records
from xmppd.storage.certs import ACTIVE, DISABLED, REVOKED, CertRegistry, add_facts
from xmppd.tls.identity import cert_facts

from .harness import AuthFailed

NS = "urn:xmpp:saslcert:1"
_n = itertools.count()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKIFactory(tmp_path_factory.mktemp("pki-registry"), server_hostnames=("localhost", "example.org"))


def config(policy: str = "ifpresent") -> dict:
    return {"general": {"hosts": ["localhost", "example.org"]}, "auth": {"cert_registry": policy}}


def cert_for(pki, jid: str):
    return pki.client(f"reg{next(_n)}", xmpp_addrs=[jid])


def b64(files) -> str:
    return base64.b64encode(files.x509.public_bytes(serialization.Encoding.DER)).decode()


async def register(server, jid: str, files, name: str, state: str = ACTIVE, *, manage: bool = True):
    user, domain = jid.split("@")
    reg = CertRegistry(server.db_engine)
    facts = cert_facts(files.x509)
    await add_facts(reg, user, domain, facts, name=name, cert_management=manage)
    if state != ACTIVE:
        await reg.set_state(user, domain, facts.fingerprint_sha256, state)


async def row_of(server, jid: str, files):
    user, domain = jid.split("@")
    return await CertRegistry(server.db_engine).get(user, domain, files.fingerprint_sha256)


def login(clients, server, jid, files, *, xep0257: bool = False):
    c = clients(jid, cert=files, mechanisms=["EXTERNAL"])
    if xep0257:
        c.register_plugin("xep_0257")
    return c.login(server.listener_port(0))


async def refused(clients, server, jid, files) -> str:
    with pytest.raises(AuthFailed) as e:
        await login(clients, server, jid, files)
    return e.value.text


def closed(client) -> asyncio.Future:
    fut = asyncio.get_event_loop().create_future()
    client.add_event_handler("disconnected", lambda _e: fut.done() or fut.set_result(True))
    return fut


# ------------------------------------------------------------------ policies
# (policy, what the account has) -> None (login works) or the refusal reason
MATRIX = [
    ("always", "registered", None),
    ("always", "unregistered-other-registered", "cert-not-registered"),
    ("always", "nothing-registered", "cert-not-registered"),
    ("always", "disabled", "cert-disabled"),
    ("ifpresent", "registered", None),
    ("ifpresent", "unregistered-other-registered", "cert-not-registered"),
    ("ifpresent", "nothing-registered", None),
    ("ifpresent", "disabled", "cert-disabled"),
    ("ifpresent", "revoked", "cert-revoked"),
    ("never", "registered", None),
    ("never", "unregistered-other-registered", None),
    ("never", "nothing-registered", None),
    ("never", "disabled", "cert-disabled"),
    ("never", "revoked", "cert-revoked"),
]


@pytest.mark.parametrize("policy,situation,reason", MATRIX, ids=[f"{p}-{s}" for p, s, _ in MATRIX])
async def test_policy_decides_whether_an_external_login_needs_a_registered_certificate(
        make_server, clients, pki, policy, situation, reason):
    server = await make_server(config(policy))
    jid = "alice@localhost"
    cert = cert_for(pki, jid)
    if situation == "registered":
        await register(server, jid, cert, "phone")
    elif situation == "unregistered-other-registered":
        await register(server, jid, cert_for(pki, jid), "laptop")
    elif situation in ("disabled", "revoked"):
        await register(server, jid, cert, "phone", DISABLED if situation == "disabled" else REVOKED)
    if reason is None:
        c = await login(clients, server, jid, cert)
        assert c.boundjid.bare == jid
    else:
        assert reason in await refused(clients, server, jid, cert)
        records = [r for r in read_records(server.config.audit.file) if r.get("event") == "auth"]
        assert records[-1]["result"] == "failure" and records[-1]["reason"] == reason
        assert records[-1]["cert_fingerprint"] == cert.fingerprint_sha256


async def test_per_account_policy_overrides_the_configured_default(make_server, clients, pki):
    server = await make_server(config("never"))
    reg = CertRegistry(server.db_engine)
    await reg.set_policy("alice", "localhost", "always")
    assert "cert-not-registered" in await refused(clients, server, "alice@localhost",
                                                  cert_for(pki, "alice@localhost"))
    # bob follows the default
    await login(clients, server, "bob@localhost", cert_for(pki, "bob@localhost"))


async def test_a_successful_login_records_last_used(make_server, clients, pki):
    server = await make_server(config("always"))
    cert = cert_for(pki, "alice@localhost")
    await register(server, "alice@localhost", cert, "phone")
    assert (await row_of(server, "alice@localhost", cert)).last_used is None
    await login(clients, server, "alice@localhost", cert)
    for _ in range(50):
        if (await row_of(server, "alice@localhost", cert)).last_used is not None:
            break
        await asyncio.sleep(0.05)
    assert (await row_of(server, "alice@localhost", cert)).last_used is not None


# ------------------------------------------------------------------ XEP-0257
async def test_server_advertises_urn_xmpp_saslcert_1_in_disco(make_server, clients, pki):
    server = await make_server(config())
    c = await login(clients, server, "alice@localhost", cert_for(pki, "alice@localhost"))
    info = await c.plugin["xep_0030"].get_info(jid="localhost")
    assert NS in info["disco_info"]["features"]


async def test_append_registers_a_certificate_that_items_then_lists_with_its_users(make_server, clients, pki):
    server = await make_server(config())
    jid = "alice@localhost"
    first, laptop = cert_for(pki, jid), cert_for(pki, jid)
    a = await login(clients, server, jid, first, xep0257=True)
    assert await a.plugin["xep_0257"].get_certs() == set()
    await a.plugin["xep_0257"].add_cert("phone", b64(first))
    await a.plugin["xep_0257"].add_cert("laptop", b64(laptop))
    b = await login(clients, server, jid, laptop)
    certs = {name: (cert, users) for name, cert, users in await a.plugin["xep_0257"].get_certs()}
    assert set(certs) == {"phone", "laptop"}
    assert certs["laptop"] == (b64(laptop), (b.boundjid.resource,))
    assert certs["phone"][1] == (a.boundjid.resource,)
    row = await row_of(server, jid, laptop)
    assert row.state == ACTIVE and row.name == "laptop" and row.cert_management
    assert any(r.get("event") == "cert-registered" and r.get("name") == "laptop"
               for r in read_records(server.config.audit.file))


async def test_append_with_a_used_name_or_the_same_certificate_is_a_conflict(make_server, clients, pki):
    server = await make_server(config())
    jid = "alice@localhost"
    cert = cert_for(pki, jid)
    a = await login(clients, server, jid, cert, xep0257=True)
    await a.plugin["xep_0257"].add_cert("phone", b64(cert))
    for name, files in (("phone", cert_for(pki, jid)), ("other name", cert)):
        with pytest.raises(IqError) as e:
            await a.plugin["xep_0257"].add_cert(name, b64(files))
        assert e.value.iq["error"]["condition"] == "conflict"


async def test_append_refuses_garbage_an_expired_certificate_and_another_accounts_certificate(
        make_server, clients, pki):
    server = await make_server(config())
    jid = "alice@localhost"
    a = await login(clients, server, jid, cert_for(pki, jid), xep0257=True)
    cases = [("garbage", "bm90IGEgY2VydA==", "bad-request"),
             ("bob", b64(cert_for(pki, "bob@localhost")), "not-acceptable"),
             ("other domain", b64(cert_for(pki, "alice@example.org")), "not-acceptable"),
             ("expired", b64(pki.expired_client(f"exp{next(_n)}", xmpp_addrs=[jid])), "not-acceptable"),
             ("no jid", b64(pki.client(f"nojid{next(_n)}", common_name="alice")), "not-acceptable")]
    for name, data, condition in cases:
        with pytest.raises(IqError) as e:
            await a.plugin["xep_0257"].add_cert(name, data)
        assert e.value.iq["error"]["condition"] == condition, name
    assert await a.plugin["xep_0257"].get_certs() == set()


async def test_append_under_ifpresent_pins_the_account_to_its_registered_certificates(make_server, clients, pki):
    server = await make_server(config("ifpresent"))
    jid = "alice@localhost"
    old, new = cert_for(pki, jid), cert_for(pki, jid)
    a = await login(clients, server, jid, old, xep0257=True)
    await a.plugin["xep_0257"].add_cert("new", b64(new))
    assert "cert-not-registered" in await refused(clients, server, jid, old)
    await login(clients, server, jid, new)


async def test_a_no_cert_management_session_may_list_but_not_change_certificates(make_server, clients, pki):
    server = await make_server(config())
    jid = "alice@localhost"
    owner, bot = cert_for(pki, jid), cert_for(pki, jid)
    a = await login(clients, server, jid, owner, xep0257=True)
    await a.plugin["xep_0257"].add_cert("owner", b64(owner))
    await a.plugin["xep_0257"].add_cert("bot", b64(bot), allow_management=False)
    assert not (await row_of(server, jid, bot)).cert_management
    b = await login(clients, server, jid, bot, xep0257=True)
    assert {name for name, _, _ in await b.plugin["xep_0257"].get_certs()} == {"owner", "bot"}
    for call in (lambda: b.plugin["xep_0257"].add_cert("more", b64(cert_for(pki, jid))),
                 lambda: b.plugin["xep_0257"].revoke_cert("owner"),
                 lambda: b.plugin["xep_0257"].disable_cert("owner")):
        with pytest.raises(IqError) as e:
            await call()
        assert e.value.iq["error"]["condition"] == "forbidden"
    assert (await row_of(server, jid, owner)).state == ACTIVE


async def test_revoke_closes_the_live_session_that_used_the_cert_and_not_others(make_server, clients, pki):
    server = await make_server(config())
    jid = "alice@localhost"
    phone, laptop, bob_cert = cert_for(pki, jid), cert_for(pki, jid), cert_for(pki, "bob@localhost")
    await register(server, jid, phone, "phone")
    await register(server, jid, laptop, "laptop")
    p = await login(clients, server, jid, phone)
    lap = await login(clients, server, jid, laptop, xep0257=True)
    bob = await login(clients, server, "bob@localhost", bob_cert)
    gone = closed(p)
    await lap.plugin["xep_0257"].revoke_cert("phone")
    await asyncio.wait_for(gone, 10)
    assert p.stream_errors and p.stream_errors[-1]["condition"] == "not-authorized"
    assert p.stream_errors[-1]["text"].startswith("cert-revoked:")
    # the others stay: laptop and bob still answer pings
    await lap.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
    assert (await row_of(server, jid, phone)).state == REVOKED
    assert "cert-revoked" in await refused(clients, server, jid, phone)
    # revocation is final: appending it again is refused
    with pytest.raises(IqError) as e:
        await lap.plugin["xep_0257"].add_cert("phone again", b64(phone))
    assert e.value.iq["error"]["condition"] == "not-acceptable"
    records = list(read_records(server.config.audit.file))
    rev = [r for r in records if r.get("event") == "cert-revoked"]
    assert rev and rev[-1]["sessions_closed"] == 1 and rev[-1]["cert_fingerprint"] == phone.fingerprint_sha256
    assert any(r.get("event") == "session-revoked" and r.get("reason") == "cert-revoked"
               and r.get("jid") == str(p.boundjid) for r in records)


async def test_revoking_the_cert_of_the_requesting_session_answers_then_closes_it(make_server, clients, pki):
    server = await make_server(config())
    jid = "alice@localhost"
    phone = cert_for(pki, jid)
    await register(server, jid, phone, "phone")
    p = await login(clients, server, jid, phone, xep0257=True)
    gone = closed(p)
    await p.plugin["xep_0257"].revoke_cert("phone")  # the result arrives before the stream error
    await asyncio.wait_for(gone, 10)
    assert p.stream_errors[-1]["condition"] == "not-authorized"


async def test_disable_closes_its_sessions_refuses_logins_and_append_re_enables_it(make_server, clients, pki):
    server = await make_server(config())
    jid = "alice@localhost"
    phone, laptop = cert_for(pki, jid), cert_for(pki, jid)
    await register(server, jid, phone, "phone")
    await register(server, jid, laptop, "laptop")
    p = await login(clients, server, jid, phone)
    lap = await login(clients, server, jid, laptop, xep0257=True)
    gone = closed(p)
    await lap.plugin["xep_0257"].disable_cert("phone")
    await asyncio.wait_for(gone, 10)
    assert p.stream_errors[-1]["text"].startswith("cert-disabled:")
    assert "cert-disabled" in await refused(clients, server, jid, phone)
    assert {n for n, _, _ in await lap.plugin["xep_0257"].get_certs()} == {"laptop"}
    await lap.plugin["xep_0257"].add_cert("phone", b64(phone))
    await login(clients, server, jid, phone)


async def test_disable_or_revoke_of_an_unknown_name_is_item_not_found(make_server, clients, pki):
    server = await make_server(config())
    a = await login(clients, server, "alice@localhost", cert_for(pki, "alice@localhost"), xep0257=True)
    for call in (a.plugin["xep_0257"].disable_cert, a.plugin["xep_0257"].revoke_cert):
        with pytest.raises(IqError) as e:
            await call("nope")
        assert e.value.iq["error"]["condition"] == "item-not-found"


async def test_a_same_named_user_of_another_served_domain_cannot_see_or_touch_the_certificates(
        make_server, clients, pki):
    """mod_client_certs' host check (`not host == module.host`) is always false; ours must hold."""
    server = await make_server(config())
    phone = cert_for(pki, "alice@localhost")
    await register(server, "alice@localhost", phone, "phone")
    other = await login(clients, server, "alice@example.org", cert_for(pki, "alice@example.org"), xep0257=True)
    assert await other.plugin["xep_0257"].get_certs() == set()
    for call in (other.plugin["xep_0257"].revoke_cert, other.plugin["xep_0257"].disable_cert):
        with pytest.raises(IqError) as e:
            await call("phone")
        assert e.value.iq["error"]["condition"] == "item-not-found"
    # addressed to the other account's bare JID: refused by the server, not handled for it
    for kind, payload in (("get", "sasl_certs"), ("set", "sasl_cert_revoke")):
        iq = other.Iq()
        iq["type"] = kind
        iq["to"] = "alice@localhost"
        if payload == "sasl_certs":
            iq.enable("sasl_certs")
        else:
            iq["sasl_cert_revoke"]["name"] = "phone"
        with pytest.raises(IqError) as e:
            await iq.send(timeout=10)
        assert e.value.iq["error"]["condition"] in ("service-unavailable", "forbidden")
    assert (await row_of(server, "alice@localhost", phone)).state == ACTIVE
    await login(clients, server, "alice@localhost", phone)
