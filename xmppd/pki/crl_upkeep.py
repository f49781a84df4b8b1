"""Keep the configured CRLs (``tls.crl_files``) from expiring.

A CRL past its ``nextUpdate`` fails closed: every certificate login of its CA
is refused (``crl-expired``, see :mod:`xmppd.tls.context`).  Nothing else
renews it, so:

* a server that **holds the CA key** re-signs the CRL itself, with the same
  entries (plus the registry's revoked serials of that CA, see
  :meth:`CrlKeeper.upkeep`) and the same validity, once less than
  :data:`CRL_RENEW_FRACTION` of its validity is left; a listed CRL that does
  not exist yet is created empty (:data:`CRL_DAYS`), so ``tls.crl_files`` can
  name the file ``xmppd certs revoke`` writes from the first start.  "Holds
  the key" means the ``xmppd certs`` layout: ``ca.pem`` + ``ca.key`` in the
  CRL's directory, ``ca.pem`` being the CRL's issuer (the embedded default:
  ``certs/``);
* a server that does not hold it warns loudly from the same margin on: at
  start, then at most every :data:`CRL_WARN_EVERY_S` (and whenever the state
  gets worse); ``xmppd check-config`` and ``xmppd explain-login`` print the
  same lines (:func:`crl_report`).

The server checks at start and every ``general.reload_check_interval_s``
(:data:`CRL_CHECK_INTERVAL_S` when the file watcher is off).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Sequence

from cryptography import x509

from .issue import Issued, build_crl, load_issued, write_crl

__all__ = ["CRL_RENEW_FRACTION", "CRL_DAYS", "CRL_CHECK_INTERVAL_S", "CRL_WARN_EVERY_S", "CrlState",
           "CrlKeeper", "crl_paths", "inspect_crl", "crl_report", "signer_for"]

log = logging.getLogger("xmppd.pki.crl")

#: re-sign (CA key held) or warn (not held) when less than this fraction of the CRL's validity is left
CRL_RENEW_FRACTION = 1 / 3
#: validity (days) of a CRL this server creates because the listed file did not exist yet
CRL_DAYS = 30
#: shortest validity a re-signed CRL gets (a shorter one would be due again at once)
CRL_MIN_VALIDITY = _dt.timedelta(hours=1)
#: seconds between two checks when the file watcher is off (general.reload_check_interval_s = 0)
CRL_CHECK_INTERVAL_S = 3600.0
#: seconds between two repeated warnings about the same CRL in the same state
CRL_WARN_EVERY_S = 3600.0

OK, DUE, EXPIRED, MISSING, UNREADABLE = "ok", "due", "expired", "missing", "unreadable"
#: how far build_crl backdates lastUpdate (clock skew allowance)
_BACKDATE = _dt.timedelta(minutes=5)
_SEVERITY = {OK: 0, DUE: 1, EXPIRED: 2, MISSING: 2, UNREADABLE: 2}


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def signer_for(crl_path: os.PathLike | str, crl: x509.CertificateRevocationList | None = None) -> Issued | None:
    """The CA (certificate + key) that may re-sign ``crl_path``, if this server holds it:
    ``ca.pem`` and ``ca.key`` next to the CRL, the CRL (when it exists) issued by that CA."""
    d = Path(crl_path).parent
    cert, key = d / "ca.pem", d / "ca.key"
    if not (cert.is_file() and key.is_file()):
        return None
    try:
        ca = load_issued(cert, key)
    except ValueError as exc:
        log.warning("CRL %s: %s next to it cannot be used to re-sign it: %s", crl_path, key, exc)
        return None
    if crl is not None and (crl.issuer != ca.cert.subject
                            or not crl.is_signature_valid(ca.cert.public_key())):  # type: ignore[arg-type]
        return None
    return ca


@dataclass(frozen=True)
class CrlState:
    """What one CRL file looks like at ``now``."""

    path: Path
    status: str  # ok | due | expired | missing | unreadable
    signer: bool  # this server holds the CA key (re-signs it)
    issuer: str | None = None
    last_update: _dt.datetime | None = None
    next_update: _dt.datetime | None = None
    detail: str | None = None

    @property
    def severity(self) -> int:
        return _SEVERITY[self.status]

    def message(self) -> str:
        who = "re-signed by this server (CA key in its directory)" if self.signer else \
            "this server does not hold its CA key"
        nu = self.next_update.isoformat(timespec="seconds") if self.next_update else "?"
        if self.status == OK:
            return f"CRL {self.path}: valid until {nu}; {who}"
        if self.status == MISSING:
            if self.signer:
                return f"CRL {self.path}: does not exist yet; created at start ({who})"
            return (f"CRL {self.path}: does not exist and this server cannot create it (no ca.pem + "
                    f"ca.key next to it); fix: `xmppd certs crl --dir {self.path.parent}` or remove it "
                    "from tls.crl_files")
        if self.status == UNREADABLE:
            return f"CRL {self.path}: cannot be read: {self.detail}"
        fix = ("the server re-signs it" if self.signer else
               f"fix: re-sign it (`xmppd certs crl --dir {self.path.parent}` where the CA key is) or fetch "
               "a fresh one from the CA; the server re-reads it when it changes")
        if self.status == EXPIRED:
            return (f"CRL {self.path} EXPIRED on {nu}: every certificate login of {self.issuer} is refused "
                    f"(crl-expired); {fix}")
        return f"CRL {self.path} expires on {nu} (less than a third of its validity left); {fix}"


def _file_key(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_state(path: Path) -> CrlState:
    """The CRL's facts (status OK stands for "parsed"; MISSING / UNREADABLE are final)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return CrlState(path, MISSING, signer_for(path) is not None)
    except OSError as exc:
        return CrlState(path, UNREADABLE, False, detail=str(exc))
    try:
        crl = (x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data))
    except ValueError as exc:
        return CrlState(path, UNREADABLE, False, detail=f"not a valid CRL: {exc}")
    return CrlState(path, OK, signer_for(path, crl) is not None, crl.issuer.rfc4514_string(),
                    crl.last_update_utc, crl.next_update_utc)


