"""OCSP (RFC 6960) for client certificates, asked after the TLS handshake.

The connection pauses reading while :meth:`OCSPChecker.judge` runs, and the
SASL offer is computed from its answer, so a certificate the responder says
is revoked never gets EXTERNAL.

What is trusted
---------------
* The request carries one CertID (SHA-1, as RFC 5019 and every responder
  expect) and a nonce. A response that echoes a nonce must echo ours; one
  without a nonce is accepted (most responders pre-sign, RFC 5019 §2.1).
* The response must be signed by the certificate's issuer (responder ID by
  name or key hash) or by a *delegated* responder certificate included in the
  response: issued and signed by that same issuer, valid now, with EKU
  id-kp-OCSPSigning (RFC 6960 §4.2.2.2). Anything else — a certificate that
  merely carries the issuer's name, a responder from another CA, a bad
  signature — makes the answer "unavailable", never "good".
* The single response must be for our issuer hashes and serial, with
  thisUpdate not in the future and nextUpdate (if any) not past, give or take
  :data:`CLOCK_SKEW`.

Outcomes (``tls.ocsp``)
-----------------------
``good`` → unchanged. ``revoked`` → not ok, reason ``revoked`` (soft and hard).
``unknown`` or unavailable (no URL, unreachable, timeout, HTTP error, oversize
or malformed body, untrusted signature, stale) → ``hard``: not ok, reason
``ocsp-unavailable``; ``soft``: unchanged, and the caller audits a warning.
Self-signed leaves (accepted by ``selfsigned_peer``) have nobody to ask and are
not checked.

Cache: good/revoked answers per (issuer, serial) for ``cache_s`` seconds, never
beyond the answer's nextUpdate, at most :data:`CACHE_MAX_ENTRIES` (least
recently used dropped). Concurrent handshakes for the same certificate share
one request.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from xmppd.tls.context import CertCheck

__all__ = ["OCSP_MODES", "OCSPAnswer", "OCSPChecker", "build_request", "verify_response"]

log = logging.getLogger(__name__)

OCSP_MODES = ("off", "soft", "hard")
#: largest response body read from a responder
MAX_RESPONSE_BYTES = 64 * 1024
#: cached answers kept at most
CACHE_MAX_ENTRIES = 4096
#: tolerated clock difference for thisUpdate / nextUpdate
CLOCK_SKEW = _dt.timedelta(minutes=5)


@dataclass(frozen=True)
class OCSPAnswer:
    """``status``: "good", "revoked", "unknown", "unavailable" or "skipped"
    (nothing to ask: self-signed). ``detail`` is for logs and the audit."""

    status: str
    detail: str = ""
    cached: bool = False
    #: the responder's nextUpdate (caching never goes beyond it)
    next_update: _dt.datetime | None = None


class _Unavailable(Exception):
    pass


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _key_hash(public_key) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING (RFC 6960 KeyHash; RFC 5280 SKI method 1)."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


def _name_hash(name: x509.Name, algorithm: hashes.HashAlgorithm) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(name.public_bytes())
    return h.finalize()


def aia_ocsp_url(cert: x509.Certificate) -> str | None:
    """The first http(s) OCSP URL of the Authority Information Access extension."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
                desc.access_location, x509.UniformResourceIdentifier):
            url = desc.access_location.value
            if url.lower().startswith(("http://", "https://")):
                return url
    return None


def build_request(cert: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes]:
    """(DER OCSPRequest, nonce) for one certificate."""
    nonce = os.urandom(16)
    request = (ocsp.OCSPRequestBuilder()
               .add_certificate(cert, issuer, hashes.SHA1())  # noqa: S303 - CertID hash, RFC 5019
               .add_extension(x509.OCSPNonce(nonce), critical=False)
               .build())
    return request.public_bytes(serialization.Encoding.DER), nonce


