"""`xmppd certs issue|list|revoke|renew|policy|crl` as real subprocesses on the embedded default config."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from xmppd.cli_common import ensure_default_pki as _ensure_default_pki
from xmppd.config import default_config
from xmppd.server import Server
from xmppd.storage import create_engine, create_schema
from xmppd.storage.certs import ACTIVE, REVOKED, CertRegistry

from .harness import AuthFailed, Client

ROOT = Path(__file__).resolve().parents[2]


def xmppd(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "xmppd", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env=env, timeout=120)


def ok(cwd: Path, *args: str) -> str:
    r = xmppd(cwd, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def client_dir(tmp: Path, jid: str) -> Path:
    return tmp / "certs" / "clients" / jid


async def rows(tmp: Path, jid: str):
    engine = create_engine(default_config(tmp).storage.url)
    try:
        await create_schema(engine)
        user, domain = jid.split("@")
        return await CertRegistry(engine).list(user, domain)
    finally:
        await engine.dispose()


def test_certs_issue_records_the_certificate_and_list_shows_it(tmp_path):
    ok(tmp_path, "certs", "init-ca")
    out = ok(tmp_path, "certs", "issue", "alice@localhost", "--name", "phone")
    assert "recorded in alice@localhost's certificate registry as 'phone'" in out
    cert = load(client_dir(tmp_path, "alice@localhost") / "cert.pem")
    listing = ok(tmp_path, "certs", "list", "alice@localhost")
    line = next(l for l in listing.splitlines() if fp(cert) in l)
    assert "alice@localhost" in line and "phone" in line and "active" in line
    assert format(cert.serial_number, "x") in line
    # the same name twice is refused (the certificate files are still written)
    dup = xmppd(tmp_path, "certs", "issue", "alice@localhost", "--name", "phone", "--out", "second")
    assert dup.returncode != 0 and "already has an active certificate named 'phone'" in dup.stderr


def test_certs_list_expiring_30d_shows_only_certificates_ending_within_30_days(tmp_path):
    ok(tmp_path, "certs", "init-ca")
    ok(tmp_path, "certs", "issue", "alice@localhost", "--days", "10")
    ok(tmp_path, "certs", "issue", "bob@localhost", "--days", "365")
    soon = ok(tmp_path, "certs", "list", "--expiring", "30d")
    assert "alice@localhost" in soon and "bob@localhost" not in soon
    everything = ok(tmp_path, "certs", "list")
    assert "alice@localhost" in everything and "bob@localhost" in everything
    assert "no registered certificates expiring" in ok(tmp_path, "certs", "list", "bob@localhost",
                                                       "--expiring", "30d")
    bad = xmppd(tmp_path, "certs", "list", "--expiring", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


async def test_certs_revoke_marks_the_registry_and_puts_the_serial_on_crl_pem(tmp_path):
    ok(tmp_path, "certs", "init-ca")
    ok(tmp_path, "certs", "issue", "alice@localhost")
    ok(tmp_path, "certs", "issue", "bob@localhost")
    alice = load(client_dir(tmp_path, "alice@localhost") / "cert.pem")
    bob = load(client_dir(tmp_path, "bob@localhost") / "cert.pem")
    out = ok(tmp_path, "certs", "revoke", "alice@localhost")
    assert "revoked alice@localhost" in out and "crl.pem" in out
    [row] = await rows(tmp_path, "alice@localhost")
    assert row.state == REVOKED and row.fingerprint_sha256 == fp(alice)
    assert (await rows(tmp_path, "bob@localhost"))[0].state == ACTIVE

    ca = load(tmp_path / "certs/ca.pem")
    crl = x509.load_pem_x509_crl((tmp_path / "certs/crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key()) and crl.issuer == ca.subject
    assert crl.get_revoked_certificate_by_serial_number(alice.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(bob.serial_number) is None

    # by fingerprint (colons allowed); the CRL keeps the earlier serial
    colons = ":".join(fp(bob)[i:i + 2] for i in range(0, 64, 2)).upper()
    ok(tmp_path, "certs", "revoke", colons)
    crl = x509.load_pem_x509_crl((tmp_path / "certs/crl.pem").read_bytes())
    assert {e.serial_number for e in crl} == {alice.serial_number, bob.serial_number}
    again = xmppd(tmp_path, "certs", "revoke", "alice@localhost")
    assert again.returncode != 0 and "no unrevoked registered certificate" in again.stderr
    assert "revoked" in ok(tmp_path, "certs", "list", "alice@localhost")


def test_certs_policy_sets_and_clears_the_per_account_override(tmp_path):
    assert "policy always" in ok(tmp_path, "certs", "policy", "alice@localhost", "always")
    assert "follows auth.cert_registry (ifpresent)" in ok(tmp_path, "certs", "policy", "alice@localhost",
                                                          "default")
    bad = xmppd(tmp_path, "certs", "policy", "alice@elsewhere.example", "never")
    assert bad.returncode == 2 and "general.hosts" in bad.stderr


@pytest.fixture
async def embedded_server(tmp_path, monkeypatch):
    """The embedded default config + dev PKI (what `xmppd run` generates), on ephemeral ports."""
    monkeypatch.chdir(tmp_path)
    config = default_config(tmp_path)
    _ensure_default_pki(config)
    servers = []

    async def start() -> Server:
        cfg = dataclasses.replace(config, listeners=tuple(
            dataclasses.replace(lc, port=0, ip_address="127.0.0.1") for lc in config.listeners))
        server = Server(cfg)
        await server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.stop()


async def login(tmp: Path, server: Server, jid: str, cert: Path, key: Path) -> Client:
    files = type("C", (), {"cert": cert, "key": key})
    c = Client(jid, ca=tmp / "certs/ca.pem", cert=files, mechanisms=["EXTERNAL"])
    try:
        return await c.login(server.listener_port(0))
    except BaseException:
        await c.close()
        raise


async def test_certs_renew_keeps_the_jid_and_both_certificates_work_during_the_overlap(tmp_path,
                                                                                        embedded_server):
    ok(tmp_path, "certs", "issue", "alice@localhost")
    d = client_dir(tmp_path, "alice@localhost")
    old = load(d / "cert.pem")
    r = xmppd(tmp_path, "certs", "renew", "alice@localhost", "--p12", "alice-new.p12", "--password-file", "-",
              stdin="s3cret\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "recorded in alice@localhost's certificate registry" in out
    new = load(d / "cert.pem")
    serial = format(old.serial_number, "x")
    assert fp(load(d / f"cert-{serial}.pem")) == fp(old) and (d / f"key-{serial}.pem").exists()
    assert new.serial_number != old.serial_number
    san = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in san if isinstance(n, x509.OtherName)] == \
        [n.value for n in old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
         if isinstance(n, x509.OtherName)]
    assert (tmp_path / "alice-new.p12").exists()
    registered = await rows(tmp_path, "alice@localhost")
    assert {r.fingerprint_sha256 for r in registered if r.state == ACTIVE} == {fp(old), fp(new)}

    server = await embedded_server()
    clients = []
    try:
        clients.append(await login(tmp_path, server, "alice@localhost", d / f"cert-{serial}.pem",
                                   d / f"key-{serial}.pem"))
        clients.append(await login(tmp_path, server, "alice@localhost", d / "cert.pem", d / "key.pem"))
        assert clients[0].boundjid.bare == clients[1].boundjid.bare == "alice@localhost"
        # the end of the overlap: revoke the old one; new logins with it are refused at once
        # off the event loop: the server in this process must keep running (and commit) meanwhile
        await asyncio.to_thread(ok, tmp_path, "certs", "revoke", fp(old))
        with pytest.raises(AuthFailed) as e:
            await login(tmp_path, server, "alice@localhost", d / f"cert-{serial}.pem", d / f"key-{serial}.pem")
        assert "cert-revoked" in e.value.text
        clients.append(await login(tmp_path, server, "alice@localhost", d / "cert.pem", d / "key.pem"))
    finally:
        for c in clients:
            await c.close()


async def test_certs_renew_registers_a_pre_registry_certificate_so_it_keeps_working(tmp_path):
    ok(tmp_path, "certs", "init-ca")
    # a certificate issued before the registry existed: files only, no row
    ok(tmp_path, "certs", "issue", "alice@localhost", "--config", str(_foreign_config(tmp_path)))
    assert await rows(tmp_path, "alice@localhost") == []
    old = load(client_dir(tmp_path, "alice@localhost") / "cert.pem")
    out = ok(tmp_path, "certs", "renew", "alice@localhost")
    assert "registered the previous certificate too" in out
    registered = await rows(tmp_path, "alice@localhost")
    assert len(registered) == 2 and fp(old) in {r.fingerprint_sha256 for r in registered}


def _foreign_config(tmp: Path) -> Path:
    """A config that does not serve localhost: `issue` writes the files and records nothing."""
    p = tmp / "other.toml"
    p.write_text('[general]\nhosts = ["elsewhere.example"]\n[[listen.c2s]]\nport = 5222\n'
                 'tls.certfile = "certs/server.pem"\ntls.keyfile = "certs/server.key"\n'
                 f'[storage]\nurl = "sqlite+aiosqlite:///{tmp}/other.sqlite"\n')
    return p
