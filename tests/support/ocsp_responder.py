"""A real OCSP responder for tests: ``openssl ocsp -index ... -port ...``.

Also issues what it needs with ``cryptography`` (``xmppd.pki`` cannot add an
Authority Information Access extension): client certificates that name the
responder in AIA, and responder certificates (delegated: EKU OCSPSigning from
the CA; forged: anything else).

    responder = OCSPResponder(directory, ca_cert=pki.ca_path, signer=signer)
    responder.write_index(good=[alice], revoked=[mallory])
    responder.start()      # free port, readiness polled with a bound
    ... responder.url ...
    responder.stop()       # by the PID started here

The responder (OpenSSL 3.0's ``-port`` takes a port number only) listens on
all interfaces; tests connect to 127.0.0.1. It reads ``index.txt`` once:
``stop()``, ``write_index()``, ``start()`` to change it (the port is kept).
:meth:`requests` counts the requests it logged.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from pyasn1.codec.der import encoder as _der_encoder
from pyasn1.type import char as _asn1_char

from tests.support.pki import CertFiles
from xmppd.pki import Issued, new_serial, write_cert, write_private_key

__all__ = ["OCSPResponder", "free_port", "issue_aia_client", "issue_responder_cert",
           "issue_forged_issuer_cert"]

_XMPP_ADDR = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.5")
#: how long start() waits for the responder to accept connections
READY_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _save(directory: Path, name: str, issued: Issued) -> CertFiles:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    write_cert(cert_path, issued.cert)
    write_private_key(key_path, issued.key)
    return CertFiles(issued, cert_path, key_path)


def issue_aia_client(directory: Path, name: str, ca: Issued, *, xmpp_addrs: Sequence[str],
                     ocsp_url: str | None) -> CertFiles:
    """A client certificate (xmppAddr, EKU clientAuth) whose AIA names ``ocsp_url``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    san = [x509.OtherName(_XMPP_ADDR, _der_encoder.encode(_asn1_char.UTF8String(a))) for a in xmpp_addrs]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, xmpp_addrs[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),
                       critical=False)
    )
    if ocsp_url is not None:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return _save(directory, name, Issued(builder.sign(ca.key, hashes.SHA256()), key))


def issue_responder_cert(directory: Path, name: str, ca: Issued, *,
                         ocsp_signing: bool = True) -> CertFiles:
    """A delegated responder certificate issued by ``ca`` (EKU OCSPSigning unless
    ``ocsp_signing=False``), with id-pkix-ocsp-nocheck."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    eku = ExtendedKeyUsageOID.OCSP_SIGNING if ocsp_signing else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"OCSP responder {name}")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return _save(directory, name, Issued(cert, key))


def issue_forged_issuer_cert(directory: Path, name: str, ca: Issued) -> CertFiles:
    """A self-signed certificate with the *same subject* as ``ca`` but another key:
    an attacker pretending to be the issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _save(directory, name, Issued(cert, key))


def _asn1_time(when: _dt.datetime) -> str:
    return when.astimezone(_dt.timezone.utc).strftime("%y%m%d%H%M%SZ")


def _serial_hex(serial: int) -> str:
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


def _dn(cert: x509.Certificate) -> str:
    return "".join(f"/{a.rfc4514_attribute_name}={a.value}" for a in cert.subject)


@dataclass
class OCSPResponder:
    directory: Path
    ca_cert: Path
    signer: CertFiles
    port: int = 0

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index = self.directory / "index.txt"
        self.log = self.directory / "responder.log"
        self._proc: subprocess.Popen | None = None
        if not self.index.exists():
            self.write_index()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def write_index(self, good: Iterable[CertFiles] = (), revoked: Iterable[CertFiles] = ()) -> None:
        """index.txt in ``openssl ca`` format: V (valid) and R (revoked) lines."""
        lines = []
        for files in good:
            c = files.x509
            lines.append(f"V\t{_asn1_time(c.not_valid_after_utc)}\t\t{_serial_hex(c.serial_number)}"
                         f"\tunknown\t{_dn(c)}")
        for files in revoked:
            c = files.x509
            when = _asn1_time(_now() - _dt.timedelta(minutes=1))
            lines.append(f"R\t{_asn1_time(c.not_valid_after_utc)}\t{when},keyCompromise"
                         f"\t{_serial_hex(c.serial_number)}\tunknown\t{_dn(c)}")
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, self.index)

    def start(self) -> "OCSPResponder":
        assert self._proc is None, "already running"
        if not self.port:
            self.port = free_port()
        logfh = open(self.log, "ab")
        offset = logfh.tell()  # a restart appends: look only at this run's lines
        try:
            self._proc = subprocess.Popen(
                ["openssl", "ocsp", "-index", str(self.index), "-port", str(self.port),
                 "-rsigner", str(self.signer.cert), "-rkey", str(self.signer.key),
                 "-CA", str(self.ca_cert), "-ndays", "1", "-ignore_err"],
                stdout=logfh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        finally:
            logfh.close()
        # readiness: the log line printed once it listens. Not a probe connection:
        # OpenSSL 3.0's responder hangs on a connection closed before a request.
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "waiting for OCSP client connections" not in self._log_text()[offset:]:
            if self._proc.poll() is not None:
                raise RuntimeError(f"openssl ocsp exited with {self._proc.returncode}: "
                                   f"{self._log_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"openssl ocsp not ready on port {self.port} "
                                   f"after {READY_TIMEOUT_S}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # by the PID we started
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self) -> int:
        """Requests received so far (the responder logs each one's first line)."""
        return self._log_text().count("ocsp: Received request")
