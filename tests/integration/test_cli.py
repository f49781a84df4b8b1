"""The admin commands from the README, run as real subprocesses, then used by real clients."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from xmppd.cli_common import ensure_default_pki as _ensure_default_pki
from xmppd.config import default_config
from xmppd.server import Server
from xmppd.tls.identity import cert_facts

from .harness import Client

ROOT = Path(__file__).resolve().parents[2]


def xmppd(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "xmppd", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env=env, timeout=120)


def test_certs_init_ca_writes_the_key_with_mode_0600(tmp_path):
    r = xmppd(tmp_path, "certs", "init-ca")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "certs/ca.key").stat().st_mode) == 0o600
    again = xmppd(tmp_path, "certs", "init-ca")
    assert again.returncode != 0 and "already exists" in again.stderr


def test_certs_issue_writes_a_p12_with_the_xmppaddr_and_prints_import_steps(tmp_path):
    assert xmppd(tmp_path, "certs", "init-ca").returncode == 0
    r = xmppd(tmp_path, "certs", "issue", "alice@localhost", "--p12", "alice.p12", "--password-file", "-",
              stdin="s3cret\n")
    assert r.returncode == 0, r.stderr
    assert "Conversations" in r.stdout and "s3cret" not in r.stdout
    p12 = tmp_path / "alice.p12"
    assert stat.S_IMODE(p12.stat().st_mode) == 0o600
    key, cert, cas = pkcs12.load_key_and_certificates(p12.read_bytes(), b"s3cret")
    facts = cert_facts(cert)
    assert facts.xmpp_addrs == ("alice@localhost",) and facts.common_name == "alice"
    assert "1.3.6.1.5.5.7.3.2" in facts.ekus  # clientAuth
    assert len(cas) == 1


def test_certs_issue_generates_a_passphrase_and_prints_it_on_stderr_only(tmp_path):
    assert xmppd(tmp_path, "certs", "init-ca").returncode == 0
    r = xmppd(tmp_path, "certs", "issue", "carol@localhost", "--p12", "carol.p12")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stderr.splitlines() if "passphrase" in l)
    passphrase = line.rsplit(":", 1)[1].strip()
    assert passphrase not in r.stdout  # stdout is what gets piped and logged
    pkcs12.load_key_and_certificates((tmp_path / "carol.p12").read_bytes(), passphrase.encode())


def test_check_config_accepts_the_example_and_names_the_key_of_an_error(tmp_path):
    # check-config loads the files the example names: the dev PKI its header says to create
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/xmppd.example.toml").write_text((ROOT / "conf/xmppd.example.toml").read_text())
    assert xmppd(tmp_path, "certs", "init-ca", "--dir", "certs").returncode == 0
    assert xmppd(tmp_path, "certs", "server", "localhost", "--dir", "certs").returncode == 0
    ok = xmppd(tmp_path, "check-config", "conf/xmppd.example.toml")
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[general]\nhosts = ["localhost"]\n[[listen.c2s]]\nport = 5222\n'
                   'tls.certfile = "a"\ntls.keyfile = "b"\ntls.verify_mode = "sometimes"\n')
    r = xmppd(tmp_path, "check-config", str(bad))
    assert r.returncode == 2
    assert "listen.c2s[0].tls.verify_mode" in r.stderr


def test_user_add_refuses_a_duplicate_and_a_foreign_domain(tmp_path):
    assert xmppd(tmp_path, "user", "add", "bob@localhost", "--password-file", "-", stdin="pw\n").returncode == 0
    dup = xmppd(tmp_path, "user", "add", "bob@localhost", "--password-file", "-", stdin="pw\n")
    assert dup.returncode != 0 and "already exists" in dup.stderr
    other = xmppd(tmp_path, "user", "add", "bob@elsewhere.example", "--password-file", "-", stdin="pw\n")
    assert other.returncode != 0 and "general.hosts" in other.stderr


async def test_readme_flow_on_the_embedded_default(tmp_path, monkeypatch):
    """Default config + dev PKI, a CLI-issued cert user and a CLI-added password user talk."""
    monkeypatch.chdir(tmp_path)
    config = default_config(tmp_path)
    _ensure_default_pki(config)  # what `xmppd run` does on first start
    assert (tmp_path / "certs/ca.pem").exists()
    assert stat.S_IMODE((tmp_path / "certs/server.key").stat().st_mode) == 0o600
    r = xmppd(tmp_path, "certs", "issue", "alice@localhost")
    assert r.returncode == 0, r.stderr
    r = xmppd(tmp_path, "user", "add", "bob@localhost", "--password-file", "-", stdin="bob's password\n")
    assert r.returncode == 0, r.stderr

    # the embedded default on ephemeral ports instead of 5222/5223
    config = dataclasses.replace(config, listeners=tuple(dataclasses.replace(lc, port=0, ip_address="127.0.0.1")
                                                          for lc in config.listeners))
    server = Server(config)
    await server.start()
    alice = bob = None
    try:
        assert [lc.tls.mode for lc in config.listeners] == ["starttls", "tls"]
        alice_cert = type("C", (), {"cert": tmp_path / "certs/clients/alice@localhost/cert.pem",
                                    "key": tmp_path / "certs/clients/alice@localhost/key.pem"})
        ca = tmp_path / "certs/ca.pem"
        alice = await Client("alice@localhost", ca=ca, cert=alice_cert).login(server.listener_port(0))
        bob = await Client("bob@localhost", "bob's password", ca=ca, direct_tls=True).login(server.listener_port(1))
        alice.send_message(mto=bob.boundjid.full, mbody="hi from a certificate")
        assert (await bob.next_message())["body"] == "hi from a certificate"
    finally:
        for c in (alice, bob):
            if c is not None:
                await c.close()
        await server.stop()


def _p12_info(path: Path, passphrase: str) -> str:
    r = subprocess.run(["openssl", "pkcs12", "-in", str(path), "-info", "-noout", "-passin", f"pass:{passphrase}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def test_certs_issue_legacy_p12_is_3des_with_a_sha1_mac_and_the_default_is_aes256_sha256(tmp_path):
    """What README says --legacy-p12 does, read back by OpenSSL itself."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    assert xmppd(tmp_path, "certs", "init-ca").returncode == 0
    for name, extra in (("modern", []), ("legacy", ["--legacy-p12"])):
        r = xmppd(tmp_path, "certs", "issue", f"{name}@localhost", "--p12", f"{name}.p12", "--password-file", "-",
                  *extra, stdin="pw\n")
        assert r.returncode == 0, r.stderr
    modern, legacy = _p12_info(tmp_path / "modern.p12", "pw"), _p12_info(tmp_path / "legacy.p12", "pw")
    assert "MAC: sha256" in modern and "AES-256-CBC" in modern and "hmacWithSHA256" in modern, modern
    assert "MAC: sha1" in legacy and "pbeWithSHA1And3-KeyTripleDES-CBC" in legacy, legacy
    assert "AES" not in legacy, legacy