def _verify_signature(public_key, signature: bytes, data: bytes,
                      algorithm: hashes.HashAlgorithm | None) -> None:
    """Raises InvalidSignature (or TypeError for key types we cannot use)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if algorithm is None:
            raise InvalidSignature("no hash algorithm")
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if algorithm is None:
            raise InvalidSignature("no hash algorithm")
        public_key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        public_key.verify(signature, data)
    elif isinstance(public_key, dsa.DSAPublicKey):
        if algorithm is None:
            raise InvalidSignature("no hash algorithm")
        public_key.verify(signature, data, algorithm)
    else:
        raise TypeError(f"unsupported responder key type {type(public_key).__name__}")


def _responder_key(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: _dt.datetime):
    """The public key that must have signed ``response``; raises _Unavailable."""
    issuer_key_hash = _key_hash(issuer.public_key())
    by_name = response.responder_name
    by_key = response.responder_key_hash
    if (by_name is not None and by_name == issuer.subject) or (by_key is not None and by_key == issuer_key_hash):
        # signed by the issuer itself (a certificate in the response claiming
        # the issuer's name proves nothing: the key comes from our trust store)
        return issuer.public_key()
    for cert in response.certificates:
        if by_name is not None and cert.subject != by_name:
            continue
        if by_key is not None and _key_hash(cert.public_key()) != by_key:
            continue
        if cert.issuer != issuer.subject:
            raise _Unavailable("responder certificate not issued by the certificate's issuer")
        try:
            cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            raise _Unavailable("responder certificate not signed by the certificate's issuer") from None
        if not cert.not_valid_before_utc - CLOCK_SKEW <= now <= cert.not_valid_after_utc + CLOCK_SKEW:
            raise _Unavailable("responder certificate outside its validity period")
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            eku = ()
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise _Unavailable("responder certificate lacks EKU OCSPSigning")
        return cert.public_key()
    raise _Unavailable("response not signed by the issuer or a delegated responder")


def verify_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate,
                    nonce: bytes | None = None, *, now: _dt.datetime | None = None) -> OCSPAnswer:
    """Check a DER OCSPResponse for ``cert`` (see the module doc); never raises."""
    now = now or _now()
    try:
        return _verify_response(der, cert, issuer, nonce, now)
    except _Unavailable as exc:
        return OCSPAnswer("unavailable", str(exc))
    except Exception as exc:  # malformed DER and the like
        return OCSPAnswer("unavailable", f"malformed response ({type(exc).__name__})")


def _verify_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate,
                     nonce: bytes | None, now: _dt.datetime) -> OCSPAnswer:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        raise _Unavailable("malformed response") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise _Unavailable(f"responder status {response.response_status.name.lower()}")
    public_key = _responder_key(response, issuer, now)
    try:
        _verify_signature(public_key, response.signature, response.tbs_response_bytes,
                          response.signature_hash_algorithm)
    except (InvalidSignature, TypeError, ValueError, UnsupportedAlgorithm):
        raise _Unavailable("bad signature on the response") from None
    if nonce is not None:
        try:
            echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None
        if echoed is not None and echoed != nonce:
            raise _Unavailable("nonce mismatch")
    for single in response.responses:
        algorithm = single.hash_algorithm
        if (single.serial_number != cert.serial_number
                or single.issuer_key_hash != _key_hash(issuer.public_key())
                or single.issuer_name_hash != _name_hash(issuer.subject, algorithm)):
            continue
        if single.this_update_utc > now + CLOCK_SKEW:
            raise _Unavailable("thisUpdate is in the future")
        next_update = single.next_update_utc
        if next_update is not None and next_update < now - CLOCK_SKEW:
            raise _Unavailable(f"stale answer (nextUpdate {next_update.isoformat()})")
        status = single.certificate_status
        if status == ocsp.OCSPCertStatus.GOOD:
            return OCSPAnswer("good", _until(next_update), next_update=next_update)
        if status == ocsp.OCSPCertStatus.REVOKED:
            when = single.revocation_time_utc
            return OCSPAnswer("revoked", f"revoked at {when.isoformat()}" if when else "revoked",
                              next_update=next_update)
        return OCSPAnswer("unknown", "responder does not know the certificate")
    raise _Unavailable("no answer for this certificate in the response")


def _until(next_update: _dt.datetime | None) -> str:
    return f"next update {next_update.isoformat()}" if next_update is not None else ""


class OCSPChecker:
    """One per listener with ``tls.ocsp != "off"``."""

    def __init__(self, *, mode: str, timeout_s: float = 3.0, url: str | None = None,
                 cache_s: float = 300.0, cache_max: int = CACHE_MAX_ENTRIES,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        if mode not in ("soft", "hard"):
            raise ValueError(f"OCSP mode must be 'soft' or 'hard', not {mode!r}")
        self.mode = mode
        self.timeout_s = timeout_s
        self.url = url or None
        self.cache_s = cache_s
        self.cache_max = cache_max
        self.max_response_bytes = max_response_bytes
        #: (issuer key hash, serial) -> (answer, monotonic expiry)
        self._cache: collections.OrderedDict[tuple[bytes, int], tuple[OCSPAnswer, float]] = \
            collections.OrderedDict()
        self._inflight: dict[tuple[bytes, int], asyncio.Task] = {}
        #: requests sent to responders (for operators and tests)
        self.queries = 0

    # -- the decision ------------------------------------------------------------
    async def judge(self, check: CertCheck,
                    issuer_of: Callable[[x509.Certificate], x509.Certificate | None]
                    ) -> tuple[CertCheck, OCSPAnswer]:
        """The certificate check after asking OCSP, and the answer it rests on."""
        if not check.ok or check.facts is None:
            return check, OCSPAnswer("skipped", "certificate not accepted")
        try:
            cert = x509.load_der_x509_certificate(check.facts.der)
        except ValueError:
            return self._decide(check, OCSPAnswer("unavailable", "unparsable certificate"))
        if cert.issuer == cert.subject:
            return check, OCSPAnswer("skipped", "self-signed certificate")
        issuer = issuer_of(cert)
        if issuer is None:
            return self._decide(check, OCSPAnswer("unavailable", "issuer not in cacertfile"))
        return self._decide(check, await self.status(cert, issuer))

    def _decide(self, check: CertCheck, answer: OCSPAnswer) -> tuple[CertCheck, OCSPAnswer]:
        if answer.status in ("good", "skipped"):
            return check, answer
        if answer.status == "revoked":
            return CertCheck(presented=True, ok=False, reason="revoked", facts=check.facts), answer
        if self.mode == "hard":
            return CertCheck(presented=True, ok=False, reason="ocsp-unavailable",
                             facts=check.facts), answer
        return check, answer

    # -- asking, with the cache ----------------------------------------------------
    async def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> OCSPAnswer:
        key = (_key_hash(issuer.public_key()), cert.serial_number)
        hit = self._cache.get(key)
        if hit is not None:
            answer, expires = hit
            if time.monotonic() < expires:
                self._cache.move_to_end(key)
                return OCSPAnswer(answer.status, answer.detail, cached=True,
                                  next_update=answer.next_update)
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._query(cert, issuer))
            self._inflight[key] = task
            task.add_done_callback(lambda _t, k=key: self._inflight.pop(k, None))
        answer = await asyncio.shield(task)
        if answer.status in ("good", "revoked") and self.cache_s > 0 and key not in self._cache:
            self._remember(key, answer)
        return answer

    def _remember(self, key: tuple[bytes, int], answer: OCSPAnswer) -> None:
        ttl = self.cache_s
        if answer.next_update is not None:
            ttl = min(ttl, (answer.next_update - _now()).total_seconds())
        if ttl <= 0:
            return
        self._cache[key] = (answer, time.monotonic() + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_max:
            self._cache.popitem(last=False)

    async def _query(self, cert: x509.Certificate, issuer: x509.Certificate) -> OCSPAnswer:
        url = self.url or aia_ocsp_url(cert)
        if url is None:
            return OCSPAnswer("unavailable", "no OCSP URL (no AIA, no tls.ocsp_url)")
        request, nonce = build_request(cert, issuer)
        self.queries += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._post(url, request)
        except TimeoutError:
            return OCSPAnswer("unavailable", f"{url}: no answer within {self.timeout_s:g}s")
        except _Unavailable as exc:
            return OCSPAnswer("unavailable", f"{url}: {exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return OCSPAnswer("unavailable", f"{url}: {type(exc).__name__}: {exc}")
        answer = verify_response(body, cert, issuer, nonce)
        if answer.status == "unavailable":
            return OCSPAnswer("unavailable", f"{url}: {answer.detail}")
        return answer

    async def _post(self, url: str, request: bytes) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        headers = {"Content-Type": "application/ocsp-request",
                   "Accept": "application/ocsp-response", "Connection": "close"}
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, data=request, headers=headers,
                                    allow_redirects=False) as resp:
                if resp.status != 200:
                    raise _Unavailable(f"HTTP {resp.status}")
                if (resp.content_length or 0) > self.max_response_bytes:
                    raise _Unavailable(f"response larger than {self.max_response_bytes} bytes")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(16384):
                    body += chunk
                    if len(body) > self.max_response_bytes:
                        raise _Unavailable(f"response larger than {self.max_response_bytes} bytes")
                return bytes(body)
