"""`xmppd audit tail` and `xmppd explain-login`: read the audit log."""

from __future__ import annotations

import argparse
import json
import time

from .audit import explain, read_records, records_for
from .cli_common import EXIT_USAGE, CliError, load_config, positive_int

__all__ = ["add_audit_commands"]

#: how often `audit tail --follow` looks for new lines
FOLLOW_POLL_S = 0.5


def _audit_file(args):
    config = load_config(args)
    if not config.audit.enabled:
        raise CliError("audit.enabled is false in this configuration: there is no audit log to read "
                       "(set audit.enabled = true)", EXIT_USAGE)
    return config.audit.file


def cmd_audit_tail(args) -> int:
    path = _audit_file(args)
    recs = list(read_records(path))
    if args.jid:
        recs = records_for(recs, args.jid)
    for rec in recs[-args.lines:]:
        print(json.dumps(rec, ensure_ascii=False) if args.json else explain(rec))
    if not args.follow:
        return 0
    with open(path, encoding="utf-8") as fh:  # pragma: no cover - interactive
        fh.seek(0, 2)
        while True:
            line = fh.readline()
            if not line:
                time.sleep(FOLLOW_POLL_S)
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if args.jid and not records_for([rec], args.jid):
                continue
            print(json.dumps(rec, ensure_ascii=False) if args.json else explain(rec), flush=True)


def cmd_explain_login(args) -> int:
    from .cli_common import load_config
    from .pki.crl_upkeep import crl_report

    for line in crl_report(load_config(args), problems_only=True):  # an expired CRL refuses every cert login
        print(line)
    path = _audit_file(args)
    recs = records_for(read_records(path), args.jid)
    if not recs:
        print(f"no authentication attempt for {args.jid} in {path}")
        return 1
    last = recs[-1]
    print(explain(last))
    failures_before = 0
    for rec in reversed(recs[:-1]):
        if rec.get("event") == "auth" and rec.get("result") == "success":
            break
        failures_before += 1
    if failures_before:
        print(f"  ({failures_before} earlier failure(s) since the last successful login)")
    return 0


def add_audit_commands(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="read the authentication audit log").add_subparsers(
        dest="audit_command", required=True)
    tail = audit.add_parser("tail", help="the last audit records, explained")
    tail.add_argument("--config", "-c")
    tail.add_argument("-n", "--lines", type=positive_int, default=20)
    tail.add_argument("--jid", help="only records about this account")
    tail.add_argument("--json", action="store_true", help="raw JSON lines")
    tail.add_argument("-f", "--follow", action="store_true")
    tail.set_defaults(func=cmd_audit_tail)
    ex = sub.add_parser("explain-login", help="why did the last login of this JID fail (or succeed)?")
    ex.add_argument("jid")
    ex.add_argument("--config", "-c")
    ex.set_defaults(func=cmd_explain_login)

