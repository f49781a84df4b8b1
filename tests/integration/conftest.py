from __future__ import annotations

import pytest

from tests.support.pki import PKIFactory

from .harness import Client, start_server


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKIFactory(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def make_server(tmp_path, pki):
    servers = []

    async def make(overrides=None, **kw):
        d = tmp_path / f"s{len(servers)}"
        d.mkdir()
        server = await start_server(d, pki, overrides, **kw)
        servers.append(server)
        return server

    yield make
    for s in servers:
        await s.stop()


@pytest.fixture
async def server(make_server):
    return await make_server()


@pytest.fixture
async def clients(pki):
    made: list[Client] = []

    def make(jid, password=None, **kw):
        kw.setdefault("ca", pki.ca_path)
        c = Client(jid, password, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()
