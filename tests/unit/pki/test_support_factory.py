"""tests/support/pki.py works as other suites expect."""

from __future__ import annotations

from cryptography import x509

from tests.support.pki import PKIFactory


def test_factory_writes_ca_server_and_client_files(tmp_path):
    pki = PKIFactory(tmp_path)
    assert pki.ca_path.exists() and pki.other_ca_path.exists()
    assert pki.server.cert.exists() and pki.server.key.exists()
    alice = pki.client("alice", xmpp_addrs=["alice@localhost"])
    assert alice.cert == tmp_path / "alice.pem"
    alice.x509.verify_directly_issued_by(pki.ca.cert)
    rogue = pki.client("rogue", ca="other", xmpp_addrs=["alice@localhost"])
    rogue.x509.verify_directly_issued_by(pki.other_ca.cert)
    selfie = pki.client("selfie", ca=None)
    assert selfie.x509.issuer == selfie.x509.subject
    assert pki.get("alice") is alice
    crl = x509.load_pem_x509_crl(pki.crl("revoked", [alice]).read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(alice.serial) is not None
    assert len(alice.fingerprint_sha256) == 64
