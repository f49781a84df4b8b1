"""auth.ldap options, capabilities and filter building: no directory needed."""

from __future__ import annotations

import pytest

from xmppd_auth.base import SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM, AuthConfigError
from xmppd_auth.ldap import LdapAuth, escape_filter_value
from xmppd_auth.registry import method_class

BASE = {"base": "ou=people,dc=test,dc=example"}


def make(**options) -> LdapAuth:
    return LdapAuth({**BASE, **options})


def config_error(**options) -> AuthConfigError:
    with pytest.raises(AuthConfigError) as err:
        LdapAuth(options)
    return err.value


def test_the_registry_resolves_ldap_to_this_class():
    assert method_class("ldap") is LdapAuth


def test_defaults_need_only_base():
    m = make()
    assert m._servers == ("localhost",) and m._port == 389 and not m._tls
    assert m._rootdn == "" and m._cert_match == "none" and m._pool_size == 4
    assert m._connect_timeout == 5 and m._request_timeout == 5
    assert m._cert_attribute == "userCertificate;binary"


def test_ldap_serves_plain_and_external_but_not_scram_and_cannot_register():
    m = make()
    assert m.supports_sasl(SASL_PASSWORD) and m.supports_sasl(SASL_EXTERNAL)
    assert not m.supports_sasl(SASL_SCRAM)
    assert m.can_register is False


def test_missing_base_is_a_config_error_naming_auth_ldap_base():
    assert config_error().key == "auth.ldap.base"
    assert config_error(base="  ").key == "auth.ldap.base"


def test_unknown_option_is_a_config_error_naming_the_key():
    err = config_error(base="dc=x", bind_dn="cn=admin")
    assert err.key == "auth.ldap.bind_dn"


@pytest.mark.parametrize("key, value", [
    ("servers", "ldap.example.org"),
    ("servers", []),
    ("servers", ["ldap://ldap.example.org"]),
    ("servers", [389]),
    ("port", 0),
    ("port", 70000),
    ("port", "389"),
    ("tls", "yes"),
    ("rootdn", 5),
    ("uids", []),
    ("uids", "uid"),
    ("uids", ["not an attribute"]),
    ("filter", "objectClass=person"),
    ("filter", "(objectClass=person"),
    ("filter", 3),
    ("cert_attribute", "user Certificate"),
    ("cert_match", "sometimes"),
    ("connect_timeout", 0),
    ("connect_timeout", -1),
    ("connect_timeout", True),
    ("connect_timeout", 301),
    ("request_timeout", 0),
    ("request_timeout", 0.5),
    ("pool_size", 0),
    ("pool_size", 65),
])
def test_a_bad_value_is_a_config_error_naming_its_key(key, value):
    assert config_error(**BASE, **{key: value}).key == f"auth.ldap.{key}"


@pytest.mark.parametrize("uid, key", [
    ({"attr": "mail", "format": "%d"}, "auth.ldap.uids.format"),
    ({"attr": "mail", "format": "%u%u"}, "auth.ldap.uids.format"),
    ({"attr": "mail", "format": "%u@%x"}, "auth.ldap.uids.format"),
    ({"format": "%u@example.org"}, "auth.ldap.uids.attr"),
    ({"attr": "mail", "format": "%u", "regex": ".*"}, "auth.ldap.uids.regex"),
    (5, "auth.ldap.uids"),
])
def test_a_bad_uids_entry_is_a_config_error_naming_its_key(uid, key):
    assert config_error(**BASE, uids=[uid]).key == key


def test_rootdn_and_password_go_together():
    assert config_error(**BASE, rootdn="cn=admin,dc=x").key == "auth.ldap.password"
    assert config_error(**BASE, password="secret").key == "auth.ldap.rootdn"


def test_cacertfile_must_exist_and_needs_tls(tmp_path):
    missing = str(tmp_path / "nope.pem")
    assert config_error(**BASE, tls=True, cacertfile=missing).key == "auth.ldap.cacertfile"
    present = tmp_path / "ca.pem"
    present.write_text("x")
    assert config_error(**BASE, cacertfile=str(present)).key == "auth.ldap.cacertfile"
    assert make(tls=True, cacertfile=str(present))._cacertfile == str(present)


def test_tls_defaults_to_port_636():
    assert make(tls=True)._port == 636
    assert make(tls=True, port=1636)._port == 1636


def test_repr_hides_the_rootdn_password():
    m = make(rootdn="cn=admin,dc=test,dc=example", password="s3cr3t-root")
    text = repr(m) + str(m)
    assert "s3cr3t-root" not in text
    assert "cn=admin,dc=test,dc=example" in text


def test_escaping_turns_filter_syntax_into_plain_octets():
    escaped = escape_filter_value("*)(uid=*")
    assert escaped == "\\2a\\29\\28uid\\3d\\2a"
    assert not set("*()") & set(escaped)
    assert escape_filter_value("a\\b\x00") == "a\\5cb\\00"
    assert escape_filter_value("zoë") == "zo\\c3\\ab"
    assert escape_filter_value("alice.b-c_d@x+y") == "alice.b-c_d@x+y"


def test_the_search_filter_ors_the_uids_and_ands_the_extra_filter():
    m = make(uids=["uid", {"attr": "mail", "format": "%u@%d"}], filter="(objectClass=inetOrgPerson)")
    assert m._filter_for("al*ce", "example.org") == (
        "(&(|(uid=al\\2ace)(mail=al\\2ace@example.org))(objectClass=inetOrgPerson))")
    assert make()._filter_for("alice", "x") == "(uid=alice)"


def test_literal_parts_of_a_uid_format_are_escaped_too():
    m = make(uids=[{"attr": "cn", "format": "(%u)*"}])
    assert m._filter_for("bob", "x") == "(cn=\\28bob\\29\\2a)"


async def test_an_empty_or_oversized_username_never_reaches_the_directory():
    # servers point nowhere: a query would raise AuthUnavailable
    m = make(servers=["127.0.0.1"], port=9, connect_timeout=0.5)
    assert await m.user_exists("", "x") is False
    assert await m.user_exists("a" * 1024, "x") is False
    assert await m.user_exists("a\x00b", "x") is False
    assert await m.user_exists("a\ud800", "x") is False
    assert await m.check_password("alice", "x", "") is False
    await m.stop()


async def test_requests_beyond_the_waiting_bound_fail_at_once_as_unavailable():
    from xmppd_auth.base import AuthUnavailable

    m = make(servers=["127.0.0.1"], port=9, pool_size=1)
    m._pending = m._max_pending  # as if that many logins were already waiting
    with pytest.raises(AuthUnavailable) as err:
        await m.user_exists("alice", "x")
    assert "waiting" in err.value.reason
    await m.stop()
