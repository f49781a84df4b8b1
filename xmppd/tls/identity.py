"""What a client certificate says about its owner, as :class:`auth.base.CertFacts`.

XEP-0178 / RFC 6120 §13.7.1.4: the JID lives in a subjectAltName otherName
with type-id id-on-xmppAddr (1.3.6.1.5.5.7.8.5) whose value is a DER
UTF8String. Everything else (CN, emailAddress, UID) is extracted for the
configurable fallbacks in ``sasl/external.py``.

Rule of this module: a malformed certificate never raises here. Parts that
cannot be decoded are left out (an undecodable xmppAddr is skipped, a broken
extension block yields no SAN/EKU), because the caller only wants facts and
the TLS layer has already decided whether the certificate is trusted.

Repeated logins with the same certificate skip the parsing: facts are cached
by the SHA-256 fingerprint of the DER (bounded LRU, :data:`CERT_FACTS_CACHE_SIZE`).
A :class:`CertFacts` is immutable plain data, so sharing one between
connections is safe; trust decisions (chain, CRL, OCSP) are never cached here.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder as _der_decoder
from pyasn1.type import char as _asn1_char

from xmppd_auth.base import CertFacts

__all__ = ["XMPP_ADDR_OID", "CERT_FACTS_CACHE_SIZE", "cert_facts", "decode_xmpp_addr"]

log = logging.getLogger(__name__)

XMPP_ADDR_OID = "1.3.6.1.5.5.7.8.5"
#: refuse absurd values instead of handing them to JID parsing
_MAX_XMPP_ADDR_BYTES = 3071  # RFC 7622: localpart+domainpart+resourcepart <= 3071
#: certificates whose facts are kept (LRU by SHA-256 fingerprint)
CERT_FACTS_CACHE_SIZE = 4096
_facts_cache: "collections.OrderedDict[bytes, CertFacts]" = collections.OrderedDict()


def _text_ok(text: str) -> str | None:
    return text if text and "\x00" not in text else None


def decode_xmpp_addr(der: bytes) -> str | None:
    """Decode the DER UTF8String of an xmppAddr otherName; None if malformed."""
    if not der or len(der) > _MAX_XMPP_ADDR_BYTES + 8:
        return None
    # fast path: tag 0x0C (UTF8String, primitive), definite length in short or long
    # form with the minimal encoding DER requires, exactly covering the rest
    if der[0] == 0x0C and len(der) >= 2:
        first = der[1]
        if first < 0x80:
            start, length = 2, first
        elif first == 0x81 and len(der) >= 3 and der[2] >= 0x80:
            start, length = 3, der[2]
        elif first == 0x82 and len(der) >= 4 and der[2] != 0 and (der[2] << 8 | der[3]) >= 0x100:
            start, length = 4, der[2] << 8 | der[3]
        else:
            start = length = -1
        if start > 0 and start + length == len(der):
            try:
                return _text_ok(der[start:].decode("utf-8"))
            except UnicodeDecodeError:
                return None
    try:
        value, rest = _der_decoder.decode(der, asn1Spec=_asn1_char.UTF8String())
    except Exception:  # PyAsn1Error, UnicodeError...: malformed, skip it
        return None
    if rest:
        return None
    try:
        text = str(value)
    except Exception:
        return None
    if not text or "\x00" in text:
        return None
    return text


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    for attribute in name.get_attributes_for_oid(oid):
        value = attribute.value
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                continue
        if value:
            return value
    return None


def _rfc4514(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:  # pragma: no cover - exotic attribute encodings
        return ""


def _utc(value: _dt.datetime) -> _dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)


def cert_facts(cert: x509.Certificate) -> CertFacts:
    """Extract :class:`CertFacts` from a (verified) client certificate (cached by fingerprint)."""
    fingerprint = cert.fingerprint(hashes.SHA256())
    facts = _facts_cache.get(fingerprint)
    if facts is not None:
        _facts_cache.move_to_end(fingerprint)
        return facts
    facts = _parse_facts(cert, fingerprint)
    _facts_cache[fingerprint] = facts
    while len(_facts_cache) > CERT_FACTS_CACHE_SIZE:
        _facts_cache.popitem(last=False)
    return facts


def _parse_facts(cert: x509.Certificate, fingerprint: bytes) -> CertFacts:
    der = cert.public_bytes(serialization.Encoding.DER)

    try:
        extensions = cert.extensions
    except Exception:  # duplicate or unparsable extensions
        log.debug("certificate extensions could not be parsed", exc_info=True)
        extensions = x509.Extensions([])

    xmpp_addrs: list[str] = []
    san_email: str | None = None
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for general_name in san:
            if isinstance(general_name, x509.OtherName):
                if general_name.type_id.dotted_string == XMPP_ADDR_OID:
                    addr = decode_xmpp_addr(general_name.value)
                    if addr is not None:
                        xmpp_addrs.append(addr)
            elif isinstance(general_name, x509.RFC822Name) and san_email is None:
                san_email = general_name.value or None

    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        ekus = tuple(oid.dotted_string for oid in eku)
    except x509.ExtensionNotFound:
        ekus = ()

    subject = cert.subject
    email = _attr(subject, NameOID.EMAIL_ADDRESS) or san_email

    try:
        not_before = cert.not_valid_before_utc
        not_after = cert.not_valid_after_utc
    except AttributeError:  # pragma: no cover - older cryptography
        not_before = _utc(cert.not_valid_before)
        not_after = _utc(cert.not_valid_after)

    return CertFacts(
        der=der,
        fingerprint_sha256=fingerprint.hex(),
        serial=cert.serial_number,
        subject=_rfc4514(subject),
        issuer=_rfc4514(cert.issuer),
        not_before=not_before,
        not_after=not_after,
        xmpp_addrs=tuple(xmpp_addrs),
        common_name=_attr(subject, NameOID.COMMON_NAME),
        email=email,
        uid=_attr(subject, NameOID.USER_ID),
        ekus=ekus,
    )
