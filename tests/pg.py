"""PostgreSQL for tests: a real server, a throw-away schema per test session.

* URL from ``XMPPD_TEST_PG_URL`` (default
  ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``).
* :func:`pg_schema` (session fixture) creates ``xmppd_t_<random>`` and drops it
  at the end, so parallel runs (several checkouts, xdist workers) never see
  each other's tables.  Engines point at it with asyncpg
  ``server_settings={"search_path": schema}``.
* PostgreSQL unreachable: the tests are skipped with the reason, unless
  ``CI=true``, where that is a failure (CI must not go green by skipping).
* :func:`db_engine` (function fixture, params ``sqlite`` / ``postgresql``)
  yields an ``AsyncEngine`` built with ``xmppd.storage.engine.create_engine``;
  each PostgreSQL test starts with an empty schema.

Use from a ``conftest.py``: ``from tests.pg import db_engine, pg_schema  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from typing import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from xmppd.storage.engine import create_engine

__all__ = ["PG_URL_ENV", "DEFAULT_PG_URL", "pg_url", "pg_schema", "pg_engine", "db_engine",
           "unreachable_pg_url", "skip_or_fail"]

PG_URL_ENV = "XMPPD_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
#: tests must not hang on a dead server
_PG_CONNECT_TIMEOUT_S = 5.0


def pg_url() -> str:
    return os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL


def unreachable_pg_url() -> str:
    """The test URL pointed at a port nothing listens on (connection refused)."""
    return make_url(pg_url()).set(port=1).render_as_string(hide_password=False)


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _run_sync(make_coro) -> None:
    """Run a coroutine to completion on a private loop in a worker thread.

    Session fixtures may be set up from inside a running test loop (through
    ``request.getfixturevalue``), where ``asyncio.run`` is not allowed.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(make_coro())).result()


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=_PG_CONNECT_TIMEOUT_S)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A fresh schema for this test session; dropped afterwards."""
    url = pg_url()
    schema = f"xmppd_t_{secrets.token_hex(6)}"
    try:
        _run_sync(lambda: _admin(url, f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # refused, timeout, auth, missing database...
        shown = make_url(url).render_as_string(hide_password=True)
        skip_or_fail(f"PostgreSQL unreachable at {shown}: {type(exc).__name__}: {exc}")
    try:
        yield schema
    finally:
        _run_sync(lambda: _admin(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def pg_engine(schema: str, url: str | None = None, **kwargs) -> AsyncEngine:
    """An engine whose connections use ``schema`` as search_path."""
    connect_args = dict(kwargs.pop("connect_args", None) or {})
    connect_args.setdefault("server_settings", {"search_path": schema})
    return create_engine(url or pg_url(), pool_size=kwargs.pop("pool_size", 4),
                         connect_args=connect_args, **kwargs)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_engine(request, tmp_path) -> AsyncIterator[AsyncEngine]:
    """Same test on SQLite (file in tmp_path) and PostgreSQL (empty session schema)."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db' / 'xmppd.sqlite'}")
        try:
            yield engine
        finally:
            await engine.dispose()
        return

    schema = request.getfixturevalue("pg_schema")
    engine = pg_engine(schema)
    try:
        yield engine
    finally:
        try:
            async with engine.begin() as conn:  # leave the schema empty for the next test
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        finally:
            await engine.dispose()
