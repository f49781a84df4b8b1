"""xmppd.storage.engine: backend-specific settings on real databases."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.pg import pg_engine, unreachable_pg_url
from xmppd.storage.engine import SQLITE_BUSY_TIMEOUT_MS, create_engine


async def test_sqlite_engine_creates_parent_directory_and_uses_wal_foreign_keys_busy_timeout(tmp_path):
    path = tmp_path / "deep" / "er" / "xmppd.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as conn:
            assert (await conn.scalar(text("PRAGMA journal_mode"))).lower() == "wal"
            assert await conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(text("PRAGMA busy_timeout")) == SQLITE_BUSY_TIMEOUT_MS
        assert path.exists()
    finally:
        await engine.dispose()


async def test_sqlite_in_memory_engine_works():
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("url", ["sqlite:///x.db", "postgresql+psycopg2://h/db", "mysql+aiomysql://h/db"])
def test_engine_refuses_unsupported_urls(url):
    with pytest.raises(ValueError):
        create_engine(url)


@pytest.mark.postgres
async def test_postgresql_engine_applies_pool_size_and_search_path(pg_schema):
    engine = pg_engine(pg_schema)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW search_path")) == pg_schema
        assert engine.pool.size() == 4
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgresql_command_timeout_interrupts_a_slow_statement(pg_schema):
    engine = pg_engine(pg_schema, command_timeout_s=0.5)
    try:
        with pytest.raises(TimeoutError):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(5)"))
    finally:
        await engine.dispose()


async def test_unreachable_postgresql_fails_fast():
    engine = create_engine(unreachable_pg_url(), connect_timeout_s=2.0)
    try:
        with pytest.raises(OSError):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
