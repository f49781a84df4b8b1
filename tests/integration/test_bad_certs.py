"""Client certificates OpenSSL accepts but ``cryptography`` cannot parse.

Anyone can make one (self-signed, no authentication needed), so none of them may
raise out of the connection: the certificate is refused with the reason code
``unparsable-certificate`` (audited with its fingerprint), EXTERNAL is not offered,
and the client may still log in with a password.  XEP-0257 ``<append/>`` of such a
certificate (or of one with an invalid X.509 version) is a ``bad-request``.
"""

from __future__ import annotations

import base64
import json
import logging

import pytest
from slixmpp.exceptions import IqError

from tests.support.badcerts import invalid_version_cert_der, printable_string_subject_cert

from .rawclient import HEADER, RawClient

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"


def audit_records(server) -> list[dict]:
    return [json.loads(line) for line in server.config.audit.file.read_text().splitlines()]


def tracebacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def sasl_features(server, pki, cert, *, direct_tls: bool) -> bytes:
    c = await RawClient.open(server.listener_port(1 if direct_tls else 0), ca=pki.ca_path, cert=cert,
                             direct_tls=direct_tls)
    try:
        if not direct_tls:
            await c.starttls()
        return await c.open_stream()
    finally:
        await c.close()


@pytest.mark.parametrize("signed_by", ["self", "trusted-ca"])
@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
async def test_unparsable_client_certificate_is_refused_with_a_reason_and_external_is_not_offered(
        server, pki, caplog, signed_by, direct_tls):
    bad = printable_string_subject_cert(pki, f"mallory-{signed_by}-{direct_tls}",
                                        ca=pki.ca if signed_by == "trusted-ca" else None)
    feats = await sasl_features(server, pki, bad, direct_tls=direct_tls)
    assert b"<mechanisms" in feats
    assert b"EXTERNAL" not in feats
    assert b"SCRAM-SHA-256" in feats  # a password is still possible
    refusals = [r for r in audit_records(server) if r["event"] == "client-cert"]
    assert refusals, audit_records(server)
    assert refusals[-1]["reason"] == "unparsable-certificate"
    assert refusals[-1]["cert_fingerprint"] == bad.fingerprint_sha256
    assert tracebacks(caplog) == []


async def test_password_login_works_while_presenting_an_unparsable_certificate(server, pki, clients, caplog):
    assert await server.auth_chain.register("mallory", "localhost", "pw-mallory")
    bad = printable_string_subject_cert(pki, "mallory-pw")
    c = await clients("mallory@localhost", "pw-mallory", cert=bad).login(server.listener_port(0))
    assert str(c.boundjid.bare) == "mallory@localhost"
    auth = [r for r in audit_records(server) if r["event"] == "auth"][-1]
    assert auth["result"] == "success" and auth["mechanism"].startswith("SCRAM")
    assert tracebacks(caplog) == []


async def test_unparsable_certificate_with_disconnect_on_failure_ends_the_handshake_with_the_reason(
        make_server, pki, caplog):
    server = await make_server({"listen": {"c2s": [
        {"port": 0, "ip_address": "127.0.0.1",
         "tls": {"mode": "tls", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
                 "cacertfile": str(pki.ca_path), "disconnect_on_failure": True}}]}})
    bad = printable_string_subject_cert(pki, "mallory-strict", ca=pki.ca)
    with pytest.raises((ConnectionError, OSError)):
        c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=bad, direct_tls=True)
        try:
            await c.open_stream()
        finally:
            await c.close()
    failures = [r for r in audit_records(server) if r["event"] == "tls"]
    assert failures and failures[-1]["reason"] == "unparsable-certificate"
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("what", ["invalid-version", "invalid-printable-string"])
async def test_xep0257_append_of_an_unparsable_certificate_is_bad_request_with_a_text(
        server, pki, clients, caplog, what):
    jid = "alice@localhost"
    alice_cert = pki.client(f"alice-append-{what}", xmpp_addrs=[jid])
    a = clients(jid, cert=alice_cert, mechanisms=["EXTERNAL"])
    a.register_plugin("xep_0257")
    await a.login(server.listener_port(0))
    if what == "invalid-version":
        der = invalid_version_cert_der(pki.client(f"alice-v-{what}", xmpp_addrs=[jid]), issuer_key=pki.ca.key)
    else:
        der = printable_string_subject_cert(pki, f"alice-ps-{what}", ca=pki.ca).der
    with pytest.raises(IqError) as e:
        await a.plugin["xep_0257"].add_cert("broken", base64.b64encode(der).decode())
    assert e.value.iq["error"]["condition"] == "bad-request"
    assert e.value.iq["error"]["text"]
    assert await a.plugin["xep_0257"].get_certs() == set()
    assert tracebacks(caplog) == []
