"""conf/*.toml: the example documents every schema key and every example loads."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from xmppd.config import iter_schema_keys, load_config

CONF = Path(__file__).resolve().parents[3] / "conf"
EXAMPLE = CONF / "xmppd.example.toml"

# Optional keys with no default value: documented as commented-out assignments.
COMMENTED_ONLY = {"listen.c2s.tls.password", "listen.c2s.tls.ciphers"}


def _walk(node: Any, prefix: str = "") -> Iterator[str]:
    """Leaf key paths of parsed TOML, array-of-tables indexes dropped."""
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and not v:
                yield path  # an empty inline table: `loglevels = {}`
            elif isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(i, dict) for i in v)):
                yield from _walk(v, path)
            else:
                yield path
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, prefix)


def _commented(text: str, key: str) -> bool:
    """True if a commented assignment of ``key`` appears, written with at least
    its last two components (``# tls.password = ...``)."""
    parts = key.split(".")
    suffixes = [".".join(parts[i:]) for i in range(len(parts) - 1)]
    return any(re.search(rf"(?m)^\s*#\s*{re.escape(s)}\s*=", text) for s in suffixes)


def test_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.source == EXAMPLE
    assert [l.port for l in config.listeners] == [5222, 5223]
    assert [l.tls.mode for l in config.listeners] == ["starttls", "tls"]


def test_every_schema_key_appears_in_the_example():
    text = EXAMPLE.read_text()
    active = set(_walk(tomllib.loads(text)))
    missing = []
    for key in iter_schema_keys():
        if key in active:
            continue
        if key in COMMENTED_ONLY and _commented(text, key):
            continue
        missing.append(key)
    assert not missing, f"keys not documented in {EXAMPLE.name}: {missing}"


def test_completeness_check_notices_a_missing_key():
    text = EXAMPLE.read_text().replace('loglevel = "info"\n', "")
    active = set(_walk(tomllib.loads(text)))
    assert "general.loglevel" not in active
    assert not _commented(text, "general.loglevel")


def test_every_active_key_in_the_example_has_a_comment():
    lines = EXAMPLE.read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("[") or "=" not in s or s.startswith('"'):
            continue
        prev = lines[i - 1].strip() if i else ""
        if not prev.startswith("#") and "#" not in s.split("=", 1)[1] and not prev.endswith(","):
            undocumented.append(s)
    assert not undocumented, undocumented


def test_schema_keys_are_unique_and_include_nested_tables():
    keys = list(iter_schema_keys())
    assert len(keys) == len(set(keys))
    assert "listen.c2s.tls.verify_mode" in keys
    assert "auth.sasl_external_common_name.prefix" in keys
    assert "storage.url" in keys and "audit.file" in keys


@pytest.mark.parametrize("path", sorted(CONF.glob("*.toml")), ids=lambda p: p.name)
def test_each_example_config_loads(path: Path):
    config = load_config(path)
    assert config.listeners


def test_small_examples_exist():
    names = {p.name for p in CONF.glob("*.toml")}
    assert {"xmppd.example.toml", "cert-only.toml", "postgres.toml"} <= names


def test_cert_only_example_has_a_cert_port_and_a_password_port():
    config = load_config(CONF / "cert-only.toml")
    by_methods = {l.allowed_auth_methods: l for l in config.listeners}
    assert by_methods[("pki",)].tls.disconnect_on_failure is True
    assert by_methods[("sql",)].tls.verify_mode == "none"


def test_postgres_example_uses_asyncpg_and_hides_the_password():
    config = load_config(CONF / "postgres.toml")
    assert config.storage.url.startswith("postgresql+asyncpg://")
    assert "change-me" in config.storage.url
    assert "change-me" not in repr(config)


def test_mongooseim_style_example_maps_rdbms_to_sql():
    config = load_config(CONF / "from-mongooseim.toml")
    assert config.auth.methods == ("sql", "pki")
    assert config.listeners[0].allowed_auth_methods == ("pki", "sql")
    assert set(config.auth.method_options) == {"pki", "sql"}
    assert config.auth.password.scram_iterations == 20000
