"""ALPN in the sans-IO engine (RFC 7301, XEP-0368 §3)."""

from __future__ import annotations

import pytest

from tests.unit.tls.conftest import Pair, client_conn


def _pair(server, pki, protocols):
    client = client_conn(pki)
    if protocols is not None:
        client.set_alpn_protos(protocols)
    return Pair(server.new_engine(), client).pump()


@pytest.mark.parametrize("offered", [[b"xmpp-client"], [b"h2", b"xmpp-client"]])
def test_xmpp_client_is_selected_when_offered(make_server, pki, offered):
    pair = _pair(make_server(), pki, offered)
    assert pair.handshake_ok
    assert pair.engine.alpn_protocol == "xmpp-client"
    assert pair.client.get_alpn_proto_negotiated() == b"xmpp-client"


def test_no_alpn_offered_means_none_selected(make_server, pki):
    pair = _pair(make_server(), pki, None)
    assert pair.handshake_ok
    assert pair.engine.alpn_protocol is None


@pytest.mark.parametrize("offered", [[b"http/1.1"], [b"xmpp-server"]])
def test_alpn_without_xmpp_client_fails_with_alpn_mismatch(make_server, pki, offered):
    pair = _pair(make_server(), pki, offered)
    assert not pair.engine.handshake_done
    assert pair.server_error is not None and pair.server_error.reason == "alpn-mismatch"
    assert pair.client_error is not None  # the client got the no_application_protocol alert


def test_an_empty_protocol_list_disables_alpn(make_server, pki):
    pair = _pair(make_server(alpn_protocols=()), pki, [b"http/1.1"])
    assert pair.handshake_ok
    assert pair.engine.alpn_protocol is None
