"""The database, its -wal/-shm, the stamp files and the audit log are private whatever the umask:
directories 0700, files 0600; an existing one that others can read is warned about at start."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from xmppd.storage.certs import CertRegistry

from .harness import Client, start_server


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask022", "umask000"])
async def test_a_running_server_creates_its_data_dir_0700_and_database_files_0600_whatever_the_umask(
        tmp_path, pki, umask, mask):
    umask(mask)
    server = await start_server(tmp_path, pki, {
        "general": {"data_dir": str(tmp_path / "var")},
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/var/db/xmppd.sqlite"},
        "audit": {"file": str(tmp_path / "var/log/audit.jsonl")}})
    try:
        assert await server.auth_chain.register("bob", "localhost", "bob's password")
        bob = await Client("bob@localhost", "bob's password", ca=pki.ca_path).login(server.listener_port(0))
        await bob.close()
        await CertRegistry(server.db_engine).set_policy("bob", "localhost", "always")  # the stamp file
        var = tmp_path / "var"
        db = var / "db" / "xmppd.sqlite"
        for d in (var, var / "db", var / "log"):
            assert mode(d) == 0o700, d
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-certs-changed"),
                 var / "log" / "audit.jsonl", var / "log" / "audit-fingerprint.key"]
        for f in files:
            assert f.exists(), f
            assert mode(f) == 0o600, (f, oct(mode(f)))
    finally:
        await server.stop()


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_the_cli_creates_the_default_database_0600_in_a_0700_var_whatever_the_umask(tmp_path, mask):
    r = subprocess.run([sys.executable, "-m", "xmppd", "user", "add", "bob@localhost", "--password-file", "-"],
                       cwd=tmp_path, input="bob's password\n", capture_output=True, text=True, timeout=120,
                       umask=mask)
    assert r.returncode == 0, r.stderr
    assert mode(tmp_path / "var") == 0o700
    assert mode(tmp_path / "var" / "xmppd.sqlite") == 0o600


async def test_an_existing_world_readable_database_and_data_dir_are_warned_about_at_start(
        tmp_path, pki, caplog, umask):
    caplog.set_level(logging.WARNING)
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    os.chmod(var, 0o755)
    db = var / "xmppd.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE earlier (x)").connection.close()  # a database from before
    os.chmod(db, 0o644)
    server = await start_server(tmp_path, pki, {"storage": {"url": f"sqlite+aiosqlite:///{db}"}})
    await server.stop()
    assert mode(db) == 0o644  # not changed behind the operator's back
    text = caplog.text
    assert f"fix: chmod 600 {db}" in text
    assert f"fix: chmod 700 {var}" in text
