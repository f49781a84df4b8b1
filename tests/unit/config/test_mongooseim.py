"""A MongooseIM mongooseim.toml loads: supported keys applied, one warning per
unsupported documented key, keys in no MongooseIM schema still errors."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from xmppd.config import ConfigError, ConfigErrors, load_config, parse_config
from xmppd.config import mongooseim_keys as M
from xmppd.config.mongooseim import MODULE_RENAMES, MODULE_SAME_NAME, unsupported_message
from xmppd.config.schema import MODULE_ALIASES

from .cli_support import ROOT, make_pki, xmppd

EXAMPLE = ROOT / "conf" / "mongooseim.toml"

#: every documented MongooseIM key in conf/mongooseim.toml that xmppd does not implement
EXPECTED_UNSUPPORTED = [
    "general.registration_timeout", "general.language", "general.sm_backend", "general.max_fsm_queue",
    "listen.http[0]", "listen.http[1]", "listen.s2s[0]", "listen.service[0]",
    "listen.c2s[0].access", "listen.c2s[0].shaper", "listen.c2s[0].tls.dhfile",
    "listen.c2s[1].access", "listen.c2s[1].shaper",
    "auth.methods = 'anonymous'", "auth.sasl_mechanisms = 'anonymous'", "auth.anonymous",
    "auth.rdbms.users_number_estimate",
    "internal_databases.mnesia", "outgoing_pools.rdbms.default.scope", "services.service_mongoose_system_metrics",
    "modules.mod_adhoc", "modules.mod_disco.users_can_see_hidden_services",
    "modules.mod_offline.access_max_user_messages", "modules.mod_offline.backend", "modules.mod_privacy",
    "modules.mod_register", "modules.mod_sic", "modules.mod_roster.versioning",
    "modules.mod_vcard.host", "modules.mod_bosh", "modules.mod_mam.backend",
    "shaper", "acl", "access", "s2s", "host_config[0]",
]


def _warned_keys(warnings) -> list[str]:
    out = []
    for w in warnings:
        m = re.fullmatch(r"MongooseIM key (.+?): not supported by xmppd, ignored( \(.*\))?", w)
        assert m, w
        out.append(m.group(1))
    return out


def test_the_complete_mongooseim_example_loads_with_one_warning_per_unsupported_key():
    config = load_config(EXAMPLE)
    assert sorted(_warned_keys(config.warnings)) == sorted(EXPECTED_UNSUPPORTED)
    assert len(config.warnings) == len(set(config.warnings))


def test_the_mongooseim_keys_xmppd_implements_are_applied():
    config = load_config(EXAMPLE)
    assert config.general.hosts == ("localhost",) and config.general.loglevel == "warning"
    first, second = config.listeners
    assert (first.port, first.tls.mode, second.port, second.tls.mode) == (5222, "starttls", 5223, "tls")
    assert first.max_stanza_bytes == 65536 and second.max_stanza_bytes == 65536
    assert first.negotiation_timeout_s == 10.0  # c2s_state_timeout = 10_000 ms
    assert first.tls.verify_mode == "peer" and first.tls.disconnect_on_failure is False
    assert first.tls.cacertfile.name == "ca.pem"
    assert config.auth.methods == ("sql", "pki")  # "rdbms" is our sql
    assert config.auth.sasl_mechanisms == ("external", "scram_sha256", "scram_sha1")
    assert config.auth.password.hash == ("sha1", "sha256")  # MongooseIM "sha" is SHA-1
    assert config.storage.url == "postgresql+asyncpg://mongooseim:mongooseim_secret@localhost/mongooseim"
    assert config.storage.pool_size == 5  # workers
    assert config.modules.options_for("stream_management") == {"resume_timeout_s": 600, "max_unacked": 200}
    assert config.modules.options_for("mam") == {"max_page_size": 100}
    assert "offline" in config.modules.options and config.modules.options_for("offline") == {}


def test_check_config_accepts_the_complete_mongooseim_example_with_one_warning_each(tmp_path):
    make_pki(tmp_path)
    shutil.copy(EXAMPLE, tmp_path / "mongooseim.toml")
    r = xmppd(tmp_path, "check-config", "mongooseim.toml")
    assert r.returncode == 0, r.stderr
    warned = [l.removeprefix("xmppd: warning: ") for l in r.stderr.splitlines() if l.startswith("xmppd: warning: ")]
    assert sorted(_warned_keys(warned)) == sorted(EXPECTED_UNSUPPORTED)
    assert "mongooseim.toml: OK" in r.stdout


def test_run_accepts_the_mongooseim_example_and_logs_each_warning_once(tmp_path):
    make_pki(tmp_path)
    text = EXAMPLE.read_text()
    text = re.sub(r"(?m)^(\s*port = )\d+$", r"\g<1>0", text)
    text = text.replace("[[listen.c2s]]\n", '[[listen.c2s]]\n  ip_address = "127.0.0.1"\n')
    # no PostgreSQL here: storage.url wins over the rdbms pool (which then gets one "not used" warning)
    text = "[storage]\n  url = \"sqlite+aiosqlite:///" + str(tmp_path / "x.sqlite") + "\"\n" + text
    (tmp_path / "mongooseim.toml").write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    errfile = open(tmp_path / "stderr.txt", "w")  # a pipe would fill up and block the server
    proc = subprocess.Popen([sys.executable, "-m", "xmppd", "run", "--config", "mongooseim.toml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=errfile, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("xmppd ready: localhost on starttls:"), line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        errfile.close()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, err
    expected = [k for k in EXPECTED_UNSUPPORTED if not k.startswith("outgoing_pools.rdbms")]
    for key in expected:
        assert err.count(f"MongooseIM key {key}: not supported by xmppd, ignored") == 1, (key, err)
    assert err.count("MongooseIM key outgoing_pools.rdbms.default: not used, storage.url is set") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("text, key", [
    ("[general]\nhosst = ['a.example']", "general.hosst"),
    ("[modules.mod_mamm]", "modules.mod_mamm"),
    ("[shapers.normal]\nmax_rate = 1", "shapers"),
    ("[[listen.htp]]\nport = 5280", "listen.htp"),
    ("[[listen.http]]\nport = 5280\n[[listen.http.handlers.mod_boshh]]\nhost = '_'", "listen.http[0].handlers.mod_boshh"),
    ("[s2s]\ndefault_polcy = 'deny'", "s2s.default_polcy"),
    ("[outgoing_pools.rdbms.default]\nworkerz = 5", "outgoing_pools.rdbms.default.workerz"),
    ("[outgoing_pools.rdbms.default.connection]\ndriver = 'pgsql'\nhots = 'db'", "outgoing_pools.rdbms.default.connection.hots"),
    ("[outgoing_pools.redys.default]", "outgoing_pools.redys"),
    ("[internal_databases.cetz]", "internal_databases.cetz"),
    ("[services.service_admin_extr]", "services.service_admin_extr"),
    ("[[host_config]]\nhost = 'a'\n[host_config.modulez]", "host_config[0].modulez"),
    ("[auth.anonymous]\nallow_multiple_conections = true", "auth.anonymous.allow_multiple_conections"),
])
def test_a_key_in_no_mongooseim_schema_is_still_an_error(text, key):
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    keys = [e.key for e in getattr(info.value, "errors", [info.value])]
    assert key in keys


def test_a_typo_in_a_supported_mongooseim_module_is_an_error_of_that_module():
    from xmppd.modules import enabled_modules

    config = parse_config(tomllib.loads("[modules.mod_offline]\nbackend = 'rdbms'\nbackendd = 'rdbms'"))
    assert config.warnings == (unsupported_message("modules.mod_offline.backend"),)
    with pytest.raises(ConfigError) as info:
        enabled_modules(config)
    assert info.value.key == "modules.offline.backendd"


def test_typos_in_a_mongooseim_config_are_all_reported_at_once():
    text = EXAMPLE.read_text().replace("language =", "langauge =").replace("[modules.mod_sic]", "[modules.mod_sik]")
    text = text.replace("default_policy =", "default_polisy =")
    with pytest.raises(ConfigErrors) as info:
        parse_config(tomllib.loads(text))
    keys = {e.key for e in info.value.errors}
    assert keys == {"general.langauge", "modules.mod_sik", "s2s.default_polisy"}
    assert info.value.warnings  # the rest still read


def test_check_config_exits_2_naming_each_typo_of_a_mongooseim_config(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "m.toml").write_text(EXAMPLE.read_text().replace("language =", "langauge =")
                                     .replace("[modules.mod_sic]", "[modules.mod_sik]"))
    r = xmppd(tmp_path, "check-config", "m.toml")
    assert r.returncode == 2
    assert "xmppd: config error: general.langauge: unknown key" in r.stderr
    assert "xmppd: config error: modules.mod_sik: unknown key" in r.stderr


@pytest.mark.parametrize("theirs, ours", [("notice", "info"), ("all", "debug"), ("critical", "error"),
                                          ("none", "error"), ("warning", "warning")])
def test_mongooseim_loglevels_are_read_as_the_nearest_xmppd_level(theirs, ours):
    assert parse_config({"general": {"loglevel": theirs}}).general.loglevel == ours


def test_mongooseim_http_auth_pool_becomes_the_auth_http_table():
    config = parse_config(tomllib.loads(
        "[auth]\nmethods = ['http']\n[auth.http]\nbasic_auth = 'u:p'\n"
        "[outgoing_pools.http.auth]\nworkers = 7\nstrategy = 'best_worker'\n"
        "[outgoing_pools.http.auth.connection]\nhost = 'https://auth.example:8443'\npath_prefix = '/api/'\n"
        "request_timeout = 3000\n"))
    assert config.auth.options_for("http") == {"basic_auth": "u:p", "host": "https://auth.example:8443",
                                               "path_prefix": "/api/", "request_timeout": 3000, "pool_size": 7}
    assert config.warnings == (unsupported_message("outgoing_pools.http.auth.strategy"),)


def test_mongooseim_ldap_pool_becomes_the_auth_ldap_connection():
    config = parse_config(tomllib.loads(
        "[auth]\nmethods = ['ldap']\n[auth.ldap]\nbase = 'ou=users,dc=example'\nuids = [{attr = 'uid'}]\n"
        "[outgoing_pools.ldap.default]\nworkers = 3\n[outgoing_pools.ldap.default.connection]\n"
        "servers = ['ldap.example']\nrootdn = 'cn=admin'\npassword = 's'\nencrypt = 'tls'\n"))
    opts = config.auth.options_for("ldap")
    assert (opts["servers"], opts["rootdn"], opts["password"], opts["tls"], opts["pool_size"]) == \
        (["ldap.example"], "cn=admin", "s", True, 3)


def test_a_non_postgresql_rdbms_pool_is_ignored_with_a_warning():
    config = parse_config(tomllib.loads(
        "[outgoing_pools.rdbms.default.connection]\ndriver = 'mysql'\nhost = 'db'\n"))
    assert config.storage.is_sqlite
    assert len(config.warnings) == 1 and "driver 'mysql'" in config.warnings[0]


def test_mongooseim_tables_never_drop_an_option_xmppd_implements():
    from xmppd.modules import BUILTIN

    specs = {cls.name: set(cls.options_spec) for cls in BUILTIN}
    for module, options in M.MODULE_OPTIONS.items():
        ours = specs[MODULE_ALIASES.get(module, module.removeprefix("mod_").replace("_meta", ""))]
        dropped = options - set(MODULE_RENAMES.get(module, {})) - MODULE_SAME_NAME.get(module, frozenset())
        assert not dropped & ours, (module, dropped & ours)
        for new, _ in MODULE_RENAMES.get(module, {}).values():
            assert new in ours, (module, new)


def test_every_xmppd_alias_of_a_mongooseim_module_is_a_mongooseim_module_or_ours():
    xmppd_only = {"mod_pep", "mod_e2ee_policy", "mod_saslcert", "mod_bookmarks"}
    assert set(MODULE_ALIASES) - M.MODULES == xmppd_only
    assert set(M.MODULE_OPTIONS) <= M.MODULES


def test_a_plain_xmppd_config_gets_no_warnings():
    assert load_config(ROOT / "conf" / "xmppd.example.toml").warnings == ()
    for path in Path(ROOT / "conf").glob("*.toml"):
        if path.name != "mongooseim.toml":
            assert load_config(path).warnings == (), path
