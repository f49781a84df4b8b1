"""Certificate issuing for xmppd: a small CA toolkit built on ``cryptography``.

Used by ``xmppd certs ...`` (dev CA, client certificates for XEP-0178 login)
and by the test suites (``tests/support/pki.py``).

What goes into the certificates:

* CA: ``basicConstraints CA:TRUE`` (critical), keyUsage keyCertSign+cRLSign.
* Server: a dNSName (or iPAddress for IP literals) **and** an id-on-xmppAddr
  otherName for every hostname (RFC 6120 §13.7.1.2 allows both), EKU
  serverAuth + clientAuth (the same certificate serves s2s later).
* Client: one id-on-xmppAddr otherName per JID (RFC 6120 §13.7.1.4:
  ``type-id 1.3.6.1.5.5.7.8.5``, value a DER UTF8String), optional subject
  CN / emailAddress / UID, EKU clientAuth by default.

Private keys are written with mode 0600 *from the moment the file exists*
(``os.open`` with the mode, into a fresh temporary name created with
``O_EXCL``, then ``os.replace``), so a key is never briefly readable by
others and a half-written file never replaces a good one.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from pyasn1.codec.der import encoder as _der_encoder
from pyasn1.type import char as _asn1_char

__all__ = [
    "Issued",
    "DevPKI",
    "XMPP_ADDR_OID",
    "create_ca",
    "issue_server_cert",
    "issue_client_cert",
    "build_crl",
    "write_private_key",
    "write_cert",
    "write_crl",
    "load_issued",
    "export_p12",
    "ensure_dev_pki",
    "new_serial",
]

#: id-on-xmppAddr (RFC 6120 §13.7.1.4)
XMPP_ADDR_OID = "1.3.6.1.5.5.7.8.5"
_XMPP_ADDR = ObjectIdentifier(XMPP_ADDR_OID)

#: backdate notBefore a little so a client with a slow clock accepts a fresh cert
_CLOCK_SKEW = _dt.timedelta(minutes=5)
#: ensure_dev_pki reissues the server certificate this long before it expires
_RENEW_BEFORE = _dt.timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key. The key never appears in ``repr``."""

    cert: x509.Certificate
    key: PrivateKeyTypes = dataclasses.field(repr=False)


