"""Command line: wiring only.

    xmppd run [--config FILE]               start (no --config: embedded default, dev certs under ./certs)
    xmppd run --ephemeral [--accounts N] [--domain D] [--json FILE|-]
                                            throw-away server for CI (xmppd/ephemeral.py): temp dir, fresh PKI,
                                            test accounts, free ports; prints one JSON document; SIGTERM cleans up
    xmppd check-config FILE                 validate; exit 2 naming the TOML key on error
    xmppd certs init-ca [--dir certs]       dev/test CA (key 0600)
    xmppd certs server DOMAIN... [--dir]    server certificate signed by that CA
    xmppd certs issue JID [--p12 FILE]      client certificate (xmppAddr + CN, EKU clientAuth), .p12, import steps;
                                            recorded in the account's certificate registry
    xmppd certs list|revoke|renew|policy|crl  the certificate registry (xmppd/cli_certs.py)
    xmppd user add|passwd|remove JID        password accounts (stored as SCRAM keys)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

__all__ = ["main"]

EXIT_CONFIG = 2
EXIT_USAGE = 64


def _fail(message: str, code: int = 1) -> int:
    print(f"xmppd: {message}", file=sys.stderr)
    return code


def _load(args) -> "Config":  # noqa: F821
    from .config import default_config, load_config

    if getattr(args, "config", None):
        return load_config(args.config)
    return default_config(Path.cwd())


def _ensure_default_pki(config) -> None:
    """The embedded default generates its dev CA and server certificate on first run."""
    from .pki import ensure_dev_pki

    for listener in config.listeners:
        tls = listener.tls
        if not tls.certfile.exists() or not tls.keyfile.exists():
            pki = ensure_dev_pki(tls.certfile.parent, list(config.general.hosts))
            logging.getLogger("xmppd").info("development PKI in %s (CA: %s)", tls.certfile.parent, pki.ca_cert)
            return


# ------------------------------------------------------------------ run
def cmd_run(args) -> int:
    if args.ephemeral:
        if args.config:
            return _fail("--ephemeral builds its own configuration: drop --config", EXIT_USAGE)
        from .ephemeral import run_ephemeral
        return run_ephemeral(accounts=args.accounts, domain=args.domain, json_target=args.json,
                             log_level=args.log_level)
    config = _load(args)
    from .logsetup import setup_logging
    setup_logging(config, args.log_level)
    if not args.config:
        _ensure_default_pki(config)
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    return runner(_serve(config))


async def _serve(config) -> int:
    from .server import Server

    server = Server(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    ports = ", ".join(f"{lst.config.tls.mode}:{lst.port}" for lst in server.listeners)
    print(f"xmppd ready: {', '.join(config.general.hosts)} on {ports}", flush=True)
    await stop.wait()
    await server.stop()
    return 0


def cmd_check_config(args) -> int:
    from .config.check import check_config_file

    from .modules import enabled_modules

    config, problems = check_config_file(args.file)  # every problem, each naming its TOML key
    for problem in problems:
        print(f"xmppd: {problem}", file=sys.stderr)
    if config is None:
        return _fail(f"{args.file}: {sum(p.error for p in problems)} error(s)", EXIT_CONFIG)
    modules = enabled_modules(config)
    print(f"{args.file}: OK")
    print(f"  hosts: {', '.join(config.general.hosts)}")
    for lc in config.listeners:
        t = lc.tls
        print(f"  listen.c2s {lc.ip_address}:{lc.port} tls.mode={t.mode} verify_mode={t.verify_mode} "
              f"disconnect_on_failure={str(t.disconnect_on_failure).lower()} "
              f"client CA={t.cacertfile or '(none: EXTERNAL unavailable)'}")
    print(f"  auth.methods: {', '.join(config.auth.methods)}; mechanisms: {', '.join(config.auth.sasl_mechanisms)}")
    print(f"  modules: {', '.join(cls.name for cls, _ in modules)}")
    from .pki.crl_upkeep import crl_report

    for line in crl_report(config):  # nextUpdate of every CRL; WARNING: when it needs attention
        print(f"  {line}")
    return 0


# ------------------------------------------------------------------ certs
def _ca_paths(d: Path) -> tuple[Path, Path]:
    return d / "ca.pem", d / "ca.key"


def cmd_certs_init_ca(args) -> int:
    from .pki import create_ca, write_cert, write_private_key

    d = Path(args.dir)
    cert, key = _ca_paths(d)
    if (cert.exists() or key.exists()) and not args.force:
        return _fail(f"{cert} already exists (use --force to replace it and invalidate every issued certificate)")
    d.mkdir(parents=True, exist_ok=True)
    ca = create_ca(args.cn, days=args.days)
    write_private_key(key, ca.key)
    write_cert(cert, ca.cert)
    print(f"CA certificate: {cert}\nCA private key: {key} (mode 0600)")
    print(f"Clients' certificates are trusted by listeners with tls.cacertfile = \"{cert}\"")
    return 0


def _load_ca(d: Path):
    from .pki import load_issued

    cert, key = _ca_paths(d)
    if not cert.exists() or not key.exists():
        raise SystemExit(_fail(f"no CA in {d}: run `xmppd certs init-ca --dir {d}` first"))
    return load_issued(cert, key)


def cmd_certs_server(args) -> int:
    from .pki import issue_server_cert, write_cert, write_private_key

    d = Path(args.dir)
    ca = _load_ca(d)
    issued = issue_server_cert(ca, args.domains, days=args.days)
    write_private_key(d / "server.key", issued.key)
    write_cert(d / "server.pem", issued.cert, ca.cert)
    print(f"server certificate for {', '.join(args.domains)}: {d / 'server.pem'} (key {d / 'server.key'}, 0600)")
    return 0


def _read_secret(path: str | None, prompt: str) -> str | None:
    if path is None:
        return None
    if path == "-":
        line = sys.stdin.readline()
    else:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline()
    return line.rstrip("\r\n")


def cmd_certs_issue(args) -> int:
    from .jid import JID, InvalidJID
    from .pki import export_p12, issue_client_cert, write_cert, write_private_key

    try:
        jid = JID.parse(args.jid)
    except InvalidJID as exc:
        return _fail(f"{args.jid!r} is not a valid JID: {exc}", EXIT_USAGE)
    if jid.local is None or jid.resource is not None:
        return _fail("a client certificate is for an account: give user@domain", EXIT_USAGE)
    d = Path(args.dir)
    ca = _load_ca(d)
    issued = issue_client_cert(ca, xmpp_addrs=[str(jid)], common_name=jid.local, days=args.days)
    out = Path(args.out) if args.out else d / "clients" / str(jid)
    out.mkdir(parents=True, exist_ok=True)
    write_private_key(out / "key.pem", issued.key)
    write_cert(out / "cert.pem", issued.cert)
    print(f"client certificate for {jid}: {out / 'cert.pem'} (key {out / 'key.pem'}, 0600)")
    if args.p12:
        password = _read_secret(args.password_file, "p12 passphrase")
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(12)
        export_p12(args.p12, issued, ca_cert=ca.cert, friendly_name=str(jid),
                   password=password.encode(), legacy=args.legacy_p12)
        print(f"PKCS#12 bundle: {args.p12} (mode 0600)")
        if generated:
            print(f"  passphrase (shown once): {password}")
        print("Import it:")
        print(f"  Conversations: Settings > Manage accounts > ⋮ > Add account with certificate, pick {Path(args.p12).name}")
        print(f"  slixmpp: ClientXMPP('{jid}', None) with certfile={out / 'cert.pem'} keyfile={out / 'key.pem'}")
        print(f"  libstrophe: xmpp_conn_set_client_cert(conn, \"{out / 'cert.pem'}\", \"{out / 'key.pem'}\");"
              " profanity: see `/help account` (client-certificate support depends on the version)")
        print("  Gajim >= 1.2 cannot send client certificates (nbxmpp dropped it); use a password account there.")
    from .cli_certs import record_issued

    return record_issued(args, jid, issued, prefix=getattr(args, "record_prefix", "issued"),
                         also=getattr(args, "record_also", None))


# ------------------------------------------------------------------ users
def _with_auth(args, action) -> int:
    from xmppd_auth.registry import AuthChain, build_methods
    from .jid import JID, InvalidJID
    from .storage.engine import create_engine, create_schema

    config = _load(args)
    try:
        jid = JID.parse(args.jid)
    except InvalidJID as exc:
        return _fail(f"{args.jid!r} is not a valid JID: {exc}", EXIT_USAGE)
    if jid.local is None or jid.resource is not None:
        return _fail("give an account as user@domain", EXIT_USAGE)
    if jid.domain not in config.general.hosts:
        return _fail(f"{jid.domain} is not in general.hosts ({', '.join(config.general.hosts)})", EXIT_USAGE)

    async def go() -> int:
        engine = create_engine(config.storage.url, pool_size=config.storage.pool_size)
        auth = config.auth
        chain = AuthChain(build_methods(auth.methods, auth.method_options, {
            "db_engine": engine, "password_hashes": tuple(auth.password.hash),
            "scram_iterations": auth.password.scram_iterations}))
        try:
            await create_schema(engine)
            await chain.start()
            return await action(chain, jid)
        finally:
            await chain.stop()
            await engine.dispose()

    return asyncio.run(go())


def _password(args) -> str:
    pw = _read_secret(args.password_file, "password")
    if pw is None:
        pw = getpass.getpass(f"password for {args.jid}: ")
        if getpass.getpass("again: ") != pw:
            raise SystemExit(_fail("passwords differ", EXIT_USAGE))
    from .sasl import prepare_password

    try:
        return prepare_password(pw)  # PRECIS OpaqueString, as SASL does at login
    except ValueError as exc:
        raise SystemExit(_fail(f"unusable password: {exc}", EXIT_USAGE)) from None


def cmd_user_add(args) -> int:
    pw = _password(args)

    async def action(chain, jid) -> int:
        if not chain.can_register:
            return _fail("no configured auth method stores passwords (add \"sql\" to auth.methods)")
        if not await chain.register(jid.local, jid.domain, pw):
            return _fail(f"{jid} already exists")
        print(f"added {jid}")
        return 0

    return _with_auth(args, action)


def cmd_user_passwd(args) -> int:
    pw = _password(args)

    async def action(chain, jid) -> int:
        if not await chain.set_password(jid.local, jid.domain, pw):
            return _fail(f"{jid} does not exist")
        print(f"password changed for {jid}")
        return 0

    return _with_auth(args, action)


def cmd_user_remove(args) -> int:
    async def action(chain, jid) -> int:
        if not await chain.remove_user(jid.local, jid.domain):
            return _fail(f"{jid} does not exist")
        from .storage.accounts import announce_removal

        if announce_removal(_load(args).storage.url, jid.local, jid.domain):  # running servers end its sessions
            print(f"removed {jid} (a running server on this database closes its live sessions)")
        else:
            print(f"removed {jid}")
        return 0

    return _with_auth(args, action)


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmppd", description="XMPP server with TLS client-certificate login")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="start the server")
    r.add_argument("--config", "-c", help="TOML file (default: embedded localhost config, dev certs in ./certs)")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.add_argument("--ephemeral", action="store_true",
                   help="throw-away server for CI: temp dir, fresh CA, test accounts, free ports on 127.0.0.1")
    r.add_argument("--accounts", type=int, default=2, metavar="N", help="--ephemeral: user1..N (default 2)")
    r.add_argument("--domain", default="localhost", help="--ephemeral: the served domain (default localhost)")
    r.add_argument("--json", default="-", metavar="FILE|-", help="--ephemeral: where the JSON goes (default stdout)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    certs = sub.add_parser("certs", help="issue certificates").add_subparsers(dest="certs_command", required=True)
    ic = certs.add_parser("init-ca", help="create a CA (dev/test or small deployments)")
    ic.add_argument("--dir", default="certs")
    ic.add_argument("--cn", default="xmppd CA")
    ic.add_argument("--days", type=int, default=3650)
    ic.add_argument("--force", action="store_true")
    ic.set_defaults(func=cmd_certs_init_ca)
    sc = certs.add_parser("server", help="issue the server certificate")
    sc.add_argument("domains", nargs="+")
    sc.add_argument("--dir", default="certs")
    sc.add_argument("--days", type=int, default=825)
    sc.set_defaults(func=cmd_certs_server)
    cc = certs.add_parser("issue", help="issue a client certificate for user@domain")
    cc.add_argument("jid")
    cc.add_argument("--dir", default="certs", help="where the CA lives")
    cc.add_argument("--out", help="directory for cert.pem/key.pem (default DIR/clients/JID)")
    cc.add_argument("--days", type=int, default=365)
    cc.add_argument("--p12", help="also write a PKCS#12 bundle for importing into a client")
    cc.add_argument("--password-file", help="p12 passphrase from a file ('-' = stdin); default: generated and printed")
    cc.add_argument("--legacy-p12", action="store_true", help="3DES/SHA-1 encryption for old Android/macOS importers")
    cc.add_argument("--name", help="name in the account's certificate registry (default: 'issued SERIAL')")
    cc.add_argument("--config", "-c", help="TOML file (default: the embedded config) — where the registry is")
    cc.set_defaults(func=cmd_certs_issue)
    from .cli_certs import add_certs_commands

    add_certs_commands(certs)

    from .cli_audit import add_audit_commands
    add_audit_commands(sub)

    users = sub.add_parser("user", help="password accounts").add_subparsers(dest="user_command", required=True)
    for name, func, pw in (("add", cmd_user_add, True), ("passwd", cmd_user_passwd, True),
                           ("remove", cmd_user_remove, False)):
        u = users.add_parser(name)
        u.add_argument("jid")
        u.add_argument("--config", "-c")
        if pw:
            u.add_argument("--password-file", help="read the password from a file ('-' = stdin)")
        u.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    from xmppd_auth.base import AuthConfigError
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", EXIT_CONFIG)
    except AuthConfigError as exc:
        return _fail(f"config error: {exc}", EXIT_CONFIG)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
