"""parse_config / load_config: errors name the TOML key path; values are normalised."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from xmppd.config import ConfigError, load_config, parse_config


def error_for(data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value


def toml_error(text: str) -> ConfigError:
    return error_for(tomllib.loads(text))


LISTENER = """
[[listen.c2s]]
port = 5222
tls.certfile = "server.pem"
tls.keyfile = "server.key"
"""

# -- ConfigError -------------------------------------------------------------


def test_config_error_str_is_key_colon_message():
    e = ConfigError("listen.c2s[1].tls.verify_mode", "bad")
    assert (e.key, e.message, str(e)) == ("listen.c2s[1].tls.verify_mode", "bad", "listen.c2s[1].tls.verify_mode: bad")


# -- minimal config and defaults ---------------------------------------------


def test_empty_config_is_valid_and_has_no_listeners():
    config = parse_config({})
    assert config.listeners == ()
    assert config.general.hosts == ("localhost",)
    assert config.general.default_server_domain == "localhost"
    assert config.auth.methods == ("pki", "sql")


def test_listener_defaults(minimal):
    listener = parse_config(minimal).listeners[0]
    assert listener.ip_address == "::"  # dual-stack
    assert listener.backlog == 1024
    assert listener.max_stanza_bytes == 262144
    assert listener.max_stanza_bytes_preauth == 16384
    assert listener.max_xml_depth == 32
    assert listener.negotiation_timeout_s == 30.0
    assert listener.idle_timeout_s == 900.0
    assert listener.max_auth_attempts == 3
    assert listener.max_connections == 100000
    assert listener.allowed_auth_methods == ()
    tls = listener.tls
    assert (tls.mode, tls.verify_mode, tls.disconnect_on_failure) == ("starttls", "peer", True)
    assert (tls.password, tls.cacertfile, tls.ciphers, tls.crl_files) == (None, None, None, ())
    assert tls.versions == ("tlsv1.2", "tlsv1.3")


def test_auth_defaults():
    auth = parse_config({}).auth
    assert auth.sasl_mechanisms == (
        "external", "scram_sha512_plus", "scram_sha256_plus", "scram_sha1_plus",
        "scram_sha512", "scram_sha256", "scram_sha1",
    )
    assert auth.sasl_external == ("standard",)
    assert (auth.sasl_external_common_name.prefix, auth.sasl_external_common_name.suffix) == ("", "")
    assert auth.password.format == "scram"
    assert auth.password.hash == ("sha1", "sha256", "sha512")
    assert auth.password.scram_iterations == 10000
    assert auth.method_options == {}


def test_storage_and_audit_default_into_data_dir(tmp_path):
    config = parse_config({"general": {"data_dir": str(tmp_path / "d")}})
    assert config.storage.url == f"sqlite+aiosqlite:///{tmp_path}/d/xmppd.sqlite"
    assert config.storage.pool_size == 10 and config.storage.echo is False
    assert config.audit.enabled is True
    assert config.audit.file == tmp_path / "d" / "audit.jsonl"


def test_default_server_domain_defaults_to_first_host():
    config = parse_config({"general": {"hosts": ["b.example", "a.example"]}})
    assert config.general.default_server_domain == "b.example"


def test_default_server_domain_must_be_one_of_hosts():
    e = error_for({"general": {"hosts": ["a.example"], "default_server_domain": "b.example"}})
    assert e.key == "general.default_server_domain"


def test_config_is_frozen(minimal):
    config = parse_config(minimal)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listeners[0].port = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.general.__dict__  # slots: no instance dict


# -- unknown keys --------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("colour = 1", "colour"),
        ("[general]\nhostz = ['a.example']", "general.hostz"),
        ("[[listen.s2s]]\nport = 5269\nshapr = 'x'", "listen.s2s[0].shapr"),
        (LISTENER + "shapper = 'normal'", "listen.c2s[0].shapper"),
        (LISTENER + "tls.verify_pear = true", "listen.c2s[0].tls.verify_pear"),
        (LISTENER + LISTENER + "tls.dhfil = 'dh.pem'", "listen.c2s[1].tls.dhfil"),
        ("[[listen.c2s]]\nport = 1\n[listen.c2s.tls]\nkeyfile = 'k'\ncertfile = 'c'\ndhfil = 'dh.pem'", "listen.c2s[0].tls.dhfil"),
        ("[auth]\npassword.salt = 'x'", "auth.password.salt"),
        ("[auth]\nsasl_external_common_name.infix = 'x'", "auth.sasl_external_common_name.infix"),
        ("[auth.kerberos]\nrealm = 'X'", "auth.kerberos"),
        ("[storage]\ndriver = 'pgsql'", "storage.driver"),
        ("[audit]\npath = 'a.log'", "audit.path"),
    ],
)
def test_unknown_key_is_rejected_naming_its_full_path(text, key):
    e = toml_error(text)
    assert e.key == key
    assert "unknown key" in e.message


def test_mongooseim_max_stanza_size_is_applied_as_max_stanza_bytes():
    config = parse_config(tomllib.loads(LISTENER + "max_stanza_size = 65536"))
    assert config.listeners[0].max_stanza_bytes == 65536
    assert config.warnings == ()


def test_unknown_key_suggests_a_close_match():
    e = toml_error("[general]\nloglvl = 'info'")
    assert "loglevel" in e.message


def test_per_method_option_tables_are_not_checked_here():
    config = parse_config(tomllib.loads("[auth.http]\nurl = 'https://auth'\nanything.nested = 1\n[auth.ldap]"))
    assert config.auth.method_options == {"http": {"url": "https://auth", "anything": {"nested": 1}}, "ldap": {}}
    assert config.auth.options_for("http")["url"] == "https://auth"
    assert config.auth.options_for("pki") == {}


# -- types, enums, ranges ------------------------------------------------------


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("[general]\nhosts = 'example.org'", "general.hosts", "array"),
        ("[general]\nhosts = [1]", "general.hosts", "string"),
        ("[general]\ndata_dir = 5", "general.data_dir", "string"),
        ("[[listen.c2s]]\nport = '5222'\ntls.certfile = 'c'\ntls.keyfile = 'k'", "listen.c2s[0].port", "integer"),
        (LISTENER + "backlog = 1.5", "listen.c2s[0].backlog", "integer"),
        (LISTENER + "idle_timeout_s = 'long'", "listen.c2s[0].idle_timeout_s", "number"),
        (LISTENER + "tls.disconnect_on_failure = 'no'", "listen.c2s[0].tls.disconnect_on_failure", "boolean"),
        (LISTENER + "tls.crl_files = 'a.crl'", "listen.c2s[0].tls.crl_files", "array"),
        ("[[listen.c2s]]\nport = 5222\ntls = 'on'", "listen.c2s[0].tls", "table"),
        ("[storage]\necho = 1", "storage.echo", "boolean"),
        ("[audit]\nenabled = 'yes'", "audit.enabled", "boolean"),
        ("listen = 1", "listen", "table"),
        ("[listen.c2s]\nport = 5222", "listen.c2s", "array of tables"),
        ("auth = []", "auth", "table"),
        ("[auth]\npki = 1", "auth.pki", "table"),
    ],
)
def test_wrong_type_names_the_key_and_the_expected_type(text, key, expected):
    e = toml_error(text)
    assert e.key == key
    assert f"expected {expected}" in e.message


@pytest.mark.parametrize(
    "field", ["port", "backlog", "max_stanza_bytes", "max_xml_depth", "max_auth_attempts", "max_connections"]
)
def test_bool_is_rejected_where_an_integer_is_expected(minimal, field):
    minimal["listen"]["c2s"][0][field] = True
    e = error_for(minimal)
    assert e.key == f"listen.c2s[0].{field}"
    assert "expected integer, got boolean" in e.message


def test_bool_is_rejected_where_a_number_is_expected(minimal):
    minimal["listen"]["c2s"][0]["negotiation_timeout_s"] = True
    assert error_for(minimal).key == "listen.c2s[0].negotiation_timeout_s"


def test_bool_is_rejected_for_pool_size_and_scram_iterations():
    assert error_for({"storage": {"pool_size": False}}).key == "storage.pool_size"
    assert error_for({"auth": {"password": {"scram_iterations": True}}}).key == "auth.password.scram_iterations"


def test_integer_is_accepted_for_a_float_key(minimal):
    minimal["listen"]["c2s"][0]["idle_timeout_s"] = 60
    value = parse_config(minimal).listeners[0].idle_timeout_s
    assert value == 60.0 and isinstance(value, float)


@pytest.mark.parametrize(
    "text, key, allowed",
    [
        ("[general]\nloglevel = 'verbose'", "general.loglevel", "debug, info, warning, error"),
        (LISTENER + "tls.mode = 'ssl'", "listen.c2s[0].tls.mode", "starttls, starttls_required, tls"),
        (LISTENER + "tls.verify_mode = 'verify_peer'", "listen.c2s[0].tls.verify_mode", "peer, selfsigned_peer, none"),
        (LISTENER + "tls.versions = ['tlsv1.1']", "listen.c2s[0].tls.versions", "tlsv1.2, tlsv1.3"),
        ("[auth]\nmethods = ['kerberos']", "auth.methods", "pki, sql, http, ldap"),
        ("[auth]\nsasl_mechanisms = ['digest_md5']", "auth.sasl_mechanisms", "scram_sha512_plus"),
        ("[auth]\nsasl_external = ['cn']", "auth.sasl_external", "standard, common_name, auth_id"),
        ("[auth]\npassword.hash = ['md5']", "auth.password.hash", "sha1, sha256, sha512"),
    ],
)
def test_bad_enum_value_names_the_key_and_lists_allowed_values(text, key, allowed):
    e = toml_error(text)
    assert e.key == key
    assert allowed in e.message


def test_bad_enum_value_in_second_listener_names_its_index():
    e = toml_error(LISTENER + LISTENER + "tls.verify_mode = 'always'")
    assert e.key == "listen.c2s[1].tls.verify_mode"
    assert str(e).startswith("listen.c2s[1].tls.verify_mode: ")


@pytest.mark.parametrize(
    "field, value",
    [
        ("port", -1),
        ("port", 65536),
        ("backlog", 0),
        ("max_stanza_bytes", 4095),
        ("max_stanza_bytes_preauth", 1023),
        ("max_xml_depth", 3),
        ("max_xml_depth", 257),
        ("negotiation_timeout_s", 0),
        ("negotiation_timeout_s", -1.0),
        ("idle_timeout_s", float("inf")),
        ("idle_timeout_s", float("nan")),
        ("max_auth_attempts", 0),
        ("max_auth_attempts", 21),
        ("max_connections", 0),
    ],
)
def test_out_of_range_listener_value_names_the_key(minimal, field, value):
    minimal["listen"]["c2s"][0][field] = value
    e = error_for(minimal)
    assert e.key == f"listen.c2s[0].{field}"


def test_port_zero_is_allowed_for_ephemeral_ports(minimal):
    minimal["listen"]["c2s"][0]["port"] = 0
    assert parse_config(minimal).listeners[0].port == 0


def test_preauth_limit_must_not_exceed_the_stanza_limit(minimal):
    minimal["listen"]["c2s"][0].update(max_stanza_bytes=8192, max_stanza_bytes_preauth=16384)
    e = error_for(minimal)
    assert e.key == "listen.c2s[0].max_stanza_bytes_preauth"
    assert "max_stanza_bytes" in e.message


@pytest.mark.parametrize(
    "data, key",
    [
        ({"storage": {"pool_size": 0}}, "storage.pool_size"),
        ({"storage": {"pool_size": 1001}}, "storage.pool_size"),
        ({"auth": {"password": {"scram_iterations": 4095}}}, "auth.password.scram_iterations"),
    ],
)
def test_out_of_range_value_names_the_key(data, key):
    assert error_for(data).key == key


def test_ip_address_must_be_an_ip_literal(minimal):
    minimal["listen"]["c2s"][0]["ip_address"] = "localhost"
    assert error_for(minimal).key == "listen.c2s[0].ip_address"
    minimal["listen"]["c2s"][0]["ip_address"] = "::1"
    assert parse_config(minimal).listeners[0].ip_address == "::1"


@pytest.mark.parametrize("host", ["Example.org", "", "exa mple.org", "-bad.example", "example.org.", "a..b", "x" * 64 + ".org"])
def test_hosts_must_be_valid_lower_case_domains(host):
    e = error_for({"general": {"hosts": [host]}})
    assert e.key == "general.hosts"


def test_hosts_accept_idn_and_reject_duplicates_and_empty_list():
    assert parse_config({"general": {"hosts": ["bücher.example", "localhost"]}}).general.hosts[0] == "bücher.example"
    assert "duplicate" in error_for({"general": {"hosts": ["a.example", "a.example"]}}).message
    assert "empty" in error_for({"general": {"hosts": []}}).message


@pytest.mark.parametrize(
    "key", ["auth.sasl_mechanisms", "auth.sasl_external", "auth.password.hash"]
)
def test_lists_that_must_not_be_empty(key):
    section, _, rest = key.partition(".")
    data: dict = {section: {}}
    node = data[section]
    *parents, leaf = rest.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = []
    assert error_for(data).key == key


def test_tls_versions_must_not_be_empty(minimal):
    minimal["listen"]["c2s"][0]["tls"]["versions"] = []
    assert error_for(minimal).key == "listen.c2s[0].tls.versions"


def test_duplicate_auth_methods_are_rejected():
    assert error_for({"auth": {"methods": ["sql", "pki", "sql"]}}).key == "auth.methods"


def test_plaintext_password_storage_is_refused_with_a_clear_message():
    e = error_for({"auth": {"password": {"format": "plain"}}})
    assert e.key == "auth.password.format"
    assert "plaintext" in e.message and "scram" in e.message


# -- required keys -------------------------------------------------------------


@pytest.mark.parametrize("key", ["certfile", "keyfile"])
def test_every_listener_requires_certfile_and_keyfile(minimal, key):
    del minimal["listen"]["c2s"][0]["tls"][key]
    e = error_for(minimal)
    assert e.key == f"listen.c2s[0].tls.{key}"
    assert "required" in e.message


def test_listener_without_tls_table_names_the_missing_certfile():
    e = error_for({"listen": {"c2s": [{"port": 5222}]}})
    assert e.key == "listen.c2s[0].tls.certfile"


def test_listener_requires_a_port(minimal):
    del minimal["listen"]["c2s"][0]["port"]
    assert error_for(minimal).key == "listen.c2s[0].port"


# -- auth methods: aliases and cross references ---------------------------------


def test_rdbms_is_accepted_as_an_alias_of_sql():
    config = parse_config(tomllib.loads(
        LISTENER + "allowed_auth_methods = ['rdbms']\n[auth]\nmethods = ['rdbms', 'pki']\n[auth.rdbms]\npool = 'default'"
    ))
    assert config.auth.methods == ("sql", "pki")
    assert config.listeners[0].allowed_auth_methods == ("sql",)
    assert config.auth.method_options == {"sql": {"pool": "default"}}
    assert config.auth.options_for("rdbms") == {"pool": "default"}


def test_rdbms_and_sql_together_count_as_a_duplicate():
    e = error_for({"auth": {"methods": ["sql", "rdbms"]}})
    assert e.key == "auth.methods" and "duplicate" in e.message


def test_auth_sql_and_auth_rdbms_tables_together_are_rejected():
    e = toml_error("[auth.sql]\n[auth.rdbms]")
    assert e.key == "auth.rdbms"


def test_option_table_for_a_method_not_enabled_is_allowed():
    config = parse_config({"auth": {"methods": ["pki"], "ldap": {"base": "dc=example"}}})
    assert config.auth.method_options == {"ldap": {"base": "dc=example"}}


def test_allowed_auth_methods_not_in_auth_methods_is_rejected(minimal):
    minimal["listen"]["c2s"].append(dict(minimal["listen"]["c2s"][0], allowed_auth_methods=["pki", "ldap"]))
    e = error_for(minimal)
    assert e.key == "listen.c2s[1].allowed_auth_methods"
    assert "ldap" in e.message and "auth.methods" in e.message


def test_allowed_auth_methods_unknown_name_lists_allowed_values(minimal):
    minimal["listen"]["c2s"][0]["allowed_auth_methods"] = ["password"]
    e = error_for(minimal)
    assert e.key == "listen.c2s[0].allowed_auth_methods"
    assert "pki, sql, http, ldap" in e.message


def test_effective_auth_methods_follow_auth_methods_order(minimal):
    minimal["listen"]["c2s"][0]["allowed_auth_methods"] = ["sql", "pki"]
    config = parse_config(minimal)
    assert config.listeners[0].effective_auth_methods(config.auth) == ("pki", "sql")
    minimal["listen"]["c2s"][0]["allowed_auth_methods"] = []
    config = parse_config(minimal)
    assert config.listeners[0].effective_auth_methods(config.auth) == ("pki", "sql")


# -- storage -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["mysql+aiomysql://u:p@h/db", "postgresql://u@h/db", "sqlite:///x.db", "not a url"])
def test_only_async_sqlite_and_postgres_urls_are_accepted(url):
    e = error_for({"storage": {"url": url}})
    assert e.key == "storage.url"


def test_postgres_url_is_kept_as_given():
    url = "postgresql+asyncpg://xmppd:s3cret@db:5432/xmppd"
    assert parse_config({"storage": {"url": url}}).storage.url == url


def test_sqlite_in_memory_url_is_accepted():
    assert parse_config({"storage": {"url": "sqlite+aiosqlite:///:memory:"}}).storage.url.endswith(":memory:")


# -- paths ---------------------------------------------------------------------


def test_relative_paths_are_resolved_against_the_working_directory(tmp_path, monkeypatch, minimal):
    monkeypatch.chdir(tmp_path)
    tls = minimal["listen"]["c2s"][0]["tls"]
    tls.update(cacertfile="ca/ca.pem", crl_files=["crl/a.crl"])
    minimal["general"] = {"data_dir": "data"}
    minimal["audit"] = {"file": "logs/audit.jsonl"}
    minimal["storage"] = {"url": "sqlite+aiosqlite:///db/x.sqlite"}
    config = parse_config(minimal)
    t = config.listeners[0].tls
    assert t.certfile == tmp_path / "certs/server.pem"
    assert t.keyfile == tmp_path / "certs/server.key"
    assert t.cacertfile == tmp_path / "ca/ca.pem"
    assert t.crl_files == (tmp_path / "crl/a.crl",)
    assert config.general.data_dir == tmp_path / "data"
    assert config.audit.file == tmp_path / "logs/audit.jsonl"
    assert config.storage.url == f"sqlite+aiosqlite:///{tmp_path}/db/x.sqlite"
    for p in (t.certfile, t.keyfile, t.cacertfile, config.general.data_dir, config.audit.file):
        assert isinstance(p, Path) and p.is_absolute()


def test_absolute_paths_are_kept(minimal):
    minimal["listen"]["c2s"][0]["tls"]["certfile"] = "/etc/xmppd/server.pem"
    assert parse_config(minimal).listeners[0].tls.certfile == Path("/etc/xmppd/server.pem")


def test_default_data_dir_is_var_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_config({}).general.data_dir == tmp_path / "var"


# -- secrets -------------------------------------------------------------------


def test_secrets_are_redacted_in_repr(minimal):
    minimal["listen"]["c2s"][0]["tls"]["password"] = "key-passphrase"
    minimal["storage"] = {"url": "postgresql+asyncpg://xmppd:db-password@db/xmppd"}
    minimal["auth"] = {"http": {"url": "https://auth", "basic_auth": "user:http-secret"},
                       "ldap": {"connection": {"password": "ldap-secret"}}}
    config = parse_config(minimal)
    assert config.listeners[0].tls.password == "key-passphrase"
    assert config.auth.method_options["http"]["basic_auth"] == "user:http-secret"
    text = repr(config)
    for secret in ("key-passphrase", "db-password", "http-secret", "ldap-secret"):
        assert secret not in text
        assert secret not in str(config)
    assert "password='***'" in repr(config.listeners[0].tls)
    assert "xmppd:***@db/xmppd" in repr(config.storage)
    assert "https://auth" in text


def test_absent_tls_password_shows_as_none(minimal):
    assert "password=None" in repr(parse_config(minimal).listeners[0].tls)


# -- TOML forms and files --------------------------------------------------------


def test_dotted_keys_and_sub_tables_are_equivalent():
    dotted = tomllib.loads(LISTENER + "tls.mode = 'tls'\ntls.verify_mode = 'none'\n")
    table = tomllib.loads(
        "[[listen.c2s]]\nport = 5222\n[listen.c2s.tls]\ncertfile = 'server.pem'\nkeyfile = 'server.key'\n"
        "mode = 'tls'\nverify_mode = 'none'\n"
    )
    assert parse_config(dotted) == parse_config(table)


def test_load_config_reports_toml_syntax_errors_with_file_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[general]\nhosts = [\"a.example\"\nloglevel = 'info'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == str(path)
    assert "line" in info.value.message and "column" in info.value.message


def test_load_config_reports_a_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.key == str(tmp_path / "nope.toml")


def test_load_config_accepts_str_and_records_the_source(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text(LISTENER)
    config = load_config(str(path))
    assert config.source == path
    assert config.listeners[0].port == 5222


def test_parse_config_does_not_share_option_tables_with_its_input():
    data = {"auth": {"http": {"headers": {"a": "b"}}}}
    config = parse_config(data)
    data["auth"]["http"]["headers"]["a"] = "changed"
    assert config.auth.method_options["http"]["headers"]["a"] == "b"


# -- every error at once (xmppd/config/collect.py) ------------------------------


def test_all_errors_are_reported_in_one_config_errors_each_with_its_key():
    from xmppd.config import ConfigErrors

    with pytest.raises(ConfigErrors) as info:
        parse_config(tomllib.loads('colour = 1\n[general]\nhosts = ["UPPER"]\n' + LISTENER.replace("5222", "70000")
                                   + 'tls.mode = "ssl"\n[auth]\nmethods = ["nope"]\n[storage]\npool_size = 0\n'))
    keys = [e.key for e in info.value.errors]
    assert keys == ["colour", "general.hosts", "listen.c2s[0].port", "listen.c2s[0].tls.mode", "auth.methods",
                    "storage.pool_size"]
    assert str(info.value).splitlines()[0] == "6 errors:"
    assert info.value.key == "colour"  # a ConfigErrors is also the first ConfigError


def test_one_error_is_a_plain_config_error():
    e = toml_error("[general]\nloglevel = 'loud'")
    assert type(e) is ConfigError and e.key == "general.loglevel"


def test_the_collecting_builder_builds_what_the_schema_builder_builds():
    from xmppd.config.collect import build_collecting
    from xmppd.config.mongooseim import translate
    from xmppd.config.schema import Config, build_section

    conf = Path(__file__).resolve().parents[3] / "conf"
    for path in sorted(conf.glob("*.toml")):
        data, _, errors = translate(tomllib.loads(path.read_text()))
        assert not errors, path
        collected = build_collecting(Config, data, "", errors)
        assert not errors, (path, errors)
        assert collected == build_section(Config, data, ""), path


def test_the_collecting_builder_finds_the_first_error_the_schema_builder_finds():
    from xmppd.config.collect import build_collecting
    from xmppd.config.schema import Config, build_section

    for text in ("[general]\nhosts = []", "[general]\ndefault_server_domain = 'x.example'", LISTENER + "backlog = 0",
                 LISTENER + "max_stanza_bytes = 4096\nmax_stanza_bytes_preauth = 8192",
                 LISTENER + "allowed_auth_methods = ['http']", "[[listen.c2s]]\nport = 1"):
        data = tomllib.loads(text)
        with pytest.raises(ConfigError) as info:
            build_section(Config, data, "")
        errors: list[ConfigError] = []
        build_collecting(Config, data, "", errors)
        assert [(e.key, e.message) for e in errors][:1] == [(info.value.key, info.value.message)], text
