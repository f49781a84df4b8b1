"""Step types, helpers and the call-order rules shared by every mechanism."""

from __future__ import annotations

import dataclasses

import pytest

from xmppd.errors import SaslFailureCondition as C
from xmppd.sasl import (
    ALL_MECHANISMS,
    Challenge,
    ExternalMechanism,
    ExternalPolicy,
    Failure,
    NeedPasswordCheck,
    PlainMechanism,
    ProtocolMisuse,
    ScramMechanism,
    Success,
    authzid_failure,
    create_mechanism,
    mechanism_names,
    prepare_password,
    prepare_username,
)

from .test_external import facts


def test_steps_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Challenge(b"").data = b"x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Success("a", None, None).username = "b"  # type: ignore[misc]


def test_success_strategy_defaults_to_none():
    assert Success("alice", None, None).strategy is None


def test_need_password_check_repr_does_not_show_the_password():
    assert "s3cret" not in repr(NeedPasswordCheck("alice", "s3cret"))


def test_prepare_username_and_password():
    assert prepare_username("Alice") == "alice"
    with pytest.raises(ValueError):
        prepare_username("a@b")
    assert prepare_password("pencil") == "pencil"
    with pytest.raises(ValueError):
        prepare_password("")


def test_fail_ends_the_exchange_from_outside():
    m = PlainMechanism()
    m.start(b"\x00alice\x00pw")
    f = m.fail(C.TEMPORARY_AUTH_FAILURE, "backend-unavailable", "the account database did not answer")
    assert f == Failure(C.TEMPORARY_AUTH_FAILURE, "backend-unavailable",
                        "backend-unavailable: the account database did not answer")
    assert m.done and m.pending_need is None
    with pytest.raises(ProtocolMisuse):
        m.provide(True)
    with pytest.raises(ProtocolMisuse):
        m.fail(C.ABORTED, "aborted", "again")


def test_pending_need_is_exposed_while_waiting():
    m = PlainMechanism()
    step = m.start(b"\x00alice\x00pw")
    assert m.pending_need == step
    m.provide(True)
    assert m.pending_need is None


@pytest.mark.parametrize("authzid", [None, "", "=", "alice@localhost", "Alice@LOCALHOST",
                                     "alice@localhost/phone"])
def test_authzid_failure_accepts_own_jid(authzid):
    assert authzid_failure(authzid, "alice", "localhost") is None


def test_authzid_failure_rejects_other_jid():
    f = authzid_failure("bob@localhost", "alice", "localhost")
    assert f.condition == C.INVALID_AUTHZID and f.reason == "authzid-mismatch"
    assert "alice@localhost" in f.text and "bob@localhost" in f.text


def test_authzid_failure_rejects_invalid_jid():
    f = authzid_failure("@@", "alice", "localhost")
    assert f.condition == C.INVALID_AUTHZID and f.reason == "bad-authzid"


# -- offering and building mechanisms ---------------------------------------------------

def test_mechanism_names_full_house_in_preference_order():
    names = mechanism_names(channel_bindings={"tls-exporter": b"x" * 32}, cert_verified=True)
    assert names == list(ALL_MECHANISMS)


def test_mechanism_names_without_cert_or_channel_binding():
    assert mechanism_names() == ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def test_mechanism_names_no_plain_on_unencrypted_stream():
    assert "PLAIN" not in mechanism_names(encrypted=False)


def test_mechanism_names_respects_configuration():
    names = mechanism_names(["external", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"],
                            channel_bindings={"tls-exporter": b"x"}, cert_verified=True)
    assert names == ["EXTERNAL", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]


def test_mechanism_names_unknown_name_is_a_config_error():
    with pytest.raises(ValueError):
        mechanism_names(["DIGEST-MD5"])


def test_create_mechanism_builds_each_kind():
    cb = {"tls-exporter": b"x" * 32}
    offered = mechanism_names(channel_bindings=cb, cert_verified=True)
    f = facts(xmpp_addrs=("alice@localhost",))
    kw = dict(offered=offered, channel_bindings=cb, cert_facts=f, stream_domain="localhost",
              external_policy=ExternalPolicy())
    assert isinstance(create_mechanism("EXTERNAL", **kw), ExternalMechanism)
    assert isinstance(create_mechanism("PLAIN", **kw), PlainMechanism)
    m = create_mechanism("SCRAM-SHA-256-PLUS", **kw)
    assert isinstance(m, ScramMechanism) and m.plus and m.name == "SCRAM-SHA-256-PLUS"
    m = create_mechanism("SCRAM-SHA-1", **kw)
    assert isinstance(m, ScramMechanism) and not m.plus


def test_create_mechanism_refuses_what_was_not_offered():
    assert create_mechanism("EXTERNAL", offered=["PLAIN"]) is None
    assert create_mechanism("X-FOO", offered=["PLAIN"]) is None


def test_create_mechanism_scram_detects_downgrade_when_plus_was_offered():
    cb = {"tls-exporter": b"x" * 32}
    m = create_mechanism("SCRAM-SHA-256", offered=mechanism_names(channel_bindings=cb), channel_bindings=cb)
    step = m.start(b"y,,n=alice,r=abc")
    assert step.reason == "channel-binding-downgrade"
