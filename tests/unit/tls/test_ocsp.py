"""xmppd.tls.ocsp: which OCSP answers are believed, soft/hard decisions, the cache
and the HTTP bounds (responses built with cryptography's OCSPResponseBuilder;
HTTP against a real aiohttp server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import datetime as _dt

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.support.ocsp_responder import (
    issue_aia_client,
    issue_forged_issuer_cert,
    issue_responder_cert,
)
from xmppd.tls.context import CertCheck
from xmppd.tls.identity import cert_facts
from xmppd.tls.ocsp import (
    OCSPAnswer,
    OCSPChecker,
    aia_ocsp_url,
    build_request,
    verify_response,
)

NOW = _dt.datetime.now(_dt.timezone.utc)


def respond(cert, issuer, *, signer=None, status=ocsp.OCSPCertStatus.GOOD, by_hash=False,
            include_signer=True, nonce=None, this_update=None, next_update=NOW + _dt.timedelta(hours=1),
            for_cert=None) -> bytes:
    """A DER OCSPResponse about ``for_cert or cert``, signed by ``signer`` (default: the issuer)."""
    signer = signer or issuer
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=for_cert or cert, issuer=issuer.cert, algorithm=hashes.SHA1(), cert_status=status,
        this_update=this_update or NOW - _dt.timedelta(minutes=1), next_update=next_update,
        revocation_time=NOW - _dt.timedelta(hours=1) if status == ocsp.OCSPCertStatus.REVOKED else None,
        revocation_reason=None)
    encoding = ocsp.OCSPResponderEncoding.HASH if by_hash else ocsp.OCSPResponderEncoding.NAME
    builder = builder.responder_id(encoding, signer.cert)
    if include_signer and signer is not issuer:
        builder = builder.certificates([signer.cert])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def leaf(pki):
    return issue_aia_client(pki.dir, "ocsp-unit-leaf", pki.ca, xmpp_addrs=["leaf@localhost"],
                            ocsp_url="http://127.0.0.1:9/ocsp")


def test_good_answer_signed_by_the_issuer_is_good(pki, leaf):
    for by_hash in (False, True):
        der = respond(leaf.x509, pki.ca, by_hash=by_hash)
        assert verify_response(der, leaf.x509, pki.ca.cert).status == "good"


def test_revoked_and_unknown_answers_are_reported_as_such(pki, leaf):
    der = respond(leaf.x509, pki.ca, status=ocsp.OCSPCertStatus.REVOKED)
    assert verify_response(der, leaf.x509, pki.ca.cert).status == "revoked"
    der = respond(leaf.x509, pki.ca, status=ocsp.OCSPCertStatus.UNKNOWN)
    assert verify_response(der, leaf.x509, pki.ca.cert).status == "unknown"


def test_delegated_responder_with_ocsp_signing_issued_by_the_issuer_is_trusted(pki, leaf):
    delegated = issue_responder_cert(pki.dir, "ocsp-unit-delegated", pki.ca).issued
    for by_hash in (False, True):
        der = respond(leaf.x509, pki.ca, signer=delegated, by_hash=by_hash)
        assert verify_response(der, leaf.x509, pki.ca.cert).status == "good"


def test_delegated_responder_without_ocsp_signing_eku_is_not_trusted(pki, leaf):
    no_eku = issue_responder_cert(pki.dir, "ocsp-unit-no-eku", pki.ca, ocsp_signing=False).issued
    answer = verify_response(respond(leaf.x509, pki.ca, signer=no_eku), leaf.x509, pki.ca.cert)
    assert answer.status == "unavailable" and "OCSPSigning" in answer.detail


def test_responder_from_another_ca_is_not_trusted(pki, leaf):
    other = issue_responder_cert(pki.dir, "ocsp-unit-other", pki.other_ca).issued
    answer = verify_response(respond(leaf.x509, pki.ca, signer=other), leaf.x509, pki.ca.cert)
    assert answer.status == "unavailable" and "not issued by" in answer.detail


def test_a_certificate_that_only_copies_the_issuer_name_is_not_trusted(pki, leaf):
    forged = issue_forged_issuer_cert(pki.dir, "ocsp-unit-forged", pki.ca).issued
    for by_hash in (False, True):
        der = respond(leaf.x509, pki.ca, signer=forged, by_hash=by_hash)
        answer = verify_response(der, leaf.x509, pki.ca.cert)
        assert answer.status == "unavailable", (by_hash, answer)


def test_a_responder_certificate_signed_by_another_key_under_the_issuer_name_is_not_trusted(pki, leaf):
    # a delegated responder certificate naming our CA as issuer, signed by the forger
    forged_ca = issue_forged_issuer_cert(pki.dir, "ocsp-unit-forged-ca", pki.ca).issued
    fake_delegated = issue_responder_cert(pki.dir, "ocsp-unit-fake-delegated", forged_ca).issued
    answer = verify_response(respond(leaf.x509, pki.ca, signer=fake_delegated), leaf.x509, pki.ca.cert)
    assert answer.status == "unavailable" and "not signed by" in answer.detail


def test_nonce_must_match_when_echoed(pki, leaf):
    der = respond(leaf.x509, pki.ca, nonce=b"n" * 16)
    assert verify_response(der, leaf.x509, pki.ca.cert, b"n" * 16).status == "good"
    answer = verify_response(der, leaf.x509, pki.ca.cert, b"x" * 16)
    assert answer.status == "unavailable" and "nonce" in answer.detail
    # no nonce in the answer (pre-signed responses): accepted
    assert verify_response(respond(leaf.x509, pki.ca), leaf.x509, pki.ca.cert, b"x" * 16).status == "good"


def test_stale_or_future_answers_are_not_trusted(pki, leaf):
    stale = respond(leaf.x509, pki.ca, this_update=NOW - _dt.timedelta(days=2),
                    next_update=NOW - _dt.timedelta(days=1))
    assert "stale" in verify_response(stale, leaf.x509, pki.ca.cert).detail
    future = respond(leaf.x509, pki.ca, this_update=NOW + _dt.timedelta(hours=1),
                     next_update=NOW + _dt.timedelta(days=1))
    assert "future" in verify_response(future, leaf.x509, pki.ca.cert).detail


def test_an_answer_about_another_certificate_is_not_used(pki, leaf):
    other = pki.client("ocsp-unit-other-leaf", xmpp_addrs=["x@localhost"])
    der = respond(leaf.x509, pki.ca, for_cert=other.x509)
    answer = verify_response(der, leaf.x509, pki.ca.cert)
    assert answer.status == "unavailable" and "no answer for this certificate" in answer.detail


def test_garbage_and_unsuccessful_responses_are_unavailable(pki, leaf):
    assert verify_response(b"\x30\x03garbage", leaf.x509, pki.ca.cert).status == "unavailable"
    try_later = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
    answer = verify_response(try_later.public_bytes(serialization.Encoding.DER), leaf.x509, pki.ca.cert)
    assert answer.status == "unavailable" and "try_later" in answer.detail


def test_request_carries_the_certid_and_a_nonce(pki, leaf):
    der, nonce = build_request(leaf.x509, pki.ca.cert)
    req = ocsp.load_der_ocsp_request(der)
    assert req.serial_number == leaf.serial
    assert req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert aia_ocsp_url(leaf.x509) == "http://127.0.0.1:9/ocsp"


# ------------------------------------------------------------------- checker


def ok_check(files) -> CertCheck:
    return CertCheck(presented=True, ok=True, reason=None, facts=cert_facts(files.x509))


def test_soft_and_hard_decisions(pki, leaf):
    check = ok_check(leaf)
    soft = OCSPChecker(mode="soft")
    hard = OCSPChecker(mode="hard")
    for checker in (soft, hard):
        new, _ = checker._decide(check, OCSPAnswer("revoked"))
        assert not new.ok and new.reason == "revoked"
        assert checker._decide(check, OCSPAnswer("good"))[0] is check
    for status in ("unknown", "unavailable"):
        assert soft._decide(check, OCSPAnswer(status))[0] is check
        new, _ = hard._decide(check, OCSPAnswer(status))
        assert not new.ok and new.reason == "ocsp-unavailable"


async def test_self_signed_and_issuerless_certificates(pki):
    selfsigned = pki.client("ocsp-unit-self", ca=None, xmpp_addrs=["s@localhost"])
    hard = OCSPChecker(mode="hard")
    new, answer = await hard.judge(ok_check(selfsigned), lambda c: None)
    assert new.ok and answer.status == "skipped"
    plain = pki.client("ocsp-unit-noaia", xmpp_addrs=["n@localhost"])
    new, answer = await hard.judge(ok_check(plain), lambda c: None)
    assert new.reason == "ocsp-unavailable" and "issuer" in answer.detail
    new, answer = await hard.judge(ok_check(plain), lambda c: pki.ca.cert)
    assert new.reason == "ocsp-unavailable" and "no OCSP URL" in answer.detail


@pytest.fixture
async def http_responder(pki):
    """A real HTTP server answering with whatever ``state["reply"](request_der)`` returns."""
    state: dict = {"count": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        state["count"] += 1
        return state["reply"](await request.read())

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"
    yield state
    await runner.cleanup()


def _answer_for(pki, certs, status=ocsp.OCSPCertStatus.GOOD):
    """Reply like a responder that knows ``certs``."""
    def reply(body: bytes) -> web.Response:
        req = ocsp.load_der_ocsp_request(body)
        nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        target = next(c.x509 for c in certs if c.serial == req.serial_number)
        der = respond(target, pki.ca, status=status, nonce=nonce)
        return web.Response(body=der, content_type="application/ocsp-response")
    return reply


async def test_http_errors_and_oversize_bodies_are_unavailable(pki, leaf, http_responder):
    checker = OCSPChecker(mode="hard", url=http_responder["url"], max_response_bytes=1024)
    http_responder["reply"] = lambda body: web.Response(status=500)
    answer = await checker.status(leaf.x509, pki.ca.cert)
    assert answer.status == "unavailable" and "HTTP 500" in answer.detail
    http_responder["reply"] = lambda body: web.Response(body=b"\x30" * 4096)
    answer = await checker.status(leaf.x509, pki.ca.cert)
    assert answer.status == "unavailable" and "larger than 1024" in answer.detail


async def test_cache_is_bounded_and_shared_by_concurrent_handshakes(pki, http_responder):
    certs = [pki.client(f"ocsp-unit-cache-{i}", xmpp_addrs=[f"c{i}@localhost"]) for i in range(3)]
    http_responder["reply"] = _answer_for(pki, certs)
    checker = OCSPChecker(mode="hard", url=http_responder["url"], cache_max=2)
    # three concurrent handshakes with one certificate: one request
    answers = await asyncio.gather(*(checker.status(certs[0].x509, pki.ca.cert) for _ in range(3)))
    assert [a.status for a in answers] == ["good"] * 3 and http_responder["count"] == 1
    assert (await checker.status(certs[0].x509, pki.ca.cert)).cached
    for c in certs[1:]:
        await checker.status(c.x509, pki.ca.cert)
    assert len(checker._cache) == 2 and http_responder["count"] == 3
    # the least recently used (certs[0]) was dropped: asking again queries
    assert not (await checker.status(certs[0].x509, pki.ca.cert)).cached
    assert http_responder["count"] == 4


async def test_unavailable_answers_are_not_cached(pki, leaf, http_responder):
    http_responder["reply"] = lambda body: web.Response(status=503)
    checker = OCSPChecker(mode="soft", url=http_responder["url"])
    for _ in range(2):
        assert (await checker.status(leaf.x509, pki.ca.cert)).status == "unavailable"
    assert http_responder["count"] == 2
