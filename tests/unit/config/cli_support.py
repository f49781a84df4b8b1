"""Helpers for the config tests that run the real ``xmppd`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from xmppd.pki import create_ca, issue_server_cert, write_cert, write_private_key

ROOT = Path(__file__).resolve().parents[3]


def xmppd(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "xmppd", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def make_pki(d: Path, host: str = "localhost"):
    """certs/ca.pem, certs/server.pem and certs/server.key under ``d``; returns the CA."""
    certs = d / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = create_ca("test CA")
    server = issue_server_cert(ca, [host])
    write_cert(certs / "ca.pem", ca.cert)
    write_cert(certs / "server.pem", server.cert, ca.cert)
    write_private_key(certs / "server.key", server.key)
    return ca
