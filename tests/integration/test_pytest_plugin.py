"""The pytest plugin (xmppd.pytest_plugin), run the way a user's project runs it: pytester."""

from __future__ import annotations

from importlib.metadata import entry_points

pytest_plugins = ["pytester"]

PLUGIN = "xmppd.pytest_plugin"

USER_TESTS = '''
import asyncio
import os
from pathlib import Path

import pytest
import slixmpp

STATE = {}  # what one test leaves for the next (they run in file order)


async def login(server, account, *, password=None, cert=False, port=None, direct=False):
    c = slixmpp.ClientXMPP(account.jid, password or "")
    c.ca_certs = Path(server.ca_path)
    if cert:
        c.certfile, c.keyfile = account.cert, account.key
    c.enable_plaintext = False
    c.enable_direct_tls = direct
    c.enable_starttls = not direct
    started = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _e: started.done() or started.set_result(c.boundjid.bare))
    c.add_event_handler("failed_all_auth", lambda _e: started.done() or started.set_exception(RuntimeError("auth")))
    c.connect(server.host, port or server.port_starttls)
    try:
        return str(await asyncio.wait_for(started, 20))
    finally:
        c.disconnect()
        await asyncio.sleep(0.1)


def test_password_login(xmppd_server):
    acc = xmppd_server.accounts[0]
    assert xmppd_server.domain == "localhost" and len(xmppd_server.accounts) == 2
    assert asyncio.run(login(xmppd_server, acc, password=acc.password)) == acc.jid


def test_certificate_login_over_direct_tls(xmppd_server):
    acc = xmppd_server.accounts[1]
    assert asyncio.run(login(xmppd_server, acc, cert=True, port=xmppd_server.port_tls, direct=True)) == acc.jid
    STATE['data_dir'] = xmppd_server.info["data_dir"]


@pytest.mark.xmppd(accounts=3, domain="ci.test")
def test_marker_sets_accounts_and_domain(xmppd_server):
    assert [a.jid for a in xmppd_server.accounts] == ["user1@ci.test", "user2@ci.test", "user3@ci.test"]


def test_previous_function_server_is_gone(xmppd_server):
    assert not os.path.exists(STATE['data_dir'])
    assert xmppd_server.info["data_dir"] != STATE['data_dir']


def test_session_server_is_shared_a(xmppd_server_session):
    STATE['session_port'] = xmppd_server_session.port_starttls
    acc = xmppd_server_session.add_account("extra")
    assert asyncio.run(login(xmppd_server_session, acc, password=acc.password)) == "extra@localhost"


def test_session_server_is_shared_b(xmppd_server_session):
    assert xmppd_server_session.port_starttls == STATE['session_port']
'''


def _plugin_args() -> list[str]:
    """Load the plugin with -p unless the installed entry point already does."""
    if any(ep.value == PLUGIN for ep in entry_points(group="pytest11")):
        return []
    return ["-p", PLUGIN]


def _project(pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_xmppd_server_fixture_logs_in_with_password_and_certificate(pytester):
    _project(pytester)
    pytester.makepyfile(test_user_project=USER_TESTS)
    result = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=6)


def test_marker_with_positional_arguments_is_a_usage_error(pytester):
    _project(pytester)
    pytester.makepyfile(test_bad_marker='''
import pytest

@pytest.mark.xmppd(3)
def test_x(xmppd_server):
    pass
''')
    result = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*takes keyword arguments*"])
