"""SASL PLAIN (RFC 4616)."""

from __future__ import annotations

import pytest

from xmppd.errors import SaslFailureCondition as C
from xmppd.sasl import Challenge, Failure, NeedPasswordCheck, PlainMechanism, ProtocolMisuse, Success
from xmppd.sasl.plain import MAX_PLAIN_MESSAGE_BYTES


def assert_failure(step, condition, reason):
    assert isinstance(step, Failure), step
    assert (step.condition, step.reason) == (condition, reason)
    assert step.text.startswith(reason + ":")


def test_plain_initial_response_asks_backend_then_succeeds():
    m = PlainMechanism()
    step = m.start(b"\x00alice\x00secret")
    assert step == NeedPasswordCheck("alice", "secret")
    assert m.provide(True) == Success("alice", None, None)
    assert m.done


def test_plain_without_initial_response_sends_empty_challenge_first():
    m = PlainMechanism()
    assert m.start(None) == Challenge(b"")
    assert m.respond(b"\x00alice\x00secret") == NeedPasswordCheck("alice", "secret")
    assert isinstance(m.provide(True), Success)


def test_plain_wrong_password_fails_bad_credentials():
    m = PlainMechanism()
    m.start(b"\x00alice\x00wrong")
    assert_failure(m.provide(False), C.NOT_AUTHORIZED, "bad-credentials")


def test_plain_authzid_is_returned_for_the_shell():
    m = PlainMechanism()
    m.start(b"alice@localhost\x00alice\x00secret")
    assert m.provide(True) == Success("alice", "alice@localhost", None)


def test_plain_username_is_case_mapped_and_password_opaquestring_prepared():
    m = PlainMechanism()
    # U+2126 OHM SIGN -> U+03A9 under NFC
    step = m.start("\x00ALICE\x00\u2126mega".encode())
    assert step == NeedPasswordCheck("alice", "\u03a9mega")


def test_plain_need_password_check_repr_hides_the_password():
    step = PlainMechanism().start(b"\x00alice\x00hunter2")
    assert "hunter2" not in repr(step)
    assert "alice" in repr(step)


@pytest.mark.parametrize("message", [
    b"",  # empty initial response ("=" on the wire)
    b"alice\x00secret",  # one NUL
    b"\x00alice\x00secret\x00",  # three NULs
    b"\x00\x00secret",  # empty authcid
    b"\x00alice\x00",  # empty password
    b"\x00al\xffice\x00secret",  # not UTF-8
])
def test_plain_malformed_message_fails(message):
    assert_failure(PlainMechanism().start(message), C.MALFORMED_REQUEST, "malformed-request")


def test_plain_message_over_the_bound_fails():
    msg = b"\x00alice\x00" + b"x" * MAX_PLAIN_MESSAGE_BYTES
    assert_failure(PlainMechanism().start(msg), C.MALFORMED_REQUEST, "malformed-request")


def test_plain_message_at_the_bound_is_accepted():
    msg = b"\x00alice\x00" + b"x" * (MAX_PLAIN_MESSAGE_BYTES - 7)
    assert len(msg) == MAX_PLAIN_MESSAGE_BYTES
    assert isinstance(PlainMechanism().start(msg), NeedPasswordCheck)


def test_plain_invalid_username_fails_bad_username():
    assert_failure(PlainMechanism().start(b"\x00alice@localhost\x00pw"), C.NOT_AUTHORIZED, "bad-username")


def test_plain_password_refused_by_opaquestring_fails_like_a_wrong_password():
    assert_failure(PlainMechanism().start(b"\x00alice\x00a\x01b"), C.NOT_AUTHORIZED, "bad-credentials")


def test_plain_answer_must_be_bool():
    m = PlainMechanism()
    m.start(b"\x00alice\x00pw")
    with pytest.raises(ProtocolMisuse):
        m.provide(1)
    with pytest.raises(ProtocolMisuse):
        m.provide(None)


def test_plain_respond_after_failure_is_protocol_misuse():
    m = PlainMechanism()
    m.start(b"")
    with pytest.raises(ProtocolMisuse):
        m.respond(b"\x00alice\x00pw")
