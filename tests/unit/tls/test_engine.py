"""TLSEngine: sans-IO data flow, versions, channel binding, close."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from tests.unit.tls.conftest import Pair, client_conn
from xmppd.tls import TLSFailure
from xmppd.tls.engine import TLS_EXPORTER_LABEL


def _client_send(pair: Pair, data: bytes) -> None:
    pair.client.sendall(data)


@pytest.fixture
def server(make_server):
    return make_server()


def test_application_data_round_trips_both_ways_in_one_piece(server, connect):
    pair = connect(server)
    assert pair.handshake_ok
    _client_send(pair, b"<stream:stream to='localhost'>")
    pair.pump()
    assert bytes(pair.server_plain) == b"<stream:stream to='localhost'>"
    pair.engine.write(b"<stream:features/>")
    pair.pump()
    assert bytes(pair.client_plain) == b"<stream:features/>"


def test_application_data_round_trips_in_1_byte_chunks(make_server, pki):
    pair = Pair(make_server().new_engine(), client_conn(pki))
    pair.pump(chunk=1)  # the whole handshake fed one byte at a time
    assert pair.handshake_ok
    message = "<message>héllo wörld</message>".encode()
    _client_send(pair, message)
    pair.pump(chunk=1)
    assert bytes(pair.server_plain) == message
    for byte in message:
        pair.engine.write(bytes([byte]))
    pair.pump()
    assert bytes(pair.client_plain) == message


def test_large_writes_are_split_into_records_and_arrive_intact(server, connect):
    pair = connect(server)
    blob = bytes(range(256)) * 1024  # 256 KiB
    pair.engine.write(blob)
    pair.pump()
    assert bytes(pair.client_plain) == blob
    _client_send(pair, blob)
    pair.pump()
    assert bytes(pair.server_plain) == blob


def test_data_written_before_the_handshake_is_sent_after_it(make_server, pki):
    pair = Pair(make_server().new_engine(), client_conn(pki))
    pair.engine.write(b"early")
    assert pair.engine.outgoing() == b""  # nothing until a ClientHello arrived
    pair.pump()
    assert pair.handshake_ok
    assert bytes(pair.client_plain) == b"early"


def test_read_without_input_returns_empty_bytes(server):
    engine = server.new_engine()
    assert engine.read() == b""
    assert engine.outgoing() == b""
    assert engine.handshake_done is False
    assert engine.version is None
    assert engine.peer_cert_check().presented is False
    assert engine.channel_binding("tls-exporter") is None


@pytest.mark.parametrize("max_version, name", [(SSL.TLS1_3_VERSION, "TLSv1.3"),
                                               (SSL.TLS1_2_VERSION, "TLSv1.2")])
def test_version_reports_the_negotiated_protocol(server, connect, max_version, name):
    assert connect(server, max_version=max_version).engine.version == name


def test_tls_1_1_client_is_refused_with_protocol_version(server, pki):
    client = client_conn(pki, min_version=SSL.TLS1_1_VERSION, max_version=SSL.TLS1_1_VERSION,
                         ciphers=b"DEFAULT:@SECLEVEL=0")
    pair = Pair(server.new_engine(), client).pump()
    assert pair.server_error is not None
    assert pair.server_error.reason == "protocol-version"
    assert pair.client_error is not None
    assert not pair.engine.handshake_done


def test_server_limited_to_tls_1_3_refuses_a_tls_1_2_client(make_server, connect):
    pair = connect(make_server(versions=["tlsv1.3"]), max_version=SSL.TLS1_2_VERSION)
    assert pair.server_error is not None and pair.server_error.reason == "protocol-version"


def test_garbage_instead_of_a_client_hello_fails_the_handshake(server):
    engine = server.new_engine()
    engine.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(TLSFailure) as info:
        engine.read()
    assert info.value.reason in ("not-tls", "handshake-failure")
    with pytest.raises(TLSFailure):  # sticky
        engine.read()


def test_tls_exporter_is_equal_on_both_sides_on_tls_1_3(server, connect):
    pair = connect(server, max_version=SSL.TLS1_3_VERSION)
    ours = pair.engine.channel_binding("tls-exporter")
    theirs = pair.client.export_keying_material(TLS_EXPORTER_LABEL, 32)
    assert ours == theirs and len(ours) == 32
    assert connect(server).engine.channel_binding("tls-exporter") != ours  # per connection


def test_tls_exporter_is_unavailable_on_tls_1_2(server, connect):
    pair = connect(server, max_version=SSL.TLS1_2_VERSION)
    assert pair.engine.channel_binding("tls-exporter") is None


@pytest.mark.parametrize("max_version", [SSL.TLS1_3_VERSION, SSL.TLS1_2_VERSION])
def test_tls_server_end_point_is_equal_on_both_sides(server, connect, max_version):
    pair = connect(server, max_version=max_version)
    der = pair.client.get_peer_certificate(as_cryptography=True).public_bytes(
        serialization.Encoding.DER)
    expected = hashlib.sha256(der).digest()  # the test server cert is signed with SHA-256
    assert pair.engine.channel_binding("tls-server-end-point") == expected


def test_unknown_channel_binding_type_is_none(server, connect):
    assert connect(server).engine.channel_binding("tls-unique") is None


def test_close_queues_close_notify_and_the_client_sees_a_clean_end(server, connect):
    pair = connect(server)
    pair.engine.write(b"bye")
    pair.engine.close()
    pair.pump()
    assert bytes(pair.client_plain) == b"bye"
    assert pair.client_closed
    with pytest.raises(TLSFailure) as info:
        pair.engine.write(b"more")
    assert info.value.reason == "closed"


def test_peer_close_notify_sets_peer_closed(server, connect):
    pair = connect(server)
    pair.client.sendall(b"last words")
    pair.client.shutdown()
    pair.pump()
    assert bytes(pair.server_plain) == b"last words"
    assert pair.engine.peer_closed is True
    assert pair.engine.read() == b""


def test_corrupted_record_after_the_handshake_is_a_protocol_error(server, connect):
    pair = connect(server)
    pair.client.sendall(b"hello")
    record = bytearray(pair.client.bio_read(65536))
    record[-1] ^= 0x01
    pair.engine.feed(bytes(record))
    with pytest.raises(TLSFailure) as info:
        pair.engine.read()
    assert info.value.reason == "protocol-error"


def test_renegotiation_is_disabled(server, connect):
    assert server.context.set_options(0) & SSL.OP_NO_RENEGOTIATION
    pair = connect(server, max_version=SSL.TLS1_2_VERSION)
    pair.client.renegotiate()
    try:
        pair.client.do_handshake()
    except SSL.Error:
        pass
    pair.pump()
    # the server answers with a no_renegotiation alert; the client gives up
    assert pair.client_error is not None and "no renegotiation" in str(pair.client_error)
    assert pair.engine._conn.total_renegotiations() == 0
    assert pair.server_error is None or pair.server_error.reason in ("protocol-error",
                                                                     "renegotiation-refused")


def test_context_options_refuse_compression_and_prefer_server_ciphers(server):
    options = server.context.set_options(0)
    assert options & SSL.OP_NO_COMPRESSION
    assert options & SSL.OP_CIPHER_SERVER_PREFERENCE
    assert server.context.set_mode(0) & SSL.MODE_RELEASE_BUFFERS
