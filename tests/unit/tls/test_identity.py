"""xmppd.tls.identity.cert_facts: XEP-0178 identity extraction."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from xmppd_auth.base import CertFacts
from xmppd.pki import create_ca, issue_client_cert
from xmppd.tls.identity import XMPP_ADDR_OID, cert_facts, decode_xmpp_addr

CA = create_ca("identity test CA")


def _self_signed(subject: x509.Name, sans: list[x509.GeneralName]) -> x509.Certificate:
    key = CA.key
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(7)
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_xmpp_addr_oid_is_id_on_xmppaddr():
    assert XMPP_ADDR_OID == "1.3.6.1.5.5.7.8.5"


def test_valid_client_cert_yields_facts_with_its_xmpp_addr():
    client = issue_client_cert(CA, xmpp_addrs=["alice@example.org"])
    facts = cert_facts(client.cert)
    assert isinstance(facts, CertFacts)
    assert facts.xmpp_addrs == ("alice@example.org",)
    assert facts.der == client.cert.public_bytes(serialization.Encoding.DER)
    assert facts.fingerprint_sha256 == client.cert.fingerprint(hashes.SHA256()).hex()
    assert facts.fingerprint_sha256 == facts.fingerprint_sha256.lower()
    assert len(facts.fingerprint_sha256) == 64
    assert facts.serial == client.cert.serial_number
    assert facts.issuer == CA.cert.subject.rfc4514_string()
    assert facts.subject == "CN=alice@example.org"
    assert facts.not_before == client.cert.not_valid_before_utc
    assert facts.not_after == client.cert.not_valid_after_utc
    assert facts.not_before.tzinfo is not None and facts.not_after.utcoffset() == dt.timedelta(0)
    assert facts.ekus == (ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string,)


def test_two_xmpp_addrs_are_extracted_in_certificate_order():
    client = issue_client_cert(CA, xmpp_addrs=["zed@example.org", "alice@example.org"])
    assert cert_facts(client.cert).xmpp_addrs == ("zed@example.org", "alice@example.org")


def test_non_ascii_xmpp_addr_is_decoded_as_utf8():
    client = issue_client_cert(CA, xmpp_addrs=["müller@exämple.org"])
    assert cert_facts(client.cert).xmpp_addrs == ("müller@exämple.org",)


def test_common_name_email_and_uid_are_extracted_from_the_subject():
    client = issue_client_cert(CA, common_name="Alice Liddell", email="alice@mail.example",
                               uid="aliddell")
    facts = cert_facts(client.cert)
    assert facts.xmpp_addrs == ()
    assert facts.common_name == "Alice Liddell"
    assert facts.email == "alice@mail.example"
    assert facts.uid == "aliddell"


def test_email_falls_back_to_the_first_san_rfc822_name():
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bob")])
    cert = _self_signed(subject, [x509.RFC822Name("first@example.org"),
                                  x509.RFC822Name("second@example.org")])
    facts = cert_facts(cert)
    assert facts.email == "first@example.org"
    assert facts.uid is None


def test_missing_attributes_are_none_and_missing_eku_is_empty():
    client = issue_client_cert(CA, xmpp_addrs=["a@example.org"], ekus=None)
    facts = cert_facts(client.cert)
    assert facts.email is None and facts.uid is None
    assert facts.ekus == ()


def test_undecodable_xmpp_addrs_are_skipped_without_crashing():
    bad_values = [
        b"\x16\x05alice",  # IA5String, not UTF8String
        b"\x0c\x02\xff\xfe",  # invalid UTF-8
        b"\x30\x03\x0c\x01a",  # a SEQUENCE around the string
    ]
    sans: list[x509.GeneralName] = [
        x509.OtherName(ObjectIdentifier(XMPP_ADDR_OID), v) for v in bad_values]
    sans.insert(2, x509.OtherName(ObjectIdentifier(XMPP_ADDR_OID), b"\x0c\x0bok@test.org"))
    sans.append(x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x03upn"))
    cert = _self_signed(x509.Name([]), sans)
    facts = cert_facts(cert)
    assert facts.xmpp_addrs == ("ok@test.org",)
    assert facts.common_name is None
    assert facts.subject == ""


def test_decode_xmpp_addr_rejects_non_utf8string_values():
    assert decode_xmpp_addr(b"\x0c\x03a@b") == "a@b"
    assert decode_xmpp_addr(b"\x13\x03a@b") is None  # PrintableString
    assert decode_xmpp_addr(b"\x0c\x80") is None


def test_structurally_broken_san_does_not_crash_cert_facts():
    sans = [x509.OtherName(ObjectIdentifier(XMPP_ADDR_OID), b"\x0c\x03XYZ")]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broken")])
    der = _self_signed(subject, sans).public_bytes(serialization.Encoding.DER)
    assert der.count(b"\x0c\x03XYZ") == 1
    broken = x509.load_der_x509_certificate(der.replace(b"\x0c\x03XYZ", b"\x0c\x7fXYZ"))
    facts = cert_facts(broken)  # must not raise
    assert facts.xmpp_addrs == ()
    assert facts.common_name == "broken"


def test_the_hand_decoder_agrees_with_pyasn1_on_well_formed_and_broken_values():
    from pyasn1.codec.der import encoder
    from pyasn1.type import char

    for text in ("alice@example.org", "ü" * 300, "a" * 127, "a" * 128, "a" * 255, "a" * 256, "a" * 3000):
        assert decode_xmpp_addr(encoder.encode(char.UTF8String(text))) == text
    assert decode_xmpp_addr(encoder.encode(char.UTF8String("a\x00b"))) is None
    for broken in (b"\x0c\x05abc", b"\x0c\x03abcd", b"\x0c\x02\xff\xfe", b"\x0c\x00", b"\x0c"):
        assert decode_xmpp_addr(broken) is None, broken


def test_facts_are_cached_by_fingerprint_and_equal_to_a_fresh_parse():
    from xmppd.tls import identity

    cert = issue_client_cert(CA, xmpp_addrs=["cache@example.org"]).cert
    first = cert_facts(cert)
    again = cert_facts(x509.load_der_x509_certificate(cert.public_bytes(serialization.Encoding.DER)))
    assert again is first
    fresh = identity._parse_facts(cert, cert.fingerprint(hashes.SHA256()))
    assert fresh == first and fresh.xmpp_addrs == ("cache@example.org",)
    assert len(identity._facts_cache) <= identity.CERT_FACTS_CACHE_SIZE
