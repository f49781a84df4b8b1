"""Server TLS configuration: one pyOpenSSL ``Context`` shared by all connections.

Why pyOpenSSL and not :mod:`ssl`: we need a verify callback (``selfsigned_peer``
and ``disconnect_on_failure = false``), the acceptable CA names in the
CertificateRequest (``set_client_ca_list``) and keying-material export for
``tls-exporter``; the standard library offers none of the three.

Client certificate policy
-------------------------
* A certificate is *requested* only when ``cacertfile`` is set and
  ``verify_mode != "none"`` (:attr:`ServerTLS.requests_client_cert`). It is
  never *required*: a client without one completes the handshake and gets
  ``CertCheck(presented=False, reason="no-cert")`` (it may use a password).
* The CertificateRequest lists the subject names of every certificate in
  ``cacertfile``, so clients offer only matching certificates.
* Every certificate in ``cacertfile`` is a trust anchor, including
  intermediates and pinned self-signed client certificates
  (``X509_V_FLAG_PARTIAL_CHAIN``).
* The verify callback records the *first* problem of each connection as a
  stable reason code (see :data:`VERIFY_REASONS`). With
  ``disconnect_on_failure`` the handshake is aborted on it (the engine raises
  ``TLSFailure(reason)``); without, the handshake completes and the
  certificate is reported as not ok, so EXTERNAL is not offered.
* ``selfsigned_peer`` also accepts a self-signed leaf, but validity dates,
  EKU and signature checks still apply.
* A leaf that OpenSSL decodes but ``cryptography`` cannot (an invalid
  PrintableString in the subject, a bad X.509 version...) can be judged by
  nothing else here and yields no identity: ``unparsable-certificate``, before
  any other reason (a self-signed one needs no CA, so anyone can send it).
* The leaf's extendedKeyUsage is checked here too (not only through OpenSSL's
  purpose check): present without clientAuth or anyExtendedKeyUsage →
  ``eku-not-client-auth``.

Revocation (only when ``crl_files`` is non-empty)
-------------------------------------------------
All CRLs are loaded into the trust store and every certificate of the chain is
checked against the CRL of its issuer (``CRL_CHECK | CRL_CHECK_ALL``):

* leaf listed in its issuer's CRL → ``revoked``;
* no CRL configured for the *leaf's* issuer → ``revocation-unknown`` (fail
  closed: an operator who configures CRLs wants revocation enforced); a
  self-signed leaf accepted by ``selfsigned_peer`` has no issuer to ask and is
  exempt;
* intermediates are checked when a CRL from *their* issuer is configured, and
  otherwise accepted (most deployments publish a CRL for the issuing CA only);
* the CRL is past its nextUpdate → ``crl-expired`` (fail closed: refresh the
  file and call :meth:`ServerTLS.reload`).

CRL files must parse and be signed by a CA from ``cacertfile``; otherwise
:class:`TLSConfigError`. After a :meth:`ServerTLS.reload`,
:meth:`ServerTLS.revocation_reason` answers from the new CRLs for certificates
already in use (the server closes live sessions with it).

ALPN (RFC 7301, XEP-0368 §3)
----------------------------
A client offering ``xmpp-client`` gets it selected; one offering no ALPN at all
is served as before.  A client offering ALPN protocols that are all someone
else's (``h2``, ``http/1.1``, ``xmpp-server``...) is refused with the fatal
``no_application_protocol`` alert (RFC 7301 §3.2 "SHALL"; it also keeps an
HTTPS client that a cross-protocol attack sent here from talking to us): the
engine reports ``TLSFailure("alpn-mismatch")``.

Resumption is disabled (no session cache, no tickets): a resumed session would
skip the verify callback, so a certificate revoked after a :meth:`reload`
could come back; XMPP sessions are long-lived, so a full handshake costs little.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL, crypto

from xmppd_auth.base import CertFacts

if TYPE_CHECKING:
    from xmppd.tls.engine import TLSEngine

__all__ = ["ALPN_XMPP_CLIENT", "ALPNRefused", "CertCheck", "UNPARSABLE", "der_fingerprint", "ServerTLS", "TLSConfigError", "VERIFY_MODES",
           "VERIFY_REASONS"]

log = logging.getLogger(__name__)

VERIFY_MODES = ("peer", "selfsigned_peer", "none")

_VERSIONS = {
    "tlsv1.2": SSL.TLS1_2_VERSION,
    "tlsv1.3": SSL.TLS1_3_VERSION,
}

#: used when ``ciphers`` is not configured (TLS 1.2 only; TLS 1.3 suites are
#: all AEAD and left at the OpenSSL default): forward secrecy + AEAD only.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"

#: maximum certificate chain depth accepted from a client
VERIFY_DEPTH = 8

#: XEP-0368 §3: the ALPN protocol id of client-to-server XMPP (IANA registry, RFC 7301)
ALPN_XMPP_CLIENT = b"xmpp-client"


class ALPNRefused(SSL.Error):
    """Raised by the ALPN callback when the client offers none of our protocols.

    pyOpenSSL turns an exception in the callback into a fatal
    ``no_application_protocol`` alert and re-raises it from ``do_handshake``.
    Its args have the shape of an OpenSSL error queue (library, function, reason)."""

    def __init__(self, offered: Sequence[bytes]) -> None:
        names = ", ".join(p.decode("ascii", "replace")[:64] for p in offered[:8]) or "(none)"
        super().__init__([("xmppd", "alpn", f"no application protocol in common (client offered {names})")])

# OpenSSL X509_V_ERR_* numbers (stable ABI values from x509_vfy.h).
_V_ERR_UNABLE_TO_GET_CRL = 3
_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
_V_ERR_INVALID_PURPOSE = 26

#: reason code of a client certificate that cryptography cannot parse
UNPARSABLE = "unparsable-certificate"

#: X509 verify error number → stable reason code. Unlisted errors → "invalid-chain".
VERIFY_REASONS: dict[int, str] = {
    2: "unknown-ca",  # UNABLE_TO_GET_ISSUER_CERT
    3: "revocation-unknown",  # UNABLE_TO_GET_CRL (leaf only, see module doc)
    4: "bad-signature",  # UNABLE_TO_DECRYPT_CERT_SIGNATURE
    5: "revocation-unknown",  # UNABLE_TO_DECRYPT_CRL_SIGNATURE
    6: "bad-signature",  # UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY
    7: "bad-signature",  # CERT_SIGNATURE_FAILURE
    8: "revocation-unknown",  # CRL_SIGNATURE_FAILURE
    9: "not-yet-valid",  # CERT_NOT_YET_VALID
    10: "expired",  # CERT_HAS_EXPIRED
    11: "revocation-unknown",  # CRL_NOT_YET_VALID
    12: "crl-expired",  # CRL_HAS_EXPIRED
    18: "self-signed",  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown-ca",  # SELF_SIGNED_CERT_IN_CHAIN (untrusted root sent by the client)
    20: "unknown-ca",  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown-ca",  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    23: "revoked",  # CERT_REVOKED
    26: "eku-not-client-auth",  # INVALID_PURPOSE
    27: "unknown-ca",  # CERT_UNTRUSTED
    33: "revocation-unknown",  # UNABLE_TO_GET_CRL_ISSUER
    35: "revocation-unknown",  # KEYUSAGE_NO_CRL_SIGN
}

_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string
_ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string


class TLSConfigError(Exception):
    """The TLS configuration cannot be used; the message names the file."""


@dataclass(frozen=True)
class CertCheck:
    """Outcome of client-certificate verification for one connection.

    ``facts`` is set whenever a certificate was presented, even when it was
    rejected, so the audit log can record its fingerprint — except for a
    certificate that cannot be parsed (``reason == "unparsable-certificate"``):
    then only ``fingerprint_sha256`` is known. Only ``ok`` facts may be used
    for authentication.
    """

    presented: bool
    ok: bool
    reason: str | None
    facts: CertFacts | None
    #: hex SHA-256 of the DER when ``facts`` could not be extracted
    fingerprint_sha256: str | None = None

    @property
    def fingerprint(self) -> str | None:
        """The presented certificate's fingerprint, whether or not it parsed."""
        return self.facts.fingerprint_sha256 if self.facts is not None else self.fingerprint_sha256