@dataclass(frozen=True)
class DevPKI:
    """File locations of the development CA and server certificate."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


# ---------------------------------------------------------------------------
# helpers


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def new_serial() -> int:
    """A random positive serial of at most 159 bits (RFC 5280 §4.1.2.2: <= 20 octets)."""
    while True:
        serial = secrets.randbits(159)
        if serial:
            return serial


def _new_key(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")


def _xmpp_addr_name(addr: str) -> x509.OtherName:
    value = _der_encoder.encode(_asn1_char.UTF8String(addr))
    return x509.OtherName(_XMPP_ADDR, value)


def _key_usage(key: PrivateKeyTypes, *, ca: bool = False) -> x509.KeyUsage:
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa and not ca,
        data_encipherment=False,
        key_agreement=is_ec and not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _validity(days: int, not_before: _dt.datetime | None,
              not_after: _dt.datetime | None) -> tuple[_dt.datetime, _dt.datetime]:
    start = not_before if not_before is not None else _now() - _CLOCK_SKEW
    if start.tzinfo is None:
        start = start.replace(tzinfo=_dt.timezone.utc)
    end = not_after if not_after is not None else start + _CLOCK_SKEW + _dt.timedelta(days=days)
    if end.tzinfo is None:
        end = end.replace(tzinfo=_dt.timezone.utc)
    if end <= start:
        raise ValueError("not_after must be later than not_before")
    return start, end


def _dns_or_ip(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    name = hostname.rstrip(".").lower()
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        name = name.encode("idna").decode("ascii")  # dNSName holds A-labels
    return x509.DNSName(name)


# ---------------------------------------------------------------------------
# issuing


def create_ca(common_name: str, *, days: int = 3650, key_type: str = "ec") -> Issued:
    """A self-signed CA certificate (pathLen 0: it signs end-entity certs only)."""
    key = _new_key(key_type)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xmppd"),
    ])
    start, end = _validity(days, None, None)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key, ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _leaf_builder(issuer: Issued | None, subject: x509.Name, key: PrivateKeyTypes,
                  start: _dt.datetime, end: _dt.datetime) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()),
            critical=False,
        )
    return builder


def issue_server_cert(ca: Issued, hostnames: Sequence[str], *, days: int = 825,
                      key_type: str = "ec") -> Issued:
    """A TLS server certificate for ``hostnames`` (CN = the first one)."""
    if isinstance(hostnames, str):
        hostnames = [hostnames]
    if not hostnames:
        raise ValueError("issue_server_cert needs at least one hostname")
    key = _new_key(key_type)
    names: list[x509.GeneralName] = []
    for host in hostnames:
        gn = _dns_or_ip(host)
        if gn not in names:
            names.append(gn)
    for host in hostnames:
        if isinstance(_dns_or_ip(host), x509.DNSName):
            other = _xmpp_addr_name(host.rstrip(".").lower())
            if other not in names:
                names.append(other)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    start, end = _validity(days, None, None)
    cert = (
        _leaf_builder(ca, subject, key, start, end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_client_cert(
    ca: Issued | None,
    *,
    xmpp_addrs: Sequence[str] = (),
    common_name: str | None = None,
    email: str | None = None,
    uid: str | None = None,
    days: int = 365,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    ekus: Sequence[ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    key_type: str = "ec",
) -> Issued:
    """A client certificate for XEP-0178 login; ``ca=None`` makes it self-signed.

    ``ekus=None`` leaves the extendedKeyUsage extension out entirely (any use).
    The subject always has a CN: ``common_name``, else the first xmppAddr,
    else ``"xmppd client"`` (an empty subject would need a critical SAN).
    """
    if isinstance(xmpp_addrs, str):
        xmpp_addrs = [xmpp_addrs]
    key = _new_key(key_type)
    cn = common_name if common_name is not None else (
        xmpp_addrs[0] if xmpp_addrs else "xmppd client")
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if email is not None:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    if uid is not None:
        attrs.append(x509.NameAttribute(NameOID.USER_ID, uid))
    subject = x509.Name(attrs)
    start, end = _validity(days, not_before, not_after)
    builder = _leaf_builder(ca, subject, key, start, end)
    san: list[x509.GeneralName] = [_xmpp_addr_name(a) for a in xmpp_addrs]
    if email is not None:
        san.append(x509.RFC822Name(email))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    signer = ca.key if ca is not None else key
    cert = builder.sign(signer, hashes.SHA256())
    return Issued(cert, key)


def build_crl(ca: Issued, revoked: Iterable[tuple[int, _dt.datetime]], *,
              next_update_days: int = 7,
              validity: _dt.timedelta | None = None) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` listing ``(serial, revocation_date)`` pairs; ``nextUpdate`` is
    ``validity`` (default ``next_update_days``) from now."""
    now = _now()
    if validity is None:
        validity = _dt.timedelta(days=next_update_days)
    if validity <= _dt.timedelta(0):
        raise ValueError("a CRL's validity must be positive")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - _CLOCK_SKEW)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),
            critical=False,
        )
    )
    for serial, when in revoked:
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


# ---------------------------------------------------------------------------
# files


def _atomic_write(path: os.PathLike | str, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a fresh temp file created with ``mode``.

    The temporary name is created with ``O_CREAT | O_EXCL`` (never follows or
    reuses an existing file) and the final permissions are set with
    ``fchmod`` before any byte is written, independent of the umask.
    """
    path = Path(path)
    directory = path.parent
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"cannot create a temporary file next to {path}")
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_private_key(path: os.PathLike | str, key: PrivateKeyTypes,
                      password: bytes | None = None) -> None:
    """PKCS#8 PEM, encrypted when ``password`` is given; file mode 0600."""
    enc: serialization.KeySerializationEncryption
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    _atomic_write(path, data, 0o600)


def write_cert(path: os.PathLike | str, *certs: x509.Certificate) -> None:
    """One or more certificates as concatenated PEM (leaf first); mode 0644."""
    if not certs:
        raise ValueError("write_cert needs at least one certificate")
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    _atomic_write(path, data, 0o644)


def write_crl(path: os.PathLike | str, crl: x509.CertificateRevocationList) -> None:
    _atomic_write(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)


def _same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def load_issued(cert_path: os.PathLike | str, key_path: os.PathLike | str,
                password: bytes | None = None) -> Issued:
    """Load a PEM certificate (the first in the file) and its PEM private key.

    Raises ``ValueError`` naming the file when a file is unreadable or the key
    does not belong to the certificate.
    """
    try:
        certs = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{cert_path}: cannot load certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password)
    except (OSError, ValueError, TypeError) as exc:
        # the exception text never contains key material
        raise ValueError(f"{key_path}: cannot load private key: {exc}") from None
    if not _same_public_key(certs[0], key):
        raise ValueError(f"{key_path}: private key does not match certificate {cert_path}")
    return Issued(certs[0], key)


