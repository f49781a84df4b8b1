"""xmppd benchmark: ``python -m bench [--quick]``.

Builds a throw-away PKI and config in a temporary directory, starts
``python -m xmppd run`` as a separate process, drives it over loopback from
this process (asyncio streams + stdlib ``ssl``), and measures the *server's*
CPU time (psutil, user+system, all its threads) and RSS around each phase:

  messages   P pairs of bound sessions exchange M 1 KB chat messages each
             (baseline, before any bulk login)
  cert       N logins over direct TLS 1.3: client cert -> SASL EXTERNAL -> bind -> close
  scram      N SCRAM-SHA-256 logins over STARTTLS -> bind -> close
  idle       K bound sessions left idle: server RSS per connection
  messages2  the message phase again, after cert/scram/idle: CPU-per-message ratio

Every login and every message is counted and checked; anything missing
raises and the run exits non-zero.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import psutil

from .client import BenchError, XmppClient, client_context

REPO = Path(__file__).resolve().parent.parent
DOMAIN = "localhost"
PASSWORD = "bench-password-1"
#: how many distinct SCRAM accounts the SCRAM logins cycle through
SCRAM_USERS = 50
BODY = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 17)[:1024]

ALL_PHASES = ("messages", "cert", "scram", "idle", "messages2")


@dataclass
class Sizes:
    cert_logins: int
    scram_logins: int
    pairs: int
    messages: int
    window: int
    idle: int
    concurrency: int

    @property
    def certs(self) -> int:
        return max(self.cert_logins, self.idle, 2 * self.pairs)


# ---------------------------------------------------------------------------- setup
def make_pki(d: Path, n_clients: int) -> tuple[Path, Path, Path, list[Path]]:
    """CA, server certificate for localhost, ``n_clients`` client certs (EC P-256).

    Client key + certificate go into one PEM per user (``load_cert_chain`` reads both).
    """
    sys.path.insert(0, str(REPO))
    from cryptography.hazmat.primitives import serialization
    from xmppd.pki import create_ca, issue_client_cert, issue_server_cert, write_cert, write_private_key

    d.mkdir(parents=True, exist_ok=True)
    ca = create_ca("xmppd bench CA")
    ca_path = d / "ca.pem"
    write_cert(ca_path, ca.cert)
    server = issue_server_cert(ca, [DOMAIN])
    srv_cert, srv_key = d / "server.pem", d / "server.key"
    write_cert(srv_cert, server.cert, ca.cert)
    write_private_key(srv_key, server.key)
    cdir = d / "clients"
    cdir.mkdir()
    pem, nokey = serialization.Encoding.PEM, serialization.NoEncryption()
    paths = []
    for i in range(n_clients):
        issued = issue_client_cert(ca, xmpp_addrs=[f"user{i}@{DOMAIN}"], common_name=f"user{i}", days=2)
        path = cdir / f"user{i}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(issued.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, nokey))
            fh.write(issued.cert.public_bytes(pem))
        paths.append(path)
    return ca_path, srv_cert, srv_key, paths


def _q(value: Any) -> str:
    return json.dumps(str(value))  # a TOML basic string for plain paths


def write_config(d: Path, ca: Path, cert: Path, key: Path) -> Path:
    listener = """
