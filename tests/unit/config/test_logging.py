"""loglevel = "debug" is xmppd's debug output, not aiosqlite's; general.loglevels overrides per logger."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys

import pytest

from xmppd.config import ConfigError, parse_config
from xmppd.logsetup import configure, setup_logging

from .cli_support import ROOT, make_pki

THIRD_PARTY = ("aiosqlite", "sqlalchemy.engine", "asyncio", "slixmpp", "ldap3", "aiohttp.access")


def run_until_ready(tmp_path, general: str, *extra: str) -> str:
    """Start `xmppd run` with the given [general] body, wait for "ready", stop it; its stderr."""
    make_pki(tmp_path)
    (tmp_path / "x.toml").write_text(
        f"[general]\n{general}\n[[listen.c2s]]\nport = 0\nip_address = \"127.0.0.1\"\n"
        "tls.certfile = \"certs/server.pem\"\ntls.keyfile = \"certs/server.key\"\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    errfile = open(tmp_path / "stderr.txt", "w")  # a pipe would fill up and block the server
    proc = subprocess.Popen([sys.executable, "-m", "xmppd", "run", "--config", "x.toml", *extra], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=errfile, text=True, env=env)
    try:
        assert proc.stdout.readline().startswith("xmppd ready:")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        errfile.close()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, err
    return err


def test_debug_loglevel_does_not_flood_the_log_with_aiosqlite(tmp_path):
    err = run_until_ready(tmp_path, 'loglevel = "debug"')
    assert " DEBUG aiosqlite" not in err
    assert " INFO xmppd.server" in err


def test_run_log_level_debug_does_not_flood_the_log_with_aiosqlite(tmp_path):
    err = run_until_ready(tmp_path, 'loglevel = "info"', "--log-level", "debug")
    assert " DEBUG aiosqlite" not in err


def test_loglevels_turns_on_a_third_party_logger(tmp_path):
    err = run_until_ready(tmp_path, 'loglevel = "info"\nloglevels = {"aiosqlite" = "debug"}')
    assert " DEBUG aiosqlite" in err


@pytest.fixture
def clean_logging():
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    names = ("xmppd", "auth", "xmppd_auth", "xmppd.router", "aiosqlite", *THIRD_PARTY)
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def test_debug_applies_to_xmppd_and_auth_loggers_only(clean_logging):
    configure("debug", stream=io.StringIO())
    for name in ("xmppd", "xmppd.router", "xmppd.modules.mam", "auth.chain", "auth.http", "xmppd_auth.sql"):
        assert logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    for name in THIRD_PARTY:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name


def test_error_loglevel_also_quiets_third_party_warnings(clean_logging):
    configure("error", stream=io.StringIO())
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("xmppd.router").isEnabledFor(logging.WARNING)


def test_loglevels_override_one_logger_and_its_children(clean_logging):
    configure("debug", {"xmppd.router": "warning", "aiosqlite": "info"}, stream=io.StringIO())
    assert not logging.getLogger("xmppd.router").isEnabledFor(logging.INFO)
    assert logging.getLogger("xmppd.sm").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("aiosqlite").isEnabledFor(logging.INFO)
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)


def test_configuring_twice_does_not_duplicate_lines(clean_logging):
    out = io.StringIO()
    configure("info", stream=io.StringIO())
    configure("info", stream=out)
    logging.getLogger("xmppd.test").info("once")
    assert out.getvalue().count("once") == 1


def test_setup_logging_logs_each_config_warning_once(clean_logging):
    out = io.StringIO()
    config = parse_config({"general": {"language": "en", "loglevel": "warning"}})
    setup_logging(config, stream=out)
    text = out.getvalue()
    assert text.count("WARNING xmppd.config: MongooseIM key general.language: not supported by xmppd, ignored") == 1


@pytest.mark.parametrize("value, key", [
    ({"xmppd.router": "loud"}, "general.loglevels.xmppd.router"),
    ({"bad name!": "debug"}, "general.loglevels.bad name!"),
    ("debug", "general.loglevels"),
])
def test_a_bad_loglevels_entry_names_its_key(value, key):
    with pytest.raises(ConfigError) as info:
        parse_config({"general": {"loglevels": value}})
    assert info.value.key == key


def test_loglevels_accepts_unquoted_dotted_names():
    config = parse_config({"general": {"loglevels": {"xmppd": {"router": "debug"}, "aiosqlite": "info"}}})
    assert config.general.loglevels == {"xmppd.router": "debug", "aiosqlite": "info"}
