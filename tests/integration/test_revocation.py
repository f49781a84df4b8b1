"""Revocation that bites: CRL reload (SIGHUP path and file watcher) closes live
sessions, OCSP soft/hard against a real ``openssl ocsp`` responder, and hot
reload of the server certificate and client-CA bundle without dropping sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.support.ocsp_responder import (
    OCSPResponder,
    free_port,
    issue_aia_client,
    issue_forged_issuer_cert,
    issue_responder_cert,
)
from xmppd.pki import create_ca, issue_server_cert, write_cert, write_private_key

from .harness import WAIT_S
from .rawclient import RawClient

STREAM_ERROR_NS = b"urn:ietf:params:xml:ns:xmpp-streams"


def listener(pki, **tls):
    base = {"mode": "starttls_required", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
            "cacertfile": str(pki.ca_path), "disconnect_on_failure": False}
    base.update(tls)
    return {"port": 0, "ip_address": "127.0.0.1", "tls": base}


def audit_records(server) -> list[dict]:
    return [json.loads(line) for line in server.config.audit.file.read_text().splitlines()]


def no_watcher(interval: float = 0) -> dict:
    return {"general": {"reload_check_interval_s": interval}}


async def external_outcome(server, pki, cert, index: int = 0) -> tuple[bytes, bytes]:
    """(features after TLS, answer to EXTERNAL) seen by a raw client."""
    c = await RawClient.open(server.listener_port(index), ca=pki.ca_path, cert=cert)
    try:
        await c.starttls()
        feats = await c.open_stream()
        return feats, await c.auth_external()
    finally:
        await c.close()


async def raw_session(server, pki, cert, resource: str) -> RawClient:
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    await c.login_external(resource=resource)
    return c


async def until(predicate, timeout: float = WAIT_S, step: float = 0.05) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)


async def assert_still_talks(sender, receiver, body: str) -> None:
    sender.send_message(mto=receiver.boundjid, mbody=body, mtype="chat")
    msg = await receiver.next_message()
    assert msg["body"] == body


# ---------------------------------------------------------------- CRL reload


async def test_revoking_a_certificate_in_the_crl_and_reloading_closes_its_live_session_only(
        make_server, clients, pki):
    alice = pki.client("rv-alice", xmpp_addrs=["alice@localhost"])
    bob = pki.client("rv-bob", xmpp_addrs=["bob@localhost"])
    carol = pki.client("rv-carol", xmpp_addrs=["carol@localhost"])
    crl = pki.crl("rv-sighup", [])
    server = await make_server(no_watcher(), listeners=[listener(pki, crl_files=[str(crl)])])
    port = server.listener_port(0)
    raw_alice = await raw_session(server, pki, alice, "phone")
    b = await clients("bob@localhost", cert=bob).login(port)
    c = await clients("carol@localhost", cert=carol).login(port)
    try:
        pki.crl("rv-sighup", [alice])
        server.reload()  # what SIGHUP calls
        out = await raw_alice.read_to_eof()
    finally:
        await raw_alice.close()
    assert b"<not-authorized xmlns" in out and STREAM_ERROR_NS in out
    assert b"revoked: your certificate (serial " + format(alice.serial, "x").encode() \
        + b") was revoked" in out
    # the others are left alone
    await assert_still_talks(b, c, "still here after the reload")
    await assert_still_talks(c, b, "and back")
    revoked = [r for r in audit_records(server) if r["event"] == "session-revoked"]
    assert len(revoked) == 1
    assert revoked[0]["cert_fingerprint"] == alice.fingerprint_sha256
    assert revoked[0]["cert_serial"] == format(alice.serial, "x")
    assert revoked[0]["jid"] == "alice@localhost/phone"
    # and the next handshake with that certificate is refused
    feats, answer = await external_outcome(server, pki, alice)
    assert b"EXTERNAL" not in feats and b"revoked" in answer and b"<success" not in answer


async def test_the_file_watcher_reloads_a_changed_crl_and_closes_the_revoked_session(
        make_server, clients, pki):
    alice = pki.client("rw-alice", xmpp_addrs=["alice@localhost"])
    bob = pki.client("rw-bob", xmpp_addrs=["bob@localhost"])
    crl = pki.crl("rw-watch", [])
    server = await make_server(no_watcher(0.1), listeners=[listener(pki, crl_files=[str(crl)])])
    raw_alice = await raw_session(server, pki, alice, "laptop")
    b = await clients("bob@localhost", cert=bob).login(server.listener_port(0))
    try:
        pki.crl("rw-watch", [alice])  # no reload() call: the watcher notices
        out = await raw_alice.read_to_eof()
    finally:
        await raw_alice.close()
    assert b"<not-authorized xmlns" in out and b"was revoked" in out
    await assert_still_talks(b, b, "bob is fine")
    assert any(r["event"] == "tls-reload" and r["result"] == "success" for r in audit_records(server))
    feats, answer = await external_outcome(server, pki, alice)
    assert b"EXTERNAL" not in feats and b"revoked" in answer


async def test_a_broken_crl_on_reload_keeps_the_previous_one(make_server, clients, pki, caplog):
    good = pki.client("rb-good", xmpp_addrs=["good@localhost"])
    bad = pki.client("rb-bad", xmpp_addrs=["bad@localhost"])
    crl = pki.crl("rb-broken", [bad])
    server = await make_server(no_watcher(), listeners=[listener(pki, crl_files=[str(crl)])])
    g = await clients("good@localhost", cert=good).login(server.listener_port(0))
    crl.write_text("-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")
    with caplog.at_level(logging.ERROR, logger="xmppd.server"):
        server.reload()
    assert any(str(crl) in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    failures = [r for r in audit_records(server) if r["event"] == "tls-reload"]
    assert failures and failures[-1]["result"] == "failure" and str(crl) in failures[-1]["reason"]
    # the revoked certificate stays refused, the good one still works, live sessions stay
    feats, answer = await external_outcome(server, pki, bad)
    assert b"EXTERNAL" not in feats and b"revoked" in answer
    feats, answer = await external_outcome(server, pki, good)
    assert b"<success" in answer
    await assert_still_talks(g, g, "unaffected")
    crl.unlink()  # an unreadable file: the same
    server.reload()
    feats, answer = await external_outcome(server, pki, bad)
    assert b"revoked" in answer
    assert not [r for r in audit_records(server) if r["event"] == "session-revoked"]


# ---------------------------------------------------------------- OCSP


@pytest.fixture
def responders(tmp_path, pki):
    """responders(signer=None) -> a stopped OCSPResponder for the test CA
    (default signer: a delegated responder certificate); all stopped at the end."""
    made: list[OCSPResponder] = []

    def make(signer=None) -> OCSPResponder:
        if signer is None:
            signer = issue_responder_cert(pki.dir, f"ocsp-signer-{len(made)}-{tmp_path.name}", pki.ca)
        r = OCSPResponder(tmp_path / f"ocsp{len(made)}", ca_cert=pki.ca_path, signer=signer)
        r.port = free_port()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def aia_client(pki, name: str, url: str | None, jid: str | None = None):
    return issue_aia_client(pki.dir, name, pki.ca, xmpp_addrs=[jid or f"{name}@localhost"], ocsp_url=url)


def ocsp_listener(pki, mode: str, **tls):
    return listener(pki, ocsp=mode, ocsp_timeout_s=tls.pop("ocsp_timeout_s", 3.0), **tls)


def ocsp_records(server) -> list[dict]:
    return [r for r in audit_records(server) if r["event"] == "ocsp"]


async def test_ocsp_good_answer_offers_external_to_a_real_client(make_server, clients, pki, responders):
    r = responders()
    alice = aia_client(pki, "og-alice", r.url, "alice@localhost")
    r.write_index(good=[alice])
    r.start()
    server = await make_server(no_watcher(), listeners=[
        ocsp_listener(pki, "hard"), dict(ocsp_listener(pki, "hard"), tls=dict(
            ocsp_listener(pki, "hard")["tls"], mode="tls"))])
    # slixmpp over STARTTLS sends its stream header right behind the handshake:
    # it must wait for the OCSP answer, not be lost
    a = await clients("alice@localhost", cert=alice, mechanisms=["EXTERNAL"]).login(server.listener_port(0))
    assert str(a.boundjid.bare) == "alice@localhost"
    d = await clients("alice@localhost", cert=alice, mechanisms=["EXTERNAL"],
                      direct_tls=True).login(server.listener_port(1))
    await assert_still_talks(d, a, "both logged in after OCSP")
    assert r.requests() >= 1
    assert not ocsp_records(server)


async def test_ocsp_revoked_answer_withholds_external_with_reason_revoked(make_server, pki, responders):
    r = responders()
    mallory = aia_client(pki, "or-mallory", r.url)
    r.write_index(revoked=[mallory])
    r.start()
    server = await make_server(no_watcher(), listeners=[ocsp_listener(pki, "soft")])
    feats, answer = await external_outcome(server, pki, mallory)
    assert b"<mechanism>EXTERNAL</mechanism>" not in feats
    assert b"revoked" in answer and b"<success" not in answer
    rejected = [x for x in audit_records(server) if x["event"] == "client-cert"]
    assert rejected and rejected[-1]["reason"] == "revoked"
    assert rejected[-1]["cert_fingerprint"] == mallory.fingerprint_sha256
    assert ocsp_records(server)[-1]["status"] == "revoked"


async def test_ocsp_responder_down_in_soft_mode_offers_external_and_audits_a_warning(
        make_server, pki):
    dead = f"http://127.0.0.1:{free_port()}/"
    alice = aia_client(pki, "os-alice", dead)
    server = await make_server(no_watcher(), listeners=[ocsp_listener(pki, "soft")])
    feats, answer = await external_outcome(server, pki, alice)
    assert b"<mechanism>EXTERNAL</mechanism>" in feats and b"<success" in answer
    warning = ocsp_records(server)[-1]
    assert warning["result"] == "warning" and warning["status"] == "unavailable"
    assert warning["reason"] == "ocsp-unavailable" and dead in warning["detail"]
    assert warning["cert_serial"] == format(alice.serial, "x")


async def test_ocsp_responder_down_in_hard_mode_withholds_external_with_ocsp_unavailable(
        make_server, pki):
    alice = aia_client(pki, "oh-alice", f"http://127.0.0.1:{free_port()}/")
    server = await make_server(no_watcher(), listeners=[ocsp_listener(pki, "hard")])
    feats, answer = await external_outcome(server, pki, alice)
    assert b"<mechanism>EXTERNAL</mechanism>" not in feats
    assert b"ocsp-unavailable" in answer and b"<success" not in answer
    assert ocsp_records(server)[-1]["result"] == "rejected"


async def test_ocsp_responder_that_never_answers_is_cut_off_by_the_timeout(make_server, pki):
    async def silent(reader, writer):
        await reader.read(65536)
        await asyncio.sleep(30)

    tarpit = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{tarpit.sockets[0].getsockname()[1]}/"
        alice = aia_client(pki, "ot-alice", url)
        server = await make_server(no_watcher(), listeners=[ocsp_listener(pki, "hard", ocsp_timeout_s=0.5)])
        start = asyncio.get_running_loop().time()
        feats, answer = await external_outcome(server, pki, alice)
        assert asyncio.get_running_loop().time() - start < 5
        assert b"EXTERNAL</mechanism>" not in feats and b"ocsp-unavailable" in answer
        assert "no answer within 0.5s" in ocsp_records(server)[-1]["detail"]
    finally:
        tarpit.close()


async def test_a_forged_ocsp_response_signed_by_another_key_is_not_trusted(make_server, pki, responders):
    # the forger's certificate carries the CA's exact name, but not its key
    forged = issue_forged_issuer_cert(pki.dir, "ocsp-forger", pki.ca)
    r = responders(signer=forged)
    alice = aia_client(pki, "of-alice", r.url)
    r.write_index(good=[alice])
    r.start()
    server = await make_server(no_watcher(), listeners=[ocsp_listener(pki, "hard")])
    feats, answer = await external_outcome(server, pki, alice)
    assert b"EXTERNAL</mechanism>" not in feats and b"ocsp-unavailable" in answer
    assert "bad signature" in ocsp_records(server)[-1]["detail"]
    assert r.requests() == 1  # it was asked, and its "good" was not believed


async def test_a_responder_delegated_by_another_ca_is_not_trusted(make_server, pki, responders):
    signer = issue_responder_cert(pki.dir, "ocsp-other-ca-signer", pki.other_ca)
    r = responders(signer=signer)
    alice = aia_client(pki, "oo-alice", r.url)
    r.write_index(good=[alice])
    r.start()
    server = await make_server(no_watcher(), listeners=[ocsp_listener(pki, "hard")])
    feats, answer = await external_outcome(server, pki, alice)
    assert b"ocsp-unavailable" in answer
    assert "not issued by" in ocsp_records(server)[-1]["detail"]


async def test_a_cached_ocsp_answer_avoids_a_second_query(make_server, pki, responders):
    r = responders()
    alice = aia_client(pki, "oc-alice", r.url)
    r.write_index(good=[alice])
    r.start()
    server = await make_server(no_watcher(), listeners=[ocsp_listener(pki, "hard", ocsp_cache_s=300)])
    assert b"<success" in (await external_outcome(server, pki, alice))[1]
    assert r.requests() == 1
    assert b"<success" in (await external_outcome(server, pki, alice))[1]
    assert r.requests() == 1  # served from the cache
    r.stop()  # even with the responder gone (hard mode), the cached "good" holds
    assert b"<success" in (await external_outcome(server, pki, alice))[1]
    assert server.listeners[0].ocsp.queries == 1


async def test_ocsp_cache_disabled_asks_every_time_and_ocsp_url_overrides_aia(make_server, pki, responders):
    r = responders()
    alice = aia_client(pki, "ou-alice", None)  # no AIA at all
    r.write_index(good=[alice])
    r.start()
    server = await make_server(no_watcher(), listeners=[
        ocsp_listener(pki, "hard", ocsp_cache_s=0, ocsp_url=r.url)])
    for _ in range(2):
        assert b"<success" in (await external_outcome(server, pki, alice))[1]
    assert r.requests() == 2


# ---------------------------------------------------------------- hot reload of server cert + CA bundle


class ReloadableFiles:
    """Server certificate, key and client-CA bundle in a directory of their own."""

    def __init__(self, directory, pki) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.cert, self.key, self.cas = directory / "server.pem", directory / "server.key", directory / "ca.pem"
        shutil.copyfile(pki.server.cert, self.cert)
        shutil.copyfile(pki.server.key, self.key)
        shutil.copyfile(pki.ca_path, self.cas)

    def listener(self, pki, **tls) -> dict:
        return listener(pki, certfile=str(self.cert), keyfile=str(self.key), cacertfile=str(self.cas), **tls)

    def replace(self, pki, second_ca) -> str:
        """A new server certificate (same trusted CA, new key) and a CA bundle that
        also trusts ``second_ca``; returns the new certificate's SHA-256 fingerprint."""
        issued = issue_server_cert(pki.ca, ["localhost"])
        write_private_key(self.key, issued.key)
        write_cert(self.cert, issued.cert)
        write_cert(self.cas, pki.ca.cert, second_ca.cert)
        return issued.cert.fingerprint(hashes.SHA256()).hex()


