"""default_config(base_dir): what `xmppd run` uses without --config."""

from __future__ import annotations

from pathlib import Path

from xmppd.config import default_config


def test_default_config_serves_localhost_with_data_under_base_dir(tmp_path):
    config = default_config(tmp_path)
    assert config.general.hosts == ("localhost",)
    assert config.general.default_server_domain == "localhost"
    assert config.general.data_dir == tmp_path / "var"
    assert config.storage.url == f"sqlite+aiosqlite:///{tmp_path}/var/xmppd.sqlite"
    assert config.audit.file == tmp_path / "var" / "audit.jsonl"
    assert config.source is None


def test_default_config_listens_starttls_on_5222_and_direct_tls_on_5223(tmp_path):
    config = default_config(tmp_path)
    assert [(l.port, l.tls.mode) for l in config.listeners] == [(5222, "starttls"), (5223, "tls")]
    assert config.listeners[1].tls.direct and not config.listeners[0].tls.direct


def test_default_config_listeners_use_the_dev_certs_and_keep_password_logins(tmp_path):
    for listener in default_config(tmp_path).listeners:
        tls = listener.tls
        assert tls.certfile == tmp_path / "certs/server.pem"
        assert tls.keyfile == tmp_path / "certs/server.key"
        assert tls.cacertfile == tmp_path / "certs/ca.pem"
        assert tls.verify_mode == "peer"
        assert tls.disconnect_on_failure is False
        assert listener.allowed_auth_methods == ()


def test_default_config_enables_pki_and_sql_with_default_mechanisms(tmp_path):
    config = default_config(tmp_path)
    assert config.auth.methods == ("pki", "sql")
    assert config.auth.sasl_mechanisms[0] == "external"
    assert config.auth.password.format == "scram"


def test_default_config_resolves_a_relative_base_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = default_config(Path("srv"))
    assert config.general.data_dir == tmp_path / "srv" / "var"
    assert config.listeners[0].tls.certfile.is_absolute()
