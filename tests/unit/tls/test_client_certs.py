"""Client-certificate verification over real in-memory TLS handshakes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL

VERSIONS = pytest.mark.parametrize("max_version", [SSL.TLS1_3_VERSION, SSL.TLS1_2_VERSION],
                                   ids=["tls1.3", "tls1.2"])


@pytest.fixture(scope="module")
def certs(pki):
    """Client certificates shared by the tests of this module."""
    server_only = [ExtendedKeyUsageOID.SERVER_AUTH]
    return {
        "alice": pki.client("alice", xmpp_addrs=["alice@localhost"]),
        "two": pki.client("two", xmpp_addrs=["alice@localhost", "bob@localhost"]),
        "names": pki.client("names", common_name="Alice Liddell", email="alice@mail.example",
                            uid="aliddell"),
        "expired": pki.expired_client("expired", xmpp_addrs=["alice@localhost"]),
        "future": pki.future_client("future", xmpp_addrs=["alice@localhost"]),
        "untrusted": pki.client("untrusted", ca="other", xmpp_addrs=["alice@localhost"]),
        "selfsigned": pki.client("selfsigned", ca=None, xmpp_addrs=["alice@localhost"]),
        "selfsigned-expired": pki.expired_client("selfsigned-expired", ca=None),
        "selfsigned-server-eku": pki.client("selfsigned-server-eku", ca=None, ekus=server_only),
        "server-eku": pki.client("server-eku", xmpp_addrs=["alice@localhost"], ekus=server_only),
        "no-eku": pki.client("no-eku", xmpp_addrs=["alice@localhost"], ekus=None),
        "any-eku": pki.client("any-eku", ekus=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]),
        "revoked": pki.client("revoked", xmpp_addrs=["alice@localhost"]),
    }


def _rejected(pair, reason):
    """With disconnect_on_failure: the server aborts and the client gets an alert."""
    assert pair.server_error is not None, "handshake should have failed"
    assert pair.server_error.reason == reason
    assert not pair.engine.handshake_done
    assert pair.client_error is not None  # the alert reached the client
    check = pair.engine.peer_cert_check()
    assert (check.presented, check.ok, check.reason) == (True, False, reason)


@VERSIONS
def test_valid_client_cert_is_accepted_with_facts_and_xmpp_addr(make_server, connect, certs,
                                                                max_version):
    pair = connect(make_server(), certs["alice"], max_version=max_version)
    assert pair.handshake_ok
    check = pair.engine.peer_cert_check()
    assert (check.presented, check.ok, check.reason) == (True, True, None)
    assert check.facts.xmpp_addrs == ("alice@localhost",)
    assert check.facts.fingerprint_sha256 == certs["alice"].fingerprint_sha256


def test_two_xmpp_addrs_are_extracted_in_order(make_server, connect, certs):
    check = connect(make_server(), certs["two"]).engine.peer_cert_check()
    assert check.ok
    assert check.facts.xmpp_addrs == ("alice@localhost", "bob@localhost")


def test_common_name_email_and_uid_reach_the_facts(make_server, connect, certs):
    check = connect(make_server(), certs["names"]).engine.peer_cert_check()
    assert check.ok
    assert check.facts.xmpp_addrs == ()
    assert (check.facts.common_name, check.facts.email, check.facts.uid) == (
        "Alice Liddell", "alice@mail.example", "aliddell")


@VERSIONS
def test_client_without_cert_completes_the_handshake_with_presented_false(make_server, connect,
                                                                          max_version):
    pair = connect(make_server(), None, max_version=max_version)
    assert pair.handshake_ok
    check = pair.engine.peer_cert_check()
    assert (check.presented, check.ok, check.reason, check.facts) == (False, False, "no-cert",
                                                                      None)


@VERSIONS
@pytest.mark.parametrize("name, reason", [
    ("expired", "expired"),
    ("future", "not-yet-valid"),
    ("untrusted", "unknown-ca"),
    ("selfsigned", "self-signed"),
    ("server-eku", "eku-not-client-auth"),
])
def test_bad_client_cert_aborts_the_handshake_with_its_reason(make_server, connect, certs, name,
                                                              reason, max_version):
    pair = connect(make_server(), certs[name], max_version=max_version)
    _rejected(pair, reason)
    # the audit log can still record which certificate it was
    assert pair.server_error.facts.fingerprint_sha256 == certs[name].fingerprint_sha256


def test_expired_client_cert_is_rejected_with_reason_expired(make_server, connect, certs):
    _rejected(connect(make_server(), certs["expired"]), "expired")


def test_not_yet_valid_client_cert_is_rejected_with_reason_not_yet_valid(make_server, connect,
                                                                         certs):
    _rejected(connect(make_server(), certs["future"]), "not-yet-valid")


def test_client_cert_from_an_untrusted_ca_is_rejected_with_unknown_ca(make_server, connect,
                                                                      certs):
    _rejected(connect(make_server(), certs["untrusted"]), "unknown-ca")


def test_self_signed_client_cert_is_rejected_under_peer(make_server, connect, certs):
    _rejected(connect(make_server(verify_mode="peer"), certs["selfsigned"]), "self-signed")


def test_self_signed_client_cert_is_accepted_under_selfsigned_peer(make_server, connect, certs):
    pair = connect(make_server(verify_mode="selfsigned_peer"), certs["selfsigned"])
    assert pair.handshake_ok
    check = pair.engine.peer_cert_check()
    assert check.ok and check.facts.xmpp_addrs == ("alice@localhost",)


def test_selfsigned_peer_still_checks_dates_and_eku(make_server, connect, certs):
    server = make_server(verify_mode="selfsigned_peer")
    _rejected(connect(server, certs["selfsigned-expired"]), "expired")
    _rejected(connect(server, certs["selfsigned-server-eku"]), "eku-not-client-auth")


def test_selfsigned_peer_still_rejects_certs_from_unknown_cas(make_server, connect, certs):
    _rejected(connect(make_server(verify_mode="selfsigned_peer"), certs["untrusted"]),
              "unknown-ca")


def test_verify_mode_none_requests_no_cert_at_all(make_server, connect, certs):
    server = make_server(verify_mode="none")
    assert server.requests_client_cert is False
    pair = connect(server, certs["selfsigned"])
    assert pair.handshake_ok
    assert pair.client.get_client_ca_list() == []
    check = pair.engine.peer_cert_check()
    assert (check.presented, check.reason) == (False, "no-cert")


def test_no_cacertfile_means_no_cert_is_requested(make_server, connect, certs):
    server = make_server(cacertfile=None)
    assert server.requests_client_cert is False
    pair = connect(server, certs["alice"])
    assert pair.handshake_ok
    assert pair.engine.peer_cert_check().presented is False


def test_eku_server_auth_only_is_rejected_with_eku_not_client_auth(make_server, connect, certs):
    _rejected(connect(make_server(), certs["server-eku"]), "eku-not-client-auth")


def test_cert_without_eku_extension_or_with_any_eku_is_accepted(make_server, connect, certs):
    server = make_server()
    assert connect(server, certs["no-eku"]).engine.peer_cert_check().ok
    assert connect(server, certs["any-eku"]).engine.peer_cert_check().ok


@VERSIONS
def test_disconnect_on_failure_false_completes_the_handshake_but_marks_the_cert_bad(
        make_server, connect, certs, max_version):
    server = make_server(disconnect_on_failure=False)
    for name, reason in [("expired", "expired"), ("untrusted", "unknown-ca"),
                         ("selfsigned", "self-signed"), ("server-eku", "eku-not-client-auth")]:
        pair = connect(server, certs[name], max_version=max_version)
        assert pair.handshake_ok, name
        check = pair.engine.peer_cert_check()
        assert (check.presented, check.ok, check.reason) == (True, False, reason)
        # facts are still there for the audit log, but ok=False forbids using them
        assert check.facts.fingerprint_sha256 == certs[name].fingerprint_sha256
    assert connect(server, certs["alice"]).engine.peer_cert_check().ok


def test_disconnect_on_failure_true_aborts_the_handshake(make_server, connect, certs):
    pair = connect(make_server(disconnect_on_failure=True), certs["expired"])
    _rejected(pair, "expired")
    with pytest.raises(Exception) as info:
        pair.engine.read()
    assert info.value.reason == "expired"  # the failure is sticky


def test_revoked_client_cert_in_a_crl_is_rejected_with_reason_revoked(make_server, connect,
                                                                      certs, pki):
    crl = pki.crl("revoked-list", [certs["revoked"]])
    server = make_server(crl_files=[crl])
    _rejected(connect(server, certs["revoked"]), "revoked")
    assert connect(server, certs["alice"]).engine.peer_cert_check().ok
    lenient = make_server(crl_files=[crl], disconnect_on_failure=False)
    check = connect(lenient, certs["revoked"]).engine.peer_cert_check()
    assert (check.ok, check.reason) == (False, "revoked")


def test_crl_checking_fails_closed_for_an_issuer_without_a_crl(make_server, connect, pki,
                                                               tmp_path):
    from xmppd.pki import create_ca, issue_client_cert, write_cert, write_private_key

    second = create_ca("second trusted CA")
    bundle = pki.bundle("two-cas", pki.ca.cert, second.cert)
    client = issue_client_cert(second, xmpp_addrs=["carol@localhost"])
    write_cert(tmp_path / "carol.pem", client.cert)
    write_private_key(tmp_path / "carol.key", client.key)
    from tests.support.pki import CertFiles

    carol = CertFiles(client, tmp_path / "carol.pem", tmp_path / "carol.key")
    server = make_server(cacertfile=bundle, crl_files=[pki.crl("empty-list", [])])
    _rejected(connect(server, carol), "revocation-unknown")
    # without CRLs configured there is no revocation checking at all
    assert connect(make_server(cacertfile=bundle), carol).engine.peer_cert_check().ok


def test_client_cert_with_intermediate_ca_chain_is_accepted(make_server, connect, pki,
                                                            tmp_path):
    """The client sends leaf + intermediate; only the root is in cacertfile."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from tests.support.pki import CertFiles
    from xmppd.pki import Issued, issue_client_cert, write_cert, write_private_key
    from xmppd.pki.issue import _new_key

    key = _new_key("ec")
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "intermediate")])
    inter_cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(pki.ca.cert.subject)
        .public_key(key.public_key()).serial_number(4242)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=9))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(pki.ca.key, hashes.SHA256()))
    # the test CA has pathLen 0, so a chain through an intermediate must fail ...
    inter = Issued(inter_cert, key)
    leaf = issue_client_cert(inter, xmpp_addrs=["dave@localhost"])
    write_cert(tmp_path / "dave.pem", leaf.cert, inter_cert)
    write_private_key(tmp_path / "dave.key", leaf.key)
    dave = CertFiles(leaf, tmp_path / "dave.pem", tmp_path / "dave.key")
    pair = connect(make_server(disconnect_on_failure=False), dave)
    assert pair.handshake_ok
    check = pair.engine.peer_cert_check()
    assert (check.ok, check.reason) == (False, "invalid-chain")
    # ... while trusting the intermediate itself (partial chain) works
    bundle = pki.bundle("inter-bundle", inter_cert)
    check = connect(make_server(cacertfile=bundle), dave).engine.peer_cert_check()
    assert check.ok and check.facts.xmpp_addrs == ("dave@localhost",)


def test_ca_names_from_cacertfile_appear_in_the_client_view(make_server, connect, certs, pki):
    pair = connect(make_server(), certs["alice"])
    names = [n.der() for n in pair.client.get_client_ca_list()]
    assert names == [pki.ca.cert.subject.public_bytes()]
    bundle = pki.bundle("ca-names-bundle", pki.ca.cert, pki.other_ca.cert)
    pair = connect(make_server(cacertfile=bundle), None)
    names = [n.der() for n in pair.client.get_client_ca_list()]
    assert names == [pki.ca.cert.subject.public_bytes(), pki.other_ca.cert.subject.public_bytes()]


def test_rsa_client_cert_is_accepted(make_server, connect, pki):
    rsa_client = pki.client("rsa-client", xmpp_addrs=["rsa@localhost"], key_type="rsa")
    check = connect(make_server(), rsa_client).engine.peer_cert_check()
    assert check.ok
    assert check.facts.der == rsa_client.x509.public_bytes(serialization.Encoding.DER)