def export_p12(path: os.PathLike | str, issued: Issued, *, ca_cert: x509.Certificate | None,
               friendly_name: str, password: bytes, legacy: bool = False) -> None:
    """Write a PKCS#12 bundle (mode 0600) for importing into a client.

    Default encryption: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) with an
    HMAC-SHA256 MAC. ``legacy=True`` uses PBEWithSHA1And3-KeyTripleDES-CBC and
    an HMAC-SHA1 MAC, which old Android and macOS importers need.
    A passphrase is required: several clients mishandle unencrypted bundles.
    """
    if not password:
        raise ValueError("export_p12 needs a non-empty password")
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if legacy:
        builder = (builder.kdf_rounds(2048)
                   .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                   .hmac_hash(hashes.SHA1()))
    else:
        builder = (builder.kdf_rounds(100_000)
                   .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                   .hmac_hash(hashes.SHA256()))
    data = pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8"),
        issued.key,  # type: ignore[arg-type]
        issued.cert,
        [ca_cert] if ca_cert is not None else None,
        builder.build(password),
    )
    _atomic_write(path, data, 0o600)


# ---------------------------------------------------------------------------
# development PKI


def _covers(cert: x509.Certificate, hostnames: Sequence[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    present = set(san)
    return all(_dns_or_ip(h) in present for h in hostnames)


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, ValueError (key type mismatch), TypeError
        return False
    return True


def ensure_dev_pki(certs_dir: Path, domains: Sequence[str]) -> DevPKI:
    """Create (first run) or reuse a development CA and server certificate.

    Files in ``certs_dir``: ``ca.pem``, ``ca.key``, ``server.pem``,
    ``server.key``. The server certificate covers ``domains`` plus
    ``localhost``; it is reissued when it is missing, unreadable, not signed
    by the CA on disk, does not cover the domains, or expires within 30 days.
    An existing CA is kept (clients may have imported it already).
    """
    certs_dir = Path(certs_dir)
    if not certs_dir.exists():  # it holds ca.key and, under clients/, users' keys
        from xmppd.storage.files import private_dir
        private_dir(certs_dir)
    pki = DevPKI(
        ca_cert=certs_dir / "ca.pem",
        ca_key=certs_dir / "ca.key",
        server_cert=certs_dir / "server.pem",
        server_key=certs_dir / "server.key",
    )
    if isinstance(domains, str):
        domains = [domains]
    hostnames: list[str] = []
    for d in [*domains, "localhost"]:
        d = d.rstrip(".").lower()
        if d and d not in hostnames:
            hostnames.append(d)

    if pki.ca_cert.exists() and pki.ca_key.exists():
        ca = load_issued(pki.ca_cert, pki.ca_key)
    else:
        ca = create_ca("xmppd development CA")
        write_private_key(pki.ca_key, ca.key)
        write_cert(pki.ca_cert, ca.cert)
        try:  # the old server cert (if any) was signed by another CA
            pki.server_cert.unlink()
        except FileNotFoundError:
            pass

    reissue = True
    if pki.server_cert.exists() and pki.server_key.exists():
        try:
            server = load_issued(pki.server_cert, pki.server_key)
        except ValueError:
            server = None
        if server is not None:
            fresh = server.cert.not_valid_after_utc - _now() > _RENEW_BEFORE
            reissue = not (fresh and _covers(server.cert, hostnames)
                           and _signed_by(server.cert, ca.cert))
    if reissue:
        server = issue_server_cert(ca, hostnames)
        write_private_key(pki.server_key, server.key)
        write_cert(pki.server_cert, server.cert)
    return pki
