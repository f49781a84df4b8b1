"""auth.ldap against a real, throw-away OpenLDAP slapd (tests/support/slapd.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time

import pytest

from xmppd_auth.base import AuthUnavailable, CertFacts
from xmppd_auth.ldap import LdapAuth
from tests.support.pki import PKIFactory
from tests.support.slapd import PEOPLE, ROOTPW, SUFFIX, LdapUser, start_slapd

DOMAIN = "example.org"
#: scheduling slack on a shared 2-core machine, on top of a configured timeout
SLACK_S = 1.5


def cert(der: bytes) -> CertFacts:
    now = dt.datetime.now(dt.timezone.utc)
    return CertFacts(der=der, fingerprint_sha256="ab" * 32, serial=1, subject="CN=x", issuer="CN=ca",
                     not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=1),
                     xmpp_addrs=("x@example.org",))


def _der(files) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return files.x509.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKIFactory(tmp_path_factory.mktemp("ldap-pki"))


@pytest.fixture(scope="module")
def ders(pki):
    """Real DER certificates (slapd checks the syntax of userCertificate values)."""
    return {"carol": _der(pki.client("carol", xmpp_addrs=["carol@example.org"])),
            "other": _der(pki.client("other", xmpp_addrs=["carol@example.org"]))}


@pytest.fixture(scope="module")
def slapd(tmp_path_factory, ders):
    server = start_slapd(tmp_path_factory.mktemp("slapd"), users=[
        LdapUser("carol", "carol-secret", certs=[ders["carol"]]),
        LdapUser("zoë", "zoë-secret"),
    ])
    yield server
    server.stop()


@pytest.fixture
async def make_method(slapd):
    made: list[LdapAuth] = []

    async def make(**options) -> LdapAuth:
        m = LdapAuth(slapd.options(**options))
        await m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        await m.stop()


@pytest.fixture
async def ldap(make_method):
    return await make_method()


# -- PLAIN ----------------------------------------------------------------------

async def test_the_right_password_is_accepted(ldap):
    assert await ldap.check_password("alice", DOMAIN, "alice-secret") is True
    assert await ldap.check_password("bob", DOMAIN, "bob-secret") is True


async def test_a_wrong_password_is_refused(ldap):
    assert await ldap.check_password("alice", DOMAIN, "bob-secret") is False
    assert await ldap.check_password("alice", DOMAIN, "alice-secret ") is False


async def test_an_empty_password_is_refused_without_any_bind(ldap, monkeypatch):
    binds = []
    monkeypatch.setattr(ldap, "_bind_sync", lambda *a: binds.append(a) or True)
    assert await ldap.check_password("alice", DOMAIN, "") is False
    assert await ldap.check_password("nopass", DOMAIN, "") is False
    assert binds == []


async def test_an_entry_without_userpassword_cannot_log_in(ldap):
    assert await ldap.check_password("nopass", DOMAIN, "anything") is False


async def test_an_unknown_user_is_refused(ldap):
    assert await ldap.check_password("mallory", DOMAIN, "alice-secret") is False


async def test_a_uid_matching_two_entries_is_refused_even_with_the_right_password(ldap):
    assert await ldap.check_password("dup", DOMAIN, "dup-secret") is False


async def test_a_non_ascii_username_is_found_and_logs_in(ldap):
    assert await ldap.user_exists("zoë", DOMAIN) is True
    assert await ldap.check_password("zoë", DOMAIN, "zoë-secret") is True
    assert await ldap.user_exists("zoe", DOMAIN) is False


async def test_the_extra_filter_excludes_entries_that_do_not_match_it(make_method):
    plain = await make_method()
    assert await plain.check_password("svc", DOMAIN, "svc-secret") is True
    persons = await make_method(filter="(objectClass=inetOrgPerson)")
    assert await persons.check_password("svc", DOMAIN, "svc-secret") is False
    assert await persons.user_exists("svc", DOMAIN) is False
    assert await persons.check_password("alice", DOMAIN, "alice-secret") is True


async def test_uids_with_a_format_map_the_username_into_the_attribute(make_method):
    m = await make_method(uids=[{"attr": "mail", "format": "%u@example.org"}])
    assert await m.check_password("alice", DOMAIN, "alice-secret") is True
    assert await m.user_exists("alice@example.org", DOMAIN) is False
    assert await m.user_exists("bob", DOMAIN) is False  # bob has no mail


async def test_a_uid_format_may_use_the_xmpp_domain(make_method):
    m = await make_method(uids=[{"attr": "mail", "format": "%u@%d"}])
    assert await m.user_exists("alice", "example.org") is True
    assert await m.user_exists("alice", "example.net") is False


async def test_several_uids_are_alternatives(make_method):
    m = await make_method(uids=[{"attr": "mail", "format": "%u@corp.example"}, "uid"])
    assert await m.check_password("bob", DOMAIN, "bob-secret") is True


async def test_anonymous_search_then_bind_works_without_a_rootdn(make_method):
    m = await make_method(rootdn="", password="")
    assert await m.check_password("alice", DOMAIN, "alice-secret") is True
    assert await m.check_password("alice", DOMAIN, "nope") is False


# -- user_exists -----------------------------------------------------------------------

async def test_user_exists_is_the_search(ldap):
    assert await ldap.user_exists("alice", DOMAIN) is True
    assert await ldap.user_exists("mallory", DOMAIN) is False
    assert await ldap.user_exists("dup", DOMAIN) is True  # ambiguous, but the name is taken


@pytest.mark.parametrize("user", ["*)(uid=*", "*", "alice)(|(uid=*", "al*", "alice)", "\\2a"])
async def test_a_filter_injection_attempt_matches_nothing(ldap, user, ders):
    assert await ldap.user_exists(user, DOMAIN) is False
    assert await ldap.check_password(user, DOMAIN, "alice-secret") is False
    assert (await ldap.authorize_cert(user, DOMAIN, cert(ders["carol"]))).reason == "no-account"


# -- EXTERNAL --------------------------------------------------------------------------

async def test_authorize_cert_refuses_a_user_without_an_entry_with_no_account(ldap, ders):
    decision = await ldap.authorize_cert("mallory", DOMAIN, cert(ders["other"]))
    assert not decision.ok and decision.reason == "no-account"


async def test_authorize_cert_refuses_an_ambiguous_user(ldap, ders):
    decision = await ldap.authorize_cert("dup", DOMAIN, cert(ders["other"]))
    assert not decision.ok and decision.reason == "ambiguous-account"


async def test_cert_match_none_accepts_any_verified_cert_for_an_existing_user(ldap, ders):
    assert (await ldap.authorize_cert("alice", DOMAIN, cert(ders["other"]))).ok
    assert (await ldap.authorize_cert("carol", DOMAIN, cert(ders["other"]))).ok


async def test_cert_match_always_requires_the_presented_cert_among_the_registered_ones(make_method, ders):
    m = await make_method(cert_match="always")
    assert (await m.authorize_cert("carol", DOMAIN, cert(ders["carol"]))).ok
    mismatch = await m.authorize_cert("carol", DOMAIN, cert(ders["other"]))
    assert not mismatch.ok and mismatch.reason == "cert-not-registered"
    none_stored = await m.authorize_cert("alice", DOMAIN, cert(ders["carol"]))
    assert not none_stored.ok and none_stored.reason == "cert-not-registered"


async def test_cert_match_ifpresent_checks_only_users_with_registered_certs(make_method, ders):
    m = await make_method(cert_match="ifpresent")
    assert (await m.authorize_cert("carol", DOMAIN, cert(ders["carol"]))).ok
    mismatch = await m.authorize_cert("carol", DOMAIN, cert(ders["other"]))
    assert not mismatch.ok and mismatch.reason == "cert-not-registered"
    assert (await m.authorize_cert("alice", DOMAIN, cert(ders["other"]))).ok


async def test_cert_match_reads_a_configured_cert_attribute(slapd, make_method, ders):
    slapd.add(LdapUser("erin", "erin-secret", extra={"userSMIMECertificate": [ders["other"]]}))
    m = await make_method(cert_match="always", cert_attribute="userSMIMECertificate")
    assert (await m.authorize_cert("erin", DOMAIN, cert(ders["other"]))).ok
    assert not (await m.authorize_cert("erin", DOMAIN, cert(ders["carol"]))).ok
    assert not (await m.authorize_cert("carol", DOMAIN, cert(ders["carol"]))).ok


async def test_a_cert_registered_while_running_is_seen_at_the_next_login(slapd, make_method, ders):
    slapd.add(LdapUser("frank", "frank-secret"))
    m = await make_method(cert_match="always")
    assert not (await m.authorize_cert("frank", DOMAIN, cert(ders["other"]))).ok
    slapd.set_certs(f"uid=frank,{PEOPLE}", [ders["other"]])
    assert (await m.authorize_cert("frank", DOMAIN, cert(ders["other"]))).ok


# -- failures --------------------------------------------------------------------------

async def test_a_wrong_rootdn_password_is_unavailable_not_a_refusal(make_method, ders):
    m = await make_method(password="not-the-root-password")
    with pytest.raises(AuthUnavailable) as err:
        await m.check_password("alice", DOMAIN, "alice-secret")
    assert "rootdn" in err.value.reason and "invalidCredentials" in err.value.reason
    assert "not-the-root-password" not in err.value.reason
    with pytest.raises(AuthUnavailable):
        await m.authorize_cert("alice", DOMAIN, cert(ders["other"]))


async def test_a_base_that_does_not_exist_is_unavailable(make_method):
    m = await make_method(base=f"ou=nowhere,{SUFFIX}")
    with pytest.raises(AuthUnavailable) as err:
        await m.user_exists("alice", DOMAIN)
    assert "noSuchObject" in err.value.reason


async def test_a_referral_is_not_followed_and_is_unavailable(make_method):
    at_base = await make_method(base=f"ou=elsewhere,{SUFFIX}")
    with pytest.raises(AuthUnavailable) as err:
        await at_base.check_password("alice", DOMAIN, "alice-secret")
    assert "referral" in err.value.reason
    below = await make_method(base=SUFFIX)  # the subtree holds a referral object
    with pytest.raises(AuthUnavailable) as err:
        await below.user_exists("alice", DOMAIN)
    assert "referral" in err.value.reason


async def test_nothing_listening_is_unavailable_and_names_the_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = LdapAuth({"servers": ["127.0.0.1"], "port": port, "base": PEOPLE, "connect_timeout": 2})
    await m.start()
    try:
        with pytest.raises(AuthUnavailable) as err:
            await m.check_password("alice", DOMAIN, "alice-secret")
        assert f"ldap: cannot reach 127.0.0.1:{port}" in err.value.reason
    finally:
        await m.stop()


async def test_the_next_server_is_used_when_the_first_is_down(make_method):
    m = await make_method(servers=["127.0.0.2", "127.0.0.1"])  # slapd listens on 127.0.0.1 only
    assert await m.check_password("alice", DOMAIN, "alice-secret") is True


async def test_a_stopped_slapd_makes_every_query_unavailable_within_the_timeout(tmp_path, ders):
    own = start_slapd(tmp_path / "slapd")
    m = LdapAuth(own.options(connect_timeout=2, request_timeout=2))
    await m.start()
    try:
        assert await m.check_password("alice", DOMAIN, "alice-secret") is True
        own.stop()
        for query in (lambda: m.check_password("alice", DOMAIN, "alice-secret"),
                      lambda: m.user_exists("alice", DOMAIN),
                      lambda: m.authorize_cert("alice", DOMAIN, cert(ders["other"]))):
            started = time.monotonic()
            with pytest.raises(AuthUnavailable) as err:
                await query()
            assert time.monotonic() - started < 2 + SLACK_S
            assert "127.0.0.1" in err.value.reason
    finally:
        own.stop()
        await m.stop()


async def test_a_server_that_accepts_but_never_answers_times_out_as_unavailable():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
    port = silent.getsockname()[1]
    m = LdapAuth({"servers": ["127.0.0.1"], "port": port, "base": PEOPLE,
                  "connect_timeout": 1, "request_timeout": 1})
    await m.start()
    try:
        started = time.monotonic()
        with pytest.raises(AuthUnavailable):
            await m.check_password("alice", DOMAIN, "alice-secret")
        assert time.monotonic() - started < 1 + SLACK_S
    finally:
        await m.stop()
        silent.close()


async def test_a_stopped_method_answers_unavailable(ldap):
    await ldap.stop()
    with pytest.raises(AuthUnavailable) as err:
        await ldap.user_exists("alice", DOMAIN)
    assert "stopped" in err.value.reason


async def test_concurrent_logins_share_the_bounded_pool(make_method):
    m = await make_method(pool_size=2)
    results = await asyncio.gather(*(m.check_password(u, DOMAIN, f"{u}-secret")
                                     for u in ["alice", "bob", "carol"] * 8))
    assert all(r is True for r in results)
    assert len([t for t in m._executor._threads]) <= 2


async def test_the_rootdn_password_never_appears_in_repr_or_reasons(make_method):
    m = await make_method(password="wrong-" + ROOTPW)
    assert ROOTPW not in repr(m)
    with pytest.raises(AuthUnavailable) as err:
        await m.user_exists("alice", DOMAIN)
    assert ROOTPW not in err.value.reason and ROOTPW not in str(err.value)


# -- LDAPS -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_slapd(tmp_path_factory, pki):
    server = start_slapd(tmp_path_factory.mktemp("slapd-tls"), tls_cert=pki.server.cert,
                         tls_key=pki.server.key)
    yield server
    server.stop()


async def test_ldaps_with_the_right_ca_works(tls_slapd, pki):
    server = tls_slapd
    m = LdapAuth(server.options(servers=["localhost"], port=server.tls_port, tls=True,
                                cacertfile=str(pki.ca_path)))
    await m.start()
    try:
        assert await m.check_password("alice", DOMAIN, "alice-secret") is True
    finally:
        await m.stop()


async def test_ldaps_with_an_untrusted_server_certificate_is_unavailable(tls_slapd, pki):
    server = tls_slapd
    m = LdapAuth(server.options(servers=["localhost"], port=server.tls_port, tls=True,
                                cacertfile=str(pki.other_ca_path)))
    await m.start()
    try:
        with pytest.raises(AuthUnavailable):
            await m.check_password("alice", DOMAIN, "alice-secret")
    finally:
        await m.stop()


async def test_ldaps_checks_the_host_name_in_the_server_certificate(tls_slapd, pki):
    server = tls_slapd  # its certificate names "localhost", not 127.0.0.1
    m = LdapAuth(server.options(servers=["127.0.0.1"], port=server.tls_port, tls=True,
                                cacertfile=str(pki.ca_path)))
    await m.start()
    try:
        with pytest.raises(AuthUnavailable) as err:
            await m.check_password("alice", DOMAIN, "alice-secret")
        assert "127.0.0.1" in err.value.reason
    finally:
        await m.stop()
