"""xmppd.storage.certs (client-certificate registry) on SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import datetime as dt

import pytest

from xmppd.pki import create_ca, issue_client_cert
from xmppd.storage import create_schema
from xmppd.storage.certs import (
    ACTIVE,
    DISABLED,
    REVOKED,
    CertRegistry,
    DuplicateCert,
    add_facts,
)
from xmppd.tls.identity import cert_facts

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca():
    return create_ca("registry test CA")


@pytest.fixture(scope="module")
def certs(ca):
    """Three certificates for alice@example.org, one for bob, with different lifetimes."""
    out = {}
    for key, jid, days in (("a1", "alice@example.org", 365), ("a2", "alice@example.org", 10),
                           ("a3", "alice@example.org", 60), ("b1", "bob@example.org", 5)):
        out[key] = cert_facts(issue_client_cert(ca, xmpp_addrs=[jid], days=days).cert)
    return out


@pytest.fixture
async def registry(db_engine):
    await create_schema(db_engine)
    return CertRegistry(db_engine)


async def test_add_then_get_and_list_return_the_registered_certificate(registry, certs):
    f = certs["a1"]
    row = await add_facts(registry, "alice", "example.org", f, name="phone", when=T0)
    assert row.state == ACTIVE and row.name == "phone" and row.jid == "alice@example.org"
    assert row.serial_hex == f.serial_hex and row.issuer == f.issuer and row.not_after == f.not_after
    assert row.added_at == T0 and row.last_used is None and row.cert_management
    got = await registry.get("alice", "example.org", f.fingerprint_sha256, with_der=True)
    assert got.der == f.der
    assert [r.fingerprint_sha256 for r in await registry.list("alice", "example.org")] == [f.fingerprint_sha256]
    assert await registry.list("bob", "example.org") == []


async def test_the_same_username_on_another_domain_is_another_account(registry, certs):
    await add_facts(registry, "alice", "example.org", certs["a1"], name="phone")
    assert await registry.list("alice", "other.example") == []
    assert await registry.get("alice", "other.example", certs["a1"].fingerprint_sha256) is None
    assert not await registry.set_state("alice", "other.example", certs["a1"].fingerprint_sha256, REVOKED)
    assert (await registry.get("alice", "example.org", certs["a1"].fingerprint_sha256)).state == ACTIVE


async def test_an_active_name_or_certificate_cannot_be_added_twice(registry, certs):
    await add_facts(registry, "alice", "example.org", certs["a1"], name="phone")
    with pytest.raises(DuplicateCert) as e:
        await add_facts(registry, "alice", "example.org", certs["a2"], name="phone")
    assert e.value.what == "name"
    with pytest.raises(DuplicateCert) as e:
        await add_facts(registry, "alice", "example.org", certs["a1"], name="laptop")
    assert e.value.what == "certificate"


async def test_a_disabled_certificate_is_re_enabled_by_appending_it_again(registry, certs):
    fp = certs["a1"].fingerprint_sha256
    await add_facts(registry, "alice", "example.org", certs["a1"], name="phone")
    assert await registry.set_state("alice", "example.org", fp, DISABLED)
    # its name is free while disabled
    await add_facts(registry, "alice", "example.org", certs["a2"], name="phone")
    row = await add_facts(registry, "alice", "example.org", certs["a1"], name="old phone")
    assert row.state == ACTIVE and row.name == "old phone"


async def test_revocation_is_final(registry, certs):
    fp = certs["a1"].fingerprint_sha256
    await add_facts(registry, "alice", "example.org", certs["a1"], name="phone")
    assert await registry.set_state("alice", "example.org", fp, REVOKED, when=T0)
    assert not await registry.set_state("alice", "example.org", fp, ACTIVE)
    with pytest.raises(DuplicateCert) as e:
        await add_facts(registry, "alice", "example.org", certs["a1"], name="phone again")
    assert e.value.what == "revoked"
    row = await registry.get("alice", "example.org", fp)
    assert row.state == REVOKED and row.state_changed_at == T0


async def test_touch_used_records_the_last_login(registry, certs):
    fp = certs["a1"].fingerprint_sha256
    await add_facts(registry, "alice", "example.org", certs["a1"], name="phone")
    await registry.touch_used("alice", "example.org", fp, T0)
    assert (await registry.get("alice", "example.org", fp)).last_used == T0
    with pytest.raises(ValueError, match="naive"):
        await registry.touch_used("alice", "example.org", fp, dt.datetime(2030, 1, 1))


async def test_by_fingerprint_finds_every_account_registration(registry, ca):
    both = cert_facts(issue_client_cert(ca, xmpp_addrs=["alice@example.org", "bot@example.org"]).cert)
    await add_facts(registry, "alice", "example.org", both, name="shared")
    await add_facts(registry, "bot", "example.org", both, name="shared")
    rows = await registry.by_fingerprint(both.fingerprint_sha256.upper())
    assert sorted(r.user for r in rows) == ["alice", "bot"]


async def test_expiring_lists_active_certificates_ending_within_the_window(registry, certs):
    for key, name in (("a1", "year"), ("a2", "ten days"), ("a3", "two months"), ("b1", "bob")):
        user = "bob" if key == "b1" else "alice"
        await add_facts(registry, user, "example.org", certs[key], name=name)
    await registry.set_state("alice", "example.org", certs["a3"].fingerprint_sha256, DISABLED)
    soon = await registry.expiring(dt.timedelta(days=30))
    assert sorted(r.name for r in soon) == ["bob", "ten days"]
    assert [r.name for r in await registry.expiring(dt.timedelta(days=30), user="alice",
                                                     domain="example.org")] == ["ten days"]
    assert sorted(r.name for r in await registry.expiring(dt.timedelta(days=400))) == ["bob", "ten days", "year"]


async def test_revoked_serials_lists_one_issuers_revoked_serials_for_the_crl(registry, certs, ca):
    other = cert_facts(issue_client_cert(create_ca("another CA"), xmpp_addrs=["alice@example.org"]).cert)
    await add_facts(registry, "alice", "example.org", certs["a1"], name="one")
    await add_facts(registry, "alice", "example.org", certs["a2"], name="two")
    await add_facts(registry, "alice", "example.org", other, name="foreign")
    for f in (certs["a2"], other):
        await registry.set_state("alice", "example.org", f.fingerprint_sha256, REVOKED, when=T0)
    assert await registry.revoked_serials(certs["a1"].issuer) == [(certs["a2"].serial, T0)]


async def test_policy_override_is_stored_per_account_and_removable(registry):
    assert await registry.get_policy("alice", "example.org") is None
    await registry.set_policy("alice", "example.org", "always")
    await registry.set_policy("alice", "example.org", "never")
    assert await registry.get_policy("alice", "example.org") == "never"
    assert await registry.get_policy("alice", "other.example") is None
    await registry.set_policy("alice", "example.org", None)
    assert await registry.get_policy("alice", "example.org") is None
    with pytest.raises(ValueError):
        await registry.set_policy("alice", "example.org", "sometimes")


async def test_login_view_returns_policy_and_states_in_one_call(registry, certs):
    await add_facts(registry, "alice", "example.org", certs["a1"], name="one")
    await add_facts(registry, "alice", "example.org", certs["a2"], name="two")
    await registry.set_state("alice", "example.org", certs["a2"].fingerprint_sha256, DISABLED)
    await registry.set_policy("alice", "example.org", "always")
    policy, states = await registry.login_view("alice", "example.org")
    assert policy == "always"
    assert states == {certs["a1"].fingerprint_sha256: ACTIVE, certs["a2"].fingerprint_sha256: DISABLED}


async def test_bad_inputs_are_refused_before_the_database(registry, certs):
    with pytest.raises(ValueError):
        await add_facts(registry, "alice", "example.org", certs["a1"], name="   ")
    with pytest.raises(ValueError):
        await add_facts(registry, "a" * 1024, "example.org", certs["a1"], name="x")
    with pytest.raises(ValueError):
        await registry.set_state("alice", "example.org", "00" * 32, "lost")
    assert await registry.get("a\x00", "example.org", "00" * 32) is None



async def test_login_view_is_cached_and_every_write_in_this_process_invalidates_it(registry, certs, db_engine):
    from sqlalchemy import text

    f = certs["a1"]
    assert await registry.login_view("alice", "example.org") == (None, {})
    other = CertRegistry(db_engine)  # another repository on the same engine (tests, modules)
    await add_facts(other, "alice", "example.org", f, name="phone")
    assert await registry.login_view("alice", "example.org") == (None, {f.fingerprint_sha256: ACTIVE})
    await other.set_state("alice", "example.org", f.fingerprint_sha256, DISABLED)
    assert (await registry.login_view("alice", "example.org"))[1] == {f.fingerprint_sha256: DISABLED}
    await other.set_policy("alice", "example.org", "always")
    assert (await registry.login_view("alice", "example.org"))[0] == "always"
    # a cached view: a write that bypasses the registry is not seen (until the TTL or a stamp)
    async with db_engine.begin() as conn:
        await conn.execute(text("DELETE FROM cert_policy"))
    assert (await registry.login_view("alice", "example.org"))[0] == "always"
    await other.remove("alice", "example.org", f.fingerprint_sha256)
    assert await registry.login_view("alice", "example.org") == (None, {})


async def test_login_view_sees_a_change_by_another_process_at_once_on_sqlite(registry, certs, db_engine):
    from xmppd.storage.engine import create_engine

    if db_engine.dialect.name != "sqlite":
        pytest.skip("the stamp file exists for SQLite file databases; elsewhere LOGIN_VIEW_TTL_S applies")
    f = certs["a2"]
    await add_facts(registry, "alice", "example.org", f, name="laptop")
    assert (await registry.login_view("alice", "example.org"))[1] == {f.fingerprint_sha256: ACTIVE}
    elsewhere = create_engine(db_engine.url.render_as_string(hide_password=False))  # like the CLI
    try:
        await CertRegistry(elsewhere).set_state("alice", "example.org", f.fingerprint_sha256, REVOKED)
    finally:
        await elsewhere.dispose()
    assert (await registry.login_view("alice", "example.org"))[1] == {f.fingerprint_sha256: REVOKED}


async def test_a_cached_login_view_expires_after_the_ttl(registry, certs, db_engine, monkeypatch):
    from sqlalchemy import text

    from xmppd.storage import certs as certs_module

    await registry.set_policy("alice", "example.org", "never")
    assert (await registry.login_view("alice", "example.org"))[0] == "never"
    async with db_engine.begin() as conn:  # behind the cache's back, no stamp
        await conn.execute(text("UPDATE cert_policy SET policy = 'always'"))
    assert (await registry.login_view("alice", "example.org"))[0] == "never"
    monkeypatch.setattr(certs_module, "LOGIN_VIEW_TTL_S", 0.0)
    certs_module._views_for(db_engine).views.clear()  # start over with a zero TTL
    assert (await registry.login_view("alice", "example.org"))[0] == "always"
    async with db_engine.begin() as conn:
        await conn.execute(text("UPDATE cert_policy SET policy = 'ifpresent' WHERE username = 'alice'"))
    assert (await registry.login_view("alice", "example.org"))[0] == "ifpresent"


async def test_note_used_is_written_by_flush_used_in_one_batch(registry, certs):
    a1, a3 = certs["a1"], certs["a3"]
    await add_facts(registry, "alice", "example.org", a1, name="phone")
    await add_facts(registry, "alice", "example.org", a3, name="tablet")
    registry.note_used("alice", "example.org", a1.fingerprint_sha256, T0)
    registry.note_used("alice", "example.org", a3.fingerprint_sha256, T0)
    registry.note_used("alice", "example.org", a1.fingerprint_sha256, T0 + dt.timedelta(seconds=1))
    assert (await registry.get("alice", "example.org", a1.fingerprint_sha256)).last_used is None
    assert await registry.flush_used() == 2
    assert (await registry.get("alice", "example.org", a1.fingerprint_sha256)).last_used == \
        T0 + dt.timedelta(seconds=1)
    assert (await registry.get("alice", "example.org", a3.fingerprint_sha256)).last_used == T0
    registry.start_flusher(0.05)
    registry.note_used("alice", "example.org", a3.fingerprint_sha256, T0 + dt.timedelta(days=1))
    await registry.stop_flusher()
    assert (await registry.get("alice", "example.org", a3.fingerprint_sha256)).last_used == \
        T0 + dt.timedelta(days=1)


async def test_the_index_answers_accounts_without_registry_rows_and_follows_writes(registry, certs, db_engine,
                                                                                    monkeypatch):
    from xmppd.storage import certs as certs_module

    await registry.set_policy("carol", "example.org", "always")
    assert await registry.login_view("nobody", "example.org") == (None, {})
    views = certs_module._views_for(db_engine)
    assert views.index == {("example.org", "carol")}
    assert (await registry.login_view("carol", "example.org"))[0] == "always"
    await add_facts(CertRegistry(db_engine), "alice", "example.org", certs["a1"], name="phone")
    assert ("example.org", "alice") in views.index
    assert (await registry.login_view("alice", "example.org"))[1] == {certs["a1"].fingerprint_sha256: ACTIVE}
    # a registry bigger than the limit is not indexed: every miss asks the database
    monkeypatch.setattr(certs_module, "REGISTRY_INDEX_MAX", 1)
    views.index = None
    views.views.clear()
    assert (await registry.login_view("alice", "example.org"))[1] == {certs["a1"].fingerprint_sha256: ACTIVE}
    assert views.index is None and views.index_retry_at > 0
