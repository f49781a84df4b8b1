"""Authentication audit log: one JSON object per line.

Records every SASL outcome, every rejected client certificate and every TLS
failure, with the certificate's fingerprint/serial/issuer — never a secret.
The file is rotated by size (``audit.max_bytes``, ``audit.keep``) and rotated
files older than ``audit.retention_days`` are deleted.  Readers:
``xmppd audit tail`` and ``xmppd explain-login``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from .jid import JID, InvalidJID
from .storage.files import open_private, private_dir, warn_if_open

__all__ = ["AuditLog", "IdentityScrubber", "load_fingerprint_key", "read_records", "records_for", "explain",
           "REASONS", "FINGERPRINT_PREFIX", "FINGERPRINT_HEX"]

log = logging.getLogger("xmppd.audit")

DEFAULT_MAX_BYTES = 50 * 1024 * 1024


#: prefix and length (hex digits) of the fingerprint written instead of a failed attempt's identity
FINGERPRINT_PREFIX = "sha256:"
FINGERPRINT_HEX = 12
#: name of the fingerprint key file, next to the audit log (32 random bytes, mode 0600)
FINGERPRINT_KEY_NAME = "audit-fingerprint.key"
_KEY_BYTES = 32
#: fields of a failure record that hold what the client typed as its identity
IDENTITY_FIELDS = ("attempted", "authzid", "jid")


class IdentityScrubber:
    """What the audit log may say about the identity of a *failed* login attempt.

    People type their password into the username field.  A value that is a
    syntactically valid bare JID (the localpart passes PRECIS) on one of this
    server's ``hosts`` is written as it is (the operator needs it to answer
    "why can't alice log in?"); anything else becomes ``sha256:`` + the first
    :data:`FINGERPRINT_HEX` hex digits of HMAC-SHA-256 over the value.

    Why keyed: a plain hash of a password-looking string is reversed with a
    dictionary in seconds by anyone who reads the log (audit logs get shipped
    to other machines).  The HMAC key lives next to the audit log
    (:data:`FINGERPRINT_KEY_NAME`, mode 0600) and survives restarts, so the
    same mistyped value gives the same fingerprint over time and repeated
    attempts can still be correlated.  48 bits are enough to tell attempts
    apart and too few to serve as a password verifier should the key leak.
    Without an audit file the key is random per process (only the debug log
    sees the records then).
    """

    def __init__(self, hosts: Iterable[str], key: bytes) -> None:
        self.hosts = frozenset(hosts)
        self._key = key

    def __repr__(self) -> str:
        return f"<IdentityScrubber hosts={sorted(self.hosts)} key=<redacted>>"

    def fingerprint(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return FINGERPRINT_PREFIX + digest[:FINGERPRINT_HEX]

    def __call__(self, value: Any) -> Any:
        if value is None or value == "":
            return value
        text = str(value)
        try:
            jid = JID.parse(text)
        except (InvalidJID, TypeError, ValueError):
            return self.fingerprint(text)
        if jid.local is None or jid.domain not in self.hosts:
            return self.fingerprint(text)
        return str(jid)


def load_fingerprint_key(path: Path | None) -> bytes:
    """The HMAC key for :class:`IdentityScrubber`: read from ``path``, created (0600) when
    missing; a random per-process key when there is no path or it cannot be used."""
    if path is not None:
        try:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except FileNotFoundError:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
                with os.fdopen(fd, "wb") as fh:
                    os.fchmod(fh.fileno(), 0o600)
                    fh.write(secrets.token_bytes(_KEY_BYTES))
                fd = os.open(path, os.O_RDONLY)
            else:
                warn_if_open(path)
            with os.fdopen(fd, "rb") as fh:
                key = fh.read(_KEY_BYTES + 1)
            if len(key) == _KEY_BYTES:
                return key
            log.error("%s: not a %d-byte key; failed login identities are fingerprinted with a "
                      "per-process key (fix: delete the file, a new one is made at start)", path, _KEY_BYTES)
        except OSError as exc:
            log.error("%s: cannot read or create the audit fingerprint key (%s); using a per-process key",
                      path, exc)
    return secrets.token_bytes(_KEY_BYTES)


class AuditLog:
    def __init__(self, path: Path | None, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = 10,
                 retention_days: int = 90, hosts: Iterable[str] = ()) -> None:
        """``hosts``: this server's domains; the identity of a failed attempt that is not a valid
        JID on them is written as a fingerprint (:class:`IdentityScrubber`; no hosts: always)."""
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.retention_days = retention_days
        self._fh = None
        self._size = 0
        if path is not None:
            private_dir(path.parent)
            self._open()
            self._expire_old()
        key_path = path.parent / FINGERPRINT_KEY_NAME if path is not None else None
        self.scrub = IdentityScrubber(hosts, load_fingerprint_key(key_path))

    def _open(self) -> None:
        assert self.path is not None
        existed = self.path.exists()
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
        if existed:
            warn_if_open(self.path)
        self._fh = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        self._size = os.fstat(fd).st_size

    def write(self, record: dict[str, Any]) -> None:
        rec = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")}
        rec.update(record)
        if rec.get("result") in ("failure", "rejected"):
            for name in IDENTITY_FIELDS:
                if rec.get(name):
                    rec[name] = self.scrub(rec[name])
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        if self._fh is not None:
            try:
                if self._size + len(line) > self.max_bytes and self._size > 0:
                    self._rotate()
                self._fh.write(line)
                self._size += len(line.encode("utf-8"))
            except OSError as exc:  # a full disk must not stop logins
                log.error("audit log write failed: %s", exc)
        log.debug("audit %s", line.rstrip())

    def _rotate(self) -> None:
        assert self.path is not None and self._fh is not None
        self._fh.close()
        base = str(self.path)
        if self.keep == 0:
            os.unlink(base)
        else:
            for i in range(self.keep - 1, 0, -1):
                src = f"{base}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{base}.{i + 1}")
            os.replace(base, f"{base}.1")
            extra = f"{base}.{self.keep + 1}"
            if os.path.exists(extra):
                os.unlink(extra)
        self._open()
        self._expire_old()

    def _expire_old(self) -> None:
        if self.path is None or self.retention_days <= 0:
            return
        cutoff = time.time() - self.retention_days * 86400
        for p in rotated_files(self.path):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def rotated_files(path: Path) -> list[Path]:
    """``audit.jsonl.N`` files, oldest first."""
    found = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


def read_records(path: Path, *, include_rotated: bool = True) -> Iterator[dict[str, Any]]:
    """Records oldest first (rotated files, then the current one); bad lines are skipped."""
    files = (rotated_files(path) if include_rotated else []) + [path]
    for f in files:
        try:
            fh = open(f, encoding="utf-8")
        except FileNotFoundError:
            continue
        with fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    yield rec


def records_for(records: Iterable[dict[str, Any]], jid: str) -> list[dict[str, Any]]:
    """Records about one bare JID: logins as it, attempts for it, certificates naming it."""
    jid = jid.lower()
    out = []
    for r in records:
        names = {str(r.get("jid") or "").lower(), str(r.get("attempted") or "").lower()}
        names.update(str(a).lower() for a in r.get("cert_xmpp_addrs") or ())
        if jid in names:
            out.append(r)
    return out


#: reason code -> (what it means, what to do)
REASONS: dict[str, tuple[str, str]] = {
    "bad-credentials": ("the password was wrong, or the account does not exist",
                        "check the password; `xmppd user passwd JID` sets a new one"),
    "expired": ("the client certificate has expired",
                "issue a new one: `xmppd certs renew JID` (or `certs issue`)"),
    "not-yet-valid": ("the client certificate is not valid yet (check the clocks)",
                      "wait, or fix the client's or the CA's clock"),
    "unknown-ca": ("the client certificate is not signed by a CA in tls.cacertfile",
                   "issue it from the configured CA, or add its CA to tls.cacertfile"),
    "self-signed": ("the client certificate is self-signed and tls.verify_mode is not selfsigned_peer",
                    "use a CA-issued certificate, or set tls.verify_mode = \"selfsigned_peer\""),
    "revoked": ("the client certificate is revoked (CRL or OCSP)", "issue a new certificate"),
    "crl-expired": ("the CRL of the certificate's CA is past its nextUpdate: revocation cannot be checked, "
                    "so every certificate of that CA is refused",
                    "re-sign it (`xmppd certs crl --dir DIR`; a server holding DIR/ca.key does it itself) "
                    "or fetch a fresh one from the CA; the server re-reads it when it changes"),
    "revocation-unknown": ("no usable CRL for the certificate's CA is configured (tls.crl_files)",
                           "add the CA's CRL to tls.crl_files"),
    "account-removed": ("the account was removed (`xmppd user remove`); its live sessions were closed",
                        "add it again with `xmppd user add JID` if that was a mistake"),
    "eku-not-client-auth": ("the certificate's extended key usage does not allow client authentication",
                            "issue a client certificate (EKU clientAuth): `xmppd certs issue JID`"),
    "no-cert": ("the client sent no certificate, so EXTERNAL was not offered",
                "configure the client certificate in the client, or log in with a password"),
    "no-xmppaddr": ("the certificate carries no xmppAddr and no fallback rule applies",
                    "issue it with `xmppd certs issue JID`, or enable auth.sasl_external = [..., \"common_name\"]"),
    "authzid-mismatch": ("the client asked to log in as a JID the certificate is not for",
                         "log in as the JID in the certificate, or without an authzid"),
    "ambiguous-identity": ("the certificate names several JIDs and the client did not pick one",
                           "set the authorization identity (authzid) in the client"),
    "wrong-domain": ("the certificate is for a JID on another domain", "connect to that JID's domain"),
    "no-account": ("the certificate is valid but no auth method knows this account",
                   "create the account (`xmppd user add JID`) or add \"pki\" to auth.methods"),
    "cert-not-registered": ("the account only accepts its registered certificates",
                            "register the certificate (XEP-0257 or `xmppd certs issue`)"),
    "cert-disabled": ("the account disabled this certificate in its registry (XEP-0257)",
                      "re-enable it from another device, or issue a new one: `xmppd certs renew JID`"),
    "cert-revoked": ("the certificate was revoked in the account's registry",
                     "issue a new one: `xmppd certs renew JID`"),
    "ocsp-unavailable": ("the OCSP responder did not answer and tls.ocsp = \"hard\"",
                         "check the responder, or set tls.ocsp = \"soft\""),
    "backend-unavailable": ("the auth backend did not answer (temporary-auth-failure)",
                            "check the auth service / database named in the reason"),
    "invalid-mechanism": ("the client chose a mechanism this stream does not offer",
                          "enable it in auth.sasl_mechanisms, or fix the client"),
}


def explain(record: dict[str, Any]) -> str:
    """A human explanation of one audit record."""
    when = record.get("time", "?")
    event = record.get("event")
    reason = record.get("reason")
    lines = []
    if event == "auth" and record.get("result") == "success":
        lines.append(f"{when}: logged in with {record.get('mechanism')} via {record.get('auth_method')} "
                     f"from {record.get('peer')} ({record.get('listener')})")
    else:
        what = {"auth": f"{record.get('mechanism', '?')} login failed", "client-cert": "client certificate rejected",
                "tls": "TLS handshake failed", "session-revoked": "session closed: certificate revoked",
                "account-removed": "sessions closed: account removed"}
        lines.append(f"{when}: {what.get(event, event)} from {record.get('peer')} ({record.get('listener')}): "
                     f"{reason or record.get('condition')}")
        meaning = REASONS.get(str(reason))
        if meaning:
            lines.append(f"  why: {meaning[0]}")
            lines.append(f"  fix: {meaning[1]}")
    if record.get("cert_fingerprint"):
        lines.append(f"  certificate: sha256 {record['cert_fingerprint']} serial {record.get('cert_serial')} "
                     f"issuer {record.get('cert_issuer')}")
    return "\n".join(lines)
