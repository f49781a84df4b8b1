"""Audit log: rotation, retention, readers, explanations."""

from __future__ import annotations

import json
import os
import stat
import time

from xmppd.audit import AuditLog, explain, read_records, records_for, rotated_files


def test_audit_file_is_created_private(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl")
    log.write({"event": "auth", "result": "success"})
    log.close()
    assert stat.S_IMODE((tmp_path / "a.jsonl").stat().st_mode) == 0o600


def test_audit_rotates_by_size_and_keeps_the_configured_number(tmp_path):
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, max_bytes=4096, keep=2)
    for i in range(200):
        log.write({"event": "auth", "n": i, "pad": "x" * 100})
    log.close()
    rotated = rotated_files(path)
    assert [p.name for p in rotated] == ["a.jsonl.2", "a.jsonl.1"]
    assert all(p.stat().st_size <= 4096 for p in rotated + [path])
    numbers = [r["n"] for r in read_records(path)]
    assert numbers == sorted(numbers) and numbers[-1] == 199  # oldest first, nothing reordered
    assert len(numbers) < 200  # older rotations were dropped (keep = 2)


def test_audit_retention_deletes_old_rotated_files(tmp_path):
    path = tmp_path / "a.jsonl"
    old = tmp_path / "a.jsonl.3"
    old.write_text('{"event":"auth"}\n')
    past = time.time() - 10 * 86400
    os.utime(old, (past, past))
    AuditLog(path, retention_days=5).close()
    assert not old.exists()


def test_records_for_matches_logins_attempts_and_certificates():
    recs = [
        {"event": "auth", "result": "success", "jid": "alice@localhost"},
        {"event": "auth", "result": "failure", "attempted": "Alice@localhost", "reason": "bad-credentials"},
        {"event": "client-cert", "result": "rejected", "reason": "expired", "cert_xmpp_addrs": ["alice@localhost"]},
        {"event": "auth", "result": "success", "jid": "bob@localhost"},
    ]
    assert len(records_for(recs, "alice@localhost")) == 3


def test_explain_names_the_reason_the_fix_and_the_certificate():
    text = explain({"time": "t", "event": "client-cert", "result": "rejected", "reason": "expired",
                    "peer": "1.2.3.4:5", "listener": "c2s:5222", "cert_fingerprint": "ab" * 32,
                    "cert_serial": "1f", "cert_issuer": "CN=CA"})
    assert "expired" in text and "certs renew" in text and "ab" * 32 in text


def test_unreadable_lines_are_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"event":"auth"}\nnot json\n[1]\n{"event":"tls"}\n')
    assert [r["event"] for r in read_records(path)] == ["auth", "tls"]
    json.dumps(list(read_records(path)))
