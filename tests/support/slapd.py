"""A throw-away OpenLDAP ``slapd`` for tests, on 127.0.0.1 and a free port.

Plain classes and functions; the only pytest use is :func:`require_slapd`,
which skips (or, under ``CI=true``, fails) when slapd is not installed::

    @pytest.fixture(scope="session")
    def slapd(tmp_path_factory):
        server = start_slapd(tmp_path_factory.mktemp("slapd"),
                             users=[LdapUser("carol", certs=[der])])
        yield server
        server.stop()

The directory (suffix :data:`SUFFIX`, rootdn :data:`ROOTDN` / :data:`ROOTPW`)
is generated as a ``slapd.conf`` (mdb backend; core, cosine and
inetorgperson schemas) and filled offline with ``slapadd`` before slapd
starts.  Fixed entries (:data:`DEFAULT_USERS`), all below :data:`PEOPLE`:

* ``alice`` / ``alice-secret`` (mail ``alice@example.org``), ``bob`` / ``bob-secret``;
* ``dup`` twice (``ou=people`` and ``ou=staff,ou=people``) — an ambiguous uid;
* ``svc`` / ``svc-secret``: an ``account`` (not an inetOrgPerson), for filters;
* ``nopass``: an inetOrgPerson without ``userPassword``;

and, outside :data:`PEOPLE`, ``ou=elsewhere`` is a referral (``ref:``) to an
unreachable server.  Passwords are stored as ``{SSHA}``.  The ACL lets
anyone bind (``auth``) but nobody read ``userPassword``.

Bounds: :data:`START_TIMEOUT_S` for slapd to listen, :data:`STOP_TIMEOUT_S`
for it to exit after SIGTERM (then SIGKILL), :data:`PORT_ATTEMPTS` ports
tried when the chosen one turns out to be taken.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "SUFFIX", "PEOPLE", "ROOTDN", "ROOTPW", "DEFAULT_USERS", "LdapUser", "Slapd",
    "slapd_binary", "require_slapd", "start_slapd", "ssha",
]

SUFFIX = "dc=test,dc=example"
PEOPLE = f"ou=people,{SUFFIX}"
ROOTDN = f"cn=admin,{SUFFIX}"
ROOTPW = "root-secret"

#: seconds slapd may take to accept connections after it was started
START_TIMEOUT_S = 20.0
#: seconds slapd may take to exit after SIGTERM before it is killed
STOP_TIMEOUT_S = 10.0
#: ports tried when slapd cannot bind the one chosen
PORT_ATTEMPTS = 5
#: seconds slapadd may take
SLAPADD_TIMEOUT_S = 30.0

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIRS = (Path("/usr/lib/ldap"), Path("/usr/lib/openldap"), Path("/usr/libexec/openldap"))


def ssha(password: str, salt: bytes | None = None) -> str:
    """``{SSHA}`` userPassword value (what ``slappasswd -h {SSHA}`` makes)."""
    salt = secrets.token_bytes(8) if salt is None else salt
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


@dataclass(frozen=True)
class LdapUser:
    """One person (or, with ``kind="account"``, a service account).

    ``parent`` is relative to :data:`SUFFIX`. ``certs`` are DER certificates
    stored as ``userCertificate;binary`` values.
    """

    uid: str
    password: str | None = None
    certs: Sequence[bytes] = ()
    mail: str | None = None
    parent: str = "ou=people"
    kind: str = "person"  # "person" (inetOrgPerson) | "account"
    extra: dict[str, list[str | bytes]] = field(default_factory=dict)

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{self.parent},{SUFFIX}"

    def attributes(self) -> dict[str, list[str | bytes]]:
        attrs: dict[str, list[str | bytes]] = {"uid": [self.uid]}
        if self.kind == "person":
            attrs["objectClass"] = ["top", "person", "organizationalPerson", "inetOrgPerson"]
            attrs["cn"] = [self.uid]
            attrs["sn"] = [self.uid]
            if self.mail:
                attrs["mail"] = [self.mail]
            if self.certs:
                attrs["userCertificate;binary"] = list(self.certs)
        elif self.kind == "account":
            attrs["objectClass"] = ["top", "account"] + (["simpleSecurityObject"] if self.password else [])
        else:
            raise ValueError(f"unknown kind {self.kind!r}")
        if self.password is not None:
            attrs["userPassword"] = [ssha(self.password)]
        for k, v in self.extra.items():
            attrs[k] = list(v)
        return attrs


DEFAULT_USERS: tuple[LdapUser, ...] = (
    LdapUser("alice", "alice-secret", mail="alice@example.org"),
    LdapUser("bob", "bob-secret"),
    LdapUser("dup", "dup-secret"),
    LdapUser("dup", "dup-secret", parent="ou=staff,ou=people"),
    LdapUser("svc", "svc-secret", kind="account"),
    LdapUser("nopass"),
)


def slapd_binary() -> Path | None:
    found = shutil.which("slapd")
    if found:
        return Path(found)
    for p in (Path("/usr/sbin/slapd"), Path("/usr/local/sbin/slapd"), Path("/usr/libexec/slapd")):
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def require_slapd() -> Path:
    """The slapd binary; pytest.skip when missing (pytest.fail when CI=true)."""
    import pytest

    binary = slapd_binary()
    problem = None
    if binary is None:
        problem = "slapd not installed: apt-get install slapd ldap-utils"
    elif not (SCHEMA_DIR / "inetorgperson.schema").is_file():
        problem = f"slapd not installed: no schemas in {SCHEMA_DIR}"
    if problem is None:
        return binary  # type: ignore[return-value]
    if os.environ.get("CI") == "true":
        pytest.fail(problem + " (required when CI=true)", pytrace=False)
    pytest.skip(problem)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# LDIF


def _ldif_value(attr: str, value: str | bytes) -> str:
    if isinstance(value, str):
        raw = value.encode()
        safe = (raw.isascii() and all(32 <= b < 127 for b in raw)
                and not value.startswith((" ", ":", "<")) and not value.endswith(" "))
        if safe:
            return f"{attr}: {value}"
    else:
        raw = value
    return f"{attr}:: {base64.b64encode(raw).decode()}"


def _ldif_entry(dn: str, attrs: dict[str, list[str | bytes]]) -> str:
    lines = [_ldif_value("dn", dn)]
    for attr, values in attrs.items():
        lines.extend(_ldif_value(attr, v) for v in values)
    return "\n".join(lines) + "\n"


def _base_entries() -> list[tuple[str, dict[str, list[str | bytes]]]]:
    return [
        (SUFFIX, {"objectClass": ["top", "dcObject", "organization"], "dc": ["test"], "o": ["xmppd tests"]}),
        (PEOPLE, {"objectClass": ["top", "organizationalUnit"], "ou": ["people"]}),
        (f"ou=staff,{PEOPLE}", {"objectClass": ["top", "organizationalUnit"], "ou": ["staff"]}),
        (f"ou=elsewhere,{SUFFIX}", {"objectClass": ["referral", "extensibleObject"], "ou": ["elsewhere"],
                                    "ref": [f"ldap://127.0.0.1:9/ou=elsewhere,{SUFFIX}"]}),
    ]


# ---------------------------------------------------------------------------
# the server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Slapd:
    """One slapd process. Use :func:`start_slapd`, or construct then :meth:`start`."""

    def __init__(self, directory: Path | str, *, users: Iterable[LdapUser] = (),
                 defaults: bool = True, tls_cert: Path | None = None,
                 tls_key: Path | None = None) -> None:
        self.dir = Path(directory)
        self.binary = slapd_binary()
        self.users = (list(DEFAULT_USERS) if defaults else []) + list(users)
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.port: int | None = None
        #: LDAPS port (only with tls_cert/tls_key)
        self.tls_port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "slapd.log"

    # -- set-up --------------------------------------------------------------
    def _module_dir(self) -> Path | None:
        for d in MODULE_DIRS:
            if (d / "back_mdb.so").exists() or (d / "back_mdb.la").exists():
                return d
        return None

    def _write_config(self) -> Path:
        db = self.dir / "db"
        db.mkdir(parents=True, exist_ok=True)
        lines = [f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson")]
        lines += [f"pidfile {self.dir / 'slapd.pid'}", f"argsfile {self.dir / 'slapd.args'}"]
        modules = self._module_dir()
        if modules is not None:
            lines += [f"modulepath {modules}", "moduleload back_mdb"]
        if self.tls_cert is not None:
            lines += [f"TLSCertificateFile {self.tls_cert}", f"TLSCertificateKeyFile {self.tls_key}"]
        lines += [
            "database mdb",
            "maxsize 33554432",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ROOTDN}"',
            f"rootpw {ssha(ROOTPW)}",
            f"directory {db}",
            "access to attrs=userPassword by anonymous auth by * none",
            "access to * by * read",
        ]
        conf = self.dir / "slapd.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _load(self, conf: Path) -> None:
        ldif = self.dir / "fixture.ldif"
        entries = [_ldif_entry(dn, attrs) for dn, attrs in _base_entries()]
        entries += [_ldif_entry(u.dn, u.attributes()) for u in self.users]
        ldif.write_text("\n".join(entries))
        slapadd = self.binary.with_name("slapadd") if self.binary else None
        cmd = [str(slapadd), "-f", str(conf), "-l", str(ldif)]
        if slapadd is None or not slapadd.exists():  # slapadd is slapd under another name
            cmd = [str(self.binary), "-Ta", "-f", str(conf), "-l", str(ldif)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=SLAPADD_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"slapadd failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "Slapd":
        if self.binary is None:
            raise RuntimeError("slapd not installed")
        if self.proc is not None:
            raise RuntimeError("already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self._write_config()
        self._load(conf)
        last = ""
        for _ in range(PORT_ATTEMPTS):
            port = _free_port()
            tls_port = _free_port() if self.tls_cert is not None else None
            urls = f"ldap://127.0.0.1:{port}/"
            if tls_port is not None:
                urls += f" ldaps://127.0.0.1:{tls_port}/"
            with open(self.log_path, "wb") as log:
                proc = subprocess.Popen([str(self.binary), "-f", str(conf), "-h", urls, "-d", "0"],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _listening(port) and (tls_port is None or _listening(tls_port)):
                    self.proc, self.port, self.tls_port = proc, port, tls_port
                    atexit.register(self.stop)  # no orphan if the test run dies first
                    return self
                time.sleep(0.05)
            if proc.poll() is None:  # never listened: give up on this process
                self._terminate(proc)
                raise RuntimeError(f"slapd did not listen within {START_TIMEOUT_S:g} s: {self.log_tail()}")
            last = self.log_tail()
            if "Address already in use" not in last and "bind" not in last:
                break
        raise RuntimeError(f"slapd exited at start: {last}")

    def stop(self) -> None:
        """SIGTERM the slapd we started, wait for it (SIGKILL after STOP_TIMEOUT_S)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            self._terminate(proc)

    @staticmethod
    def _terminate(proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    # -- options for auth.ldap -------------------------------------------------------
    def options(self, **extra) -> dict:
        """``[auth.ldap]`` options pointing at this server (rootdn bind, base PEOPLE)."""
        opts = {"servers": ["127.0.0.1"], "port": self.port, "rootdn": ROOTDN,
                "password": ROOTPW, "base": PEOPLE, "connect_timeout": 2, "request_timeout": 2}
        opts.update(extra)
        return opts

    # -- changes while running (as rootdn, over LDAP) ----------------------------------
    def _admin(self):
        import ldap3

        server = ldap3.Server("127.0.0.1", port=self.port, get_info=ldap3.NONE, connect_timeout=5)
        conn = ldap3.Connection(server, ROOTDN, ROOTPW, receive_timeout=5, raise_exceptions=True)
        conn.bind()
        return conn

    def add(self, user: LdapUser) -> None:
        conn = self._admin()
        try:
            conn.add(user.dn, attributes=user.attributes())
        finally:
            conn.unbind()

    def delete(self, dn: str) -> None:
        conn = self._admin()
        try:
            conn.delete(dn)
        finally:
            conn.unbind()

    def set_certs(self, dn: str, certs: Sequence[bytes]) -> None:
        import ldap3

        conn = self._admin()
        try:
            conn.modify(dn, {"userCertificate;binary": [(ldap3.MODIFY_REPLACE, list(certs))]})
        finally:
            conn.unbind()


def start_slapd(directory: Path | str, **kwargs) -> Slapd:
    """pytest-aware start: skip/fail via :func:`require_slapd`, then start."""
    require_slapd()
    return Slapd(directory, **kwargs).start()