#: the outcome for a connection without a client certificate
NO_CERT = CertCheck(presented=False, ok=False, reason="no-cert", facts=None)


class _VerifyState:
    """Per-connection verification outcome (the Connection's app data)."""

    __slots__ = ("reason", "leaf_checked", "self_signed", "leaf", "leaf_cert")

    def __init__(self) -> None:
        self.reason: str | None = None
        self.leaf_checked = False
        self.self_signed = False
        #: the client's leaf while the handshake runs, so a failed handshake
        #: can still report the fingerprint (OpenSSL drops the peer cert then);
        #: released by the engine once the handshake completes
        self.leaf: crypto.X509 | None = None
        #: ``leaf`` parsed by cryptography (None: not seen yet, or unparsable); released with it
        self.leaf_cert: x509.Certificate | None = None


class _Policy:
    """Everything a connection needs from its context; shared, immutable after build.

    Engines keep a reference to the policy of the context they were created
    from, so :meth:`ServerTLS.reload` never changes a running connection.
    """

    __slots__ = ("context", "requests_client_cert", "accept_self_signed",
                 "disconnect_on_failure", "check_crls", "server_end_point",
                 "client_cas", "revoked")

    def __init__(self, *, requests_client_cert: bool, accept_self_signed: bool,
                 disconnect_on_failure: bool, check_crls: bool,
                 server_end_point: bytes | None) -> None:
        self.context: SSL.Context | None = None
        self.requests_client_cert = requests_client_cert
        self.accept_self_signed = accept_self_signed
        self.disconnect_on_failure = disconnect_on_failure
        self.check_crls = check_crls
        self.server_end_point = server_end_point
        #: the trust anchors of ``cacertfile`` (issuers for OCSP requests)
        self.client_cas: tuple[x509.Certificate, ...] = ()
        #: CRL issuer (DER name) → serials it revokes, for re-checking live sessions
        self.revoked: dict[bytes, frozenset[int]] = {}

    # -- the verify callback (runs inside OpenSSL; must never raise) ----------
    def verify(self, conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int,
               ok: int) -> bool:
        state = conn.get_app_data()
        if not isinstance(state, _VerifyState):  # cannot happen; fail closed
            return False
        if depth == 0 and state.leaf is None:
            state.leaf = cert
            state.leaf_cert = _parse(cert)
        try:
            if depth == 0 and state.leaf_cert is None:
                reason = UNPARSABLE  # nothing about it can be checked, nor trusted
            else:
                reason = self._judge(state, cert, errnum, depth)
        except Exception:  # pragma: no cover - a bug here must not crash the loop
            log.exception("client certificate verification failed unexpectedly")
            reason = "invalid-chain"
        if reason is None:
            return True
        if state.reason is None:
            state.reason = reason
        return not self.disconnect_on_failure

    def _judge(self, state: _VerifyState, cert: crypto.X509, errnum: int,
               depth: int) -> str | None:
        if errnum:
            if errnum == _V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT and depth == 0:
                state.self_signed = True
                if self.accept_self_signed:
                    return None
            elif errnum == _V_ERR_INVALID_PURPOSE and depth == 0 and _has_any_eku(state.leaf_cert):
                # OpenSSL's SSL-client purpose does not count anyExtendedKeyUsage;
                # RFC 5280 §4.2.1.12 does. _check_leaf still checks the rest.
                return None
            elif errnum == _V_ERR_UNABLE_TO_GET_CRL:
                # see module doc: intermediates without a CRL are accepted; a
                # self-signed leaf has nobody who could revoke it
                if depth > 0 or (state.self_signed and self.accept_self_signed):
                    return None
            reason = VERIFY_REASONS.get(errnum, "invalid-chain")
            return reason
        if depth == 0 and not state.leaf_checked:
            state.leaf_checked = True
            assert state.leaf_cert is not None  # verify() answers UNPARSABLE otherwise
            return _check_leaf(state.leaf_cert)
        return None


