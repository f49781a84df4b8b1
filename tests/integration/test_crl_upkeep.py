"""CRLs that keep working: a server holding the CA key re-signs its CRL before nextUpdate (at
start and while running), one that does not warns (log, check-config, explain-login), and a
login refused because the CRL is past nextUpdate is audited as ``crl-expired``."""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from xmppd.pki.crl_upkeep import CRL_RENEW_FRACTION

from .harness import WAIT_S
from .rawclient import RawClient

NOW = _dt.datetime.now(_dt.timezone.utc)


def write_crl(path: Path, ca, *, last: _dt.datetime, next_: _dt.datetime, revoked=()) -> Path:
    """A CRL issued directly with cryptography (any lastUpdate/nextUpdate, also in the past)."""
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
         .last_update(last).next_update(next_))
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(last).build())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


def load(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def ca_dir(tmp_path: Path, pki, *, with_key: bool) -> Path:
    """The `xmppd certs` layout: DIR/ca.pem (+ DIR/ca.key when this server holds the key)."""
    d = tmp_path / ("ca-with-key" if with_key else "ca-public")
    d.mkdir()
    shutil.copy(pki.ca_path, d / "ca.pem")
    if with_key:
        shutil.copy(pki.ca_key_path, d / "ca.key")
    return d


def tls_with_crl(pki, crl: Path) -> dict:
    return {"listen": {"c2s": [{"port": 0, "ip_address": "127.0.0.1", "tls": {
        "mode": "starttls_required", "certfile": str(pki.server.cert), "keyfile": str(pki.server.key),
        "cacertfile": str(pki.ca_path), "crl_files": [str(crl)], "disconnect_on_failure": False}}]}}


async def external(server, pki, cert) -> bytes:
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    try:
        await c.starttls()
        feats = await c.open_stream()
        if b"<mechanism>EXTERNAL</mechanism>" not in feats:
            return feats
        return await c.auth_external()
    finally:
        await c.close()


def audit(server) -> list[dict]:
    return [json.loads(line) for line in server.config.audit.file.read_text().splitlines()]


async def test_a_certificate_login_refused_because_the_crl_is_past_next_update_is_audited_as_crl_expired(
        tmp_path, make_server, pki, caplog):
    caplog.set_level(logging.WARNING)
    d = ca_dir(tmp_path, pki, with_key=False)
    crl = write_crl(d / "crl.pem", pki.ca, last=NOW - _dt.timedelta(days=31), next_=NOW - _dt.timedelta(days=1))
    server = await make_server(tls_with_crl(pki, crl))
    alice = pki.client("alice-crl-expired", xmpp_addrs=["alice@localhost"])
    out = await external(server, pki, alice)
    assert b"<mechanism>EXTERNAL</mechanism>" not in out  # the certificate was refused
    rejected = [r for r in audit(server) if r["event"] == "client-cert"]
    assert [r["reason"] for r in rejected] == ["crl-expired"]
    assert f"CRL {crl} EXPIRED" in caplog.text  # said loudly at start, with the fix
    assert "certs crl --dir" in caplog.text
    assert load(crl).next_update_utc < NOW  # not re-signed: this server has no CA key


async def test_a_server_holding_the_ca_key_resigns_an_expired_or_due_crl_at_start_keeping_its_entries(
        tmp_path, make_server, pki):
    d = ca_dir(tmp_path, pki, with_key=True)
    revoked = pki.client("mallory-upkeep", xmpp_addrs=["mallory@localhost"])
    crl = write_crl(d / "crl.pem", pki.ca, last=NOW - _dt.timedelta(days=31), next_=NOW - _dt.timedelta(days=1),
                    revoked=[revoked.serial])
    server = await make_server(tls_with_crl(pki, crl))
    new = load(crl)
    assert new.next_update_utc > _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=29)  # same validity
    assert [e.serial_number for e in new] == [revoked.serial]
    alice = pki.client("alice-crl-resigned", xmpp_addrs=["alice@localhost"])
    assert b"<success" in await external(server, pki, alice)  # certificate logins work again
    assert b"<mechanism>EXTERNAL</mechanism>" not in await external(server, pki, revoked)


async def test_a_running_server_resigns_its_crl_when_less_than_a_third_of_its_validity_is_left(
        tmp_path, make_server, pki):
    d = ca_dir(tmp_path, pki, with_key=True)
    # 30 days of validity, the "third left" point 2 s from now: fine at start, due while running
    validity = _dt.timedelta(days=30)
    due_at = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=2)
    next_ = due_at + validity * CRL_RENEW_FRACTION
    crl = write_crl(d / "crl.pem", pki.ca, last=next_ - validity, next_=next_)
    server = await make_server(deep(tls_with_crl(pki, crl), {"general": {"reload_check_interval_s": 0.2}}))
    assert load(crl).next_update_utc == next_.replace(microsecond=0)  # not due yet at start
    async with asyncio.timeout(WAIT_S):
        while load(crl).next_update_utc == next_.replace(microsecond=0):
            await asyncio.sleep(0.1)
    assert load(crl).next_update_utc > _dt.datetime.now(_dt.timezone.utc) + validity - _dt.timedelta(minutes=10)
    alice = pki.client("alice-crl-running", xmpp_addrs=["alice@localhost"])
    assert b"<success" in await external(server, pki, alice)


async def test_a_listed_crl_that_does_not_exist_is_created_by_a_server_holding_the_ca_key(
        tmp_path, make_server, pki):
    d = ca_dir(tmp_path, pki, with_key=True)
    server = await make_server(tls_with_crl(pki, d / "crl.pem"))
    assert load(d / "crl.pem").issuer == pki.ca.cert.subject
    alice = pki.client("alice-crl-created", xmpp_addrs=["alice@localhost"])
    assert b"<success" in await external(server, pki, alice)


def deep(a: dict, b: dict) -> dict:
    from .harness import deep_merge
    return deep_merge(a, b)


def test_check_config_and_explain_login_warn_about_a_crl_near_its_next_update_without_the_ca_key(tmp_path, pki):
    d = ca_dir(tmp_path, pki, with_key=False)
    crl = write_crl(d / "crl.pem", pki.ca, last=NOW - _dt.timedelta(days=25), next_=NOW + _dt.timedelta(days=5))
    conf = tmp_path / "xmppd.toml"
    conf.write_text(f"""
[general]
hosts = ["localhost"]
data_dir = "{tmp_path / 'var'}"
[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.certfile = "{pki.server.cert}"
tls.keyfile = "{pki.server.key}"
tls.cacertfile = "{pki.ca_path}"
tls.crl_files = ["{crl}"]
""")
    (tmp_path / "var").mkdir(mode=0o700)
    (tmp_path / "var" / "audit.jsonl").write_text("")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "xmppd", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    checked = run("check-config", str(conf))
    assert checked.returncode == 0, checked.stderr
    assert f"WARNING: CRL {crl} expires on" in checked.stdout
    assert "does not hold its CA key" in checked.stdout or "certs crl --dir" in checked.stdout
    explained = run("explain-login", "alice@localhost", "--config", str(conf))
    assert f"WARNING: CRL {crl} expires on" in explained.stdout
