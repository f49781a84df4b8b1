"""README "A first conversation": the shell block, run unchanged, ends with a message each way.

The block is parsed out of README.md (so the README cannot drift from what works) and run by bash in an empty
directory with ``set -e``.  The only change is the one the README documents for busy ports: ``XMPPD_PORT`` and
``XMPPD_TLS_PORT`` point the embedded default and ``xmppd client`` at two free ports of this machine.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## A first conversation"
#: the whole block: CA, certificate, account, server start, four client logins (each a few seconds at most)
BLOCK_TIMEOUT_S = 180


def readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    section = text[start:text.index("\n## ", start + 1)]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m, f"no ```sh block in README section {SECTION!r}"
    return m.group(1)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_readme_first_conversation_block_runs_verbatim_and_both_messages_arrive(tmp_path):
    block = readme_block()
    assert "xmppd run &" in block and "xmppd client send" in block
    bindir = Path(sys.executable).parent
    if not (bindir / "xmppd").exists():
        pytest.fail(f"no xmppd script next to {sys.executable}: install the package (pip install -e .)")
    starttls, tls = free_ports(2)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
               XMPPD_PORT=str(starttls), XMPPD_TLS_PORT=str(tls))
    env.pop("XMPPD_TRACEBACK", None)
    proc = subprocess.Popen(["bash", "-e", "-c", block], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the backgrounded server, if the block stopped early
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    # Bob got Alice's message (sent while he was offline), Alice got Bob's answer
    assert re.search(r"^alice@localhost/[^:]+: Hi Bob!$", out, re.M), out
    assert re.search(r"^bob@localhost/[^:]+: Hi Alice!$", out, re.M), out
    assert f"starttls:{starttls}" in out and f"tls:{tls}" in out  # the server listened where we said
    # the passphrase of alice.p12 was shown (on stderr) and opens it
    from cryptography.hazmat.primitives.serialization import pkcs12

    passphrase = re.search(r"passphrase of alice\.p12 \(shown once\): (\S+)", err).group(1)
    key, cert, _ = pkcs12.load_key_and_certificates((tmp_path / "alice.p12").read_bytes(), passphrase.encode())
    assert key is not None and cert is not None


def test_readme_first_conversation_block_has_no_command_the_test_would_have_to_change():
    """Only the port variables are supplied from outside; nothing in the block names a port or a path."""
    block = readme_block()
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    commands = [c for c in commands if c]
    assert all(re.match(r"(echo '[^']*' \| )?xmppd |kill %1$", c) for c in commands), commands
    assert not re.search(r"\b522[23]\b", "\n".join(commands))  # ports come from the defaults / environment
