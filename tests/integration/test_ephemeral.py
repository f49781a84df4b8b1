"""xmppd run --ephemeral (a subprocess, as a CI job runs it) and EphemeralServer in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from xmppd.cli import main
from xmppd.ephemeral import EphemeralServer

from .harness import Client

ROOT = Path(__file__).resolve().parents[2]
START_S = 60.0


async def spawn(*args: str, stderr_path: Path) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with open(stderr_path, "wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "xmppd", "run", "--ephemeral", *args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=err)


async def stop(proc: asyncio.subprocess.Process, pid: int) -> int:
    os.kill(pid, signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


async def cleanup(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def cert_of(account: dict) -> SimpleNamespace:
    return SimpleNamespace(cert=Path(account["cert"]), key=Path(account["key"]))


async def test_ephemeral_prints_complete_json_and_its_accounts_log_in_then_sigterm_removes_everything(
        tmp_path, clients):
    proc = await spawn("--accounts", "2", "--json", "-", stderr_path=tmp_path / "stderr")
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), START_S)
        assert line, (tmp_path / "stderr").read_text()
        info = json.loads(line)
        assert set(info) >= {"domain", "ports", "ca", "accounts", "data_dir", "pid"}
        assert info["domain"] == "localhost" and info["host"] == "127.0.0.1"
        assert info["pid"] == proc.pid
        assert set(info["ports"]) == {"starttls", "tls"} and all(p > 0 for p in info["ports"].values())
        data_dir = Path(info["data_dir"])
        assert data_dir.is_dir() and Path(info["ca"]).is_file()
        assert [a["jid"] for a in info["accounts"]] == ["user1@localhost", "user2@localhost"]
        for a in info["accounts"]:
            assert set(a) == {"jid", "password", "cert", "key", "p12", "p12_password"}
            assert a["password"] and a["p12_password"]
            assert stat.S_IMODE(os.stat(a["key"]).st_mode) == 0o600
            key, cert, extra = pkcs12.load_key_and_certificates(Path(a["p12"]).read_bytes(),
                                                                a["p12_password"].encode())
            assert key is not None and cert is not None and len(extra) == 1  # + the CA

        ca = Path(info["ca"])
        u1, u2 = info["accounts"]
        # certificate login (SASL EXTERNAL) over direct TLS
        alice = await clients(u1["jid"], ca=ca, cert=cert_of(u1), direct_tls=True,
                              mechanisms=["EXTERNAL"]).login(info["ports"]["tls"])
        # password login (SCRAM) over STARTTLS
        bob = await clients(u2["jid"], u2["password"], ca=ca,
                            mechanisms=["SCRAM-SHA-256"]).login(info["ports"]["starttls"])
        assert str(alice.boundjid.bare) == "user1@localhost" and str(bob.boundjid.bare) == "user2@localhost"
        bob.send_presence()
        await asyncio.sleep(0.2)
        alice.send_message(mto="user2@localhost", mbody="hello from CI", mtype="chat")
        assert (await bob.next_message())["body"] == "hello from CI"
        await alice.close()
        await bob.close()

        assert await stop(proc, info["pid"]) == 0
        assert not data_dir.exists()
        assert await proc.stdout.read() == b""  # the JSON line was the only output on stdout
    finally:
        await cleanup(proc)


async def test_ephemeral_json_to_a_file_is_private_and_removed_on_stop(tmp_path):
    target = tmp_path / "xmppd.json"
    proc = await spawn("--accounts", "1", "--domain", "ci.example", "--json", str(target),
                       stderr_path=tmp_path / "stderr")
    try:
        for _ in range(int(START_S * 10)):
            if target.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert target.exists(), (tmp_path / "stderr").read_text()
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
        info = json.loads(target.read_text())
        assert info["domain"] == "ci.example"
        assert [a["jid"] for a in info["accounts"]] == ["user1@ci.example"]
        assert await stop(proc, info["pid"]) == 0
        assert not Path(info["data_dir"]).exists() and not target.exists()
    finally:
        await cleanup(proc)


@pytest.mark.parametrize("argv", [
    ["run", "--ephemeral", "--accounts", "-1"],
    ["run", "--ephemeral", "--domain", "not a domain@@"],
    ["run", "--ephemeral", "--config", "conf/xmppd.example.toml"],
])
def test_ephemeral_rejects_bad_arguments_with_usage_status(argv, capsys):
    assert main(argv) == 2  # usage status, as every CLI usage error
    assert "xmppd:" in capsys.readouterr().err


async def test_ephemeral_server_context_manager_serves_and_cleans_up(clients):
    async with EphemeralServer(accounts=1, config={"modules": {"e2ee_policy": {"default": "warn"}}}) as eph:
        data_dir = eph.data_dir
        acc = eph.accounts[0]
        assert eph.info["accounts"][0]["jid"] == acc.jid == "user1@localhost"
        c = await clients(acc.jid, acc.password, ca=eph.ca_path).login(eph.port_starttls)
        assert str(c.boundjid.bare) == acc.jid
        extra = await eph.add_account("ci-bot")
        c2 = await clients(extra.jid, ca=eph.ca_path, cert=SimpleNamespace(cert=extra.cert, key=extra.key),
                           direct_tls=True).login(eph.port_tls)
        assert str(c2.boundjid.bare) == "ci-bot@localhost"
        assert next(m for m in eph.server.modules if m.name == "e2ee_policy").default == "warn"
        await c.close()
        await c2.close()
    assert not data_dir.exists()
