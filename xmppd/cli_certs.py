"""``xmppd certs`` subcommands (wired into :mod:`xmppd.cli` by :func:`add_certs_commands`).

Issuing (init-ca, server, issue, renew) lives in :mod:`xmppd.cli_issue`; the registry commands here:

    xmppd certs list [JID] [--expiring 30d]      registered client certificates (all accounts without JID)
    xmppd certs revoke JID|FINGERPRINT [--dir]   revoke in the registry and put the serial on DIR/crl.pem
    xmppd certs renew JID [--p12 FILE] [--days]  new key + certificate for the same JID; the old one stays
                                                 valid until it expires or is revoked (overlap window)
    xmppd certs policy JID always|ifpresent|never|default
    xmppd certs crl [--dir]                      re-sign DIR/crl.pem (before its nextUpdate)

All take ``--config`` (default: the embedded config, like ``xmppd user add``) to
find the storage database.  ``xmppd certs issue``/``renew`` record what they
issue through :func:`xmppd.cli_issue.record_issued`.

A running server sees registry changes at once for new logins (same
database).  Live sessions of a certificate revoked here are closed when the
server re-reads its CRLs (SIGHUP, or the file watcher), provided ``DIR/crl.pem``
is listed in ``tls.crl_files``.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from .cli_common import (EXIT_USAGE, CliError, ca_paths, days, describe_os_error, load_config, parse_account,
                         with_registry)

__all__ = ["add_certs_commands", "parse_duration", "DEFAULT_CRL_DAYS"]

#: validity of the CRLs written by `certs revoke` / `certs crl` (an expired CRL fails closed)
DEFAULT_CRL_DAYS = 30


def parse_duration(text: str) -> _dt.timedelta:
    """``30d``, ``2w``, ``12h``, ``90m`` or a bare number of days."""
    m = re.fullmatch(r"\s*(\d+)\s*([dwhm]?)\s*", text or "")
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 30d, 2w, 12h)")
    n, unit = int(m.group(1)), m.group(2) or "d"
    return {"d": _dt.timedelta(days=n), "w": _dt.timedelta(weeks=n), "h": _dt.timedelta(hours=n),
            "m": _dt.timedelta(minutes=n)}[unit]


def _fmt_time(when: _dt.datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when is not None else "-"


# ------------------------------------------------------------------ list
def cmd_certs_list(args) -> int:
    config = load_config(args)
    jid = parse_account(args.jid, config) if args.jid else None
    try:
        within = parse_duration(args.expiring) if args.expiring else None
    except ValueError as exc:
        raise CliError(f"--expiring: {exc}", EXIT_USAGE) from None

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

    return with_registry(config, action)


# ------------------------------------------------------------------ revoke / crl
def _norm_fingerprint(text: str) -> str | None:
    fp = text.replace(":", "").replace(" ", "").lower()
    return fp if re.fullmatch(r"[0-9a-f]{64}", fp) else None


async def _write_crl(registry, d: Path, crl_days: int) -> tuple[Path, list[int]] | None:
    """Re-sign ``d/crl.pem``: the registry's revoked serials of ``d``'s CA plus what the file had."""
    from cryptography import x509

    from .pki import build_crl, load_issued, write_crl

    ca_cert, ca_key = ca_paths(d)
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
    try:
        write_crl(crl_path, build_crl(ca, sorted(revoked.items()), next_update_days=crl_days))
    except OSError as exc:
        raise CliError(f"the registry is updated, but the CRL could not be written: {describe_os_error(exc)}; "
                       f"then run `xmppd certs crl --dir {d}`") from None
    return crl_path, sorted(revoked)


def cmd_certs_revoke(args) -> int:
    from .storage.certs import REVOKED

    config = load_config(args)
    fp = None if "@" in args.target else _norm_fingerprint(args.target)
    jid = parse_account(args.target, config) if fp is None else None
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
            raise CliError(f"no unrevoked registered certificate for {what}: "
                           f"`xmppd certs list{' ' + str(jid) if jid is not None else ''}` shows what is registered")
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

    return with_registry(config, action)


def _ca_subject(d: Path) -> str | None:
    from cryptography import x509

    p = d / "ca.pem"
    if not p.exists():
        return None
    return x509.load_pem_x509_certificate(p.read_bytes()).subject.rfc4514_string()


def cmd_certs_crl(args) -> int:
    config = load_config(args)
    d = Path(args.dir)

    async def action(registry) -> int:
        written = await _write_crl(registry, d, args.crl_days)
        if written is None:
            raise CliError(f"no CA in {d} (ca.pem + ca.key): run `xmppd certs init-ca --dir {d}` first, "
                           "or pass --dir with the CA's directory")
        crl_path, serials = written
        print(f"CRL {crl_path}: {len(serials)} revoked serial(s), valid {args.crl_days} days")
        return 0

    return with_registry(config, action)


# ------------------------------------------------------------------ policy
def cmd_certs_policy(args) -> int:
    config = load_config(args)
    jid = parse_account(args.jid, config)

    async def action(registry) -> int:
        await registry.set_policy(jid.local, jid.domain, None if args.policy == "default" else args.policy)
        effective = await registry.get_policy(jid.local, jid.domain)
        if effective is None:
            print(f"{jid}: certificate registry policy follows auth.cert_registry ({config.auth.cert_registry})")
        else:
            print(f"{jid}: certificate registry policy {effective}")
        return 0

    return with_registry(config, action)


# ------------------------------------------------------------------ parser
def add_certs_commands(certs) -> None:
    """Add init-ca/server/issue (:mod:`xmppd.cli_issue`) and list/revoke/renew/policy/crl to ``xmppd certs``."""
    from .cli_issue import cmd_certs_init_ca, cmd_certs_issue, cmd_certs_renew, cmd_certs_server
    from .storage.certs import POLICIES

    def config_arg(p) -> None:
        p.add_argument("--config", "-c", help="TOML file (default: the embedded config) — where the registry is")

    def p12_args(p) -> None:
        p.add_argument("--p12", help="also write a PKCS#12 bundle for importing into a client")
        p.add_argument("--password-file", help="the .p12 passphrase from a file's first line ('-' = stdin); "
                                               "default: generated and printed once on stderr")
        p.add_argument("--legacy-p12", action="store_true",
                       help="encrypt the .p12 with PBE-SHA1-3DES and a SHA-1 MAC instead of AES-256/PBKDF2-SHA256, "
                            "for importers that only know those (Android <= 11, older macOS Keychain, Windows < 10 1709)")

    ic = certs.add_parser("init-ca", help="create a CA (dev/test or small deployments)")
    ic.add_argument("--dir", default="certs")
    ic.add_argument("--cn", default="xmppd CA")
    ic.add_argument("--days", type=days, default=3650, help="validity in days (1..36500, default 3650)")
    ic.add_argument("--force", action="store_true")
    ic.set_defaults(func=cmd_certs_init_ca)
    sc = certs.add_parser("server", help="issue the server certificate")
    sc.add_argument("domains", nargs="+")
    sc.add_argument("--dir", default="certs")
    sc.add_argument("--days", type=days, default=825, help="validity in days (1..36500, default 825)")
    sc.set_defaults(func=cmd_certs_server)
    cc = certs.add_parser("issue", help="issue a client certificate for user@domain")
    cc.add_argument("jid")
    cc.add_argument("--dir", default="certs", help="where the CA lives")
    cc.add_argument("--out", help="directory for cert.pem/key.pem (default DIR/clients/JID)")
    cc.add_argument("--days", type=days, default=365, help="validity in days (1..36500, default 365)")
    p12_args(cc)
    cc.add_argument("--name", help="name in the account's certificate registry (default: 'issued SERIAL')")
    config_arg(cc)
    cc.set_defaults(func=cmd_certs_issue)

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
    rv.add_argument("--crl-days", type=days, default=DEFAULT_CRL_DAYS, help="CRL validity (nextUpdate) in days")
    config_arg(rv)
    rv.set_defaults(func=cmd_certs_revoke)

    rn = certs.add_parser("renew", help="new key and certificate for the same JID (the old one stays valid)")
    rn.add_argument("jid")
    rn.add_argument("--dir", default="certs", help="where the CA lives")
    rn.add_argument("--out", help="directory for cert.pem/key.pem (default DIR/clients/JID); "
                                  "the previous pair is kept as cert-SERIAL.pem/key-SERIAL.pem")
    rn.add_argument("--days", type=days, default=365, help="validity in days (1..36500, default 365)")
    rn.add_argument("--name", help="name in the registry (default: 'renewed SERIAL')")
    p12_args(rn)
    config_arg(rn)
    rn.set_defaults(func=cmd_certs_renew)

    po = certs.add_parser("policy", help="per-account certificate registry policy")
    po.add_argument("jid")
    po.add_argument("policy", choices=[*POLICIES, "default"])
    config_arg(po)
    po.set_defaults(func=cmd_certs_policy)

    cr = certs.add_parser("crl", help="re-sign DIR/crl.pem from the registry (run before its nextUpdate)")
    cr.add_argument("--dir", default="certs")
    cr.add_argument("--crl-days", type=days, default=DEFAULT_CRL_DAYS)
    config_arg(cr)
    cr.set_defaults(func=cmd_certs_crl)
