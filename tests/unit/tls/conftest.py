"""Real TLS in memory: a server TLSEngine against a pyOpenSSL client over memory BIOs."""

from __future__ import annotations

import pytest
from OpenSSL import SSL

from tests.support.pki import CertFiles, PKIFactory
from xmppd.tls import ServerTLS, TLSEngine, TLSFailure


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKIFactory:
    return PKIFactory(tmp_path_factory.mktemp("tls-pki"))


@pytest.fixture
def make_server(pki):
    def make(**kwargs) -> ServerTLS:
        options = dict(certfile=pki.server.cert, keyfile=pki.server.key, cacertfile=pki.ca_path)
        options.update(kwargs)
        return ServerTLS(**options)

    return make


def client_conn(pki: PKIFactory, cert: CertFiles | None = None, *,
                min_version: int | None = None, max_version: int | None = None,
                ciphers: bytes | None = None) -> SSL.Connection:
    """A TLS client that trusts the test CA and optionally presents ``cert``."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(str(pki.ca_path))
    ctx.set_verify(SSL.VERIFY_PEER)
    if cert is not None:
        ctx.use_certificate_chain_file(str(cert.cert))
        ctx.use_privatekey_file(str(cert.key))
    if min_version is not None:
        ctx.set_min_proto_version(min_version)
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
    if ciphers is not None:
        ctx.set_cipher_list(ciphers)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    conn.set_tlsext_host_name(b"localhost")
    return conn


def _drain(conn: SSL.Connection) -> bytes:
    out = []
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        out.append(chunk)
    return b"".join(out)


class Pair:
    """Moves bytes between a server engine and a client connection."""

    def __init__(self, engine: TLSEngine, client: SSL.Connection) -> None:
        self.engine = engine
        self.client = client
        self.client_done = False
        self.client_error: SSL.Error | None = None
        self.client_closed = False
        self.server_error: TLSFailure | None = None
        self.server_plain = bytearray()
        self.client_plain = bytearray()
        self.wire_to_server = 0

    def to_server(self, data: bytes) -> None:
        if data:
            self.wire_to_server += len(data)
            self.engine.feed(data)

    def server_read(self) -> None:
        if self.server_error is not None:
            return
        try:
            self.server_plain += self.engine.read()
        except TLSFailure as exc:
            self.server_error = exc

    def client_step(self) -> None:
        if self.client_error is not None:
            return
        if not self.client_done:
            try:
                self.client.do_handshake()
                self.client_done = True
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                self.client_error = exc
                return
        if self.client_done and not self.client_closed:
            while True:
                try:
                    self.client_plain += self.client.recv(65536)
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:
                    self.client_closed = True
                    break
                except SSL.Error as exc:
                    self.client_error = exc
                    break

    def pump(self, *, chunk: int | None = None, rounds: int = 200) -> "Pair":
        """Shuttle bytes until nothing moves (``chunk``: split server input)."""
        for _ in range(rounds):
            self.client_step()
            to_server = _drain(self.client)
            if chunk:
                for i in range(0, len(to_server), chunk):
                    self.to_server(to_server[i:i + chunk])
                    self.server_read()
            else:
                self.to_server(to_server)
            self.server_read()
            to_client = self.engine.outgoing()
            if to_client and self.client_error is None:
                self.client.bio_write(to_client)
            if not to_server and not to_client:
                break
        return self

    @property
    def handshake_ok(self) -> bool:
        return self.engine.handshake_done and self.client_done and self.server_error is None \
            and self.client_error is None


@pytest.fixture
def connect(pki):
    """connect(server_tls, cert=None, **client_options) -> Pair after the handshake."""

    def connect(server: ServerTLS, cert: CertFiles | None = None, **client_options) -> Pair:
        pair = Pair(server.new_engine(), client_conn(pki, cert, **client_options))
        return pair.pump()

    return connect
