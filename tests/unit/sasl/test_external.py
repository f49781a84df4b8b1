"""SASL EXTERNAL identity rules (XEP-0178, RFC 6120 §6.4.6).

Each test name is the rule it checks.
"""

from __future__ import annotations

import datetime as dt

import pytest

from xmppd_auth.base import CertDecision, CertFacts
from xmppd.errors import SaslFailureCondition as C
from xmppd.jid import JID
from xmppd.sasl import (
    Challenge,
    ExternalMechanism,
    ExternalPolicy,
    Failure,
    NeedCertAuthorization,
    ProtocolMisuse,
    Success,
    resolve_identity,
)

DOMAIN = "localhost"
STANDARD = ExternalPolicy()
CN = ExternalPolicy(strategies=("standard", "common_name"))
AUTH_ID = ExternalPolicy(strategies=("standard", "auth_id"))
ALL = ExternalPolicy(strategies=("standard", "common_name", "auth_id"))


def facts(*, xmpp_addrs: tuple[str, ...] = (), common_name: str | None = None) -> CertFacts:
    return CertFacts(
        der=b"\x30\x00",
        fingerprint_sha256="00" * 32,
        serial=1,
        subject=f"CN={common_name}" if common_name else "",
        issuer="CN=Test CA",
        not_before=dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc),
        not_after=dt.datetime(2035, 1, 1, tzinfo=dt.timezone.utc),
        xmpp_addrs=xmpp_addrs,
        common_name=common_name,
    )


def resolve(addrs=(), authzid=None, *, cn=None, policy=STANDARD, domain=DOMAIN):
    return resolve_identity(facts(xmpp_addrs=tuple(addrs), common_name=cn), authzid,
                            stream_domain=domain, policy=policy)


def assert_ok(res, jid: str, strategy: str):
    assert res.ok, res.text
    assert (res.jid, res.strategy, res.condition, res.reason) == (JID.parse(jid), strategy, None, None)


def assert_fails(res, condition, reason):
    assert not res.ok and res.jid is None
    assert (res.condition, res.reason) == (condition, reason)
    assert res.text.startswith(reason + ": ")


# -- authzid syntax ---------------------------------------------------------------------

@pytest.mark.parametrize("authzid", [None, "", "="])
def test_external_empty_or_equals_authzid_means_none(authzid):
    assert_ok(resolve(["alice@localhost"], authzid), "alice@localhost", "standard")


@pytest.mark.parametrize("authzid", ["@localhost", "alice@", "a@b@c", "alice@localhost/", "al ice@localhost"])
def test_external_authzid_that_is_not_a_valid_jid_is_invalid_authzid(authzid):
    assert_fails(resolve(["alice@localhost"], authzid), C.INVALID_AUTHZID, "bad-authzid")


def test_external_authzid_without_localpart_is_invalid_authzid():
    assert_fails(resolve(["alice@localhost"], "localhost"), C.INVALID_AUTHZID, "bad-authzid")


# -- standard: one xmppAddr -------------------------------------------------------------

def test_external_one_xmppaddr_without_authzid_logs_in_as_that_jid():
    assert_ok(resolve(["alice@localhost"]), "alice@localhost", "standard")


def test_external_one_xmppaddr_with_authzid_equal_to_it_is_accepted():
    # Conversations and old Gajim always send the bare JID (MongooseIM wrongly rejects it)
    assert_ok(resolve(["alice@localhost"], "alice@localhost"), "alice@localhost", "standard")


def test_external_authzid_is_compared_as_bare_jid_after_precis():
    assert_ok(resolve(["alice@localhost"], "ALICE@LocalHost"), "alice@localhost", "standard")
    assert_ok(resolve(["Alice@LOCALHOST"], "alice@localhost/phone"), "alice@localhost", "standard")


def test_external_one_xmppaddr_with_authzid_for_another_jid_is_authzid_mismatch():
    res = resolve(["alice@localhost"], "bob@localhost")
    assert_fails(res, C.INVALID_AUTHZID, "authzid-mismatch")
    assert res.text == "authzid-mismatch: certificate is for alice@localhost, not bob@localhost"


