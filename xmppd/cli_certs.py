"""``xmppd certs`` registry commands (wired into :mod:`xmppd.cli` by :func:`add_certs_commands`).

    xmppd certs list [JID] [--expiring 30d]      registered client certificates (all accounts without JID)
    xmppd certs revoke JID|FINGERPRINT [--dir]   revoke in the registry and put the serial on DIR/crl.pem
    xmppd certs renew JID [--p12 FILE] [--days]  new key + certificate for the same JID; the old one stays
                                                 valid until it expires or is revoked (overlap window)
    xmppd certs policy JID always|ifpresent|never|default
    xmppd certs crl [--dir]                      re-sign DIR/crl.pem (before its nextUpdate)

All take ``--config`` (default: the embedded config, like ``xmppd user add``) to
find the storage database.  ``xmppd certs issue`` records what it issues
through :func:`record_issued`.

A running server sees registry changes at once for new logins (same
database).  Live sessions of a certificate revoked here are closed when the
server re-reads its CRLs (SIGHUP, or the file watcher), provided ``DIR/crl.pem``
is listed in ``tls.crl_files``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

__all__ = ["add_certs_commands", "record_issued", "parse_duration"]

EXIT_USAGE = 64
#: validity of the CRLs written by `certs revoke` / `certs crl` (an expired CRL fails closed)
DEFAULT_CRL_DAYS = 30


def _fail(message: str, code: int = 1) -> int:
    print(f"xmppd: {message}", file=sys.stderr)
    return code


def parse_duration(text: str) -> _dt.timedelta:
    """``30d``, ``2w``, ``12h``, ``90m`` or a bare number of days."""
    m = re.fullmatch(r"\s*(\d+)\s*([dwhm]?)\s*", text or "")
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 30d, 2w, 12h)")
    n, unit = int(m.group(1)), m.group(2) or "d"
    return {"d": _dt.timedelta(days=n), "w": _dt.timedelta(weeks=n), "h": _dt.timedelta(hours=n),
            "m": _dt.timedelta(minutes=n)}[unit]


def _account(text: str, config) -> Any:
    """A bare JID on a served domain, or SystemExit with a usage error."""
    from .jid import JID, InvalidJID

    try:
        jid = JID.parse(text)
    except InvalidJID as exc:
        raise SystemExit(_fail(f"{text!r} is not a valid JID: {exc}", EXIT_USAGE)) from None
    if jid.local is None or jid.resource is not None:
        raise SystemExit(_fail("give an account as user@domain", EXIT_USAGE))
    if config is not None and jid.domain not in config.general.hosts:
        raise SystemExit(_fail(f"{jid.domain} is not in general.hosts ({', '.join(config.general.hosts)})",
                               EXIT_USAGE))
    return jid


def _with_registry(config, action: Callable[[Any], Awaitable[int]]) -> int:
    """Open the configured storage, create missing tables, run ``action(registry)``."""
    from .storage.certs import CertRegistry
    from .storage.engine import create_engine, create_schema

    async def go() -> int:
        engine = create_engine(config.storage.url, pool_size=min(config.storage.pool_size, 2))
        try:
            await create_schema(engine)
            return await action(CertRegistry(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _load_config(args):
    from .cli import _load

    return _load(args)


def _fmt_time(when: _dt.datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when is not None else "-"


# ------------------------------------------------------------------ issue / renew
def _default_name(prefix: str, serial_hex: str) -> str:
    return f"{prefix} {serial_hex[:12]}"


def record_issued(args, jid, issued, *, prefix: str = "issued", also: list | None = None) -> int:
    """Record a certificate ``xmppd certs issue``/``renew`` just wrote in ``jid``'s registry.

    ``also``: further certificates of the account to register if unknown (the
    one being renewed, so ``ifpresent`` does not lock it out during the overlap).
    Returns an exit status (0 = recorded).
    """
    from .storage.certs import DuplicateCert, add_facts
    from .tls.identity import cert_facts

    config = _load_config(args)
    if jid.domain not in config.general.hosts:
        print(f"note: {jid.domain} is not served by this configuration (general.hosts); "
              "the certificate was not recorded in a registry")
        return 0
    facts = cert_facts(issued.cert)
    name = getattr(args, "name", None) or _default_name(prefix, facts.serial_hex)
    now = _dt.datetime.now(_dt.timezone.utc)

    async def action(registry) -> int:
        for cert in also or ():
            old = cert_facts(cert)
            if old.not_after > now and await registry.get(jid.local, jid.domain, old.fingerprint_sha256) is None:
                try:
                    await add_facts(registry, jid.local, jid.domain, old,
                                    name=_default_name("issued", old.serial_hex))
                    print(f"registered the previous certificate too (serial {old.serial_hex}) so it keeps "
                          f"working until {_fmt_time(old.not_after)}")
                except DuplicateCert:
                    pass
        try:
            row = await add_facts(registry, jid.local, jid.domain, facts, name=name)
        except DuplicateCert as exc:
            return _fail(f"{jid} already has an active certificate named {exc.existing.name!r}: "
                         "choose another --name", EXIT_USAGE)
        policy = await registry.get_policy(jid.local, jid.domain) or config.auth.cert_registry
        print(f"recorded in {jid}'s certificate registry as {row.name!r} "
              f"(sha256 {row.fingerprint_sha256}; policy {policy})")
        return 0

    try:
        return _with_registry(config, action)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the files exist; say clearly what is missing
        return _fail(f"the certificate was written but could not be recorded in the registry "
                     f"({config.storage.url.split('://')[0]}): {exc}")


def cmd_certs_renew(args) -> int:
    from cryptography import x509

    from .cli import cmd_certs_issue
    from .jid import JID, InvalidJID

    try:
        jid = JID.parse(args.jid)
    except InvalidJID as exc:
        return _fail(f"{args.jid!r} is not a valid JID: {exc}", EXIT_USAGE)
    if jid.local is None or jid.resource is not None:
        return _fail("a client certificate is for an account: give user@domain", EXIT_USAGE)
    out = Path(args.out) if args.out else Path(args.dir) / "clients" / str(jid)
    cert_path, key_path = out / "cert.pem", out / "key.pem"
    previous = None
    if cert_path.exists():
        previous = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serial = format(previous.serial_number, "x")
        # keep the old pair next to the new one: the device using it keeps working
        cert_path.replace(out / f"cert-{serial}.pem")
        if key_path.exists():
            key_path.replace(out / f"key-{serial}.pem")
        print(f"previous certificate kept as {out / f'cert-{serial}.pem'} (serial {serial}, valid until "
              f"{_fmt_time(previous.not_valid_after_utc)}; revoke it with `xmppd certs revoke` once replaced)")
    args.record_prefix = "renewed"
    args.record_also = [previous] if previous is not None else []
    try:
        return cmd_certs_issue(args)
    except BaseException:
        if previous is not None and not cert_path.exists():  # nothing new was written: put the old pair back
            serial = format(previous.serial_number, "x")
            (out / f"cert-{serial}.pem").replace(cert_path)
            if (out / f"key-{serial}.pem").exists() and not key_path.exists():
                (out / f"key-{serial}.pem").replace(key_path)
        raise


# ------------------------------------------------------------------ list
def cmd_certs_list(args) -> int:
    config = _load_config(args)
    jid = _account(args.jid, config) if args.jid else None
    try:
        within = parse_duration(args.expiring) if args.expiring else None
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)

    async def action(registry) -> int:
        user, domain = (jid.local, jid.domain) if jid is not None else (None, None)
        if within is not None:
            rows = await registry.expiring(within, user=user, domain=domain)
        else:
            rows = await registry.list(user, domain)
        if not rows:
            what = f" expiring within {args.expiring}" if within is not None else ""
            print(f"no registered certificates{what}" + (f" for {jid}" if jid else ""))
            return 0
        now = _dt.datetime.now(_dt.timezone.utc)
        header = ("JID", "NAME", "STATE", "NOT AFTER", "LAST USED", "SERIAL", "SHA-256")
        lines = [header]
        for r in sorted(rows, key=lambda r: (r.jid, r.not_after)):
            left = r.not_after - now
            expiry = _fmt_time(r.not_after) + (" (expired)" if left.total_seconds() <= 0
                                               else f" ({left.days}d)")
            lines.append((r.jid, r.name, r.state, expiry, _fmt_time(r.last_used), r.serial_hex,
                          r.fingerprint_sha256))
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
        for line in lines:
            print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)) + "  " + line[-1])
        return 0

    return _with_registry(config, action)


# ------------------------------------------------------------------ revoke / crl
def _norm_fingerprint(text: str) -> str | None:
    fp = text.replace(":", "").replace(" ", "").lower()
    return fp if re.fullmatch(r"[0-9a-f]{64}", fp) else None


async def _write_crl(registry, d: Path, days: int) -> tuple[Path, list[int]] | None:
    """Re-sign ``d/crl.pem``: the registry's revoked serials of ``d``'s CA plus what the file had."""
    from cryptography import x509

    from .cli import _ca_paths
    from .pki import build_crl, load_issued, write_crl

    ca_cert, ca_key = _ca_paths(d)
    if not ca_cert.exists() or not ca_key.exists():
        return None
    ca = load_issued(ca_cert, ca_key)
    issuer = ca.cert.subject.rfc4514_string()
    revoked: dict[int, _dt.datetime] = dict(await registry.revoked_serials(issuer))
    crl_path = d / "crl.pem"
    if crl_path.exists():
        try:
            old = x509.load_pem_x509_crl(crl_path.read_bytes())
        except ValueError:
            old = None
        if old is not None and old.issuer == ca.cert.subject:
            for entry in old:
                revoked.setdefault(entry.serial_number, entry.revocation_date_utc)
    write_crl(crl_path, build_crl(ca, sorted(revoked.items()), next_update_days=days))
    return crl_path, sorted(revoked)


def cmd_certs_revoke(args) -> int:
    from .storage.certs import REVOKED

    config = _load_config(args)
    fp = None if "@" in args.target else _norm_fingerprint(args.target)
    jid = _account(args.target, config) if fp is None else None
    d = Path(args.dir)

    async def action(registry) -> int:
        if jid is not None:
            rows = [r for r in await registry.list(jid.local, jid.domain) if r.state != REVOKED]
            if args.name is not None:
                rows = [r for r in rows if r.name == args.name]
        else:
            rows = [r for r in await registry.by_fingerprint(fp) if r.state != REVOKED]
        if not rows:
            what = f"{jid}" + (f" named {args.name!r}" if args.name else "") if jid is not None else f"sha256 {fp}"
            return _fail(f"no unrevoked registered certificate for {what}")
        for r in rows:
            await registry.set_state(r.user, r.domain, r.fingerprint_sha256, REVOKED)
            print(f"revoked {r.jid} {r.name!r} serial {r.serial_hex} (sha256 {r.fingerprint_sha256})")
        written = await _write_crl(registry, d, args.crl_days)
        if written is None:
            print(f"note: no CA in {d} (ca.pem + ca.key): no CRL written; new logins are refused by the "
                  "registry, but live sessions stay until they end")
            return 0
        crl_path, serials = written
        ca_issuer = _ca_subject(d)
        foreign = [r for r in rows if r.issuer != ca_issuer]
        for r in foreign:
            print(f"note: {r.jid} {r.name!r} was not issued by {d / 'ca.pem'} ({r.issuer}); it is not on the CRL")
        print(f"CRL {crl_path}: {len(serials)} revoked serial(s), valid {args.crl_days} days "
              f"(re-sign before then: `xmppd certs crl --dir {d}`)")
        print("A running server closes live sessions of these certificates when it re-reads its CRLs "
              f"(SIGHUP or the file watcher) if {crl_path} is in tls.crl_files; new logins are refused now.")
        return 0

    return _with_registry(config, action)


def _ca_subject(d: Path) -> str | None:
    from cryptography import x509

    p = d / "ca.pem"
    if not p.exists():
        return None
    return x509.load_pem_x509_certificate(p.read_bytes()).subject.rfc4514_string()


def cmd_certs_crl(args) -> int:
    config = _load_config(args)
    d = Path(args.dir)

    async def action(registry) -> int:
        written = await _write_crl(registry, d, args.crl_days)
        if written is None:
            return _fail(f"no CA in {d}: run `xmppd certs init-ca --dir {d}` first")
        crl_path, serials = written
        print(f"CRL {crl_path}: {len(serials)} revoked serial(s), valid {args.crl_days} days")
        return 0

    return _with_registry(config, action)


# ------------------------------------------------------------------ policy
def cmd_certs_policy(args) -> int:
    config = _load_config(args)
    jid = _account(args.jid, config)

    async def action(registry) -> int:
        await registry.set_policy(jid.local, jid.domain, None if args.policy == "default" else args.policy)
        effective = await registry.get_policy(jid.local, jid.domain)
        if effective is None:
            print(f"{jid}: certificate registry policy follows auth.cert_registry ({config.auth.cert_registry})")
        else:
            print(f"{jid}: certificate registry policy {effective}")
        return 0

    return _with_registry(config, action)


# ------------------------------------------------------------------ parser
def add_certs_commands(certs) -> None:
    """Add list/revoke/renew/policy/crl to the ``xmppd certs`` subparsers."""
    from .storage.certs import POLICIES

    def config_arg(p) -> None:
        p.add_argument("--config", "-c", help="TOML file (default: the embedded config) — where the registry is")

    ls = certs.add_parser("list", help="registered client certificates")
    ls.add_argument("jid", nargs="?", help="one account (default: all)")
    ls.add_argument("--expiring", metavar="DURATION",
                    help="only active certificates expiring within DURATION (30d, 2w, 12h), expired ones included")
    config_arg(ls)
    ls.set_defaults(func=cmd_certs_list)

    rv = certs.add_parser("revoke", help="revoke a client certificate (registry + CRL)")
    rv.add_argument("target", metavar="JID|FINGERPRINT",
                    help="every unrevoked certificate of an account, or one SHA-256 fingerprint")
    rv.add_argument("--name", help="with a JID: only the certificate registered under this name")
    rv.add_argument("--dir", default="certs", help="where the CA lives; DIR/crl.pem is (re)written")
    rv.add_argument("--crl-days", type=int, default=DEFAULT_CRL_DAYS, help="CRL validity (nextUpdate) in days")
    config_arg(rv)
    rv.set_defaults(func=cmd_certs_revoke)

    rn = certs.add_parser("renew", help="new key and certificate for the same JID (the old one stays valid)")
    rn.add_argument("jid")
    rn.add_argument("--dir", default="certs", help="where the CA lives")
    rn.add_argument("--out", help="directory for cert.pem/key.pem (default DIR/clients/JID); "
                                  "the previous pair is kept as cert-SERIAL.pem/key-SERIAL.pem")
    rn.add_argument("--days", type=int, default=365)
    rn.add_argument("--name", help="name in the registry (default: 'renewed SERIAL')")
    rn.add_argument("--p12", help="also write a PKCS#12 bundle for importing into a client")
    rn.add_argument("--password-file", help="p12 passphrase from a file ('-' = stdin); default: generated and printed")
    rn.add_argument("--legacy-p12", action="store_true", help="3DES/SHA-1 encryption for old Android/macOS importers")
    config_arg(rn)
    rn.set_defaults(func=cmd_certs_renew)

    po = certs.add_parser("policy", help="per-account certificate registry policy")
    po.add_argument("jid")
    po.add_argument("policy", choices=[*POLICIES, "default"])
    config_arg(po)
    po.set_defaults(func=cmd_certs_policy)

    cr = certs.add_parser("crl", help="re-sign DIR/crl.pem from the registry (run before its nextUpdate)")
    cr.add_argument("--dir", default="certs")
    cr.add_argument("--crl-days", type=int, default=DEFAULT_CRL_DAYS)
    config_arg(cr)
    cr.set_defaults(func=cmd_certs_crl)
