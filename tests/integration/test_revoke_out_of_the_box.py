"""Revocation and account removal end live sessions on the out-of-the-box set-ups.

`xmppd certs revoke` and `xmppd user remove` run as their own processes (as an admin runs
them) against a server on the embedded default configuration and against a real `xmppd run`
process on conf/xmppd.example.toml; the live sessions get a stream error with a <text> within
the reload interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from xmppd.cli_common import ensure_default_pki as _ensure_default_pki
from xmppd.config import default_config
from xmppd.server import Server

from .harness import Client

REPO = Path(__file__).resolve().parents[2]
#: the example's and the embedded default's general.reload_check_interval_s, plus slack
WITHIN_S = 5.0 + 10.0


def xmppd(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "xmppd", *args], cwd=cwd, input=stdin, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


class Files:
    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key


def client_files(d: Path, jid: str) -> Files:
    return Files(d / "certs" / "clients" / jid / "cert.pem", d / "certs" / "clients" / jid / "key.pem")


async def closed_with(client: Client, timeout: float = WITHIN_S) -> str:
    """Wait until the server ends the client's stream; the stream error's condition and text."""
    done = asyncio.get_running_loop().create_future()
    client.add_event_handler("disconnected", lambda _e: done.done() or done.set_result(True))
    await asyncio.wait_for(done, timeout)
    assert client.stream_errors, "closed without a stream error"
    err = client.stream_errors[-1]
    return f"{err['condition']}: {err['text']}"


async def test_certs_revoke_closes_the_live_session_on_the_embedded_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = default_config(tmp_path)
    _ensure_default_pki(config)  # what `xmppd run` does on first start
    xmppd(tmp_path, "certs", "issue", "alice@localhost")
    xmppd(tmp_path, "certs", "issue", "carol@localhost")
    # the embedded default, on free ports instead of 5222/5223
    config = dataclasses.replace(config, listeners=tuple(dataclasses.replace(lc, port=0, ip_address="127.0.0.1")
                                                          for lc in config.listeners))
    server = Server(config)
    await server.start()
    alice = carol = None
    try:
        assert (tmp_path / "certs" / "crl.pem").exists()  # listed in the default, there from the first start
        ca = tmp_path / "certs" / "ca.pem"
        alice = await Client("alice@localhost", ca=ca, cert=client_files(tmp_path, "alice@localhost")).login(
            server.listener_port(0))
        carol = await Client("carol@localhost", ca=ca, cert=client_files(tmp_path, "carol@localhost"),
                             direct_tls=True).login(server.listener_port(1))
        xmppd(tmp_path, "certs", "revoke", "alice@localhost")
        why = await closed_with(alice)
        assert why.startswith("not-authorized: revoked:"), why
        assert carol.transport is not None and not carol.stream_errors  # other sessions untouched
    finally:
        for c in (alice, carol):
            if c is not None:
                await c.close()
        await server.stop()


def example_config(d: Path) -> Path:
    """conf/xmppd.example.toml as shipped, on free loopback ports."""
    text = (REPO / "conf" / "xmppd.example.toml").read_text()
    text = text.replace('port = 5222\n', 'port = 0\n').replace('ip_address = "0.0.0.0"', 'ip_address = "127.0.0.1"')
    text = text.replace('port = 5223\n', 'port = 0\nip_address = "127.0.0.1"\n')
    path = d / "xmppd.toml"
    path.write_text(text)
    return path


async def test_certs_revoke_and_user_remove_close_live_sessions_of_a_server_process_on_the_example_config(
        tmp_path):
    conf = example_config(tmp_path)
    xmppd(tmp_path, "certs", "init-ca")
    xmppd(tmp_path, "certs", "server", "localhost")
    xmppd(tmp_path, "certs", "issue", "alice@localhost", "--config", str(conf))
    xmppd(tmp_path, "user", "add", "bob@localhost", "--password-file", "-", "--config", str(conf),
          stdin="bob's password\n")
    xmppd(tmp_path, "user", "add", "dave@localhost", "--password-file", "-", "--config", str(conf),
          stdin="dave's password\n")
    proc = subprocess.Popen([sys.executable, "-m", "xmppd", "run", "--config", str(conf)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients: list[Client] = []
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        m = re.search(r"starttls:(\d+), tls:(\d+)", line)
        assert m, (line, proc.poll())
        port = int(m.group(1))
        ca = tmp_path / "certs" / "ca.pem"
        alice = await Client("alice@localhost", ca=ca, cert=client_files(tmp_path, "alice@localhost")).login(port)
        bob = await Client("bob@localhost", "bob's password", ca=ca).login(port)
        dave = await Client("dave@localhost", "dave's password", ca=ca).login(port)
        clients += [alice, bob, dave]

        xmppd(tmp_path, "certs", "revoke", "alice@localhost", "--config", str(conf))
        why = await closed_with(alice)
        assert why.startswith("not-authorized: revoked:"), why

        removed = xmppd(tmp_path, "user", "remove", "bob@localhost", "--config", str(conf))
        assert "closes its live sessions" in removed.stdout
        why = await closed_with(bob)
        assert why == "not-authorized: account-removed: the account bob@localhost was removed", why
        assert not dave.stream_errors and dave.transport is not None  # other accounts untouched
        # and bob cannot come back with the old password
        again = Client("bob@localhost", "bob's password", ca=ca)
        clients.append(again)
        try:
            await again.login(port)
        except Exception:  # noqa: BLE001 - any authentication failure
            pass
        else:
            raise AssertionError("a removed account logged in")
    finally:
        for c in clients:
            await c.close()
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = await asyncio.to_thread(proc.communicate, timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert "Traceback" not in err, err
    assert os.stat(tmp_path / "var" / "xmppd.sqlite-accounts-changed").st_mode & 0o077 == 0