def test_external_duplicate_xmppaddrs_count_as_one_identity():
    assert_ok(resolve(["alice@localhost", "ALICE@localhost"]), "alice@localhost", "standard")


# -- standard: several xmppAddrs ------------------------------------------------------------

def test_external_two_xmppaddrs_without_authzid_fails():
    res = resolve(["alice@localhost", "bob@localhost"])
    assert_fails(res, C.INVALID_AUTHZID, "ambiguous-identity")
    assert "alice@localhost" in res.text and "bob@localhost" in res.text


def test_external_two_xmppaddrs_with_authzid_among_them_logs_in_as_the_authzid():
    assert_ok(resolve(["alice@localhost", "bob@localhost"], "bob@localhost"), "bob@localhost", "standard")


def test_external_two_xmppaddrs_with_authzid_not_among_them_is_authzid_mismatch():
    assert_fails(resolve(["alice@localhost", "bob@localhost"], "carol@localhost"),
                 C.INVALID_AUTHZID, "authzid-mismatch")


# -- non-user xmppAddr values --------------------------------------------------------------------

def test_external_domain_only_xmppaddr_is_not_a_user_identity():
    # ejabberd lets a domain-only xmppAddr log in as anyone on the domain: not here
    assert_fails(resolve(["localhost"], "alice@localhost", policy=STANDARD),
                 C.NOT_AUTHORIZED, "no-xmppaddr")


def test_external_xmppaddr_with_resource_is_not_a_user_identity():
    assert_fails(resolve(["alice@localhost/phone"]), C.NOT_AUTHORIZED, "no-xmppaddr")


def test_external_invalid_xmppaddr_is_ignored():
    assert_fails(resolve(["@@bad"]), C.NOT_AUTHORIZED, "no-xmppaddr")
    assert_ok(resolve(["@@bad", "localhost", "alice@localhost"]), "alice@localhost", "standard")


def test_external_ignored_xmppaddrs_are_named_in_the_failure_text():
    res = resolve(["localhost"])
    assert "'localhost'" in res.text


def test_external_cert_with_only_non_user_xmppaddrs_may_use_fallbacks():
    assert_ok(resolve(["localhost"], cn="alice", policy=CN), "alice@localhost", "common_name")


# -- fallbacks never apply to a cert that names users -----------------------------------------------

def test_external_auth_id_is_never_used_for_a_cert_that_carries_xmppaddrs():
    # a certificate for bob must not log in as alice, whatever the policy
    assert_fails(resolve(["bob@localhost"], "alice@localhost", policy=ALL),
                 C.INVALID_AUTHZID, "authzid-mismatch")


def test_external_common_name_is_never_used_for_a_cert_that_carries_xmppaddrs():
    assert_fails(resolve(["bob@localhost"], "alice@localhost", cn="alice", policy=ALL),
                 C.INVALID_AUTHZID, "authzid-mismatch")
    assert_ok(resolve(["bob@localhost"], cn="alice", policy=ExternalPolicy(("common_name", "standard"))),
              "bob@localhost", "standard")


def test_external_cert_with_xmppaddrs_fails_when_standard_is_not_enabled():
    assert_fails(resolve(["alice@localhost"], "alice@localhost", cn="alice",
                         policy=ExternalPolicy(("common_name", "auth_id"))),
                 C.NOT_AUTHORIZED, "standard-disabled")


# -- no xmppAddr: common_name ---------------------------------------------------------------------

def test_external_no_xmppaddr_standard_only_is_no_xmppaddr():
    assert_fails(resolve([], "alice@localhost", cn="alice"), C.NOT_AUTHORIZED, "no-xmppaddr")


def test_external_common_name_gives_cn_at_stream_domain():
    assert_ok(resolve([], cn="Alice", policy=CN), "alice@localhost", "common_name")


