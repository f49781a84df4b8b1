"""SCRAM-* and SCRAM-*-PLUS (RFC 5802, RFC 7677, RFC 9266)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from xmppd_auth.scram import DEFAULT_ITERATIONS, derive
from xmppd.errors import SaslFailureCondition as C
from xmppd.sasl import (
    Challenge,
    Failure,
    NeedScramCredentials,
    ProtocolMisuse,
    ScramMechanism,
    Success,
    prepare_password,
)
from xmppd.sasl.scram import MAX_SCRAM_MESSAGE_BYTES, parse_scram_mechanism_name, scram_mechanism_name

from .scram_client import ScramClient

EXPORTER = bytes(range(32))  # stands in for export_keying_material(...)
END_POINT = b"\xaa" * 32


def creds_for(password: str, hash_name: str, salt: bytes = b"0123456789abcdef", iterations: int = 4096):
    return derive(prepare_password(password), hash_name, salt, iterations)


def mech(hash_name="sha256", *, plus=False, bindings=None, offers_plus=False, nonce="SERVERNONCE"):
    return ScramMechanism(hash_name, plus=plus, channel_bindings=bindings or {},
                          server_offers_plus=offers_plus,
                          nonce_factory=(lambda: nonce) if nonce else None)


def run(m: ScramMechanism, client: ScramClient, creds, *, initial=True, **final_kw):
    """Drive a whole exchange; return the last step."""
    if initial:
        step = m.start(client.first())
    else:
        assert m.start(None) == Challenge(b"")
        step = m.respond(client.first())
    if not isinstance(step, NeedScramCredentials):
        return step
    step = m.provide(creds)
    if not isinstance(step, Challenge):
        return step
    return m.respond(client.final(step.data, **final_kw))


def assert_failure(step, condition, reason):
    assert isinstance(step, Failure), step
    assert step.condition == condition
    assert step.reason == reason
    assert step.text.startswith(reason + ":")


# -- RFC test vectors -------------------------------------------------------------

def test_rfc5802_section5_scram_sha1_exchange_byte_for_byte():
    m = mech("sha1", nonce="3rfcNHYJY1ZVvWVs7j")
    step = m.start(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
    assert step == NeedScramCredentials("user", "sha1")
    creds = derive("pencil", "sha1", base64.b64decode("QSXCR+Q6sek8bf92"), 4096)
    step = m.provide(creds)
    assert step == Challenge(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    step = m.respond(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                     b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert step == Success("user", None, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    assert m.done


def test_rfc7677_section3_scram_sha256_exchange_byte_for_byte():
    m = mech("sha256", nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    step = m.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert step == NeedScramCredentials("user", "sha256")
    creds = derive("pencil", "sha256", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    step = m.provide(creds)
    assert step == Challenge(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                             b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    step = m.respond(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert step == Success("user", None, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


# -- full exchanges with the test client ----------------------------------------------

@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
def test_full_exchange_with_test_client_and_server_signature(hash_name):
    m = mech(hash_name, nonce=None)  # default random server nonce
    client = ScramClient(hash_name, "alice", "correct horse")
    step = run(m, client, creds_for("correct horse", hash_name))
    assert isinstance(step, Success)
    assert step.username == "alice" and step.authzid is None and step.strategy is None
    assert client.verify(step.additional_data)


def test_scram_sha512_without_initial_response_starts_with_empty_challenge():
    m = mech("sha512")
    client = ScramClient("sha512", "alice", "pw")
    step = run(m, client, creds_for("pw", "sha512"), initial=False)
    assert isinstance(step, Success) and client.verify(step.additional_data)


def test_scram_sha512_non_ascii_password_is_prepared_with_opaquestring():
    # U+2126 OHM SIGN is NFC-normalised to U+03A9 by OpaqueString
    m = mech("sha512")
    client = ScramClient("sha512", "alice", "\u2126mega")
    step = run(m, client, creds_for("\u03a9mega", "sha512"))
    assert isinstance(step, Success)


def test_scram_username_is_prepared_case_mapped():
    m = mech()
    assert m.start(b"n,,n=ALICE,r=abc") == NeedScramCredentials("alice", "sha256")


def test_scram_authzid_is_decoded_and_returned_for_the_shell():
    m = mech("sha512")
    client = ScramClient("sha512", "alice", "pw", authzid="alice@example.org")
    step = run(m, client, creds_for("pw", "sha512"))
    assert isinstance(step, Success) and step.authzid == "alice@example.org"


def test_scram_authzid_escapes_2c_and_3d_are_decoded():
    m = mech()
    step = m.start(b"n,a=x=2Cy=3Dz@localhost,n=bob,r=abc")
    assert step == NeedScramCredentials("bob", "sha256")
    client = ScramClient("sha256", "bob", "pw", authzid="x,y=z@localhost", nonce="abc")
    assert client.first() == b"n,a=x=2Cy=3Dz@localhost,n=bob,r=abc"
    step = m.provide(creds_for("pw", "sha256"))
    step = m.respond(client.final(step.data))
    assert isinstance(step, Success) and step.authzid == "x,y=z@localhost"


def test_scram_escaped_username_is_decoded():
    client = ScramClient("sha256", "O,Malley=x", "pw")
    assert b"n=O=2CMalley=3Dx," in client.first()
    assert mech().start(client.first()) == NeedScramCredentials("o,malley=x", "sha256")


def test_scram_bad_escape_in_authzid_fails():
    assert_failure(mech().start(b"n,a=x=41y,n=bob,r=abc"), C.MALFORMED_REQUEST, "malformed-request")


def test_scram_bad_escape_in_username_fails():
    assert_failure(mech().start(b"n,,n=b=ob,r=abc"), C.MALFORMED_REQUEST, "malformed-request")


def test_scram_empty_authzid_attribute_fails():
    assert_failure(mech().start(b"n,a=,n=bob,r=abc"), C.MALFORMED_REQUEST, "malformed-request")


def test_scram_invalid_username_fails_bad_username():
    assert_failure(mech().start(b"n,,n=bob@example.org,r=abc"), C.NOT_AUTHORIZED, "bad-username")


# -- channel binding --------------------------------------------------------------------

@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
def test_plus_with_tls_exporter_succeeds(hash_name):
    m = mech(hash_name, plus=True, bindings={"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT})
    assert m.name == scram_mechanism_name(hash_name, True)
    client = ScramClient(hash_name, "alice", "pw", cb_flag="p=tls-exporter", cb_data=EXPORTER)
    step = run(m, client, creds_for("pw", hash_name))
    assert isinstance(step, Success) and client.verify(step.additional_data)
    assert m.channel_binding_type == "tls-exporter"


def test_plus_with_tls_exporter_and_authzid():
    m = mech("sha256", plus=True, bindings={"tls-exporter": EXPORTER})
    client = ScramClient("sha256", "alice", "pw", authzid="alice@localhost",
                         cb_flag="p=tls-exporter", cb_data=EXPORTER)
    step = run(m, client, creds_for("pw", "sha256"))
    assert isinstance(step, Success) and step.authzid == "alice@localhost"


def test_plus_with_tls_server_end_point_succeeds():
    m = mech("sha256", plus=True, bindings={"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT})
    client = ScramClient("sha256", "alice", "pw", cb_flag="p=tls-server-end-point", cb_data=END_POINT)
    assert isinstance(run(m, client, creds_for("pw", "sha256")), Success)


def test_plus_channel_binding_data_mismatch_fails():
    # e.g. a TLS-terminating man in the middle: the client sees other exporter data
    m = mech("sha256", plus=True, bindings={"tls-exporter": EXPORTER})
    client = ScramClient("sha256", "alice", "pw", cb_flag="p=tls-exporter", cb_data=b"\x00" * 32)
    assert_failure(run(m, client, creds_for("pw", "sha256")), C.NOT_AUTHORIZED, "channel-binding-mismatch")


def test_plus_gs2_header_in_c_must_repeat_the_client_first_header():
    m = mech("sha256", plus=True, bindings={"tls-exporter": EXPORTER})
    client = ScramClient("sha256", "alice", "pw", cb_flag="p=tls-exporter", cb_data=EXPORTER)
    step = m.start(client.first())
    step = m.provide(creds_for("pw", "sha256"))
    final = client.final(step.data)
    # client claims a different header in c= (authzid smuggled in)
    forged_c = base64.b64encode(b"p=tls-exporter,a=admin@localhost," + EXPORTER)
    forged = b"c=" + forged_c + final[final.index(b",r="):]
    assert_failure(m.respond(forged), C.NOT_AUTHORIZED, "channel-binding-mismatch")


def test_non_plus_c_must_be_base64_of_gs2_header():
    m = mech("sha256")
    client = ScramClient("sha256", "alice", "pw")
    m.start(client.first())
    step = m.provide(creds_for("pw", "sha256"))
    final = client.final(step.data).replace(b"c=biws", b"c=eSws")  # "y,,"
    assert_failure(m.respond(final), C.NOT_AUTHORIZED, "channel-binding-mismatch")


def test_y_flag_while_server_offers_plus_is_a_downgrade():
    m = mech("sha256", offers_plus=True)
    client = ScramClient("sha256", "alice", "pw", cb_flag="y")
    assert_failure(run(m, client, creds_for("pw", "sha256")), C.NOT_AUTHORIZED, "channel-binding-downgrade")


def test_y_flag_when_server_offers_no_plus_is_fine():
    m = mech("sha256", offers_plus=False)
    client = ScramClient("sha256", "alice", "pw", cb_flag="y")
    step = run(m, client, creds_for("pw", "sha256"))
    assert isinstance(step, Success)


def test_p_flag_on_non_plus_mechanism_fails():
    m = mech("sha256", bindings={"tls-exporter": EXPORTER}, offers_plus=True)
    client = ScramClient("sha256", "alice", "pw", cb_flag="p=tls-exporter", cb_data=EXPORTER)
    assert_failure(m.start(client.first()), C.MALFORMED_REQUEST, "channel-binding-not-negotiated")


@pytest.mark.parametrize("flag", ["n", "y"])
def test_n_or_y_flag_on_plus_mechanism_fails(flag):
    m = mech("sha256", plus=True, bindings={"tls-exporter": EXPORTER})
    client = ScramClient("sha256", "alice", "pw", cb_flag=flag)
    assert_failure(m.start(client.first()), C.MALFORMED_REQUEST, "channel-binding-required")


@pytest.mark.parametrize("cb_type", ["tls-unique", "tls-server-end-point", "x-made-up"])
def test_unknown_or_unavailable_channel_binding_type_fails(cb_type):
    m = mech("sha256", plus=True, bindings={"tls-exporter": EXPORTER})
    client = ScramClient("sha256", "alice", "pw", cb_flag=f"p={cb_type}")
    assert_failure(m.start(client.first()), C.NOT_AUTHORIZED, "unsupported-channel-binding-type")


def test_invalid_channel_binding_type_name_fails():
    m = mech("sha256", plus=True, bindings={"tls-exporter": EXPORTER})
    assert_failure(m.start(b"p=tls_exporter,,n=alice,r=abc"), C.MALFORMED_REQUEST, "malformed-request")


def test_plus_mechanism_without_bindings_is_a_caller_bug():
    with pytest.raises(ValueError):
        ScramMechanism("sha256", plus=True, channel_bindings={}, server_offers_plus=True)


def test_unknown_hash_is_refused():
    with pytest.raises(ValueError):
        ScramMechanism("md5", plus=False, channel_bindings={}, server_offers_plus=False)


# -- client-first syntax ----------------------------------------------------------------

def test_mandatory_extension_m_is_refused():
    assert_failure(mech().start(b"n,,m=ext,n=alice,r=abc"), C.MALFORMED_REQUEST, "extensions-not-supported")


def test_unknown_optional_extension_after_nonce_is_ignored():
    assert mech().start(b"n,,n=alice,r=abc,x=whatever") == NeedScramCredentials("alice", "sha256")


@pytest.mark.parametrize("message", [
    b"",
    b"n",
    b"n,,",
    b"x,,n=alice,r=abc",
    b"F,n,,n=alice,r=abc",  # GS2 non-standard flag is not SCRAM
    b"n,b=alice,n=alice,r=abc",
    b"n,,r=abc,n=alice",
    b"n,,n=alice",
    b"n,,n=,r=abc",
    b"n,,n=alice,r=",
    b"n,,n=alice,r=a b",
    b"n,,n=alice,r=abc,xy=1",
    b"n,,n=alice,r=abc,1=2",
    b"n,,n=\xff\xfe,r=abc",
    b"n,,n=al\x00ice,r=abc",
])
def test_malformed_client_first_fails(message):
    assert_failure(mech().start(message), C.MALFORMED_REQUEST, "malformed-request")


def test_oversized_client_first_fails():
    msg = b"n,,n=alice,r=" + b"a" * MAX_SCRAM_MESSAGE_BYTES
    assert_failure(mech().start(msg), C.MALFORMED_REQUEST, "malformed-request")


# -- client-final ------------------------------------------------------------------------

def _to_final(m, client, password="pw"):
    m.start(client.first())
    return m.provide(creds_for(password, m.hash_name))


def test_bad_proof_fails_bad_credentials():
    m = mech()
    client = ScramClient("sha256", "alice", "pw")
    step = run(m, client, creds_for("pw", "sha256"), tamper_proof=True)
    assert_failure(step, C.NOT_AUTHORIZED, "bad-credentials")


def test_wrong_password_fails_bad_credentials():
    m = mech()
    client = ScramClient("sha256", "alice", "wrong")
    assert_failure(run(m, client, creds_for("pw", "sha256")), C.NOT_AUTHORIZED, "bad-credentials")


def test_client_final_nonce_mismatch_fails():
    m = mech()
    client = ScramClient("sha256", "alice", "pw", nonce="clientnonce")
    step = _to_final(m, client)
    final = client.final(step.data).replace(b"SERVERNONCE", b"OTHERNONCE")
    assert_failure(m.respond(final), C.NOT_AUTHORIZED, "nonce-mismatch")


@pytest.mark.parametrize("mangle", [
    lambda f: f[: f.index(b",p=")],  # no proof
    lambda f: f.replace(b"c=biws", b"c=bi!s"),  # bad base64
    lambda f: f.replace(b"c=biws,", b""),  # no c=
    lambda f: f[: f.index(b",p=") + 3] + b"AAAA",  # wrong proof length
    lambda f: f + b",x=after-proof",  # proof not last
    lambda f: f.replace(b",p=", b",bad,p="),  # bad extension
    lambda f: f.replace(b"c=", b"c=\xff"),  # not UTF-8
])
def test_malformed_client_final_fails(mangle):
    m = mech()
    client = ScramClient("sha256", "alice", "pw")
    step = _to_final(m, client)
    assert_failure(m.respond(mangle(client.final(step.data))), C.MALFORMED_REQUEST, "malformed-request")


def test_optional_extension_in_client_final_is_ignored_but_signed():
    m = mech()
    client = ScramClient("sha256", "alice", "pw")
    step = _to_final(m, client)
    # Rebuild the final message with an extension, signed by hand
    text = step.data.decode()
    creds = creds_for("pw", "sha256")
    without = f"c=biws,r={text.split(',')[0][2:]},x=ext"
    auth_message = f"{client.client_first_bare},{text},{without}".encode()
    salted = hashlib.pbkdf2_hmac("sha256", b"pw", creds.salt, creds.iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    sig = hmac.digest(creds.stored_key, auth_message, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
    assert isinstance(m.respond(f"{without},p={proof}".encode()), Success)


# -- unknown users: no enumeration ------------------------------------------------------------

def test_unknown_user_gets_fake_salt_and_fails_like_a_wrong_password():
    m = mech()
    client = ScramClient("sha256", "ghost", "pw")
    m.start(client.first())
    step = m.provide(None)
    assert isinstance(step, Challenge)
    attrs = dict(a.split("=", 1) for a in step.data.decode().split(","))
    assert int(attrs["i"]) == DEFAULT_ITERATIONS
    assert len(base64.b64decode(attrs["s"])) == 16
    unknown = m.respond(client.final(step.data))

    m2 = mech()
    wrong = run(m2, ScramClient("sha256", "alice", "nope"), creds_for("pw", "sha256"))
    assert unknown == wrong  # same condition, reason and text


def test_unknown_user_fake_salt_is_stable_per_user_and_differs_between_users():
    def server_first(user, hash_name="sha256"):
        m = mech(hash_name)
        m.start(ScramClient(hash_name, user, "pw", nonce="n").first())
        return m.provide(None).data

    assert server_first("ghost") == server_first("ghost")
    assert server_first("ghost") != server_first("phantom")
    assert server_first("ghost", "sha1").split(b",s=")[1] != server_first("ghost", "sha512").split(b",s=")[1]


def test_unknown_user_fails_even_with_proof_computed_from_the_fake_salt():
    m = mech()
    client = ScramClient("sha256", "ghost", "x")
    m.start(client.first())
    step = m.provide(None)
    assert_failure(m.respond(client.final(step.data)), C.NOT_AUTHORIZED, "bad-credentials")


def test_unusable_stored_credentials_fail_temporarily():
    m = mech("sha256")
    m.start(ScramClient("sha256", "alice", "pw").first())
    step = m.provide(creds_for("pw", "sha1"))  # backend handed the wrong hash
    assert_failure(step, C.TEMPORARY_AUTH_FAILURE, "bad-stored-credentials")


# -- call order ------------------------------------------------------------------------------

def test_respond_before_start_is_protocol_misuse():
    with pytest.raises(ProtocolMisuse):
        mech().respond(b"n,,n=alice,r=abc")


def test_provide_without_need_is_protocol_misuse():
    m = mech()
    assert m.start(None) == Challenge(b"")
    with pytest.raises(ProtocolMisuse):
        m.provide(None)


def test_respond_while_waiting_for_backend_is_protocol_misuse():
    m = mech()
    m.start(b"n,,n=alice,r=abc")
    with pytest.raises(ProtocolMisuse):
        m.respond(b"c=biws,r=abc,p=AAAA")


@pytest.mark.parametrize("answer", [True, "creds", b"", 0])
def test_provide_with_wrong_answer_type_is_protocol_misuse(answer):
    m = mech()
    m.start(b"n,,n=alice,r=abc")
    with pytest.raises(ProtocolMisuse):
        m.provide(answer)
    # still waiting: the right answer works
    assert isinstance(m.provide(None), Challenge)


def test_any_call_after_success_is_protocol_misuse():
    m = mech()
    client = ScramClient("sha256", "alice", "pw")
    assert isinstance(run(m, client, creds_for("pw", "sha256")), Success)
    with pytest.raises(ProtocolMisuse):
        m.respond(b"")
    with pytest.raises(ProtocolMisuse):
        m.start(None)


def test_start_twice_is_protocol_misuse():
    m = mech()
    m.start(None)
    with pytest.raises(ProtocolMisuse):
        m.start(None)


def test_non_bytes_input_is_protocol_misuse():
    with pytest.raises(ProtocolMisuse):
        mech().start("n,,n=alice,r=abc")


def test_bad_nonce_factory_is_protocol_misuse():
    m = ScramMechanism("sha256", plus=False, channel_bindings={}, server_offers_plus=False,
                       nonce_factory=lambda: "has,comma")
    with pytest.raises(ProtocolMisuse):
        m.start(b"n,,n=alice,r=abc")


# -- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,parsed", [
    ("SCRAM-SHA-1", ("sha1", False)),
    ("SCRAM-SHA-256-PLUS", ("sha256", True)),
    ("SCRAM-SHA-512", ("sha512", False)),
    ("SCRAM-SHA-224", None),
    ("PLAIN", None),
])
def test_parse_scram_mechanism_name(name, parsed):
    assert parse_scram_mechanism_name(name) == parsed
    if parsed:
        assert scram_mechanism_name(*parsed) == name
        assert mech(parsed[0], plus=parsed[1], bindings={"tls-exporter": EXPORTER}).name == name