def _parse(cert: crypto.X509) -> x509.Certificate | None:
    """``cert`` as cryptography sees it, or None when it cannot parse it."""
    try:
        return cert.to_cryptography()
    except Exception:  # ValueError (ASN.1), x509.InvalidVersion...: the peer's garbage
        return None


def der_fingerprint(cert: crypto.X509) -> str:
    """Hex SHA-256 of a certificate's DER (works for certificates cryptography cannot parse)."""
    return hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).hexdigest()


def _has_any_eku(cert: x509.Certificate | None) -> bool:
    if cert is None:
        return False
    try:
        eku = cert.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage).value
    except Exception:
        return False
    return any(oid.dotted_string == _ANY_EKU for oid in eku)


def _check_leaf(cert: x509.Certificate) -> str | None:
    """Our own checks on the client's leaf certificate (EKU and dates)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    if now < cert.not_valid_before_utc:
        return "not-yet-valid"
    if now > cert.not_valid_after_utc:
        return "expired"
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    except Exception:
        return "invalid-chain"
    oids = {oid.dotted_string for oid in eku}
    if _CLIENT_AUTH not in oids and _ANY_EKU not in oids:
        return "eku-not-client-auth"
    return None


# ---------------------------------------------------------------------------
# loading files


def _read(path: os.PathLike | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


def _load_certs(path: os.PathLike | str, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise TLSConfigError(f"{what} {path}: not a PEM/DER certificate file: {exc}") from None
    return certs


def _load_key(path: os.PathLike | str, password: str | None):
    data = _read(path, "keyfile")
    pw = password.encode("utf-8") if password is not None else None
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, pw)
        return serialization.load_der_private_key(data, pw)
    except TypeError:
        # "Password was not given but private key is encrypted" or the reverse
        if pw is None:
            raise TLSConfigError(f"keyfile {path}: the key is encrypted; set the key password") \
                from None
        raise TLSConfigError(f"keyfile {path}: the key is not encrypted; remove the key password") \
            from None
    except ValueError:
        # never include the exception text: it could echo key material
        raise TLSConfigError(
            f"keyfile {path}: cannot load the private key (wrong password or not a key)") from None
    except Exception as exc:  # unsupported key types
        raise TLSConfigError(f"keyfile {path}: unsupported private key ({type(exc).__name__})") \
            from None


def _load_crls(path: os.PathLike | str) -> list[x509.CertificateRevocationList]:
    data = _read(path, "CRL file")
    crls: list[x509.CertificateRevocationList] = []
    try:
        if b"-----BEGIN" in data:
            marker = b"-----BEGIN X509 CRL-----"
            for part in data.split(marker)[1:]:
                crls.append(x509.load_pem_x509_crl(marker + part))
        else:
            crls.append(x509.load_der_x509_crl(data))
    except ValueError as exc:
        raise TLSConfigError(f"CRL file {path}: not a valid CRL: {exc}") from None
    if not crls:
        raise TLSConfigError(f"CRL file {path}: contains no CRL")
    return crls


def _server_end_point_hash(cert: x509.Certificate) -> bytes | None:
    """RFC 5929 §4.1: hash of our certificate with its signature's hash
    (MD5 and SHA-1 upgraded to SHA-256); None when the signature has no
    single hash function (Ed25519/Ed448), for which it is undefined."""
    try:
        algorithm = cert.signature_hash_algorithm
    except Exception:
        algorithm = None
    if algorithm is None:
        return None
    if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    return digest.finalize()


def _public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


# ---------------------------------------------------------------------------


class ServerTLS:
    """Server-side TLS settings and the pyOpenSSL context built from them.

    Raises :class:`TLSConfigError` from the constructor and :meth:`reload`
    when a file is unreadable or inconsistent; on a failed reload the previous
    context stays in use.
    """

    def __init__(
        self,
        *,
        certfile: os.PathLike | str,
        keyfile: os.PathLike | str,
        cacertfile: os.PathLike | str | None = None,
        verify_mode: str = "peer",
        disconnect_on_failure: bool = True,
        crl_files: Sequence[os.PathLike | str] = (),
        versions: Sequence[str] = ("tlsv1.2", "tlsv1.3"),
        ciphers: str | None = None,
        key_password: str | None = None,
        alpn_protocols: Sequence[bytes] = (ALPN_XMPP_CLIENT,),
    ) -> None:
        if verify_mode not in VERIFY_MODES:
            raise TLSConfigError(
                f"verify_mode must be one of {', '.join(VERIFY_MODES)}, not {verify_mode!r}")
        self.certfile = certfile
        self.keyfile = keyfile
        self.cacertfile = cacertfile
        self.verify_mode = verify_mode
        self.disconnect_on_failure = bool(disconnect_on_failure)
        self.crl_files = tuple(crl_files or ())
        self.versions = tuple(versions)
        self.ciphers = ciphers
        self._key_password = key_password
        #: ALPN protocols we speak, in our order of preference (empty: ALPN is ignored)
        self.alpn_protocols = tuple(alpn_protocols)
        self._min_version, self._max_version = self._parse_versions(self.versions)
        self.requests_client_cert = bool(cacertfile) and verify_mode != "none"
        self._lock = threading.Lock()
        self._policy = self._build()

    def __repr__(self) -> str:
        return (f"<ServerTLS certfile={str(self.certfile)!r} cacertfile="
                f"{str(self.cacertfile) if self.cacertfile else None!r} "
                f"verify_mode={self.verify_mode!r} key_password="
                f"{'<redacted>' if self._key_password is not None else None}>")

    # -- public --------------------------------------------------------------
    def new_engine(self) -> "TLSEngine":
        from xmppd.tls.engine import TLSEngine

        return TLSEngine(self._policy)

    def reload(self) -> None:
        """Re-read certificate, key, CA bundle and CRLs for *new* handshakes."""
        policy = self._build()
        with self._lock:
            self._policy = policy

    def revocation_reason(self, facts: CertFacts) -> str | None:
        """``"revoked"`` when the CRLs loaded by the last successful build or
        :meth:`reload` list this certificate (its issuer's CRL names its
        serial), else None. Used to re-check live sessions after a reload; a
        certificate whose issuer has no CRL here is not judged (None)."""
        revoked = self._policy.revoked
        if not revoked:
            return None
        try:
            issuer = x509.load_der_x509_certificate(facts.der).issuer.public_bytes()
        except Exception:  # facts always come from a parsed certificate
            return None
        serials = revoked.get(issuer)
        return "revoked" if serials is not None and facts.serial in serials else None

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The certificate in ``cacertfile`` that signed ``cert`` (for OCSP), or None."""
        for ca in self._policy.client_cas:
            if ca.subject == cert.issuer and ca is not cert:
                try:
                    cert.verify_directly_issued_by(ca)
                except Exception:
                    continue
                return ca
        return None

    def watched_files(self) -> tuple[Path, ...]:
        """Every file a :meth:`reload` reads (for the change watcher)."""
        files = [self.certfile, self.keyfile]
        if self.cacertfile:
            files.append(self.cacertfile)
        files.extend(self.crl_files)
        return tuple(Path(f) for f in files)

    @property
    def context(self) -> SSL.Context:
        """The current pyOpenSSL context (read-only use: it is already in use)."""
        assert self._policy.context is not None
        return self._policy.context

    # -- building --------------------------------------------------------------
    @staticmethod
    def _parse_versions(versions: Sequence[str]) -> tuple[int, int]:
        if isinstance(versions, str):
            versions = [versions]
        if not versions:
            raise TLSConfigError("versions: at least one TLS version is required")
        numbers = []
        for v in versions:
            number = _VERSIONS.get(str(v).strip().lower())
            if number is None:
                raise TLSConfigError(
                    f"versions: unsupported TLS version {v!r} (allowed: tlsv1.2, tlsv1.3)")
            numbers.append(number)
        return min(numbers), max(numbers)

    def _build(self) -> _Policy:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(self._min_version)
        ctx.set_max_proto_version(self._max_version)
        ctx.set_options(
            SSL.OP_NO_COMPRESSION
            | SSL.OP_NO_RENEGOTIATION
            | SSL.OP_CIPHER_SERVER_PREFERENCE
            | SSL.OP_NO_TICKET
            | SSL.OP_SINGLE_ECDH_USE
            | SSL.OP_SINGLE_DH_USE
        )
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        if self.alpn_protocols:
            ctx.set_alpn_select_callback(_alpn_selector(self.alpn_protocols))
        try:
            ctx.set_cipher_list((self.ciphers or DEFAULT_CIPHERS).encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            raise TLSConfigError(f"ciphers: no usable cipher in {self.ciphers!r}") from None

        # our certificate chain and key
        chain = _load_certs(self.certfile, "certfile")
        key = _load_key(self.keyfile, self._key_password)
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                                ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey,
                                dsa.DSAPrivateKey)):
            raise TLSConfigError(f"keyfile {self.keyfile}: unsupported key type")
        if _public_der(chain[0].public_key()) != _public_der(key.public_key()):
            raise TLSConfigError(
                f"keyfile {self.keyfile} does not match the certificate in {self.certfile}")
        try:
            ctx.use_certificate(chain[0])
            for extra in chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(key)
            ctx.check_privatekey()
        except SSL.Error as exc:
            raise TLSConfigError(
                f"certfile {self.certfile} / keyfile {self.keyfile}: rejected by OpenSSL: "
                f"{_openssl_reason(exc)}") from None
        now = _dt.datetime.now(_dt.timezone.utc)
        if chain[0].not_valid_after_utc < now:
            log.warning("certfile %s: the server certificate expired on %s",
                        self.certfile, chain[0].not_valid_after_utc.isoformat())

        policy = _Policy(
            requests_client_cert=self.requests_client_cert,
            accept_self_signed=self.verify_mode == "selfsigned_peer",
            disconnect_on_failure=self.disconnect_on_failure,
            check_crls=bool(self.crl_files) and self.requests_client_cert,
            server_end_point=_server_end_point_hash(chain[0]),
        )

        if self.requests_client_cert:
            self._setup_client_verification(ctx, policy)
        else:
            ctx.set_verify(SSL.VERIFY_NONE)
        policy.context = ctx
        return policy

    def _setup_client_verification(self, ctx: SSL.Context, policy: _Policy) -> None:
        cafile = self.cacertfile
        assert cafile
        data = _read(cafile, "cacertfile")
        if b"PRIVATE KEY-----" in data:
            raise TLSConfigError(
                f"cacertfile {cafile}: contains a private key; it must hold CA certificates only")
        cas = _load_certs(cafile, "cacertfile")
        policy.client_cas = tuple(cas)
        store = ctx.get_cert_store()
        assert store is not None
        for ca in cas:
            try:
                is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except (x509.ExtensionNotFound, ValueError):
                is_ca = False
            if not is_ca:
                log.info("cacertfile %s: %s is not a CA certificate; trusted as a pinned "
                         "certificate", cafile, ca.subject.rfc4514_string())
            try:
                store.add_cert(crypto.X509.from_cryptography(ca))
            except crypto.Error:
                pass  # duplicate in the bundle
        flags = crypto.X509StoreFlags.PARTIAL_CHAIN
        if policy.check_crls:
            for crl_path in self.crl_files:
                for crl in _load_crls(crl_path):
                    issuer = next((ca for ca in cas if ca.subject == crl.issuer), None)
                    if issuer is None:
                        raise TLSConfigError(
                            f"CRL file {crl_path}: issuer {crl.issuer.rfc4514_string()} is not "
                            f"in cacertfile {cafile}")
                    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                        raise TLSConfigError(
                            f"CRL file {crl_path}: signature does not verify with "
                            f"{issuer.subject.rfc4514_string()}")
                    next_update = crl.next_update_utc
                    if next_update is not None and next_update < _dt.datetime.now(
                            _dt.timezone.utc):
                        log.warning("CRL file %s: expired on %s; clients of %s will be refused "
                                    "until it is refreshed", crl_path, next_update.isoformat(),
                                    crl.issuer.rfc4514_string())
                    store.add_crl(crl)
                    key = crl.issuer.public_bytes()
                    policy.revoked[key] = policy.revoked.get(key, frozenset()) | frozenset(
                        entry.serial_number for entry in crl)
            flags |= crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL
        store.set_flags(flags)
        try:
            ctx.load_client_ca(os.fsencode(cafile))
        except SSL.Error as exc:
            raise TLSConfigError(f"cacertfile {cafile}: cannot read CA names: "
                                 f"{_openssl_reason(exc)}") from None
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, policy.verify)
        ctx.set_verify_depth(VERIFY_DEPTH)


def _alpn_selector(ours: tuple[bytes, ...]):
    def select(_conn: SSL.Connection, offered: list[bytes]) -> bytes:
        for protocol in ours:  # server preference (RFC 7301 §3.2 leaves the choice to us)
            if protocol in offered:
                return protocol
        raise ALPNRefused(offered)  # → fatal no_application_protocol alert

    return select


def _openssl_reason(exc: SSL.Error) -> str:
    try:
        return "; ".join(str(item[2]) for item in exc.args[0]) or "unknown error"
    except Exception:
        return "unknown error"
