"""pytest plugin: a real, throw-away xmppd for your tests.

Registered as the ``pytest11`` entry point ``xmppd``, so installing xmppd in
the test environment is enough (or ``-p xmppd.pytest_plugin`` /
``pytest_plugins = ["xmppd.pytest_plugin"]``).

Fixtures
--------
``xmppd_server``          function scope: a fresh server per test.
``xmppd_server_session``  session scope: one server shared by the session's tests.

Both hand out a :class:`~xmppd.ephemeral.BackgroundEphemeralServer`:
``.domain``, ``.host``, ``.port_starttls``, ``.port_tls``, ``.ca_path`` and
``.accounts`` (``jid``, ``password``, ``cert``, ``key``, ``p12``,
``p12_password``), plus ``.add_account(user)`` and ``.info`` (the JSON
document of ``xmppd run --ephemeral``).  The server runs in-process on its own
event loop in a background thread on 127.0.0.1 free ports, so it works with
sync tests and with any async test framework or loop scope.

``@pytest.mark.xmppd(accounts=5, domain="example.test", config={...})`` sets
the function fixture's arguments; the ``xmppd_accounts`` ini option sets the
default number of accounts (2).

Example::

    def test_login(xmppd_server):
        alice = xmppd_server.accounts[0]
        client = slixmpp.ClientXMPP(alice.jid, alice.password)
        client.ca_certs = xmppd_server.ca_path
        client.connect(xmppd_server.host, xmppd_server.port_starttls)
        ...
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .ephemeral import BackgroundEphemeralServer

__all__ = ["xmppd_server", "xmppd_server_session"]

_MARKER = "xmppd"
_ALLOWED = {"accounts", "domain", "config"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("xmppd_accounts", "test accounts the xmppd fixtures create (default 2)", default="2")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{_MARKER}(accounts=N, domain=..., config={{...}}): settings of the xmppd_server fixture")


def _default_accounts(config: pytest.Config) -> int:
    raw = config.getini("xmppd_accounts")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"xmppd_accounts must be an integer, got {raw!r}") from None


def _start(**kwargs: Any) -> BackgroundEphemeralServer:
    server = BackgroundEphemeralServer(**kwargs)
    server.start()
    return server


@pytest.fixture
def xmppd_server(request: pytest.FixtureRequest) -> Iterator[BackgroundEphemeralServer]:
    """A fresh xmppd for this test (see the module docstring)."""
    kwargs: dict[str, Any] = {"accounts": _default_accounts(request.config)}
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None:
        unknown = set(marker.kwargs) - _ALLOWED
        if marker.args or unknown:
            raise pytest.UsageError(f"@pytest.mark.{_MARKER} takes keyword arguments {sorted(_ALLOWED)}, "
                                    f"got {list(marker.args) + sorted(unknown)}")
        kwargs.update(marker.kwargs)
    server = _start(**kwargs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def xmppd_server_session(pytestconfig: pytest.Config) -> Iterator[BackgroundEphemeralServer]:
    """One xmppd shared by every test of the session."""
    server = _start(accounts=_default_accounts(pytestconfig))
    try:
        yield server
    finally:
        server.stop()
