"""auth.registry: name resolution and MongooseIM-like chain semantics.

Chain tests use small fake methods (real AuthMethod subclasses with fixed
answers), plus real pki and sql methods where it matters.
"""

from __future__ import annotations

import datetime as dt

import pytest

from xmppd_auth import registry
from xmppd_auth.base import (SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM, AuthConfigError, AuthMethod,
                       AuthUnavailable, CertDecision, CertFacts, ScramCredentials)
from xmppd_auth.pki import PkiAuth
from xmppd_auth.registry import ALIASES, AuthChain, build_methods, method_class
from xmppd_auth.scram import MIN_ITERATIONS, derive
from xmppd_auth.sql import SqlAuth

DOMAIN = "example.org"
CERT = CertFacts(
    der=b"\x30\x00", fingerprint_sha256="cd" * 32, serial=7, subject="CN=alice", issuer="CN=CA",
    not_before=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
    not_after=dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc),
    xmpp_addrs=("alice@example.org",),
)


class Fake(AuthMethod):
    """Configurable answers; ``calls`` records which queries reached it."""

    families: tuple[str, ...] = (SASL_PASSWORD, SASL_SCRAM, SASL_EXTERNAL)

    def __init__(self, name: str, *, password: bool = False, scram: bool = False,
                 cert: CertDecision | None = None, exists: bool = False,
                 down: bool = False, families: tuple[str, ...] | None = None,
                 admin: bool = False, fail_start: bool = False) -> None:
        super().__init__()
        self.name = name  # instance attribute: several fakes in one chain
        self.password, self.scram, self.exists, self.down = password, scram, exists, down
        self.cert = cert or CertDecision.refuse(f"{name}-says-no")
        if families is not None:
            self.families = families
        self.can_register = admin
        self.fail_start = fail_start
        self.calls: list[str] = []
        self.registered: list[str] = []

    def _answer(self, what: str) -> None:
        self.calls.append(what)
        if self.down:
            raise AuthUnavailable(f"{self.name} backend down")

    def supports_sasl(self, family: str) -> bool:
        return family in self.families

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise AuthUnavailable("cannot start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def check_password(self, user, domain, password):
        self._answer("check_password")
        return self.password

    async def get_scram(self, user, domain, hash_name):
        self._answer("get_scram")
        return derive("pw", hash_name, b"salt", MIN_ITERATIONS) if self.scram else None

    async def authorize_cert(self, user, domain, cert):
        self._answer("authorize_cert")
        return self.cert

    async def user_exists(self, user, domain):
        self._answer("user_exists")
        return self.exists

    async def register(self, user, domain, password):
        self._answer("register")
        self.registered.append(user)
        return True

    async def set_password(self, user, domain, password):
        self._answer("set_password")
        return self.exists

    async def remove_user(self, user, domain):
        self._answer("remove_user")
        return self.exists


# -- names ------------------------------------------------------------------------

def test_method_class_resolves_pki_sql_and_the_rdbms_alias():
    assert method_class("pki") is PkiAuth
    assert method_class("sql") is SqlAuth
    assert ALIASES["rdbms"] == "sql" and method_class("rdbms") is SqlAuth


@pytest.mark.parametrize("name", ["internal", "PKI", "", "ldap2"])
def test_unknown_method_name_is_a_config_error_naming_auth_methods(name):
    with pytest.raises(AuthConfigError) as err:
        method_class(name)
    assert err.value.key == "auth.methods"
    assert repr(name) in err.value.message


def test_method_not_shipped_yet_is_a_config_error_not_an_import_error(monkeypatch):
    monkeypatch.setitem(registry.METHOD_PATHS, "ldap", "auth.no_such_module:LdapAuth")
    with pytest.raises(AuthConfigError) as err:
        method_class("ldap")
    assert err.value.key == "auth.methods" and "not available" in err.value.message


def test_a_class_declaring_another_name_is_refused(monkeypatch):
    monkeypatch.setitem(registry.METHOD_PATHS, "http", "xmppd_auth.pki:PkiAuth")
    with pytest.raises(AuthConfigError, match="declares name 'pki'"):
        method_class("http")


def test_build_methods_instantiates_in_order_and_passes_context(tmp_path):
    from xmppd.storage.engine import create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    methods = build_methods(["rdbms", "pki"], {"pki": {}}, {"db_engine": engine})
    assert [type(m) for m in methods] == [SqlAuth, PkiAuth]
    assert methods[0].context["db_engine"] is engine


def test_build_methods_rejects_empty_duplicates_and_bad_sections():
    with pytest.raises(AuthConfigError, match="at least one"):
        build_methods([], {}, {})
    with pytest.raises(AuthConfigError, match="listed twice"):
        build_methods(["pki", "pki"], {}, {})
    with pytest.raises(AuthConfigError, match="not a string"):
        build_methods("pki", {}, {})
    with pytest.raises(AuthConfigError) as err:
        build_methods(["pki"], {"pki": {"crl": "x"}}, {})
    assert err.value.key == "auth.pki.crl"
    with pytest.raises(AuthConfigError) as err:
        build_methods(["sql"], {}, {})  # no database
    assert err.value.key == "auth.sql"
    with pytest.raises(AuthConfigError, match="configured twice"):
        build_methods(["sql"], {"sql": {}, "rdbms": {}}, {"db_engine": object()})


# -- chain: answers ------------------------------------------------------------------

async def test_chain_first_successful_method_wins_and_later_ones_are_not_asked():
    a, b, c = Fake("a"), Fake("b", password=True), Fake("c", password=True)
    chain = AuthChain([a, b, c])
    assert chain.names == ("a", "b", "c")
    assert await chain.check_password("alice", DOMAIN, "pw") == "b"
    assert a.calls == ["check_password"] and c.calls == []


async def test_chain_returns_none_when_every_method_says_no():
    chain = AuthChain([Fake("a"), Fake("b")])
    assert await chain.check_password("alice", DOMAIN, "pw") is None
    assert await chain.get_scram("alice", DOMAIN, "sha256") is None
    assert not await chain.user_exists("alice", DOMAIN)


async def test_chain_skips_unavailable_method_when_a_later_one_succeeds():
    down, ok = Fake("down", down=True), Fake("ok", password=True, scram=True, exists=True,
                                              cert=CertDecision.accept())
    chain = AuthChain([down, ok])
    assert await chain.check_password("alice", DOMAIN, "pw") == "ok"
    creds, name = await chain.get_scram("alice", DOMAIN, "sha256")
    assert isinstance(creds, ScramCredentials) and name == "ok"
    assert await chain.authorize_cert("alice", DOMAIN, CERT) == (CertDecision.accept(), "ok")
    assert await chain.user_exists("alice", DOMAIN)


async def test_chain_unavailable_and_no_success_raises_auth_unavailable():
    chain = AuthChain([Fake("a"), Fake("down", down=True)])
    with pytest.raises(AuthUnavailable, match="down backend down"):
        await chain.check_password("alice", DOMAIN, "pw")
    with pytest.raises(AuthUnavailable):
        await chain.get_scram("alice", DOMAIN, "sha1")
    with pytest.raises(AuthUnavailable):
        await chain.authorize_cert("alice", DOMAIN, CERT)
    with pytest.raises(AuthUnavailable):
        await chain.user_exists("alice", DOMAIN)


async def test_chain_all_methods_unavailable_raises_auth_unavailable_naming_each():
    chain = AuthChain([Fake("x", down=True), Fake("y", down=True)])
    with pytest.raises(AuthUnavailable) as err:
        await chain.check_password("alice", DOMAIN, "pw")
    assert "x: x backend down" in err.value.reason and "y: y backend down" in err.value.reason


async def test_chain_asks_only_methods_supporting_the_sasl_family():
    ext_only = Fake("ext", password=True, scram=True, families=(SASL_EXTERNAL,))
    plain_only = Fake("plain", families=(SASL_PASSWORD,), cert=CertDecision.accept())
    chain = AuthChain([ext_only, plain_only])
    assert await chain.check_password("alice", DOMAIN, "pw") is None
    assert await chain.get_scram("alice", DOMAIN, "sha1") is None
    decision, name = await chain.authorize_cert("alice", DOMAIN, CERT)
    assert not decision.ok and name is None
    assert ext_only.calls == ["authorize_cert"]
    assert plain_only.calls == ["check_password"]
    assert chain.supports(SASL_PASSWORD) and chain.supports(SASL_EXTERNAL)
    assert not chain.supports(SASL_SCRAM)


async def test_chain_authorize_cert_reports_the_first_refusal_reason():
    chain = AuthChain([Fake("a", cert=CertDecision.refuse("no-account")),
                       Fake("b", cert=CertDecision.refuse("cert-not-registered"))])
    assert await chain.authorize_cert("alice", DOMAIN, CERT) == (CertDecision.refuse("no-account"), None)


async def test_chain_without_external_method_refuses_certificates():
    decision, name = await AuthChain([Fake("p", families=(SASL_PASSWORD,))]).authorize_cert(
        "alice", DOMAIN, CERT)
    assert not decision.ok and decision.reason and name is None


# -- chain: restriction, lifecycle --------------------------------------------------------

async def test_restricted_keeps_chain_order_and_only_allowed_methods():
    a, b, c = Fake("a", password=True), Fake("b", password=True), Fake("c", password=True)
    chain = AuthChain([a, b, c])
    sub = chain.restricted(["c", "b"])
    assert sub.names == ("b", "c")
    assert await sub.check_password("alice", DOMAIN, "pw") == "b"
    assert a.calls == []
    assert chain.restricted(None) is chain and chain.restricted([]) is chain


def test_restricted_accepts_aliases_and_rejects_methods_not_in_the_chain(tmp_path):
    from xmppd.storage.engine import create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    chain = AuthChain(build_methods(["pki", "sql"], {}, {"db_engine": engine}))
    assert chain.restricted(["rdbms"]).names == ("sql",)
    with pytest.raises(AuthConfigError) as err:
        chain.restricted(["ldap"])
    assert err.value.key == "allowed_auth_methods" and "'ldap'" in err.value.message


async def test_chain_start_failure_stops_already_started_methods_in_reverse():
    a, b, c = Fake("a"), Fake("b"), Fake("c", fail_start=True)
    with pytest.raises(AuthUnavailable):
        await AuthChain([a, b, c]).start()
    assert a.calls == ["start", "stop"] and b.calls == ["start", "stop"] and c.calls == ["start"]


async def test_chain_stop_stops_every_method():
    a, b = Fake("a"), Fake("b")
    chain = AuthChain([a, b])
    await chain.start()
    await chain.stop()
    assert a.calls == b.calls == ["start", "stop"]


# -- chain: administration ------------------------------------------------------------------

async def test_chain_register_uses_the_first_method_that_can_register():
    pki, first, second = Fake("pki"), Fake("s1", admin=True), Fake("s2", admin=True)
    chain = AuthChain([pki, first, second])
    assert chain.can_register
    assert await chain.register("alice", DOMAIN, "pw") is True
    assert first.registered == ["alice"] and second.registered == []


async def test_chain_register_refuses_a_name_known_to_another_method():
    ldap, sql = Fake("ldap", exists=True), Fake("sql", admin=True)
    assert await AuthChain([ldap, sql]).register("alice", DOMAIN, "pw") is False
    assert sql.registered == []


async def test_chain_register_without_a_registering_method_is_a_clear_error():
    chain = AuthChain([PkiAuth()])
    assert not chain.can_register
    with pytest.raises(AuthConfigError, match="can register") as err:
        await chain.register("alice", DOMAIN, "pw")
    assert err.value.key == "auth.methods"


async def test_chain_set_password_and_remove_user_reach_every_admin_method():
    has, lacks = Fake("has", admin=True, exists=True), Fake("lacks", admin=True)
    chain = AuthChain([Fake("ro"), lacks, has])
    assert await chain.set_password("alice", DOMAIN, "new") is True
    assert await chain.remove_user("alice", DOMAIN) is True
    assert lacks.calls == has.calls == ["set_password", "remove_user"]
    assert await AuthChain([lacks]).remove_user("alice", DOMAIN) is False


async def test_chain_admin_with_an_unavailable_method_raises_after_trying_all():
    down, ok = Fake("down", admin=True, down=True), Fake("ok", admin=True, exists=True)
    with pytest.raises(AuthUnavailable):
        await AuthChain([down, ok]).remove_user("alice", DOMAIN)
    assert ok.calls == ["remove_user"]


# -- real methods together ----------------------------------------------------------------------

async def test_chain_of_sql_and_pki_on_a_real_database(db_engine):
    methods = build_methods(["sql", "pki"], {}, {"db_engine": db_engine,
                                                 "scram_iterations": MIN_ITERATIONS})
    chain = AuthChain(methods)
    await chain.start()
    try:
        assert await chain.register("alice", DOMAIN, "pw")
        assert await chain.check_password("alice", DOMAIN, "pw") == "sql"
        assert (await chain.get_scram("alice", DOMAIN, "sha256"))[1] == "sql"
        assert await chain.authorize_cert("alice", DOMAIN, CERT) == (CertDecision.accept(), "sql")
        # unknown to sql: pki (the cert is enough) accepts
        assert await chain.authorize_cert("bob", DOMAIN, CERT) == (CertDecision.accept(), "pki")
        assert not await chain.user_exists("bob", DOMAIN)
        # a listener restricted to sql refuses bob with sql's reason
        assert await chain.restricted(["sql"]).authorize_cert("bob", DOMAIN, CERT) == (
            CertDecision.refuse("no-account"), None)
    finally:
        await chain.stop()