def inspect_crl(path: os.PathLike | str, now: _dt.datetime | None = None, *,
                cache: dict | None = None) -> CrlState:
    """The state of one CRL file at ``now``.  ``cache`` (a dict the caller keeps) avoids
    parsing the CRL and loading the CA key again while none of the three files changed."""
    path = Path(path)
    now = now or _now()
    key = tuple(_file_key(p) for p in (path, path.parent / "ca.pem", path.parent / "ca.key"))
    hit = cache.get(path) if cache is not None else None
    if hit is not None and hit[0] == key:
        st = hit[1]
    else:
        st = _read_state(path)
        if cache is not None:
            cache[path] = (key, st)
    if st.status != OK or st.next_update is None or st.last_update is None:
        return st
    nxt = st.next_update
    if nxt <= now:
        status = EXPIRED
    elif nxt - now < (nxt - st.last_update) * CRL_RENEW_FRACTION:
        status = DUE
    else:
        return st
    return dataclasses.replace(st, status=status)


def crl_paths(config) -> list[Path]:
    """Every distinct CRL file of the configuration's listeners, in order."""
    seen: list[Path] = []
    for lc in config.listeners:
        for p in lc.tls.crl_files:
            p = Path(p)
            if p not in seen:
                seen.append(p)
    return seen


def crl_report(config, now: _dt.datetime | None = None, *, problems_only: bool = False) -> list[str]:
    """One line per configured CRL (``check-config``), or only those that need attention
    (``explain-login``), prefixed ``WARNING:`` when they do."""
    out = []
    for path in crl_paths(config):
        st = inspect_crl(path, now)
        bad = st.status != OK and not (st.signer and st.status in (DUE, MISSING))
        if problems_only and not bad:
            continue
        out.append(("WARNING: " if bad else "") + st.message())
    return out