async def served_fingerprint(server, pki) -> str:
    """SHA-256 of the certificate a new STARTTLS connection is shown."""
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path)
    try:
        await c.starttls()
        der = c.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()
    finally:
        await c.close()


async def test_reloading_a_new_server_certificate_and_ca_bundle_keeps_live_sessions(
        make_server, clients, pki, tmp_path):
    files = ReloadableFiles(tmp_path / "hot", pki)
    server = await make_server(no_watcher(), listeners=[files.listener(pki)])
    port = server.listener_port(0)
    alice = await clients("alice@localhost", cert=pki.client("hr-alice", xmpp_addrs=["alice@localhost"])) \
        .login(port)
    bob = await clients("bob@localhost", cert=pki.client("hr-bob", xmpp_addrs=["bob@localhost"])).login(port)
    old = await served_fingerprint(server, pki)
    assert old == pki.server.fingerprint_sha256
    second_ca = create_ca("hot reload second CA")
    newcomer = pki.client("hr-dave", ca=second_ca, xmpp_addrs=["dave@localhost"])
    feats, _ = await external_outcome(server, pki, newcomer)
    assert b"<mechanism>EXTERNAL</mechanism>" not in feats  # its CA is not trusted yet

    new = files.replace(pki, second_ca)
    server.reload()  # what SIGHUP calls

    assert await served_fingerprint(server, pki) == new != old
    d = await clients("dave@localhost", cert=newcomer).login(port)  # the new CA bundle is in use
    await assert_still_talks(alice, bob, "the old sessions survived the reload")
    await assert_still_talks(bob, alice, "both ways")
    await assert_still_talks(d, alice, "and meet the new one")
    assert not [r for r in audit_records(server) if r["event"] == "session-revoked"]


async def test_the_file_watcher_picks_up_a_new_server_certificate_without_dropping_sessions(
        make_server, clients, pki, tmp_path):
    files = ReloadableFiles(tmp_path / "hot-watch", pki)
    server = await make_server(no_watcher(0.1), listeners=[files.listener(pki)])
    port = server.listener_port(0)
    alice = await clients("alice@localhost", cert=pki.client("hw-alice", xmpp_addrs=["alice@localhost"])) \
        .login(port)
    second_ca = create_ca("watcher second CA")
    new = files.replace(pki, second_ca)
    async with asyncio.timeout(WAIT_S):
        while await served_fingerprint(server, pki) != new:
            await asyncio.sleep(0.1)
    d = await clients("dave@localhost", cert=pki.client("hw-dave", ca=second_ca,
                                                        xmpp_addrs=["dave@localhost"])).login(port)
    await assert_still_talks(alice, d, "alice stayed connected")