def test_external_common_name_applies_prefix_and_suffix():
    policy = ExternalPolicy(("standard", "common_name"), cn_prefix="emp-", cn_suffix=".x")
    assert_ok(resolve([], cn="alice", policy=policy), "emp-alice.x@localhost", "common_name")


def test_external_common_name_with_equal_authzid_is_accepted():
    assert_ok(resolve([], "alice@localhost", cn="alice", policy=CN), "alice@localhost", "common_name")


def test_external_common_name_with_other_authzid_is_authzid_mismatch():
    assert_fails(resolve([], "bob@localhost", cn="alice", policy=CN), C.INVALID_AUTHZID, "authzid-mismatch")


def test_external_common_name_is_not_used_unless_configured():
    assert_fails(resolve([], cn="alice"), C.NOT_AUTHORIZED, "no-xmppaddr")


@pytest.mark.parametrize("cn", [None, "", "Alice Smith@Example", "a/b:c"])
def test_external_missing_or_invalid_cn_falls_through_to_the_next_strategy(cn):
    assert_fails(resolve([], cn=cn, policy=CN), C.NOT_AUTHORIZED, "no-xmppaddr")
    assert_ok(resolve([], "carol@localhost", cn=cn, policy=ALL), "carol@localhost", "auth_id")


# -- no xmppAddr: auth_id -------------------------------------------------------------------------

def test_external_auth_id_trusts_an_authzid_on_the_stream_domain():
    assert_ok(resolve([], "alice@localhost", policy=AUTH_ID), "alice@localhost", "auth_id")


def test_external_auth_id_is_not_used_unless_configured():
    assert_fails(resolve([], "alice@localhost"), C.NOT_AUTHORIZED, "no-xmppaddr")


def test_external_auth_id_without_authzid_is_no_xmppaddr():
    assert_fails(resolve([], policy=AUTH_ID), C.NOT_AUTHORIZED, "no-xmppaddr")


def test_external_auth_id_with_authzid_on_another_domain_is_wrong_domain():
    assert_fails(resolve([], "alice@example.org", policy=AUTH_ID), C.NOT_AUTHORIZED, "wrong-domain")


def test_external_strategies_are_tried_in_configured_order():
    # CN first: the authzid must then equal the CN JID
    assert_fails(resolve([], "bob@localhost", cn="alice", policy=ALL), C.INVALID_AUTHZID, "authzid-mismatch")
    # auth_id first: the authzid wins
    policy = ExternalPolicy(("standard", "auth_id", "common_name"))
    assert_ok(resolve([], "bob@localhost", cn="alice", policy=policy), "bob@localhost", "auth_id")
    # no authzid: auth_id does not apply, CN does
    assert_ok(resolve([], cn="alice", policy=policy), "alice@localhost", "common_name")


# -- domain -------------------------------------------------------------------------------------------

def test_external_xmppaddr_on_another_domain_is_wrong_domain():
    res = resolve(["alice@example.org"])
    assert_fails(res, C.NOT_AUTHORIZED, "wrong-domain")
    assert "alice@example.org" in res.text and "localhost" in res.text


def test_external_stream_domain_is_compared_after_normalisation():
    assert_ok(resolve(["alice@LocalHost"], domain="LOCALHOST."), "alice@localhost", "standard")


def test_external_several_xmppaddrs_authzid_on_another_domain_is_wrong_domain():
    assert_fails(resolve(["alice@localhost", "alice@example.org"], "alice@example.org"),
                 C.NOT_AUTHORIZED, "wrong-domain")


# -- policy validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("strategies", [(), ("standard", "bogus"), ("standard", "standard"), "standard"])
def test_external_policy_rejects_bad_strategy_lists(strategies):
    with pytest.raises(ValueError):
        ExternalPolicy(strategies=strategies)


def test_external_policy_accepts_a_list_and_stores_a_tuple():
    assert ExternalPolicy(strategies=["standard", "auth_id"]).strategies == ("standard", "auth_id")


# -- the mechanism --------------------------------------------------------------------------------------

def mech(addrs=("alice@localhost",), *, cn=None, policy=STANDARD):
    return ExternalMechanism(facts(xmpp_addrs=tuple(addrs), common_name=cn),
                             stream_domain=DOMAIN, policy=policy)