[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
max_connections = 1000000
idle_timeout_s = 86400.0
negotiation_timeout_s = 120.0
tls.mode = "{mode}"
tls.certfile = {cert}
tls.keyfile = {key}
tls.cacertfile = {ca}
tls.verify_mode = "peer"
tls.disconnect_on_failure = false
"""
    text = f"""
[general]
hosts = ["{DOMAIN}"]
loglevel = "warning"
data_dir = {_q(d / 'var')}
""" + "".join(listener.format(mode=m, cert=_q(cert), key=_q(key), ca=_q(ca))
              for m in ("starttls_required", "tls")) + f"""
[auth]
methods = ["pki", "sql"]
password.scram_iterations = 4096

[storage]
url = {_q('sqlite+aiosqlite:///' + str(d / 'xmppd.sqlite'))}

[audit]
file = {_q(d / 'var' / 'audit.jsonl')}
"""
    path = d / "xmppd.toml"
    path.write_text(text)
    return path


async def add_scram_users(config_path: Path, n: int) -> None:
    """Create password accounts the way ``xmppd user add`` does (cli._with_auth), in one process."""
    sys.path.insert(0, str(REPO))
    from xmppd_auth.registry import AuthChain, build_methods
    from xmppd.config import load_config
    from xmppd.sasl import prepare_password
    from xmppd.storage.engine import create_engine, create_schema

    config = load_config(str(config_path))
    engine = create_engine(config.storage.url, pool_size=config.storage.pool_size)
    auth = config.auth
    chain = AuthChain(build_methods(auth.methods, auth.method_options, {
        "db_engine": engine, "password_hashes": tuple(auth.password.hash),
        "scram_iterations": auth.password.scram_iterations}))
    try:
        await create_schema(engine)
        await chain.start()
        pw = prepare_password(PASSWORD)
        for i in range(n):
            if not await chain.register(f"user{i}", DOMAIN, pw):
                raise BenchError(f"could not create user{i}@{DOMAIN}")
    finally:
        await chain.stop()
        await engine.dispose()


# ---------------------------------------------------------------------------- server process
class ServerProcess:
    READY = re.compile(r"xmppd ready: \S+ on (.*)")

    def __init__(self, config: Path, workdir: Path, profile: Path | None, loop: str = "asyncio",
                 optimize: bool = False) -> None:
        self.loop = loop
        self.optimize = optimize
        self.config = config
        self.workdir = workdir
        self.out_path = workdir / "server.stdout"
        self.err_path = workdir / "server.stderr"
        self.profile = profile
        self.popen: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 30.0) -> None:
        cmd = [sys.executable] + (["-O"] if self.optimize else [])
        if self.profile is not None:
            cmd += ["-m", "cProfile", "-o", str(self.profile)]
        if self.loop == "uvloop" and self.profile is None:
            cmd += ["-m", "xmppd"]  # exactly the documented command
        else:
            # `xmppd run` picks uvloop whenever it is importable; a launcher hides it for
            # --server-loop asyncio (and lets cProfile run the CLI as a script)
            launcher = self.workdir / "launch_xmppd.py"
            launcher.write_text(
                "import sys\n"
                + ("sys.modules['uvloop'] = None  # ImportError: xmppd falls back to asyncio.run\n"
                   if self.loop == "asyncio" else "")
                + "from xmppd.cli import main\nsys.exit(main(sys.argv[1:]))\n")
            cmd += [str(launcher)]
        cmd += ["run", "--config", str(self.config)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                          cwd=self.workdir, env=env)
        self.ps = psutil.Process(self.popen.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(f"server exited with {self.popen.returncode} before it was ready:\n"
                                 + self.err_path.read_text(errors="replace")[-3000:])
            m = self.READY.search(self.out_path.read_text(errors="replace"))
            if m:
                for part in m.group(1).split(","):
                    mode, port = part.strip().rsplit(":", 1)
                    self.ports[mode] = int(port)
                if {"starttls_required", "tls"} <= self.ports.keys():
                    return
                raise BenchError(f"unexpected ready line: {m.group(0)!r}")
            time.sleep(0.05)
        raise BenchError("server not ready within 30 s:\n" + self.err_path.read_text(errors="replace")[-3000:])

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"server died (exit {self.popen.returncode}):\n"
                             + self.err_path.read_text(errors="replace")[-3000:])

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        self.popen.send_signal(signal.SIGTERM)  # only the process we started, by its PID
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)

    _NUMBERS = re.compile(r"[0-9a-f]{8,}|\d+")
    _EXC_LINE = re.compile(r"[A-Za-z_][\w.]*: ")
    _LOG_LINE = re.compile(r"^\S+ \S+ (CRITICAL|ERROR|WARNING) (\S+): (.*)$")

    def log_summary(self) -> dict:
        """Counts of the server's WARNING/ERROR log lines (loglevel is warning) and the distinct messages."""
        counts: collections.Counter = collections.Counter()
        distinct: collections.Counter = collections.Counter()
        last_exc: dict[str, str] = {}
        current = None
        try:
            text = self.err_path.read_text(errors="replace")
        except OSError:
            return {}
        for line in text.splitlines():
            m = self._LOG_LINE.match(line)
            if m:
                level, logger, msg = m.groups()
                counts[level] += 1
                current = f"{level} {logger}: {self._NUMBERS.sub('#', msg)[:160]}"
                distinct[current] += 1
            elif current and self._EXC_LINE.match(line):
                last_exc[current] = line[:300]  # the exception line closing a traceback
        return {"counts": dict(counts),
                "distinct": [{"message": k, "count": v, "exception": last_exc.get(k)}
                             for k, v in distinct.most_common(10)]}

    def stderr_tail(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


async def settle(server: ServerProcess, max_s: float = 10.0) -> None:
    """Wait until the server is (nearly) idle: < 3 % of a core over 100 ms, at most ``max_s``."""
    prev = server.cpu()
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = server.cpu()
        if now - prev < 0.003:
            return
        prev = now


class PySpy:
    """Optional per-phase sampling of the server with py-spy (``--pyspy DIR``)."""

    def __init__(self, directory: Path | None, pid: int) -> None:
        self.dir = directory
        self.pid = pid
        self.proc: subprocess.Popen | None = None
        self.out: Path | None = None

    def start(self, name: str) -> None:
        if self.dir is None:
            return
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out = self.dir / f"{name}.txt"
        self.proc = subprocess.Popen([exe, "record", "-p", str(self.pid), "-r", "250", "--gil", "--nonblocking", "-f", "raw",
                                      "-o", str(self.out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # let it attach

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.out is not None and self.out.exists():
            print(summarize_pyspy(self.out))
        else:
            print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
        self.proc = None


def summarize_pyspy(path: Path, top: int = 25) -> str:
    """Self and inclusive sample counts per function (file:line) from py-spy's raw (collapsed) output."""
    self_c: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    rx = re.compile(r"^(.*?) \((.*?):(\d+)\)$")

    def name(frame: str, keep_line: bool) -> str:
        m = rx.match(frame)
        if not m:
            return frame
        fn, file, line = m.groups()
        for marker in ("/work/main/", "site-packages/", "lib/python3.11/"):
            if marker in file:
                file = file.split(marker, 1)[1]
        return f"{fn} ({file}:{line})" if keep_line else f"{fn} ({file})"

    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_c[name(frames[-1], True)] += n
        for f in set(name(f, False) for f in frames):
            incl[f] += n
    lines = [f"== py-spy {path.name}: {total} samples",
             "-- self (leaf line):"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_c.most_common(top)]
    lines.append("-- inclusive (function):")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- helpers
async def run_bounded(n: int, concurrency: int, job: Callable[[int], Awaitable[None]],
                      timeout: float) -> list[BaseException]:
    """Run ``job(i)`` for i in range(n), ``concurrency`` at a time; stop at the first error."""
    it = iter(range(n))
    errors: list[BaseException] = []

    async def worker() -> None:
        for i in it:
            if errors:
                return
            try:
                await job(i)
            except Exception as exc:  # noqa: BLE001 - reported below, fails the run
                errors.append(exc)
                return

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    except TimeoutError:
        errors.append(BenchError(f"phase did not finish within {timeout:.0f} s"))
    return errors


def _fail_on(errors: list[BaseException], what: str, done: int, expected: int) -> None:
    if errors or done != expected:
        first = repr(errors[0]) if errors else "no exception"
        raise BenchError(f"{what}: {done}/{expected} succeeded ({len(errors)} error(s)); first: {first}")


class Contexts:
    """One client SSLContext per user certificate, created on first use and cached."""

    def __init__(self, ca: Path, certs: list[Path]) -> None:
        self.ca = ca
        self.certs = certs
        self._cache: dict[int, Any] = {}
        self.anonymous = client_context(ca)

    def __getitem__(self, i: int):
        ctx = self._cache.get(i)
        if ctx is None:
            ctx = self._cache[i] = client_context(self.ca, self.certs[i])
        return ctx


async def login_external(port: int, ctxs: Contexts, user: int, resource: str) -> XmppClient:
    c = await XmppClient.direct_tls(port, ctxs[user])
    try:
        await c.auth_external()
        jid = await c.bind(resource)
        if jid != f"user{user}@{DOMAIN}/{resource}":
            raise BenchError(f"bound {jid!r}, expected user{user}@{DOMAIN}/{resource}")
    except BaseException:
        c.abort()
        raise
    return c


# ---------------------------------------------------------------------------- phases
async def phase_cert_logins(server: ServerProcess, ctxs: Contexts, sz: Sizes) -> dict:
    port = server.ports["tls"]
    done = 0

    async def job(i: int) -> None:
        nonlocal done
        c = await login_external(port, ctxs, i % len(ctxs.certs), f"L{i}")
        await c.close()
        done += 1

    await settle(server)
    cpu0, t0 = server.cpu(), time.perf_counter()
    errors = await run_bounded(sz.cert_logins, sz.concurrency, job, timeout=180)
    wall = time.perf_counter() - t0
    await settle(server)
    cpu = server.cpu() - cpu0
    _fail_on(errors, "cert logins", done, sz.cert_logins)
    return {"logins": done, "wall_s": wall, "server_cpu_s": cpu,
            "logins_per_server_cpu_s": done / cpu, "logins_per_wall_s": done / wall,
            "server_cpu_ms_per_login": 1000 * cpu / done}


async def phase_scram_logins(server: ServerProcess, ctxs: Contexts, sz: Sizes) -> dict:
    port = server.ports["starttls_required"]
    done = 0

    async def job(i: int) -> None:
        nonlocal done
        user = i % SCRAM_USERS
        c = await XmppClient.plain(port)
        try:
            await c.starttls(ctxs.anonymous)
            await c.auth_scram(f"user{user}", PASSWORD)
            jid = await c.bind(f"S{i}")
            if jid != f"user{user}@{DOMAIN}/S{i}":
                raise BenchError(f"bound {jid!r}")
        except BaseException:
            c.abort()
            raise
        await c.close()
        done += 1

    # warm the client's salted-password cache (client PBKDF2 must not count in wall time)
    errors = await run_bounded(SCRAM_USERS, sz.concurrency, job, timeout=120)
    _fail_on(errors, "SCRAM warm-up logins", done, SCRAM_USERS)
    done = 0
    await settle(server)
    cpu0, t0 = server.cpu(), time.perf_counter()
    errors = await run_bounded(sz.scram_logins, sz.concurrency, job, timeout=180)
    wall = time.perf_counter() - t0
    await settle(server)
    cpu = server.cpu() - cpu0
    _fail_on(errors, "SCRAM logins", done, sz.scram_logins)
    return {"logins": done, "wall_s": wall, "server_cpu_s": cpu,
            "logins_per_server_cpu_s": done / cpu, "logins_per_wall_s": done / wall,
            "server_cpu_ms_per_login": 1000 * cpu / done}


_MSG_RE = re.compile(rb"<message\b[^>]*?\bid='m(\d+)\.(\d+)\.(\d+)'[^>]*>")
_FROM_RE = re.compile(rb"""\bfrom=(?:'([^']*)'|"([^"]*)")""")


async def phase_messages(server: ServerProcess, ctxs: Contexts, sz: Sizes, label: str) -> dict:
    port = server.ports["tls"]
    P, M, W = sz.pairs, sz.messages, sz.window
    senders: list[XmppClient | None] = [None] * P
    receivers: list[XmppClient | None] = [None] * P

    async def connect(j: int) -> None:
        pair, role = divmod(j, 2)
        c = await login_external(port, ctxs, j, "msg")
        (receivers if role else senders)[pair] = c

    errors = await run_bounded(2 * P, sz.concurrency, connect, timeout=120)
    clients = [c for c in senders + receivers if c is not None]
    try:
        _fail_on(errors, f"{label}: logins of the message pairs", len(clients), 2 * P)
        received = [0] * P
        events = [asyncio.Event() for _ in range(P)]
        latencies: list[float] = []

        async def send(p: int, first: int, count: int) -> None:
            c = senders[p]
            to = receivers[p].jid
            head = f"<message type='chat' to='{to}' id='m{p}.".encode("ascii")
            body = b"'><body>" + BODY + b"</body></message>"
            for seq in range(first, first + count):
                while seq - received[p] >= W:
                    events[p].clear()
                    await events[p].wait()
                c.send(b"%s%d.%d%s" % (head, seq, time.perf_counter_ns(), body))
                if c.writer.transport.get_write_buffer_size() > 65536:
                    await c.writer.drain()
            await c.writer.drain()

        async def receive(p: int, until: int, lat: list[float]) -> None:
            c = receivers[p]
            expected_from = senders[p].jid.encode()
            buf = c.buf
            while received[p] < until:
                chunk = await c.reader.read(65536)
                if not chunk:
                    raise BenchError(f"pair {p}: receiver's stream closed after {received[p]} messages")
                buf += chunk
                now = time.perf_counter_ns()
                start = 0
                while (end := buf.find(b"</message>", start)) != -1:
                    end += len(b"</message>")
                    stanza = bytes(buf[start:end])
                    start = end
                    m = _MSG_RE.search(stanza)
                    if m is None:
                        raise BenchError(f"pair {p}: unexpected stanza {stanza[:300]!r}")
                    pair, seq, t_ns = int(m.group(1)), int(m.group(2)), int(m.group(3))
                    f = _FROM_RE.search(stanza, 0, m.end())
                    if pair != p or seq != received[p]:
                        raise BenchError(f"pair {p}: got message {pair}.{seq}, expected {p}.{received[p]}")
                    if f is None or (f.group(1) or f.group(2)) != expected_from:
                        raise BenchError(f"pair {p}: wrong from in {stanza[:200]!r}")
                    if BODY not in stanza:
                        raise BenchError(f"pair {p}: body altered in message {seq}")
                    received[p] += 1
                    lat.append((now - t_ns) / 1e6)
                del buf[:start]
                events[p].set()
            if buf:
                raise BenchError(f"pair {p}: unexpected extra bytes {bytes(buf[:200])!r}")

        async def exchange(first: int, count: int, lat: list[float]) -> None:
            tasks = [asyncio.ensure_future(send(p, first, count)) for p in range(P)]
            tasks += [asyncio.ensure_future(receive(p, first + count, lat)) for p in range(P)]
            try:
                async with asyncio.timeout(max(60.0, P * count / 200)):
                    await asyncio.gather(*tasks)
            except TimeoutError:
                raise BenchError(f"{label}: only {sum(received) - P * first}/{P * count} messages "
                                 "arrived in time") from None
            finally:
                for t in tasks:
                    t.cancel()

        await exchange(0, W, [])  # warm-up round, not measured
        await settle(server)
        cpu0, t0 = server.cpu(), time.perf_counter()
        await exchange(W, M, latencies)
        wall = time.perf_counter() - t0
        await settle(server)
        cpu = server.cpu() - cpu0
        total = sum(received) - P * W
        if total != P * M or len(latencies) != P * M or any(r != W + M for r in received):
            raise BenchError(f"{label}: {total}/{P * M} messages arrived")
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    latencies.sort()
    return {"messages": total, "wall_s": wall, "server_cpu_s": cpu,
            "messages_per_server_cpu_s": total / cpu, "messages_per_wall_s": total / wall,
            "server_cpu_us_per_message": 1e6 * cpu / total,
            "latency_ms_p50": latencies[len(latencies) // 2],
            "latency_ms_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "latency_ms_max": latencies[-1]}


async def phase_idle(server: ServerProcess, ctxs: Contexts, sz: Sizes) -> dict:
    port = server.ports["tls"]
    K = sz.idle
    conns: list[XmppClient] = []

    async def job(i: int) -> None:
        conns.append(await login_external(port, ctxs, i, "idle"))

    await settle(server)
    await asyncio.sleep(0.5)
    rss0 = server.rss()
    cpu0, t0 = server.cpu(), time.perf_counter()
    try:
        errors = await run_bounded(K, sz.concurrency, job, timeout=180)
        _fail_on(errors, "idle connections", len(conns), K)
        wall = time.perf_counter() - t0
        await settle(server)
        cpu = server.cpu() - cpu0
        await asyncio.sleep(2.0)  # a couple of sweeps over the idle connections
        server.alive()
        rss1 = server.rss()
        idle_cpu0 = server.cpu()
        await asyncio.sleep(2.0)
        idle_cpu = server.cpu() - idle_cpu0
    finally:
        closing = list(conns)

        async def close(i: int) -> None:
            await closing[i].close()

        await run_bounded(len(closing), 64, close, timeout=120)
    await settle(server)
    rss2 = server.rss()
    return {"connections": K, "rss_before_mib": rss0 / 2**20, "rss_open_mib": rss1 / 2**20,
            "rss_after_close_mib": rss2 / 2**20,
            "kib_per_idle_connection": (rss1 - rss0) / K / 1024,
            "open_wall_s": wall, "open_server_cpu_s": cpu,
            "idle_server_cpu_pct": 100 * idle_cpu / 2.0}


# ---------------------------------------------------------------------------- main
def _table(results: dict) -> str:
    r = results["phases"]
    rows = []

    def logins(key: str, label: str) -> None:
        x = r[key]
        rows.append((label, f"{x['logins_per_server_cpu_s']:.0f} logins/server-CPU-s",
                     f"{x['logins_per_wall_s']:.0f} logins/s wall; {x['server_cpu_ms_per_login']:.2f} ms CPU/login"))

    def messages(key: str, label: str) -> None:
        x = r[key]
        rows.append((label, f"{x['messages_per_server_cpu_s']:.0f} msgs/server-CPU-s",
                     f"{x['messages_per_wall_s']:.0f} msgs/s wall; {x['server_cpu_us_per_message']:.1f} us CPU/msg; "
                     f"latency p50 {x['latency_ms_p50']:.1f} ms, p99 {x['latency_ms_p99']:.1f} ms"))

    if "cert" in r:
        logins("cert", "a. cert logins (direct TLS 1.3 + EXTERNAL + bind)")
    if "scram" in r:
        logins("scram", "b. SCRAM-SHA-256 logins (STARTTLS + bind)")
    if "messages" in r:
        messages("messages", "c. messages (1 KB chat to full JID)")
    if "idle" in r:
        x = r["idle"]
        rows.append(("d. idle bound TLS sessions", f"{x['kib_per_idle_connection']:.1f} KiB RSS/conn",
                     f"{x['connections']} conns; RSS {x['rss_before_mib']:.0f} -> {x['rss_open_mib']:.0f} MiB; "
                     f"idle CPU {x['idle_server_cpu_pct']:.1f}%"))
    if "messages2" in r:
        messages("messages2", "e. messages again (after a, b, d)")
    if "slowdown_ratio" in results:
        rows.append(("e. server CPU/message, second run / first", f"{results['slowdown_ratio']:.3f}",
                     "(> 1 = slower after the logins)"))
    if not rows:
        return "(no phases)"
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows)


async def amain(args: argparse.Namespace, sz: Sizes, phases: list[str], work: Path) -> dict:
    t_setup = time.perf_counter()
    ca, srv_cert, srv_key, certs = make_pki(work / "pki", sz.certs)
    config = write_config(work, ca, srv_cert, srv_key)
    if "scram" in phases:
        await add_scram_users(config, SCRAM_USERS)
    setup_s = time.perf_counter() - t_setup
    server = ServerProcess(config, work, Path(args.profile).resolve() if args.profile else None,
                           loop=args.server_loop, optimize=args.server_O)
    results: dict[str, Any] = {
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sizes": sz.__dict__, "phases_run": phases, "setup_s": setup_s,
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg(), "server_loop": args.server_loop, "server_O": args.server_O, "phases": {}}
    server.start()
    pyspy = PySpy(Path(args.pyspy).resolve() if args.pyspy else None, server.pid)
    if pyspy.dir is not None:
        pyspy.dir.mkdir(parents=True, exist_ok=True)
    try:
        results["server_pid"] = server.pid
        results["server_rss_start_mib"] = server.rss() / 2**20
        ctxs = Contexts(ca, certs)
        runners = {
            "messages": lambda: phase_messages(server, ctxs, sz, "messages"),
            "cert": lambda: phase_cert_logins(server, ctxs, sz),
            "scram": lambda: phase_scram_logins(server, ctxs, sz),
            "idle": lambda: phase_idle(server, ctxs, sz),
            "messages2": lambda: phase_messages(server, ctxs, sz, "messages2"),
        }
        for name in phases:
            print(f"[bench] phase {name} ...", flush=True)
            pyspy.start(name)
            try:
                results["phases"][name] = res = await runners[name]()
            finally:
                pyspy.stop()
            server.alive()
            print(f"[bench]   {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()})}",
                  flush=True)
        r = results["phases"]
        if "messages" in r and "messages2" in r:
            results["slowdown_ratio"] = (r["messages2"]["server_cpu_us_per_message"]
                                         / r["messages"]["server_cpu_us_per_message"])
        results["server_rss_end_mib"] = server.rss() / 2**20
    except BenchError as exc:
        tail = server.stderr_tail().strip()
        raise BenchError(f"{exc}\n--- server stderr (tail) ---\n{tail[-1500:]}" if tail else str(exc)) from None
    finally:
        code = server.stop()
        results["server_exit"] = code
    if code != 0:
        raise BenchError(f"server exited with {code} on SIGTERM:\n{server.stderr_tail()}")
    results["server_log"] = server.log_summary()
    results["loadavg_end"] = os.getloadavg()
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (under a minute)")
    p.add_argument("--cert-logins", type=int, help="phase a logins (default 2000, quick 300)")
    p.add_argument("--scram-logins", type=int, help="phase b logins (default 1000, quick 200)")
    p.add_argument("--pairs", type=int, default=50, help="phase c/e sender->receiver pairs (default 50)")
    p.add_argument("--messages", type=int, help="messages per sender (default 400, quick 100)")
    p.add_argument("--window", type=int, default=20, help="messages in flight per pair (default 20)")
    p.add_argument("--idle", type=int, help="phase d idle connections (default 2000, quick 300)")
    p.add_argument("--concurrency", type=int, default=32, help="logins in parallel (default 32)")
    p.add_argument("--phases", default=",".join(ALL_PHASES),
                   help=f"comma-separated subset, run in this order (default {','.join(ALL_PHASES)})")
    p.add_argument("--results", help="where to write results.json (default: a new temp dir, kept)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (PKI, config, DB, server logs)")
    p.add_argument("--server-loop", choices=["asyncio", "uvloop"], default="asyncio",
                   help="server event loop (default asyncio: under uvloop C2SConnection.connection_made "
                        "asserts isinstance(transport, asyncio.Transport), which fails)")
    p.add_argument("--server-O", action="store_true", help="run the server with python -O (asserts off)")
    p.add_argument("--profile", metavar="FILE", help="run the server under cProfile, stats to FILE")
    p.add_argument("--pyspy", metavar="DIR", help="sample the server with py-spy per phase into DIR")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    q = args.quick
    sz = Sizes(
        cert_logins=args.cert_logins or (300 if q else 2000),
        scram_logins=args.scram_logins or (200 if q else 1000),
        pairs=args.pairs, messages=args.messages or (100 if q else 400), window=args.window,
        idle=args.idle or (300 if q else 2000), concurrency=args.concurrency)
    phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    bad = [s for s in phases if s not in ALL_PHASES]
    if bad or not phases:
        print(f"bench: unknown phase(s) {bad}; choose from {', '.join(ALL_PHASES)}", file=sys.stderr)
        return 64
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, max(soft, sz.idle + 2 * sz.pairs + 4 * sz.concurrency + 512))
        if want > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the server
    except (ImportError, ValueError, OSError):
        pass
    work = Path(tempfile.mkdtemp(prefix="xmppd-bench-"))
    t0 = time.perf_counter()
    try:
        try:
            import uvloop  # the client load costs less CPU on uvloop, leaving more for the server
            runner: Callable = uvloop.run
        except ImportError:
            runner = asyncio.run
        try:
            results = runner(amain(args, sz, phases, work))
        except BenchError as exc:
            print(f"bench FAILED: {exc}", file=sys.stderr)
            return 1
        results["total_s"] = time.perf_counter() - t0
        out = Path(args.results) if args.results else Path(tempfile.mkdtemp(prefix="xmppd-bench-results-")) / "results.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print()
        print(_table(results))
        print(f"\nsizes: {sz.__dict__}; setup {results['setup_s']:.1f} s; total {results['total_s']:.1f} s")
        print(f"results: {out}")
        log = results.get("server_log") or {}
        if log.get("counts"):
            print(f"\nWARNING: the server logged {log['counts']} (see results.json server_log):")
            for d in log["distinct"]:
                print(f"  {d['count']:6d} x {d['message']}" + (f"\n           -> {d['exception']}" if d["exception"] else ""))
        return 0
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
