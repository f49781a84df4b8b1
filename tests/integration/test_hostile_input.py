"""Bad input gets the right stream error, and the server keeps serving everyone else."""

from __future__ import annotations

import pytest

from .rawclient import HEADER, RawClient


def stream_error_of(data: bytes) -> bytes:
    start = data.find(b"<stream:error>")
    assert start >= 0, f"no stream error in {data[-400:]!r}"
    return data[start:]


async def expect_stream_error(client: RawClient, condition: str) -> bytes:
    data = await client.read_to_eof()
    err = stream_error_of(data)
    assert f"<{condition} ".encode() in err or f"<{condition}/>".encode() in err, err
    assert b"<text" in err  # every error says why
    return err


@pytest.fixture
async def raw(server, pki):
    opened: list[RawClient] = []

    async def make(port_index: int = 0, cert=None, **kw) -> RawClient:
        c = await RawClient.open(server.listener_port(port_index), ca=pki.ca_path, cert=cert, **kw)
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.close()


async def others_still_served(server, pki) -> None:
    cert = pki.client("survivor", xmpp_addrs=["survivor@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        assert (await c.login_external()).startswith("survivor@localhost/")
    finally:
        await c.close()


async def test_garbage_instead_of_a_stream_header_is_not_well_formed(server, raw, pki):
    c = await raw()
    await c.send(b"\x16\x03\x01 definitely < not > xml &&&")
    await expect_stream_error(c, "not-well-formed")
    await others_still_served(server, pki)


async def test_doctype_in_the_stream_is_restricted_xml(server, raw, pki):
    c = await raw()
    await c.send(b"<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY a 'aaaa'>]>" + HEADER.format(to="localhost").encode()[21:])
    await expect_stream_error(c, "restricted-xml")
    await others_still_served(server, pki)


async def test_billion_laughs_is_refused_fast_with_restricted_xml(server, raw, pki):
    bomb = (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'>"
            + b"".join(b"<!ENTITY %c '&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;'>" % ((98 + i,) + (97 + i,) * 10)
                       for i in range(9))
            + b"]><x>&j;</x>")
    c = await raw()
    await c.send(bomb)
    await expect_stream_error(c, "restricted-xml")
    await others_still_served(server, pki)


async def test_comment_inside_a_stanza_after_tls_is_restricted_xml(server, raw, pki):
    c = await raw()
    await c.starttls()
    await c.open_stream()
    await c.send(b"<message to='a@localhost'><!-- hi --></message>")
    await expect_stream_error(c, "restricted-xml")


async def test_stanza_before_authentication_is_not_authorized(server, raw, pki):
    c = await raw()
    await c.starttls()
    await c.open_stream()
    await c.send(b"<message to='alice@localhost'><body>hi</body></message>")
    await expect_stream_error(c, "not-authorized")


async def test_auth_before_starttls_is_a_policy_violation(server, raw):
    c = await raw()
    await c.open_stream()
    await c.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGJvYgBwdw==</auth>")
    await expect_stream_error(c, "policy-violation")


async def test_oversized_stanza_before_authentication_is_a_policy_violation(server, raw, pki):
    c = await raw()
    await c.starttls()
    await c.open_stream()
    await c.send(b"<message><body>" + b"x" * 40_000 + b"</body></message>")
    await expect_stream_error(c, "policy-violation")
    await others_still_served(server, pki)


async def test_oversized_stanza_after_authentication_is_a_policy_violation(make_server, pki):
    server = await make_server({"listen": {}}, listeners=[{
        "port": 0, "ip_address": "127.0.0.1", "max_stanza_bytes": 8192, "max_stanza_bytes_preauth": 4096,
        "tls": {"mode": "starttls_required", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
                "cacertfile": str(pki.ca_path)}}])
    cert = pki.client("big", xmpp_addrs=["big@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await c.login_external()
        await c.send(b"<message to='big@localhost'><body>" + b"y" * 9000 + b"</body></message>")
        await expect_stream_error(c, "policy-violation")
    finally:
        await c.close()


async def test_nesting_deeper_than_the_limit_is_a_policy_violation(server, raw):
    c = await raw()
    await c.starttls()
    await c.open_stream()
    await c.send(b"<message>" + b"<a>" * 100)
    await expect_stream_error(c, "policy-violation")


async def test_unknown_domain_in_the_stream_header_is_host_unknown(server, raw):
    c = await raw()
    await c.send(HEADER.format(to="elsewhere.example"))
    await expect_stream_error(c, "host-unknown")


async def test_repeated_auth_failures_close_the_stream(server, raw, pki):
    c = await raw()
    await c.starttls()
    await c.open_stream()
    for _ in range(3):
        await c.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='NOPE'>=</auth>")
    data = await c.read_to_eof()
    assert data.count(b"<invalid-mechanism/>") == 3
    assert b"policy-violation" in stream_error_of(data)


async def test_external_without_a_certificate_fails_and_says_why(server, raw):
    c = await raw()
    await c.starttls()
    feats = await c.open_stream()
    assert b"EXTERNAL" not in feats
    out = await c.auth_external()
    assert b"<invalid-mechanism/>" in out and b"no-cert" in out


async def test_expired_certificate_is_not_offered_external_and_the_reason_is_given(server, raw, pki):
    cert = pki.expired_client("expired-raw", xmpp_addrs=["old@localhost"])
    c = await raw(cert=cert)
    await c.starttls()
    feats = await c.open_stream()
    assert b"EXTERNAL" not in feats
    out = await c.auth_external()
    assert b"expired" in out


async def test_negotiation_timeout_closes_idle_unauthenticated_connections(make_server, pki):
    server = await make_server({"listen": {}}, listeners=[{
        "port": 0, "ip_address": "127.0.0.1", "negotiation_timeout_s": 0.5,
        "tls": {"mode": "starttls_required", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key)}}])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path)
    try:
        await c.open_stream()
        await expect_stream_error(c, "connection-timeout")
    finally:
        await c.close()


async def test_closing_the_stream_gets_a_closing_tag_back(server, raw, pki):
    cert = pki.client("closer", xmpp_addrs=["closer@localhost"])
    c = await raw(cert=cert)
    await c.login_external()
    await c.send(b"</stream:stream>")
    data = await c.read_to_eof()
    assert data.rstrip().endswith(b"</stream:stream>")


async def test_garbage_right_after_a_good_stanza_in_the_same_packet_is_not_well_formed(server, raw, pki):
    cert = pki.client("garbage-after", xmpp_addrs=["garbage@localhost"])
    c = await raw(cert=cert)
    await c.login_external()
    await c.send(b"<presence/><<<>>>")
    await expect_stream_error(c, "not-well-formed")
