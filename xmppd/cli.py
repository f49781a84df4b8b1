"""Command line: wiring only.

    xmppd run [--config FILE]               start (no --config: embedded default, dev certs under ./certs;
                                            ports 5222/5223 or $XMPPD_PORT/$XMPPD_TLS_PORT)
    xmppd run --ephemeral [--accounts N] [--domain D] [--json FILE|-]
                                            throw-away server for CI (xmppd/ephemeral.py): temp dir, fresh PKI,
                                            test accounts, free ports; prints one JSON document; SIGTERM cleans up
    xmppd check-config FILE                 validate; exit 2 naming the TOML key on error
    xmppd certs init-ca|server|issue|renew  issuing (xmppd/cli_issue.py)
    xmppd certs list|revoke|policy|crl      the certificate registry (xmppd/cli_certs.py)
    xmppd user add|passwd|remove JID        password accounts (stored as SCRAM keys)
    xmppd audit tail / explain-login JID    the audit log (xmppd/cli_audit.py)
    xmppd client send|listen                a minimal client to try the server (xmppd/cli_client.py)

Errors are one line on stderr and exit 2 (usage/config) or 1 (runtime): see xmppd/cli_common.py.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import os
import re
import signal
import sys

from .cli_common import (EXIT_CONFIG, EXIT_RUNTIME, EXIT_USAGE, CliError, describe_os_error, ensure_default_pki,
                         fail, guard_stdout, load_config, parse_account, positive_int, read_secret, run_storage,
                         storage_error)

__all__ = ["main", "build_parser"]

#: the pre-cli_common name, for code written against it
_fail = fail

#: set to 1 to see the traceback of an unexpected error (a bug) instead of its one-line summary
ENV_TRACEBACK = "XMPPD_TRACEBACK"


# ------------------------------------------------------------------ run
def cmd_run(args) -> int:
    if args.ephemeral:
        if args.config:
            raise CliError("--ephemeral builds its own configuration: drop --config", EXIT_USAGE)
        from .ephemeral import run_ephemeral
        return run_ephemeral(accounts=args.accounts, domain=args.domain, json_target=args.json,
                             log_level=args.log_level)
    config = load_config(args)
    from .logsetup import setup_logging
    setup_logging(config, args.log_level)
    if not args.config:
        ensure_default_pki(config)
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    return runner(_serve(config, args.config))


def _listen_error(exc: OSError, config, config_path) -> CliError:
    """One line for a listener that cannot bind: which address, why, and what to change."""
    m = re.search(r"\('?([^',)]*)'?, (\d+)\)", str(exc))
    port = int(m.group(2)) if m else None
    where = f"{m.group(1)} port {port}" if m else "a listener's address"
    index = next((i for i, lc in enumerate(config.listeners) if lc.port == port), None)
    if config_path:
        change = f"listen.c2s[{index}].port in {config_path}" if index is not None else f"listen.c2s in {config_path}"
    else:
        from .cli_common import ENV_PORT, ENV_TLS_PORT

        direct = index is not None and config.listeners[index].tls.mode == "tls"
        var, example = (ENV_TLS_PORT, 15223) if direct else (ENV_PORT, 15222)
        change = f"${var} (e.g. {var}={example} xmppd run)"
    if exc.errno == errno.EADDRINUSE:
        return CliError(f"cannot listen on {where}: it is already in use (another xmppd or XMPP server?): "
                        f"stop that one, or change {change}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return CliError(f"cannot listen on {where}: permission denied (ports below 1024 need privileges): "
                        f"change {change}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return CliError(f"cannot listen on {where}: no such local address: fix listen.c2s[].ip_address",
                        EXIT_CONFIG)
    return CliError(f"cannot listen on {where}: {exc.strerror or exc}: change {change}")


async def _serve(config, config_path=None) -> int:
    from .server import Server
    from .tls.context import TLSConfigError

    try:
        server = Server(config)
    except TLSConfigError as exc:
        fix = (f"fix the path in {config_path} (`xmppd check-config {config_path}` lists every problem)"
               if config_path else "delete certs/server.pem and certs/server.key to have them re-created")
        raise CliError(f"config error: {exc}: {fix}", EXIT_CONFIG) from None
    from sqlalchemy.exc import SQLAlchemyError

    try:
        await server.start()
    except OSError as exc:  # Server.start stopped what it had started
        if exc.filename:
            raise
        raise _listen_error(exc, config, config_path) from None
    except SQLAlchemyError as exc:
        raise storage_error(config, exc) from None
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

    if args.file and args.config_file and args.file != args.config_file:
        raise CliError(f"two files given ({args.file} and --config {args.config_file}): check one at a time",
                       EXIT_USAGE)
    args.file = args.file or args.config_file
    if not args.file:
        raise CliError("no file to check: `xmppd check-config FILE`", EXIT_USAGE)
    config, problems = check_config_file(args.file)  # every problem, each naming its TOML key
    if config is None and len(problems) == 1:
        raise CliError(str(problems[0]), EXIT_CONFIG)  # one problem: one line
    for problem in problems:
        print(f"xmppd: {problem}", file=sys.stderr)
    if config is None:
        raise CliError(f"{args.file}: {sum(p.error for p in problems)} error(s)", EXIT_CONFIG)
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


# ------------------------------------------------------------------ users
def _with_auth(args, action, *, password: bool = False) -> int:
    """Run ``action(chain, jid[, password])`` on the configured auth methods; the JID (and its domain) is
    checked before the password is asked for."""
    from xmppd_auth.registry import AuthChain, build_methods

    config = load_config(args)
    jid = parse_account(args.jid, config)
    if password:
        pw = _password(args)
        act = action

        async def action(chain, jid):  # noqa: F811 - the same action with the password bound
            return await act(chain, jid, pw)

    async def go(engine) -> int:
        auth = config.auth
        chain = AuthChain(build_methods(auth.methods, auth.method_options, {
            "db_engine": engine, "password_hashes": tuple(auth.password.hash),
            "scram_iterations": auth.password.scram_iterations}))
        try:
            await chain.start()
            return await action(chain, jid)
        finally:
            await chain.stop()

    return run_storage(config, go)


def _password(args) -> str:
    """--password-file, else stdin when it is not a terminal (``echo PW | xmppd user add``), else a prompt."""
    pw = read_secret(args.password_file, "password")
    if pw is None and not sys.stdin.isatty():
        pw = read_secret("-", "password")
    if pw is None:
        try:
            pw = getpass.getpass(f"password for {args.jid}: ")
            if getpass.getpass("again: ") != pw:
                raise CliError("the two passwords differ: run the command again", EXIT_USAGE)
        except EOFError:
            raise CliError("no password typed: type it at the prompt, pipe it in (`echo PW | xmppd user ...`) "
                           "or use --password-file FILE", EXIT_USAGE) from None
    from .sasl import prepare_password

    try:
        return prepare_password(pw)  # PRECIS OpaqueString, as SASL does at login
    except ValueError as exc:
        raise CliError(f"unusable password ({exc}): choose another one", EXIT_USAGE) from None


def cmd_user_add(args) -> int:
    async def action(chain, jid, pw) -> int:
        if not chain.can_register:
            raise CliError("no configured auth method stores passwords: add \"sql\" to auth.methods", EXIT_CONFIG)
        if not await chain.register(jid.local, jid.domain, pw):
            raise CliError(f"{jid} already exists: change its password with `xmppd user passwd {jid}`")
        print(f"added {jid}")
        return 0

    return _with_auth(args, action, password=True)


def cmd_user_passwd(args) -> int:
    async def action(chain, jid, pw) -> int:
        if not await chain.set_password(jid.local, jid.domain, pw):
            raise CliError(f"{jid} does not exist: create it with `xmppd user add {jid}`")
        print(f"password changed for {jid}")
        return 0

    return _with_auth(args, action, password=True)


def cmd_user_remove(args) -> int:
    async def action(chain, jid) -> int:
        if not await chain.remove_user(jid.local, jid.domain):
            raise CliError(f"{jid} does not exist (nothing removed)")
        from .storage.accounts import announce_removal

        if announce_removal(load_config(args).storage.url, jid.local, jid.domain):  # running servers end its sessions
            print(f"removed {jid} (a running server on this database closes its live sessions)")
        else:
            print(f"removed {jid}")
        return 0

    return _with_auth(args, action)


# ------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``xmppd certs issue: argument --days: ...: see --help``."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(f"{self.prog.removeprefix('xmppd ')}: {message} (see `{self.prog} --help`)"
                       if self.prog != "xmppd" else f"{message} (see `xmppd --help`)", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="xmppd", description="XMPP server with TLS client-certificate login")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="start the server")
    r.add_argument("--config", "-c", help="TOML file (default: embedded localhost config, dev certs in ./certs, "
                                          "ports 5222/5223 or $XMPPD_PORT/$XMPPD_TLS_PORT)")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.add_argument("--ephemeral", action="store_true",
                   help="throw-away server for CI: temp dir, fresh CA, test accounts, free ports on 127.0.0.1")
    r.add_argument("--accounts", type=positive_int, default=2, metavar="N", help="--ephemeral: user1..N (default 2)")
    r.add_argument("--domain", default="localhost", help="--ephemeral: the served domain (default localhost)")
    r.add_argument("--json", default="-", metavar="FILE|-", help="--ephemeral: where the JSON goes (default stdout)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file", nargs="?", help="the TOML file")
    c.add_argument("--config", "-c", dest="config_file", metavar="FILE",
                   help="the same, spelled like the other commands' option")
    c.set_defaults(func=cmd_check_config)

    from .cli_certs import add_certs_commands

    certs = sub.add_parser("certs", help="issue certificates").add_subparsers(dest="certs_command", required=True)
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
            u.add_argument("--password-file", help="the password from a file's first line ('-' = stdin; stdin is "
                                                   "also read when it is not a terminal)")
        u.set_defaults(func=func)

    from .cli_client import add_client_commands
    add_client_commands(sub)
    return p


def _dispatch(argv: list[str] | None) -> int:
    from xmppd_auth.base import AuthConfigError
    from .config import ConfigError

    args = None
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (ConfigError, AuthConfigError) as exc:
        path = getattr(args, "config", None) or getattr(args, "file", None) or getattr(args, "config_file", None)
        if path and not os.path.isfile(path):
            fix = "give the path of an existing TOML file"
        elif path and args.func is not cmd_check_config:
            fix = f"correct {path} (`xmppd check-config {path}` lists every problem)"
        else:
            fix = f"correct {path or 'the configuration'}"
        lines = str(exc).splitlines() or [type(exc).__name__]
        if len(lines) == 1:
            return fail(f"config error: {lines[0]}: {fix}", EXIT_CONFIG)
        # several problems at once (issue 16): one indented line per TOML key, then what to do
        fail("\n".join([f"config error: {lines[0]}", *lines[1:]]), EXIT_CONFIG, one_line=False)
        return fail(fix, EXIT_CONFIG)


def main(argv: list[str] | None = None) -> int:
    before = sys.stdout
    out = guard_stdout()
    try:
        code = _dispatch(argv)
    except CliError as exc:
        code = fail(exc.message, exc.code)
    except KeyboardInterrupt:
        code = fail("interrupted", 130)
    except OSError as exc:
        code = fail(describe_os_error(exc), EXIT_RUNTIME)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if os.environ.get(ENV_TRACEBACK):
            raise
        code = fail(f"internal error {type(exc).__name__}: {exc} (a bug; {ENV_TRACEBACK}=1 shows the traceback)",
                    EXIT_RUNTIME)
    out.flush()
    if sys.stdout is out:  # called in-process (tests, bench): leave sys.stdout as it was
        sys.stdout = before
    return code


if __name__ == "__main__":
    sys.exit(main())
