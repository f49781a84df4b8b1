"""A password typed into the username field never reaches the audit log or the debug log.

Real failed logins over TLS on 127.0.0.1 (raw SASL bytes: slixmpp refuses to build such a
JID), the audit file and every log record captured at DEBUG level are searched.
"""

from __future__ import annotations

import base64
import json
import logging
import re

from .rawclient import RawClient

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SECRET = "hunter2 pass!"  # what a user typed into the username field (fails PRECIS: a space)
FOREIGN = "hunter2pass@evil.example"  # a valid JID, but not on this server's domains


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


async def _auth(c: RawClient, mechanism: str, payload: str | bytes) -> bytes:
    c.mark()
    await c.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{_b64(payload)}</auth>")
    return await c.read_until(b"</failure>|<success|</challenge>")


async def _scram_fail(c: RawClient, username: str) -> bytes:
    """A complete SCRAM-SHA-1 exchange with a wrong proof."""
    out = await _auth(c, "SCRAM-SHA-1", f"n,,n={username},r=clientnonce123")
    if b"</failure>" in out:
        return out
    first = base64.b64decode(re.search(rb"<challenge[^>]*>([^<]+)</challenge>", out).group(1)).decode()
    nonce = dict(part.split("=", 1) for part in first.split(","))["r"]
    c.mark()
    final = f"c=biws,r={nonce},p={_b64(bytes(20))}"
    await c.send(f"<response xmlns='{NS_SASL}'>{_b64(final)}</response>")
    return await c.read_until(b"</failure>|<success")


async def test_failed_login_identity_that_is_no_local_jid_is_not_written_to_audit_or_debug_log(
        make_server, pki, caplog):
    caplog.set_level(logging.DEBUG)
    server = await make_server({"auth": {"sasl_mechanisms": ["external", "scram_sha1", "plain"]}})
    assert await server.auth_chain.register("alice", "localhost", "alice's password")
    alice = pki.client("alice-audit", xmpp_addrs=["alice@localhost"])
    port = server.listener_port(0)

    c = await RawClient.open(port, ca=pki.ca_path, cert=alice)
    try:
        await c.starttls()
        await c.open_stream()
        # the password in the PLAIN username field
        assert b"bad-username" in await _auth(c, "PLAIN", f"\0{SECRET}\0whatever")
        # ... in the authorization identity of a PLAIN login that has the right password
        assert b"bad-authzid" in await _auth(c, "PLAIN", f"{SECRET}\0alice\0alice's password")
        assert b"<failure" in await _auth(c, "PLAIN", f"{FOREIGN}\0alice\0alice's password")
    finally:
        await c.close()
    c = await RawClient.open(port, ca=pki.ca_path, cert=alice)
    try:
        await c.starttls()
        await c.open_stream()
        # ... in the SCRAM username
        assert b"<failure" in await _scram_fail(c, SECRET)
        # a valid JID of this server that does not exist: kept, the operator needs it
        assert b"bad-credentials" in await _scram_fail(c, "nosuchuser")
        # ... in the EXTERNAL authorization identity (the only "username" EXTERNAL has)
        assert b"bad-authzid" in await _auth(c, "EXTERNAL", SECRET)
    finally:
        await c.close()
    await server.stop()

    audit = server.config.audit.file.read_text()
    records = [json.loads(line) for line in audit.splitlines()]
    failures = [r for r in records if r["event"] == "auth" and r["result"] == "failure"]
    assert len(failures) == 6, failures
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    for leaked in (SECRET, "hunter2", FOREIGN):
        assert leaked not in audit, leaked
        assert leaked not in logged, leaked
    assert [r.get("attempted") for r in failures if r["reason"] == "bad-credentials"] == ["nosuchuser@localhost"]
    assert "nosuchuser@localhost" in logged  # the debug log keeps a valid local JID too


def test_a_failed_attempts_identity_is_written_only_as_a_valid_local_jid_else_as_a_keyed_fingerprint(tmp_path):
    from xmppd.audit import FINGERPRINT_KEY_NAME, AuditLog, read_records

    path = tmp_path / "var" / "audit.jsonl"
    log = AuditLog(path, hosts=["localhost"])
    for attempted in ("Alice@LocalHost", SECRET, FOREIGN, "hunter2"):
        log.write({"event": "auth", "result": "failure", "attempted": attempted, "authzid": attempted})
    log.write({"event": "auth", "result": "success", "jid": "bob@localhost"})
    log.close()
    recs = list(read_records(path))
    assert recs[0]["attempted"] == recs[0]["authzid"] == "alice@localhost"
    fps = [r["attempted"] for r in recs[1:4]]
    assert all(re.fullmatch(r"sha256:[0-9a-f]{12}", fp) for fp in fps), fps
    assert len(set(fps)) == 3
    assert recs[4]["jid"] == "bob@localhost"
    # the key persists (same input, same fingerprint after a restart) and is private
    key = path.parent / FINGERPRINT_KEY_NAME
    assert key.stat().st_mode & 0o777 == 0o600
    again = AuditLog(path, hosts=["localhost"])
    assert again.scrub(SECRET) == fps[0]
    again.close()
    # keyed: not the plain hash anyone could compute from a password list
    import hashlib
    assert fps[0] != "sha256:" + hashlib.sha256(SECRET.encode()).hexdigest()[:12]
