"""auth.sql against real SQLite and PostgreSQL (fixture ``db_engine``)."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from sqlalchemy import select, update

from xmppd_auth import scram
from xmppd_auth.base import (SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM, AuthConfigError,
                       AuthUnavailable, CertFacts)
from xmppd_auth.sql import SqlAuth, users_table
from tests.pg import unreachable_pg_url
from xmppd.storage.engine import create_engine

ITER = scram.MIN_ITERATIONS
DOMAIN = "example.org"


def make_cert(addr: str = "alice@example.org") -> CertFacts:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    return CertFacts(
        der=b"\x30\x03\x02\x01\x01", fingerprint_sha256="ab" * 32, serial=0x1234,
        subject="CN=alice", issuer="CN=xmppd test CA",
        not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=365),
        xmpp_addrs=(addr,), common_name="alice", ekus=("1.3.6.1.5.5.7.3.2",),
    )


@pytest.fixture
async def sql(db_engine):
    method = SqlAuth({}, {"db_engine": db_engine, "password_hashes": ("sha1", "sha256", "sha512"),
                          "scram_iterations": ITER})
    await method.start()
    try:
        yield method
    finally:
        await method.stop()


async def _row(engine, user, domain=DOMAIN):
    async with engine.connect() as conn:
        return (await conn.execute(select(users_table).where(
            users_table.c.username == user, users_table.c.server == domain))).first()


async def _set_details(engine, user, value, domain=DOMAIN):
    async with engine.begin() as conn:
        await conn.execute(update(users_table).where(
            users_table.c.username == user, users_table.c.server == domain).values(pass_details=value))


# -- configuration -----------------------------------------------------------

def test_sql_without_db_engine_is_a_config_error_naming_auth_sql():
    with pytest.raises(AuthConfigError) as err:
        SqlAuth({}, {})
    assert err.value.key == "auth.sql"


def test_sql_rejects_unknown_hash_and_weak_iteration_count(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(AuthConfigError, match="md5"):
        SqlAuth({}, {"db_engine": engine, "password_hashes": ("md5",)})
    with pytest.raises(AuthConfigError, match="scram_iterations"):
        SqlAuth({}, {"db_engine": engine, "scram_iterations": 100})
    with pytest.raises(AuthConfigError) as err:
        SqlAuth({"bogus": 1}, {"db_engine": engine})
    assert err.value.key == "auth.sql.bogus"


def test_sql_serves_plain_scram_and_external(tmp_path):
    m = SqlAuth({}, {"db_engine": create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")})
    assert all(m.supports_sasl(f) for f in (SASL_PASSWORD, SASL_SCRAM, SASL_EXTERNAL))
    assert m.can_register


# -- behaviour on both backends ---------------------------------------------------

async def test_register_stores_no_plaintext(sql, db_engine):
    password = "correct horse battery staple"
    assert await sql.register("alice", DOMAIN, password)
    row = await _row(db_engine, "alice")
    assert row.password is None
    assert password not in row.pass_details
    creds = scram.deserialize(row.pass_details)
    assert set(creds) == {"sha1", "sha256", "sha512"}
    assert all(c.iterations == ITER for c in creds.values())
    assert row.created_at is not None


async def test_check_password_accepts_right_and_rejects_wrong_password(sql):
    await sql.register("alice", DOMAIN, "s3cret")
    assert await sql.check_password("alice", DOMAIN, "s3cret") is True
    assert await sql.check_password("alice", DOMAIN, "S3cret") is False
    assert await sql.check_password("alice", DOMAIN, "") is False
    assert await sql.check_password("bob", DOMAIN, "s3cret") is False
    assert await sql.check_password("alice", "other.example", "s3cret") is False


async def test_check_password_uses_the_strongest_stored_hash(sql, db_engine):
    await sql.register("alice", DOMAIN, "s3cret")
    creds = scram.deserialize((await _row(db_engine, "alice")).pass_details)
    # sha1 keys of another password: ignored, sha512 decides
    creds["sha1"] = scram.derive("other", "sha1", creds["sha1"].salt, ITER)
    await _set_details(db_engine, "alice", scram.serialize(creds))
    assert await sql.check_password("alice", DOMAIN, "s3cret") is True
    assert await sql.check_password("alice", DOMAIN, "other") is False


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
async def test_get_scram_returns_stored_keys_for_each_hash(sql, hash_name):
    await sql.register("alice", DOMAIN, "s3cret")
    creds = await sql.get_scram("alice", DOMAIN, hash_name)
    assert creds is not None and creds.hash_name == hash_name and creds.iterations == ITER
    assert scram.verify_password("s3cret", creds)
    expected = scram.derive("s3cret", hash_name, creds.salt, creds.iterations)
    assert (creds.stored_key, creds.server_key) == (expected.stored_key, expected.server_key)


async def test_get_scram_is_none_for_unknown_user_unknown_hash_or_hash_not_stored(db_engine):
    only256 = SqlAuth({}, {"db_engine": db_engine, "password_hashes": ("sha256",),
                           "scram_iterations": ITER})
    await only256.start()
    await only256.register("alice", DOMAIN, "pw")
    assert await only256.get_scram("alice", DOMAIN, "sha256") is not None
    assert await only256.get_scram("alice", DOMAIN, "sha1") is None
    assert await only256.get_scram("alice", DOMAIN, "md5") is None
    assert await only256.get_scram("nobody", DOMAIN, "sha256") is None


async def test_register_twice_returns_false_and_keeps_first_password(sql):
    assert await sql.register("alice", DOMAIN, "first") is True
    assert await sql.register("alice", DOMAIN, "second") is False
    assert await sql.check_password("alice", DOMAIN, "first")
    assert not await sql.check_password("alice", DOMAIN, "second")


async def test_same_username_on_two_domains_are_two_accounts(sql):
    assert await sql.register("alice", DOMAIN, "one")
    assert await sql.register("alice", "other.example", "two")
    assert await sql.check_password("alice", "other.example", "two")
    assert not await sql.check_password("alice", DOMAIN, "two")


async def test_set_password_then_old_password_fails(sql, db_engine):
    await sql.register("alice", DOMAIN, "old")
    salt_before = scram.deserialize((await _row(db_engine, "alice")).pass_details)["sha256"].salt
    assert await sql.set_password("alice", DOMAIN, "new") is True
    assert not await sql.check_password("alice", DOMAIN, "old")
    assert await sql.check_password("alice", DOMAIN, "new")
    row = await _row(db_engine, "alice")
    assert row.password is None and "new" not in row.pass_details.split(",")[2:]
    assert scram.deserialize(row.pass_details)["sha256"].salt != salt_before
    assert await sql.set_password("nobody", DOMAIN, "x") is False


async def test_remove_user_deletes_the_account(sql):
    await sql.register("alice", DOMAIN, "pw")
    assert await sql.user_exists("alice", DOMAIN)
    assert await sql.remove_user("alice", DOMAIN) is True
    assert not await sql.user_exists("alice", DOMAIN)
    assert not await sql.check_password("alice", DOMAIN, "pw")
    assert await sql.remove_user("alice", DOMAIN) is False


async def test_authorize_cert_accepts_existing_account_and_refuses_unknown_with_no_account(sql):
    await sql.register("alice", DOMAIN, "pw")
    assert (await sql.authorize_cert("alice", DOMAIN, make_cert())).ok
    decision = await sql.authorize_cert("mallory", DOMAIN, make_cert("mallory@example.org"))
    assert not decision.ok and decision.reason == "no-account"


@pytest.mark.parametrize("details", [
    "",
    "plaintext-password",
    "==MULTI_SCRAM==,i=4096",
    "==MULTI_SCRAM==,i=abc,===SHA256===AAAA|AAAA|AAAA",
    "==MULTI_SCRAM==,i=4096,===SHA256===not base64!|x|y",
    "==MULTI_SCRAM==,i=4096,===SHA256===AAAA|AAAA|AAAA",  # keys of the wrong length
    "==MULTI_SCRAM==,i=999999999,===SHA1===" + "QUFBQQ==|" + "A" * 27 + "=|" + "A" * 27 + "=",
])
async def test_malformed_pass_details_is_never_accepted(sql, db_engine, details, caplog):
    await sql.register("alice", DOMAIN, "pw")
    await _set_details(db_engine, "alice", details)
    with caplog.at_level(logging.WARNING, logger="auth.sql"):
        assert await sql.check_password("alice", DOMAIN, "pw") is False
        assert await sql.check_password("alice", DOMAIN, "") is False
        for h in scram.HASHES:
            assert await sql.get_scram("alice", DOMAIN, h) is None
    assert any("alice@example.org" in r.getMessage() for r in caplog.records)
    assert await sql.user_exists("alice", DOMAIN)  # the account itself still exists


async def test_names_that_cannot_be_stored_are_unknown_not_errors(sql):
    long = "a" * 1024
    assert not await sql.user_exists(long, DOMAIN)
    assert not await sql.user_exists("nul\x00", DOMAIN)
    assert not await sql.check_password(long, DOMAIN, "pw")
    assert await sql.get_scram("a", "d\x00", "sha1") is None
    with pytest.raises(ValueError):
        await sql.register(long, DOMAIN, "pw")


async def test_start_is_idempotent_and_keeps_accounts(sql, db_engine):
    await sql.register("alice", DOMAIN, "pw")
    again = SqlAuth({}, {"db_engine": db_engine, "scram_iterations": ITER})
    await again.start()
    assert await again.check_password("alice", DOMAIN, "pw")


# -- unavailable database -------------------------------------------------------------

async def test_unreachable_postgresql_raises_auth_unavailable():
    engine = create_engine(unreachable_pg_url(), connect_timeout_s=2.0)
    try:
        method = SqlAuth({}, {"db_engine": engine, "scram_iterations": ITER})
        with pytest.raises(AuthUnavailable) as err:
            await method.start()
        assert "sql: database unavailable" in err.value.reason
        for call in (method.check_password("alice", DOMAIN, "pw"),
                     method.get_scram("alice", DOMAIN, "sha256"),
                     method.user_exists("alice", DOMAIN),
                     method.authorize_cert("alice", DOMAIN, make_cert()),
                     method.register("alice", DOMAIN, "pw"),
                     method.set_password("alice", DOMAIN, "pw"),
                     method.remove_user("alice", DOMAIN)):
            with pytest.raises(AuthUnavailable):
                await call
    finally:
        await engine.dispose()


async def test_missing_table_is_unavailable_not_a_crash(db_engine):
    method = SqlAuth({}, {"db_engine": db_engine, "scram_iterations": ITER})  # start() not called
    with pytest.raises(AuthUnavailable):
        await method.check_password("alice", DOMAIN, "pw")


@pytest.mark.postgres
async def test_postgresql_statement_timeout_raises_auth_unavailable(pg_schema):
    from sqlalchemy import text

    from tests.pg import pg_engine

    locker, slow = pg_engine(pg_schema), pg_engine(pg_schema, command_timeout_s=0.5)
    try:
        method = SqlAuth({}, {"db_engine": slow, "scram_iterations": ITER})
        await method.start()
        async with locker.begin() as conn:  # hold a lock the lookup must wait for
            await conn.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(AuthUnavailable, match="TimeoutError"):
                await method.check_password("alice", DOMAIN, "pw")
            await conn.execute(text("DROP TABLE users"))
    finally:
        await slow.dispose()
        await locker.dispose()
