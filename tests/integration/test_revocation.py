"""Revocation that bites: CRL reload (SIGHUP path and file watcher) closes live
sessions, OCSP soft/hard against a real ``openssl ocsp`` responder, and hot
reload of the server certificate and client-CA bundle without dropping sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.support.pki import PKIFactory
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
