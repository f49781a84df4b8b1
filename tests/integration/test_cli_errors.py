"""Every CLI error is one line naming the cause and the fix, exit 2 (usage/config) or 1 (runtime), no traceback.

Each case runs the real ``xmppd`` command as a subprocess, in its own session (no controlling terminal, so a
password prompt cannot fall back to /dev/tty).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from xmppd.cli_common import ensure_default_pki
from xmppd.config import default_config
from xmppd.server import Server

from .harness import Client

ROOT = Path(__file__).resolve().parents[2]
XMPPD = [sys.executable, "-m", "xmppd"]


def xmppd(cwd: Path, *args: str, stdin: str | None = None, env: dict | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    full_env.pop("XMPPD_TRACEBACK", None)
    return subprocess.run([*XMPPD, *args], cwd=cwd, input=stdin, capture_output=True, text=True, env=full_env,
                          timeout=timeout, start_new_session=True,
                          stdin=subprocess.DEVNULL if stdin is None else None)


def one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The single ``xmppd: ...`` line of stderr (log lines of a starting server aside)."""
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("xmppd: ")]
    others = [line for line in r.stderr.splitlines()
              if not line.startswith("xmppd: ") and not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", line)]
    assert len(errors) == 1 and not others, r.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ca_dir(tmp_path) -> Path:
    assert xmppd(tmp_path, "certs", "init-ca").returncode == 0
    return tmp_path


# ------------------------------------------------------------------ port in use
def test_run_on_a_port_in_use_says_which_port_and_how_to_change_it(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("0.0.0.0", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        r = xmppd(tmp_path, "run", env={"XMPPD_PORT": str(port), "XMPPD_TLS_PORT": str(free_port())})
    line = one_line_error(r, 1, f"port {port}", "already in use", "XMPPD_PORT")
    assert "ready" not in r.stdout, line


def test_run_with_a_config_on_a_port_in_use_names_the_toml_key(tmp_path):
    ensure_default_pki(default_config(tmp_path))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        cfg = tmp_path / "x.toml"
        cfg.write_text(_config(tmp_path, port))
        r = xmppd(tmp_path, "run", "--config", str(cfg))
    one_line_error(r, 1, "already in use", "listen.c2s[0].port", str(cfg))


def _config(tmp: Path, port: int, certfile: str | None = None) -> str:
    certs = tmp / "certs"
    return (f'[general]\nhosts = ["localhost"]\ndata_dir = "{tmp}/var"\n'
            f'[[listen.c2s]]\nport = {port}\nip_address = "127.0.0.1"\n'
            f'tls.certfile = "{certfile or certs / "server.pem"}"\ntls.keyfile = "{certs / "server.key"}"\n')


# ------------------------------------------------------------------ missing certificate file
def test_run_with_a_missing_certificate_file_is_a_config_error_naming_the_file(tmp_path):
    ensure_default_pki(default_config(tmp_path))
    cfg = tmp_path / "x.toml"
    cfg.write_text(_config(tmp_path, 0, certfile=str(tmp_path / "nope.pem")))
    r = xmppd(tmp_path, "run", "--config", str(cfg))
    one_line_error(r, 2, "nope.pem")


def test_run_with_a_missing_config_file_is_a_config_error(tmp_path):
    one_line_error(xmppd(tmp_path, "run", "--config", "missing.toml"), 2, "missing.toml")
    one_line_error(xmppd(tmp_path, "check-config", "missing.toml"), 2, "missing.toml")


# ------------------------------------------------------------------ user add without a terminal
def test_user_add_without_a_terminal_and_without_input_says_how_to_give_the_password(tmp_path):
    r = xmppd(tmp_path, "user", "add", "bob@localhost")  # stdin: /dev/null, no controlling terminal
    one_line_error(r, 2, "--password-file")


async def test_user_add_reads_a_piped_password_from_stdin_and_it_logs_in(tmp_path, monkeypatch):
    r = xmppd(tmp_path, "user", "add", "bob@localhost", stdin="piped secret\n")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    monkeypatch.chdir(tmp_path)
    config = default_config(tmp_path)
    ensure_default_pki(config)
    config = dataclasses.replace(config, listeners=tuple(
        dataclasses.replace(lc, port=0, ip_address="127.0.0.1") for lc in config.listeners))
    server = Server(config)
    await server.start()
    bob = None
    try:
        bob = await Client("bob@localhost", "piped secret", ca=tmp_path / "certs/ca.pem").login(
            server.listener_port(0))
        assert str(bob.boundjid.bare) == "bob@localhost"
    finally:
        if bob is not None:
            await bob.close()
        await server.stop()


def test_user_passwd_and_remove_of_an_unknown_account_fail_at_runtime(tmp_path):
    one_line_error(xmppd(tmp_path, "user", "passwd", "zed@localhost", stdin="pw\n"), 1, "zed@localhost",
                   "user add")
    one_line_error(xmppd(tmp_path, "user", "remove", "zed@localhost"), 1, "zed@localhost")


@pytest.mark.parametrize("jid, word", [("not a jid@@", "user@domain"), ("bob@localhost/phone", "no /resource"),
                                       ("bob@elsewhere.example", "general.hosts")])
def test_user_add_with_a_bad_jid_is_a_usage_error_before_any_prompt(tmp_path, jid, word):
    one_line_error(xmppd(tmp_path, "user", "add", jid), 2, word)


def test_a_missing_password_file_is_a_usage_error(tmp_path):
    one_line_error(xmppd(tmp_path, "user", "add", "bob@localhost", "--password-file", "nope.txt"), 2,
                   "nope.txt", "--password-file")


def test_an_unusable_database_is_one_line_naming_storage_url(tmp_path):
    (tmp_path / "afile").write_text("")
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'[general]\nhosts = ["localhost"]\n[storage]\nurl = "sqlite+aiosqlite:///{tmp_path}/afile/x.db"\n')
    one_line_error(xmppd(tmp_path, "user", "add", "bob@localhost", "-c", str(cfg), stdin="pw\n"), 1,
                   "storage.url")


# ------------------------------------------------------------------ certs issue | head
def test_certs_issue_into_a_closed_pipe_registers_the_p12_and_shows_its_passphrase(ca_dir):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write to stdout is EPIPE
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run([*XMPPD, "certs", "issue", "carol@localhost", "--p12", "carol.p12"], cwd=ca_dir,
                              stdout=write_end, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                              env=env, timeout=120, start_new_session=True)
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    passphrase = re.search(r"passphrase of carol\.p12 \(shown once\): (\S+)", proc.stderr).group(1)
    pkcs12.load_key_and_certificates((ca_dir / "carol.p12").read_bytes(), passphrase.encode())
    listed = xmppd(ca_dir, "certs", "list", "carol@localhost")
    assert listed.returncode == 0 and "carol@localhost" in listed.stdout and "active" in listed.stdout


def test_certs_issue_piped_into_head_exits_cleanly_and_registers(ca_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ.get('PATH', '')}")
    r = subprocess.run(["bash", "-c", f"'{sys.executable}' -m xmppd certs issue dave@localhost --p12 dave.p12 "
                                      "| head -1; exit ${PIPESTATUS[0]}"],
                       cwd=ca_dir, capture_output=True, text=True, env=env, timeout=120, start_new_session=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "passphrase of dave.p12" in r.stderr and len(r.stdout.splitlines()) == 1
    assert "dave@localhost" in xmppd(ca_dir, "certs", "list", "dave@localhost").stdout


# ------------------------------------------------------------------ --days and other arguments
@pytest.mark.parametrize("args", [
    ["certs", "issue", "alice@localhost", "--days", "-1"],
    ["certs", "issue", "alice@localhost", "--days", "0"],
    ["certs", "issue", "alice@localhost", "--days", "soon"],
    ["certs", "server", "localhost", "--days", "-1"],
    ["certs", "renew", "alice@localhost", "--days", "-1"],
    ["certs", "init-ca", "--dir", "other", "--days", "-1"],
    ["certs", "revoke", "alice@localhost", "--crl-days", "-5"],
    ["certs", "crl", "--crl-days", "0"],
    ["audit", "tail", "-n", "-3"],
    ["client", "listen", "alice@localhost", "--count", "0"],
    ["client", "send", "alice@localhost", "bob@localhost", "hi", "--port", "99999"],
])
def test_a_bad_number_is_a_usage_error_and_nothing_is_written(ca_dir, args):
    one_line_error(xmppd(ca_dir, *args), 2, "--help")
    assert not (ca_dir / "certs/clients").exists() and not (ca_dir / "other").exists()


def test_an_unknown_subcommand_or_option_is_one_line(tmp_path):
    one_line_error(xmppd(tmp_path, "bogus"), 2, "bogus")
    one_line_error(xmppd(tmp_path, "certs", "issue", "a@localhost", "--frobnicate"), 2, "--frobnicate")


# ------------------------------------------------------------------ sweep: paths, CA, accounts
def test_certs_issue_without_a_ca_says_to_run_init_ca(tmp_path):
    one_line_error(xmppd(tmp_path, "certs", "issue", "alice@localhost"), 1, "certs init-ca")
    one_line_error(xmppd(tmp_path, "certs", "server", "localhost", "--dir", "nowhere"), 1, "certs init-ca")
    one_line_error(xmppd(tmp_path, "certs", "renew", "alice@localhost"), 1, "certs init-ca")


def test_certs_issue_into_an_unusable_out_dir_writes_and_registers_nothing(ca_dir):
    (ca_dir / "afile").write_text("")
    one_line_error(xmppd(ca_dir, "certs", "issue", "alice@localhost", "--out", "afile/sub"), 1, "afile")
    one_line_error(xmppd(ca_dir, "certs", "issue", "alice@localhost", "--p12", "no/such/dir/a.p12"), 2,
                   "no/such/dir")
    one_line_error(xmppd(ca_dir, "certs", "issue", "alice@localhost", "--p12", "a.p12", "--password-file",
                         "nope"), 2, "nope")
    assert not (ca_dir / "certs/clients").exists()
    assert "no registered certificates" in xmppd(ca_dir, "certs", "list").stdout


def test_certs_init_ca_into_an_unusable_dir_and_twice(tmp_path):
    (tmp_path / "afile").write_text("")
    one_line_error(xmppd(tmp_path, "certs", "init-ca", "--dir", "afile/ca"), 1, "afile")
    assert xmppd(tmp_path, "certs", "init-ca").returncode == 0
    one_line_error(xmppd(tmp_path, "certs", "init-ca"), 1, "--force")


def test_certs_revoke_list_and_policy_of_bad_or_unknown_accounts(ca_dir):
    one_line_error(xmppd(ca_dir, "certs", "revoke", "zed@localhost"), 1, "zed@localhost", "certs list")
    one_line_error(xmppd(ca_dir, "certs", "revoke", "not-a-fingerprint"), 2, "user@domain")
    one_line_error(xmppd(ca_dir, "certs", "list", "--expiring", "soon"), 2, "--expiring")
    one_line_error(xmppd(ca_dir, "certs", "policy", "zed@elsewhere.example", "never"), 2, "general.hosts")


def test_audit_commands_with_the_audit_log_disabled(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text('[general]\nhosts = ["localhost"]\n[audit]\nenabled = false\n')
    one_line_error(xmppd(tmp_path, "audit", "tail", "-c", str(cfg)), 2, "audit.enabled")


def test_client_with_a_wrong_password_or_an_untrusted_server_is_one_line(tmp_path):
    assert xmppd(tmp_path, "user", "add", "bob@localhost", stdin="right\n").returncode == 0
    server = subprocess.Popen([*XMPPD, "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), XMPPD_PORT=str(free_port()),
                                       XMPPD_TLS_PORT=str(free_port())))
    try:
        ready = server.stdout.readline()
        assert "xmppd ready" in ready, ready
        port = re.search(r"starttls:(\d+)", ready).group(1)
        one_line_error(xmppd(tmp_path, "client", "send", "bob@localhost", "alice@localhost", "hi", "--port", port,
                             stdin="wrong\n"), 1, "not-authorized", "explain-login")
        (tmp_path / "other-ca").mkdir()
        assert xmppd(tmp_path / "other-ca", "certs", "init-ca", "--dir", ".").returncode == 0
        one_line_error(xmppd(tmp_path, "client", "send", "bob@localhost", "alice@localhost", "hi", "--port", port,
                             "--ca", "other-ca/ca.pem", stdin="right\n"), 1, "not trusted", "--ca")
        ok = xmppd(tmp_path, "client", "send", "bob@localhost", "alice@localhost", "hi", "--port", port,
                   stdin="right\n")
        assert ok.returncode == 0, ok.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def _run_in_pty(cwd: Path, args: list[str], answers: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run xmppd with a pseudo-terminal as its controlling terminal; answer each prompt (``...: ``) in turn."""
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is stdin/stdout/stderr and /dev/tty
        os.chdir(cwd)
        os.environ["PYTHONPATH"] = str(ROOT)
        os.environ.pop("XMPPD_TRACEBACK", None)
        os.execv(sys.executable, [*XMPPD, *args])
    output = b""
    pending = list(answers)
    answered_at = -1  # len(output) when the last prompt was answered (getpass flushes typed-ahead input)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if pending and output.endswith(b": ") and len(output) != answered_at:
                answered_at = len(output)
                os.write(fd, pending.pop(0).encode() + b"\n")
        else:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_user_add_in_a_terminal_prompts_twice_and_refuses_different_answers(tmp_path):
    code, out = _run_in_pty(tmp_path, ["user", "add", "bob@localhost"], ["one", "two"])
    assert code == 2 and "Traceback" not in out and "differ" in out, out
    code, out = _run_in_pty(tmp_path, ["user", "add", "bob@localhost"], ["same", "same"])
    assert code == 0 and "added bob@localhost" in out, out
