"""Authentication audit log: one JSON object per line.

Records every SASL outcome and every rejected client certificate, with the
certificate's fingerprint/serial/issuer, never a secret.  Readers:
``xmppd audit tail`` and ``xmppd explain-login``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

__all__ = ["AuditLog", "read_records"]

log = logging.getLogger("xmppd.audit")


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        rec = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")}
        rec.update(record)
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str)
        if self._fh is not None:
            try:
                self._fh.write(line + "\n")
            except OSError as exc:  # a full disk must not stop logins
                log.error("audit log write failed: %s", exc)
        log.debug("audit %s", line)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records in file order; unreadable lines are skipped."""
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            try:
                yield json.loads(line)
            except ValueError:
                continue