def reissue(path: Path, ca: Issued, *, extra: Iterable[tuple[int, _dt.datetime]] = (),
            default_days: int = CRL_DAYS) -> int:
    """Re-sign ``path`` with ``ca``: its entries plus ``extra``, the same validity (default
    ``default_days`` for a new file). Returns the number of revoked serials."""
    revoked: dict[int, _dt.datetime] = {}
    validity = _dt.timedelta(days=default_days)
    try:
        old = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        old = None
    if old is not None and old.issuer == ca.cert.subject:
        for entry in old:
            revoked[entry.serial_number] = entry.revocation_date_utc
        if old.next_update_utc is not None and old.next_update_utc > old.last_update_utc:
            validity = old.next_update_utc - old.last_update_utc
            if validity > 2 * _BACKDATE:  # build_crl backdates lastUpdate: do not grow each time
                validity -= _BACKDATE
    validity = max(validity, CRL_MIN_VALIDITY)
    for serial, when in extra:
        revoked.setdefault(serial, when)
    write_crl(path, build_crl(ca, sorted(revoked.items()), validity=validity))
    return len(revoked)


class CrlKeeper:
    """The server's side: create missing CRLs, re-sign due ones, warn about the rest."""

    def __init__(self, paths: Sequence[os.PathLike | str]) -> None:
        self.paths = [Path(p) for p in paths]
        #: path -> (status, monotonic time of the last warning)
        self._warned: dict[Path, tuple[str, float]] = {}
        #: parsed CRLs, per path, while the CRL, ca.pem and ca.key are unchanged
        self._cache: dict = {}

    def create_missing(self) -> list[Path]:
        """Before the listeners load their CRLs: write an empty CRL for every listed one that
        does not exist and whose CA key this server holds."""
        made = []
        for path in self.paths:
            if path.exists():
                continue
            ca = signer_for(path)
            if ca is None:
                continue  # the TLS set-up reports the missing file
            reissue(path, ca)
            log.info("CRL %s did not exist: created (empty, %d days, signed by %s)", path, CRL_DAYS,
                     ca.cert.subject.rfc4514_string())
            made.append(path)
        return made

    async def upkeep(self, revoked_for: Callable[[str], Awaitable[list[tuple[int, _dt.datetime]]]] | None = None,
                     now: _dt.datetime | None = None) -> list[Path]:
        """Re-sign what is due (or expired, or missing) and held; warn about the others.

        ``revoked_for(issuer)``: the certificate registry's revoked ``(serial, when)`` of an
        issuer (RFC 4514 string), merged into a re-signed CRL so that a `certs revoke` that
        raced with it is not lost; asked only when a CRL is re-signed.  Cheap when nothing is
        due (a ``stat`` of three files per CRL).  Returns the paths re-signed."""
        done = []
        for path in self.paths:
            st = inspect_crl(path, now, cache=self._cache)
            if st.status in (DUE, EXPIRED, MISSING) and st.signer:
                ca = signer_for(path)
                if ca is not None:
                    try:
                        extra = await revoked_for(ca.cert.subject.rfc4514_string()) if revoked_for else []
                        n = reissue(path, ca, extra=extra)
                    except OSError as exc:
                        log.error("CRL %s: re-signing failed: %s", path, exc)
                    else:
                        log.info("CRL %s re-signed (was %s, next update was %s; %d revoked serial(s))",
                                 path, st.status, st.next_update, n)
                        self._warned.pop(path, None)
                        done.append(path)
                        continue
            self._warn(st)
        return done

    def _warn(self, st: CrlState) -> None:
        if st.status == OK:
            self._warned.pop(st.path, None)
            return
        last = self._warned.get(st.path)
        now = time.monotonic()
        if last is not None and _SEVERITY[last[0]] >= st.severity and now - last[1] < CRL_WARN_EVERY_S:
            return
        self._warned[st.path] = (st.status, now)
        (log.error if st.status in (EXPIRED, MISSING, UNREADABLE) else log.warning)("%s", st.message())
