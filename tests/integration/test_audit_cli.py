"""`xmppd explain-login` and `xmppd audit tail` against a real server's audit log."""

from __future__ import annotations

import pytest

from xmppd.config import load_config
from xmppd.server import Server

from .harness import AuthFailed, Client
from .test_cli import xmppd


def write_config(tmp_path, pki) -> "Path":  # noqa: F821
    cfg = tmp_path / "xmppd.toml"
    cfg.write_text(f"""
[general]
hosts = ["localhost"]
data_dir = "{tmp_path / 'var'}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls_required"
tls.certfile = "{pki.server.cert}"
tls.keyfile = "{pki.server.key}"
tls.cacertfile = "{pki.ca_path}"
tls.disconnect_on_failure = false

[auth]
password.scram_iterations = 4096
""")
    return cfg


async def test_explain_login_says_why_the_last_login_failed(tmp_path, pki):
    cfg = write_config(tmp_path, pki)
    server = Server(load_config(cfg))
    await server.start()
    try:
        assert await server.auth_chain.register("bob", "localhost", "right")
        c = Client("bob@localhost", "wrong", ca=pki.ca_path, mechanisms=["SCRAM-SHA-256"])
        with pytest.raises(AuthFailed):
            await c.login(server.listener_port(0))
        c.abort_connection()
        expired = pki.expired_client("explain-expired", xmpp_addrs=["carol@localhost"])
        c2 = Client("carol@localhost", "x", ca=pki.ca_path, cert=expired, mechanisms=["EXTERNAL"])
        with pytest.raises((AuthFailed, ConnectionError)):
            await c2.login(server.listener_port(0), timeout=5)
        c2.abort_connection()
    finally:
        await server.stop()

    r = xmppd(tmp_path, "explain-login", "bob@localhost", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "bad-credentials" in r.stdout and "xmppd user passwd" in r.stdout
    assert "wrong" not in r.stdout.replace("password was wrong", "")

    r = xmppd(tmp_path, "explain-login", "carol@localhost", "--config", str(cfg))
    assert "expired" in r.stdout and "certs renew" in r.stdout and "sha256" in r.stdout

    r = xmppd(tmp_path, "audit", "tail", "-n", "50", "--json", "--config", str(cfg))
    assert r.returncode == 0 and '"event": "auth"' in r.stdout

    r = xmppd(tmp_path, "explain-login", "nobody@localhost", "--config", str(cfg))
    assert r.returncode == 1 and "no authentication attempt" in r.stdout
