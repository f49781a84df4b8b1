"""Logging set-up for ``xmppd run``: xmppd's loggers at ``general.loglevel``,
third-party libraries at WARNING, per-logger overrides from ``general.loglevels``.

``loglevel = "debug"`` is for debugging xmppd; with the root logger at DEBUG,
aiosqlite alone writes several lines per query and asyncio, sqlalchemy,
slixmpp, ldap3 and aiohttp add theirs.  So the root logger (everything that is
not xmppd's) gets :data:`THIRD_PARTY_LEVEL` or the configured level, whichever
is higher, and only :data:`OWN_LOGGERS` follow ``loglevel``.  A library's
debug output is one ``general.loglevels`` entry away
(``{"aiosqlite" = "debug"}``); an entry applies to that logger and its children.
"""

from __future__ import annotations

import logging
import sys
from typing import Mapping

__all__ = ["OWN_LOGGERS", "THIRD_PARTY_LEVEL", "LOG_FORMAT", "setup_logging", "configure"]

#: the loggers that follow general.loglevel: xmppd's and the auth package's
#: (its modules log as "auth.<method>" and "xmppd_auth.*")
OWN_LOGGERS = ("xmppd", "auth", "xmppd_auth")
#: the least severe level third-party loggers show unless general.loglevels says otherwise
THIRD_PARTY_LEVEL = logging.WARNING
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, loglevels: Mapping[str, str] | None = None, *, stream=None) -> None:
    """Install one stderr handler on the root logger and set the levels."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):  # a second call (tests, reload) replaces, never duplicates
        if getattr(handler, "_xmppd", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._xmppd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(numeric, THIRD_PARTY_LEVEL))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(numeric)
    for name, value in (loglevels or {}).items():
        logging.getLogger(name).setLevel(value.upper())


def setup_logging(config, override: str | None = None, *, stream=None) -> None:
    """Configure logging from ``config.general`` (``override``: ``run --log-level``),
    then log the configuration's warnings (MongooseIM keys it ignores)."""
    configure(override or config.general.loglevel, config.general.loglevels, stream=stream)
    log = logging.getLogger("xmppd.config")
    for line in getattr(config, "warnings", ()):
        log.warning("%s", line)