def test_external_empty_initial_response_asks_backend_then_succeeds():
    m = mech()
    assert m.start(b"") == NeedCertAuthorization("alice", "localhost")
    assert m.provide(CertDecision.accept()) == Success("alice", None, None, strategy="standard")
    assert m.done and m.resolution.jid == JID.parse("alice@localhost")


def test_external_without_initial_response_sends_empty_challenge_and_reads_authzid():
    m = mech(("alice@localhost", "bob@localhost"))
    assert m.start(None) == Challenge(b"")
    assert m.respond(b"bob@localhost") == NeedCertAuthorization("bob", "localhost")
    assert m.provide(CertDecision.accept()) == Success("bob", "bob@localhost", None, strategy="standard")


def test_external_authzid_in_success_is_the_normalised_bare_jid():
    m = mech()
    m.start(b"Alice@LOCALHOST")
    assert m.provide(CertDecision.accept()).authzid == "alice@localhost"


def test_external_equals_sign_response_means_no_authzid():
    m = mech()
    m.start(None)
    assert m.respond(b"=") == NeedCertAuthorization("alice", "localhost")
    assert m.provide(CertDecision.accept()).authzid is None


def test_external_backend_refusal_is_not_authorized_with_its_reason():
    m = mech()
    m.start(b"")
    f = m.provide(CertDecision.refuse("no-account"))
    assert isinstance(f, Failure)
    assert (f.condition, f.reason) == (C.NOT_AUTHORIZED, "no-account")
    assert f.text.startswith("no-account: ") and "alice@localhost" in f.text


def test_external_backend_refusal_account_disabled_maps_to_account_disabled():
    m = mech()
    m.start(b"")
    f = m.provide(CertDecision.refuse("account-disabled"))
    assert (f.condition, f.reason) == (C.ACCOUNT_DISABLED, "account-disabled")


def test_external_backend_refusal_without_reason_is_not_authorized():
    m = mech()
    m.start(b"")
    f = m.provide(CertDecision(False))
    assert (f.condition, f.reason) == (C.NOT_AUTHORIZED, "not-authorized")


def test_external_resolution_failure_is_returned_without_asking_the_backend():
    m = mech()
    f = m.start(b"bob@localhost")
    assert f == Failure(C.INVALID_AUTHZID, "authzid-mismatch",
                        "authzid-mismatch: certificate is for alice@localhost, not bob@localhost")
    assert m.done


def test_external_success_reports_the_auth_id_strategy_for_loud_logging():
    m = mech((), policy=AUTH_ID)
    assert m.start(b"carol@localhost") == NeedCertAuthorization("carol", "localhost")
    assert m.provide(CertDecision.accept()).strategy == "auth_id"


def test_external_success_reports_the_common_name_strategy():
    m = mech((), cn="dave", policy=CN)
    m.start(b"")
    assert m.provide(CertDecision.accept()) == Success("dave", None, None, strategy="common_name")


def test_external_non_utf8_authzid_is_malformed():
    f = mech().start(b"\xff")
    assert (f.condition, f.reason) == (C.MALFORMED_REQUEST, "malformed-request")


def test_external_overlong_authzid_is_malformed():
    f = mech().start(b"a" * 4000 + b"@localhost")
    assert (f.condition, f.reason) == (C.MALFORMED_REQUEST, "malformed-request")


def test_external_answer_must_be_a_cert_decision():
    m = mech()
    m.start(b"")
    with pytest.raises(ProtocolMisuse):
        m.provide(True)


def test_external_every_failure_text_contains_its_reason_code():
    cases = [
        resolve(["alice@localhost"], "bob@localhost"),
        resolve(["alice@localhost", "bob@localhost"]),
        resolve([]),
        resolve(["alice@example.org"]),
        resolve(["alice@localhost"], "@bad"),
    ]
    for res in cases:
        assert res.reason and res.reason in res.text and len(res.text) > len(res.reason) + 10
