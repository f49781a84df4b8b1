"""xmppd.pki.issue: what the issued certificates contain and how files are written."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xmppd.pki import (
    XMPP_ADDR_OID,
    build_crl,
    create_ca,
    ensure_dev_pki,
    export_p12,
    issue_client_cert,
    issue_server_cert,
    load_issued,
    write_cert,
    write_crl,
    write_private_key,
)
from xmppd.tls.identity import cert_facts


@pytest.fixture(scope="module")
def ca():
    return create_ca("unit test CA")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls).value


def test_ca_is_a_self_signed_ca_with_cert_sign_key_usage(ca):
    assert ca.cert.subject == ca.cert.issuer
    assert _ext(ca.cert, x509.BasicConstraints).ca is True
    assert _ext(ca.cert, x509.KeyUsage).key_cert_sign is True
    ca.cert.verify_directly_issued_by(ca.cert)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)


def test_issued_repr_never_shows_the_private_key(ca):
    assert "key=" not in repr(ca)


def test_server_cert_has_dns_names_and_xmpp_addrs_and_both_ekus(ca):
    server = issue_server_cert(ca, ["example.org", "conference.example.org"])
    server.cert.verify_directly_issued_by(ca.cert)
    san = _ext(server.cert, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["example.org", "conference.example.org"]
    others = [o for o in san.get_values_for_type(x509.OtherName)
              if o.type_id.dotted_string == XMPP_ADDR_OID]
    assert len(others) == 2
    assert cert_facts(server.cert).xmpp_addrs == ("example.org", "conference.example.org")
    eku = list(_ext(server.cert, x509.ExtendedKeyUsage))
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cn = server.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "example.org"


def test_client_cert_carries_xmpp_addr_as_der_utf8string_other_name(ca):
    client = issue_client_cert(ca, xmpp_addrs=["jürgen@example.org"])
    san = _ext(client.cert, x509.SubjectAlternativeName)
    (other,) = san.get_values_for_type(x509.OtherName)
    assert other.type_id.dotted_string == "1.3.6.1.5.5.7.8.5"
    encoded = "jürgen@example.org".encode("utf-8")
    assert other.value == bytes([0x0C, len(encoded)]) + encoded  # UTF8String tag 12
    assert list(_ext(client.cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_client_cert_key_usage_depends_on_key_type(ca):
    ec_cert = issue_client_cert(ca, xmpp_addrs=["a@example.org"]).cert
    ku = _ext(ec_cert, x509.KeyUsage)
    assert ku.digital_signature and ku.key_agreement and not ku.key_encipherment
    rsa_client = issue_client_cert(ca, xmpp_addrs=["a@example.org"], key_type="rsa")
    assert isinstance(rsa_client.key, rsa.RSAPrivateKey)
    assert rsa_client.key.key_size == 3072
    ku = _ext(rsa_client.cert, x509.KeyUsage)
    assert ku.digital_signature and ku.key_encipherment and not ku.key_agreement


def test_client_cert_without_ca_is_self_signed():
    client = issue_client_cert(None, xmpp_addrs=["a@example.org"])
    assert client.cert.subject == client.cert.issuer
    client.cert.verify_directly_issued_by(client.cert)


def test_ekus_none_leaves_the_extension_out(ca):
    client = issue_client_cert(ca, xmpp_addrs=["a@example.org"], ekus=None)
    with pytest.raises(x509.ExtensionNotFound):
        client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_serials_are_random_positive_and_at_most_159_bits(ca):
    serials = {issue_client_cert(ca).cert.serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(0 < s < 2**159 for s in serials)


def test_explicit_validity_window_is_used(ca):
    start = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(2020, 2, 1, tzinfo=dt.timezone.utc)
    client = issue_client_cert(ca, not_before=start, not_after=end)
    assert client.cert.not_valid_before_utc == start
    assert client.cert.not_valid_after_utc == end
    with pytest.raises(ValueError):
        issue_client_cert(ca, not_before=end, not_after=start)


def test_unknown_key_type_is_rejected():
    with pytest.raises(ValueError):
        create_ca("x", key_type="dsa")


def test_crl_lists_revoked_serials_and_is_signed_by_the_ca(ca, tmp_path):
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    crl = build_crl(ca, [(1234, when), (99, when)], next_update_days=3)
    assert crl.is_signature_valid(ca.cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(1234) is not None
    assert crl.get_revoked_certificate_by_serial_number(5) is None
    assert crl.next_update_utc > when + dt.timedelta(days=2)
    write_crl(tmp_path / "ca.crl", crl)
    assert x509.load_pem_x509_crl((tmp_path / "ca.crl").read_bytes()) == crl


def test_private_key_files_are_0600(ca, tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        write_private_key(tmp_path / "a.key", ca.key)
        write_private_key(tmp_path / "b.key", ca.key, password=b"secret")
        export_p12(tmp_path / "a.p12", ca, ca_cert=None, friendly_name="a", password=b"pw")
        write_cert(tmp_path / "a.pem", ca.cert)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.key") == 0o600
    assert _mode(tmp_path / "b.key") == 0o600
    assert _mode(tmp_path / "a.p12") == 0o600
    assert _mode(tmp_path / "a.pem") == 0o644
    assert list(tmp_path.glob(".*tmp")) == []  # no temporary files left


def test_writing_a_key_replaces_an_existing_world_readable_file(ca, tmp_path):
    path = tmp_path / "a.key"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private_key(path, ca.key)
    assert _mode(path) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()


def test_load_issued_round_trips_with_and_without_password(ca, tmp_path):
    client = issue_client_cert(ca, xmpp_addrs=["a@example.org"])
    write_cert(tmp_path / "c.pem", client.cert, ca.cert)
    write_private_key(tmp_path / "c.key", client.key, password=b"pw")
    loaded = load_issued(tmp_path / "c.pem", tmp_path / "c.key", password=b"pw")
    assert loaded.cert == client.cert
    with pytest.raises(ValueError, match="c.key"):
        load_issued(tmp_path / "c.pem", tmp_path / "c.key", password=b"wrong")


def test_load_issued_refuses_a_key_that_does_not_match(ca, tmp_path):
    client = issue_client_cert(ca)
    write_cert(tmp_path / "c.pem", client.cert)
    write_private_key(tmp_path / "other.key", ca.key)
    with pytest.raises(ValueError, match="does not match"):
        load_issued(tmp_path / "c.pem", tmp_path / "other.key")


@pytest.mark.parametrize("legacy", [False, True])
def test_p12_reloads_with_its_password_and_contains_the_xmpp_addr(ca, tmp_path, legacy):
    client = issue_client_cert(ca, xmpp_addrs=["alice@example.org"])
    path = tmp_path / "alice.p12"
    export_p12(path, client, ca_cert=ca.cert, friendly_name="alice@example.org",
               password=b"correct horse", legacy=legacy)
    bundle = pkcs12.load_pkcs12(path.read_bytes(), b"correct horse")
    assert bundle.cert.certificate == client.cert
    assert bundle.cert.friendly_name == b"alice@example.org"
    assert [c.certificate for c in bundle.additional_certs] == [ca.cert]
    assert cert_facts(bundle.cert.certificate).xmpp_addrs == ("alice@example.org",)
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(path.read_bytes(), b"wrong")


def test_p12_requires_a_password(ca, tmp_path):
    with pytest.raises(ValueError):
        export_p12(tmp_path / "x.p12", ca, ca_cert=None, friendly_name="x", password=b"")


def test_ensure_dev_pki_creates_a_ca_and_a_server_cert_for_the_domains(tmp_path):
    pki = ensure_dev_pki(tmp_path / "certs", ["example.org"])
    ca = load_issued(pki.ca_cert, pki.ca_key)
    server = load_issued(pki.server_cert, pki.server_key)
    server.cert.verify_directly_issued_by(ca.cert)
    names = _ext(server.cert, x509.SubjectAlternativeName).get_values_for_type(x509.DNSName)
    assert names == ["example.org", "localhost"]
    assert _mode(pki.ca_key) == 0o600 and _mode(pki.server_key) == 0o600


def test_ensure_dev_pki_is_idempotent(tmp_path):
    first = ensure_dev_pki(tmp_path, ["example.org"])
    before = {p: p.read_bytes() for p in vars(first).values()}
    second = ensure_dev_pki(tmp_path, ["example.org"])
    assert second == first
    assert {p: p.read_bytes() for p in vars(second).values()} == before


def test_ensure_dev_pki_reissues_the_server_cert_for_new_domains_but_keeps_the_ca(tmp_path):
    first = ensure_dev_pki(tmp_path, ["example.org"])
    ca_pem = first.ca_cert.read_bytes()
    server_pem = first.server_cert.read_bytes()
    second = ensure_dev_pki(tmp_path, ["example.org", "example.net"])
    assert second.ca_cert.read_bytes() == ca_pem
    assert second.server_cert.read_bytes() != server_pem
    server = load_issued(second.server_cert, second.server_key).cert
    names = _ext(server, x509.SubjectAlternativeName).get_values_for_type(x509.DNSName)
    assert set(names) == {"example.org", "example.net", "localhost"}


def test_ensure_dev_pki_reissues_a_server_cert_that_expires_within_30_days(tmp_path):
    pki = ensure_dev_pki(tmp_path, ["example.org"])
    ca = load_issued(pki.ca_cert, pki.ca_key)
    short = issue_server_cert(ca, ["example.org", "localhost"], days=10)
    write_cert(pki.server_cert, short.cert)
    write_private_key(pki.server_key, short.key)
    ensure_dev_pki(tmp_path, ["example.org"])
    renewed = load_issued(pki.server_cert, pki.server_key).cert
    assert renewed != short.cert
    assert renewed.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=30)


def test_certificates_are_signed_with_sha256(ca):
    client = issue_client_cert(ca)
    assert isinstance(client.cert.signature_hash_algorithm, hashes.SHA256)
