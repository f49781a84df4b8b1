"""auth.methods = ["ldap"] end to end: real xmppd, real slapd, slixmpp over TLS.

LDAP can only verify cleartext passwords, so these servers offer PLAIN (over
TLS only: both harness listeners are encrypted) next to EXTERNAL.
"""

from __future__ import annotations

import socket

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.slapd import LdapUser, start_slapd

from .harness import AuthFailed


@pytest.fixture(scope="module")
def carol_cert(pki):
    return pki.client("ldap-carol", xmpp_addrs=["carol@localhost"])


@pytest.fixture(scope="module")
def slapd(tmp_path_factory, carol_cert):
    der = carol_cert.x509.public_bytes(Encoding.DER)
    server = start_slapd(tmp_path_factory.mktemp("slapd"),
                         users=[LdapUser("carol", "carol-secret", certs=[der])])
    yield server
    server.stop()


def ldap_overrides(options: dict) -> dict:
    return {"auth": {"methods": ["ldap"], "sasl_mechanisms": ["external", "plain"], "ldap": options}}


@pytest.fixture
async def ldap_server(make_server, slapd):
    return await make_server(ldap_overrides(slapd.options()))


async def test_plain_login_with_the_ldap_password(ldap_server, clients):
    alice = await clients("alice@localhost", "alice-secret", mechanisms=["PLAIN"]).login(
        ldap_server.listener_port(0))
    assert str(alice.boundjid.bare) == "alice@localhost"


async def test_plain_login_over_direct_tls(ldap_server, clients):
    bob = await clients("bob@localhost", "bob-secret", mechanisms=["PLAIN"], direct_tls=True).login(
        ldap_server.listener_port(1))
    assert str(bob.boundjid.bare) == "bob@localhost"


async def test_a_wrong_ldap_password_fails_with_not_authorized(ldap_server, clients):
    c = clients("alice@localhost", "bob-secret", mechanisms=["PLAIN"])
    with pytest.raises(AuthFailed) as err:
        await c.login(ldap_server.listener_port(0))
    assert err.value.condition == "not-authorized"


async def test_external_with_a_cert_for_an_existing_ldap_user_works(ldap_server, clients, pki):
    cert = pki.client("ldap-alice", xmpp_addrs=["alice@localhost"])
    alice = await clients("alice@localhost", cert=cert, mechanisms=["EXTERNAL"]).login(
        ldap_server.listener_port(0))
    assert str(alice.boundjid.bare) == "alice@localhost"


async def test_external_for_a_user_missing_from_ldap_fails_with_no_account(ldap_server, clients, pki):
    cert = pki.client("ldap-mallory", xmpp_addrs=["mallory@localhost"])
    c = clients("mallory@localhost", cert=cert, mechanisms=["EXTERNAL"])
    with pytest.raises(AuthFailed) as err:
        await c.login(ldap_server.listener_port(0))
    assert err.value.condition == "not-authorized"
    assert "no-account" in err.value.text


async def test_cert_match_always_accepts_the_registered_cert(make_server, slapd, clients, carol_cert):
    server = await make_server(ldap_overrides(slapd.options(cert_match="always")))
    carol = await clients("carol@localhost", cert=carol_cert, mechanisms=["EXTERNAL"]).login(
        server.listener_port(0))
    assert str(carol.boundjid.bare) == "carol@localhost"


async def test_cert_match_always_refuses_another_valid_cert_for_the_same_user(make_server, slapd,
                                                                              clients, pki):
    server = await make_server(ldap_overrides(slapd.options(cert_match="always")))
    other = pki.client("ldap-carol-other", xmpp_addrs=["carol@localhost"])
    c = clients("carol@localhost", cert=other, mechanisms=["EXTERNAL"])
    with pytest.raises(AuthFailed) as err:
        await c.login(server.listener_port(0))
    assert err.value.condition == "not-authorized"
    assert "cert-not-registered" in err.value.text


async def test_an_unreachable_directory_is_a_temporary_auth_failure(make_server, slapd, clients):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    server = await make_server(ldap_overrides(slapd.options(port=dead_port, connect_timeout=1)))
    c = clients("alice@localhost", "alice-secret", mechanisms=["PLAIN"])
    with pytest.raises(AuthFailed) as err:
        await c.login(server.listener_port(0))
    assert err.value.condition == "temporary-auth-failure"
