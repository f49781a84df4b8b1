"""Certificates that OpenSSL accepts but ``cryptography`` refuses to parse, made by DER editing.

``cryptography``'s builder validates what it writes, so these start as ordinary
certificates from :mod:`xmppd.pki`; one field of the to-be-signed part is rewritten
in place (same length, so no outer length changes) and the result is signed again
with the issuer's key (ECDSA P-256, like the whole test PKI)::

    bad = printable_string_subject_cert(pki, "mallory")        # self-signed
    bad = printable_string_subject_cert(pki, "mallory", ca=pki.ca)
    der = invalid_version_cert_der(pki.client("x", xmpp_addrs=["x@localhost"]))
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from xmppd.pki import Issued, issue_client_cert, write_private_key

from .pki import PKIFactory

__all__ = ["BadCert", "printable_string_subject_cert", "invalid_version_cert_der"]

#: AlgorithmIdentifier ecdsa-with-SHA256 (RFC 5758 §3.2), DER
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_CN_OID = bytes.fromhex("0603550403")  # OBJECT IDENTIFIER 2.5.4.3 (commonName)
_UTF8STRING, _PRINTABLESTRING = 0x0C, 0x13


class BadCert:
    """PEM files of an edited certificate and its key (like ``CertFiles``)."""

    def __init__(self, der: bytes, cert: Path, key: Path) -> None:
        self.der = der
        self.cert = cert
        self.key = key

    @property
    def fingerprint_sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.der).hexdigest()


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _resign(tbs: bytes, issuer_key: ec.EllipticCurvePrivateKey) -> bytes:
    signature = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + _ECDSA_SHA256 + _tlv(0x03, b"\x00" + signature))


def _pem(der: bytes) -> bytes:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def printable_string_subject_cert(pki: PKIFactory, name: str, *, ca: Issued | None = None,
                                  common_name: str = "mallory_the@attacker") -> BadCert:
    """A client certificate whose subject CN is a PrintableString holding ``_`` and ``@``
    (not in the PrintableString alphabet, X.680 §41.4): OpenSSL takes it, cryptography
    raises ValueError when the subject is read.  Self-signed unless ``ca`` is given."""
    issued = issue_client_cert(ca, common_name=common_name, xmpp_addrs=[f"{name}@localhost"])
    tbs = issued.cert.tbs_certificate_bytes
    value = common_name.encode()
    utf8 = _CN_OID + bytes([_UTF8STRING]) + _der_len(len(value)) + value
    assert utf8 in tbs, "the CN is expected as a UTF8String"
    tbs = tbs.replace(utf8, _CN_OID + bytes([_PRINTABLESTRING]) + _der_len(len(value)) + value)
    der = _resign(tbs, ca.key if ca is not None else issued.key)  # type: ignore[arg-type]
    cert_path = pki.dir / f"{name}.pem"
    key_path = pki.dir / f"{name}.key"
    cert_path.write_bytes(_pem(der))
    write_private_key(key_path, issued.key)
    return BadCert(der, cert_path, key_path)


def invalid_version_cert_der(files, *, issuer_key=None, version: int = 7) -> bytes:
    """The DER of ``files``' certificate with its X.509 version field set to ``version``
    (valid: 0..2 for v1..v3; cryptography raises ``InvalidVersion`` on anything else)."""
    cert = files.issued.cert if hasattr(files, "issued") else files
    tbs = cert.tbs_certificate_bytes
    v3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
    head = tbs.find(v3)
    assert 0 < head < 8, "expected a v3 certificate"
    tbs = tbs[:head] + bytes.fromhex("a0030201") + bytes([version]) + tbs[head + len(v3):]
    key = issuer_key if issuer_key is not None else ec.generate_private_key(ec.SECP256R1())
    return _resign(tbs, key)


def der_of(path: Path) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)
