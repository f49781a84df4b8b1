"""``xmppd certs init-ca|server|issue|renew``: issuing certificates (wired in by :mod:`xmppd.cli_certs`).

``certs issue`` does its work in an order that a closed stdout (``| head``) or a failure half-way cannot
spoil: every argument and output location is checked first, then the key, certificate and ``.p12`` are
written, then the certificate is recorded in the account's registry, and only then is anything printed.
A generated ``.p12`` passphrase goes to **stderr**, so it is seen on the terminal even when stdout is piped
or redirected (and it never lands in a file or log that captures stdout).
"""

from __future__ import annotations

import datetime as _dt
import secrets
import sys
from pathlib import Path

from .cli_common import (EXIT_USAGE, CliError, ca_paths, describe_os_error, fail, load_ca, load_config,
                         parse_account, read_secret, with_registry, writable_dir)

__all__ = ["cmd_certs_init_ca", "cmd_certs_server", "cmd_certs_issue", "cmd_certs_renew", "record_issued",
           "P12_PASSPHRASE_BYTES"]

#: random bytes in a generated .p12 passphrase (base64url: 16 characters)
P12_PASSPHRASE_BYTES = 12


def _fmt_time(when: _dt.datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when is not None else "-"


# ------------------------------------------------------------------ CA and server certificate
def cmd_certs_init_ca(args) -> int:
    from .pki import create_ca, write_cert, write_private_key

    d = Path(args.dir)
    cert, key = ca_paths(d)
    if (cert.exists() or key.exists()) and not args.force:
        raise CliError(f"{cert} already exists: keep using it, or pass --force to replace it (this invalidates "
                       "every certificate it issued)")
    writable_dir(d, "--dir")
    ca = create_ca(args.cn, days=args.days)
    try:
        write_private_key(key, ca.key)
        write_cert(cert, ca.cert)
    except OSError as exc:
        raise CliError(f"cannot write the CA: {describe_os_error(exc)}") from None
    print(f"CA certificate: {cert}\nCA private key: {key} (mode 0600)")
    print(f"Clients' certificates are trusted by listeners with tls.cacertfile = \"{cert}\"")
    return 0


def cmd_certs_server(args) -> int:
    from .pki import issue_server_cert, write_cert, write_private_key

    d = Path(args.dir)
    ca = load_ca(d)
    try:
        issued = issue_server_cert(ca, args.domains, days=args.days)
    except ValueError as exc:
        raise CliError(f"cannot issue a server certificate for {' '.join(args.domains)}: {exc}: "
                       "give DNS names or IP addresses", EXIT_USAGE) from None
    try:
        write_private_key(d / "server.key", issued.key)
        write_cert(d / "server.pem", issued.cert, ca.cert)
    except OSError as exc:
        raise CliError(f"cannot write the server certificate: {describe_os_error(exc)}") from None
    print(f"server certificate for {', '.join(args.domains)}: {d / 'server.pem'} (key {d / 'server.key'}, 0600)")
    return 0


# ------------------------------------------------------------------ client certificates
def _default_name(prefix: str, serial_hex: str) -> str:
    return f"{prefix} {serial_hex[:12]}"


def cmd_certs_issue(args, *, prefix: str = "issued", also: list | None = None) -> int:
    from .pki import export_p12, issue_client_cert, write_cert, write_private_key

    # 1. everything that can be wrong with the command line or the set-up, before anything is written
    jid = parse_account(args.jid, what="the certificate's account")
    config = load_config(args)
    d = Path(args.dir)
    ca = load_ca(d)
    if args.password_file is not None and not args.p12:
        raise CliError("--password-file is the .p12 passphrase: add --p12 FILE (or drop --password-file)",
                       EXIT_USAGE)
    p12 = Path(args.p12) if args.p12 else None
    if p12 is not None and p12.is_dir():
        raise CliError(f"--p12 {p12} is a directory: give a file name such as {p12 / (jid.local + '.p12')}",
                       EXIT_USAGE)
    password = read_secret(args.password_file, "p12 passphrase") if p12 is not None else None
    if p12 is not None:
        writable_dir(p12.parent, "--p12 directory", create=False)
    out = Path(args.out) if args.out else d / "clients" / str(jid)
    writable_dir(out, "--out directory")  # the last check: it creates the directory

    # 2. the files
    issued = issue_client_cert(ca, xmpp_addrs=[str(jid)], common_name=jid.local, days=args.days)
    generated = p12 is not None and password is None
    if generated:
        password = secrets.token_urlsafe(P12_PASSPHRASE_BYTES)
    try:
        write_private_key(out / "key.pem", issued.key)
        write_cert(out / "cert.pem", issued.cert)
        if p12 is not None:
            export_p12(p12, issued, ca_cert=ca.cert, friendly_name=str(jid), password=password.encode(),
                       legacy=args.legacy_p12)
    except OSError as exc:
        raise CliError(f"cannot write the certificate: {describe_os_error(exc)}") from None

    # 3. the registry (the certificate is usable whatever is printed afterwards)
    recorded, lines = record_issued(args, config, jid, issued, prefix=prefix, also=also)

    # 4. what happened and what to do with it
    if generated:  # stderr: seen even with stdout piped/redirected, never captured with it
        print(f"xmppd: passphrase of {p12} (shown once): {password}", file=sys.stderr, flush=True)
    print(f"client certificate for {jid}: {out / 'cert.pem'} (key {out / 'key.pem'}, 0600)")
    for line in lines:
        print(line)
    if p12 is not None:
        kind = "legacy 3DES/SHA-1" if args.legacy_p12 else "AES-256/SHA-256"
        print(f"PKCS#12 bundle: {p12} (mode 0600, {kind}; passphrase "
              f"{'on stderr above' if generated else 'from ' + ('stdin' if args.password_file == '-' else args.password_file)})")
        print("Import it:")
        print(f"  Conversations: Settings > Manage accounts > ⋮ > Add account with certificate, pick {p12.name}")
        print(f"  slixmpp: ClientXMPP('{jid}', None) with certfile={out / 'cert.pem'} keyfile={out / 'key.pem'}")
        print(f"  libstrophe: xmpp_conn_set_client_cert(conn, \"{out / 'cert.pem'}\", \"{out / 'key.pem'}\")")
        where = "" if args.out is None and args.dir == "certs" else (
            f" --cert {out / 'cert.pem'}" + ("" if args.dir == "certs" else f" --dir {d}"))
        print(f"  try it: xmppd client send {jid} SOMEONE@{jid.domain} 'hello'{where}")
        if not args.legacy_p12:
            print("  An importer that says the passphrase is wrong or the file is invalid (Android <= 11, older macOS "
                  "Keychain, Windows < 10 1709) needs --legacy-p12.")
    return recorded


def record_issued(args, config, jid, issued, *, prefix: str = "issued", also: list | None = None
                  ) -> tuple[int, list[str]]:
    """Record a certificate ``certs issue``/``renew`` just wrote in ``jid``'s registry.

    ``also``: further certificates of the account to register if unknown (the one being renewed, so
    ``ifpresent`` does not lock it out during the overlap).  Returns (exit status, lines to print).
    """
    from .storage.certs import DuplicateCert, add_facts
    from .tls.identity import cert_facts

    lines: list[str] = []
    if jid.domain not in config.general.hosts:
        lines.append(f"note: {jid.domain} is not served by this configuration (general.hosts); "
                     "the certificate was not recorded in a registry")
        return 0, lines
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
                    lines.append(f"registered the previous certificate too (serial {old.serial_hex}) so it keeps "
                                 f"working until {_fmt_time(old.not_after)}")
                except DuplicateCert:
                    pass
        try:
            row = await add_facts(registry, jid.local, jid.domain, facts, name=name)
        except DuplicateCert as exc:
            return fail(f"the certificate was written but not recorded: {jid} already has an active certificate "
                        f"named {exc.existing.name!r}: issue again with another --name", EXIT_USAGE)
        policy = await registry.get_policy(jid.local, jid.domain) or config.auth.cert_registry
        lines.append(f"recorded in {jid}'s certificate registry as {row.name!r} "
                     f"(sha256 {row.fingerprint_sha256}; policy {policy})")
        return 0

    try:
        return with_registry(config, action), lines
    except CliError as exc:
        return fail(f"the certificate was written but could not be recorded in the registry: {exc.message}",
                    exc.code), lines


def cmd_certs_renew(args) -> int:
    from cryptography import x509

    jid = parse_account(args.jid, what="the certificate's account")
    out = Path(args.out) if args.out else Path(args.dir) / "clients" / str(jid)
    cert_path, key_path = out / "cert.pem", out / "key.pem"
    load_ca(Path(args.dir))  # fail before moving anything
    previous = None
    moved: list[tuple[Path, Path]] = []
    if cert_path.exists():
        try:
            previous = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError:
            raise CliError(f"{cert_path} is not a PEM certificate: move it away, or give another --out") from None
        serial = format(previous.serial_number, "x")
        # keep the old pair next to the new one: the device using it keeps working
        for src, dst in ((cert_path, out / f"cert-{serial}.pem"), (key_path, out / f"key-{serial}.pem")):
            if src.exists():
                src.replace(dst)
                moved.append((dst, src))
    try:
        status = cmd_certs_issue(args, prefix="renewed", also=[previous] if previous is not None else [])
    except BaseException:
        if not cert_path.exists():  # nothing new was written: put the old pair back
            for dst, src in moved:
                if dst.exists() and not src.exists():
                    dst.replace(src)
        raise
    if previous is not None:
        serial = format(previous.serial_number, "x")
        print(f"previous certificate kept as {out / f'cert-{serial}.pem'} (serial {serial}, valid until "
              f"{_fmt_time(previous.not_valid_after_utc)}; revoke it with `xmppd certs revoke` once replaced)")
    return status
