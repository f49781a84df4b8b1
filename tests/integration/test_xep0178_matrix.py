"""XEP-0178 end to end: what a real client sees for each kind of certificate.

The per-rule unit matrix is in tests/unit/sasl/test_external.py (identity) and
tests/unit/tls/test_client_certs.py (verification); these prove the server
wires them together over real TLS.
"""

from __future__ import annotations


import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from .harness import AuthFailed
from .rawclient import RawClient


def listener(pki, **tls):
    base = {"mode": "starttls_required", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
            "cacertfile": str(pki.ca_path), "disconnect_on_failure": False}
    base.update(tls)
    return {"port": 0, "ip_address": "127.0.0.1", "tls": base}


async def external_outcome(server, pki, cert, authzid: str | None = None) -> bytes:
    """Features after TLS + the answer to EXTERNAL, from a raw client."""
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await c.starttls()
        feats = await c.open_stream()
        out = await c.auth_external(authzid)
        return feats + b"\n--\n" + out
    finally:
        await c.close()


async def test_external_two_xmppaddrs_without_authzid_fails(server, clients, pki):
    cert = pki.client("two-addrs", xmpp_addrs=["alice@localhost", "alice2@localhost"])
    c = clients("alice@localhost", cert=cert, mechanisms=["EXTERNAL"])
    with pytest.raises(AuthFailed) as err:
        await c.login(server.listener_port(0))
    assert err.value.condition == "invalid-authzid" and "ambiguous-identity" in err.value.text


async def test_external_two_xmppaddrs_with_authzid_among_them_binds_that_jid(server, clients, pki):
    cert = pki.client("two-addrs-az", xmpp_addrs=["alice@localhost", "alice2@localhost"])
    c = await clients("alice2@localhost", cert=cert, authzid="alice2@localhost").login(server.listener_port(0))
    assert str(c.boundjid.bare) == "alice2@localhost"


async def test_external_cn_only_certificate_fails_without_common_name(server, pki):
    cert = pki.client("cn-only", common_name="dave")
    out = await external_outcome(server, pki, cert)
    assert b"<not-authorized/>" in out and b"no-xmppaddr" in out


async def test_external_cn_only_certificate_logs_in_with_common_name_and_prefix(make_server, clients, pki):
    server = await make_server({"auth": {"sasl_external": ["standard", "common_name"],
                                         "sasl_external_common_name": {"prefix": "u_"}}})
    cert = pki.client("cn-only-2", common_name="dave")
    c = await clients("u_dave@localhost", cert=cert).login(server.listener_port(0))
    assert str(c.boundjid.bare) == "u_dave@localhost"


async def test_external_xmppaddr_for_another_domain_is_wrong_domain(server, pki):
    cert = pki.client("other-domain", xmpp_addrs=["eve@example.net"])
    out = await external_outcome(server, pki, cert)
    assert b"wrong-domain" in out


async def test_external_with_sql_only_needs_an_existing_account(make_server, clients, pki):
    server = await make_server({"auth": {"methods": ["sql"]}})
    cert = pki.client("sql-only", xmpp_addrs=["frank@localhost"])
    out = await external_outcome(server, pki, cert)
    assert b"no-account" in out
    assert await server.auth_chain.register("frank", "localhost", "pw")
    c = await clients("frank@localhost", cert=cert).login(server.listener_port(0))
    assert str(c.boundjid.bare) == "frank@localhost"


@pytest.mark.parametrize("kind,reason", [
    ("expired", b"expired"),
    ("future", b"not-yet-valid"),
    ("untrusted", b"unknown-ca"),
    ("server-eku", b"eku-not-client-auth"),
])
async def test_bad_certificates_are_not_offered_external_and_the_client_is_told_why(server, pki, kind, reason):
    addr = [f"{kind}@localhost"]
    if kind == "expired":
        cert = pki.expired_client(f"m-{kind}", xmpp_addrs=addr)
    elif kind == "future":
        cert = pki.future_client(f"m-{kind}", xmpp_addrs=addr)
    elif kind == "untrusted":
        cert = pki.client(f"m-{kind}", ca="other", xmpp_addrs=addr)
    else:
        cert = pki.client(f"m-{kind}", xmpp_addrs=addr, ekus=[ExtendedKeyUsageOID.SERVER_AUTH])
    out = await external_outcome(server, pki, cert)
    feats, answer = out.split(b"\n--\n")
    assert b"EXTERNAL" not in feats
    assert reason in answer


async def test_revoked_certificate_in_a_crl_is_refused(make_server, pki):
    good = pki.client("crl-good", xmpp_addrs=["good@localhost"])
    bad = pki.client("crl-bad", xmpp_addrs=["bad@localhost"])
    crl = pki.crl("matrix", [bad])
    server = await make_server(listeners=[listener(pki, crl_files=[str(crl)])])
    assert b"<success" in await external_outcome(server, pki, good)
    out = await external_outcome(server, pki, bad)
    assert b"revoked" in out and b"<success" not in out


@pytest.mark.parametrize("verify_mode,offered", [("peer", False), ("selfsigned_peer", True), ("none", False)])
async def test_self_signed_certificate_under_each_verify_mode(make_server, pki, verify_mode, offered):
    cert = pki.client(f"self-{verify_mode}", ca=None, xmpp_addrs=["selfie@localhost"])
    server = await make_server(listeners=[listener(pki, verify_mode=verify_mode)])
    out = await external_outcome(server, pki, cert)
    feats, answer = out.split(b"\n--\n")
    assert (b"<mechanism>EXTERNAL</mechanism>" in feats) is offered
    assert (b"<success" in answer) is offered
