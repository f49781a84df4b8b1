"""Acknowledged means durable: kill -9 a real server process during a flood, restart it, count.

A client with stream management (XEP-0198) floods a contact; whatever the server
acknowledged with ``<a h/>`` must, after ``kill -9`` and a restart, be in the
recipient's offline store (offline contact) or in both parties' archives (online
contact) — each message exactly once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.integration.rawclient import RawClient

pytestmark = pytest.mark.timeout(240)

#: acknowledged messages to reach before the kill (enough for several group commits)
TARGET_ACKED = 600
CHUNK = 40
#: unacknowledged messages the flooding client allows itself (as a real client's SM queue would)
MAX_IN_FLIGHT = 400  # below [modules.offline] max_pending_per_sender (500)


def _config(tmp: Path, pki) -> Path:
    path = tmp / "xmppd.toml"
    path.write_text(f"""
[general]
hosts = ["localhost"]
data_dir = "{tmp / 'var'}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls_required"
tls.certfile = "{pki.server.cert}"
tls.keyfile = "{pki.server.key}"
tls.cacertfile = "{pki.ca_path}"
tls.verify_mode = "peer"

[auth]
methods = ["pki", "sql"]

[storage]
url = "sqlite+aiosqlite:///{tmp / 'xmppd.sqlite'}"

[modules.offline]
max_per_user = 100000  # the flood must not hit the offline quota (the client answers no <r/>)
""")
    return path


async def _start(config: Path, log: Path) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "xmppd", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=open(log, "ab"))
    async with asyncio.timeout(60):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
            m = re.search(r"starttls\w*:(\d+)", line)
            if m:
                return proc, int(m.group(1))


async def _kill(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    os.kill(proc.pid, sig)
    async with asyncio.timeout(120):  # a graceful stop drains its writers first
        await proc.wait()


async def _add_account(config: Path, jid: str, tmp: Path) -> None:
    pw = tmp / f"{jid}.pw"
    pw.write_text("secret-password-1\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "xmppd", "user", "add", "--config", str(config), "--password-file", str(pw), jid,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)


async def _sm_client(port: int, pki, cert) -> RawClient:
    c = await RawClient.open(port, ca=pki.ca_path, cert=cert)
    await c.login_external()
    await c.send("<presence/>")
    await c.send("<enable xmlns='urn:xmpp:sm:3'/>")
    await c.read_until(b"<enabled")
    c.mark()
    return c


async def _flood_until_acked(c: RawClient, to: str, target: int) -> int:
    """Send messages m0, m1, ... with <r/> after each chunk; return the highest h acknowledged."""
    acked = 0
    sent = 0
    async def reader() -> None:
        nonlocal acked
        while True:
            chunk = await c.reader.read(65536)
            if not chunk:
                return
            c.buf += chunk
            for m in re.finditer(rb"<a xmlns='urn:xmpp:sm:3' h='(\d+)'/>", bytes(c.buf)):
                acked = max(acked, int(m.group(1)))
            if len(c.buf) > 100_000:
                del c.buf[:-200]
    task = asyncio.create_task(reader())
    try:
        async with asyncio.timeout(120):
            while acked < target:
                body = "".join(f"<message to='{to}' type='chat' id='m{sent + i}'><body>durable {sent + i}</body>"
                               f"</message>" for i in range(CHUNK))
                sent += CHUNK
                await c.send(body + "<r xmlns='urn:xmpp:sm:3'/>")
                await asyncio.sleep(0)  # keep flooding: acks arrive while more is in flight
                while sent - acked > MAX_IN_FLIGHT:
                    await asyncio.sleep(0.005)
    finally:
        task.cancel()
    return acked


async def _read_available(c: RawClient) -> bytes:
    try:
        return await asyncio.wait_for(c.reader.read(65536), 0.2)
    except TimeoutError:
        return b""


def _offline_ids(db: Path, user: str) -> list[int]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT data FROM offline_messages WHERE username = ?", (user,)).fetchall()
    finally:
        con.close()
    return [int(re.search(rb"id='m(\d+)'", r[0]).group(1)) for r in rows]


def _archive_ids(db: Path, owner: str) -> list[int]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT data FROM mam_messages WHERE username = ?", (owner,)).fetchall()
    finally:
        con.close()
    return [int(m.group(1)) for r in rows if (m := re.search(rb"id='m(\d+)'", r[0]))]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_a_kill_during_a_flood_to_an_offline_contact_loses_no_acknowledged_message(tmp_path, pki, sig):
    config = _config(tmp_path, pki)
    await _add_account(config, "bob@localhost", tmp_path)
    log = tmp_path / "server.log"
    proc, port = await _start(config, log)
    try:
        alice = await _sm_client(port, pki, pki.client("alice", xmpp_addrs=["alice@localhost"]))
        acked = await _flood_until_acked(alice, "bob@localhost", TARGET_ACKED)
    finally:
        await _kill(proc, sig)
    ids = _offline_ids(tmp_path / "xmppd.sqlite", "bob")
    assert acked >= TARGET_ACKED
    # the first `acked` messages (h counts in order) are all stored, each once
    assert set(range(acked)) <= set(ids), f"acknowledged {acked}, missing {sorted(set(range(acked)) - set(ids))[:20]}"
    assert len(ids) == len(set(ids))

    # after a restart bob gets every one of them, once
    proc, port = await _start(config, log)
    try:
        bob = await RawClient.open(port, ca=pki.ca_path, cert=pki.client("bob", xmpp_addrs=["bob@localhost"]))
        await bob.login_external()
        await bob.send("<presence/>")
        got: list[int] = []
        async with asyncio.timeout(60):
            while len(got) < len(ids):
                chunk = await bob.reader.read(65536)
                assert chunk, "bob's stream closed before every stored message arrived"
                bob.buf += chunk
                got = [int(x) for x in re.findall(rb"<message[^>]* id='m(\d+)'", bytes(bob.buf))]
        await asyncio.sleep(0.3)  # and nothing more (no copy delivered twice)
        bob.buf += await _read_available(bob)
        got = [int(x) for x in re.findall(rb"<message[^>]* id='m(\d+)'", bytes(bob.buf))]
        assert sorted(got) == sorted(ids) and len(got) == len(set(got))
    finally:
        proc.terminate()
        await proc.wait()


async def test_kill_9_during_a_flood_between_online_users_archives_every_acknowledged_message_for_both(
        tmp_path, pki):
    config = _config(tmp_path, pki)
    log = tmp_path / "server.log"
    proc, port = await _start(config, log)
    try:
        bob = await RawClient.open(port, ca=pki.ca_path, cert=pki.client("bob", xmpp_addrs=["bob@localhost"]))
        await bob.login_external()
        await bob.send("<presence/>")

        async def drain() -> None:  # bob reads everything (a live recipient)
            while await bob.reader.read(65536):
                pass
        reading = asyncio.create_task(drain())
        alice = await _sm_client(port, pki, pki.client("alice", xmpp_addrs=["alice@localhost"]))
        acked = await _flood_until_acked(alice, "bob@localhost", TARGET_ACKED)
        reading.cancel()
    finally:
        await _kill(proc)
    db = tmp_path / "xmppd.sqlite"
    for owner in ("alice", "bob"):
        ids = _archive_ids(db, owner)
        missing = set(range(acked)) - set(ids)
        assert not missing, f"{owner}: acknowledged {acked}, not archived {sorted(missing)[:20]}"
        assert len(ids) == len(set(ids)), f"{owner}: archived twice"
