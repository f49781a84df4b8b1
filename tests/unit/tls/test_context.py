"""ServerTLS configuration errors and reload()."""

from __future__ import annotations

import pytest

from xmppd.pki import issue_client_cert, write_cert, write_private_key
from xmppd.tls import ServerTLS, TLSConfigError


def test_missing_certfile_is_a_config_error_naming_the_file(make_server, tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError, match="nope.pem"):
        make_server(certfile=missing)


def test_key_that_does_not_match_the_certificate_is_a_config_error(make_server, pki):
    with pytest.raises(TLSConfigError, match="does not match"):
        make_server(keyfile=pki.ca_key_path)


def test_ca_bundle_containing_a_private_key_is_refused(make_server, pki, tmp_path):
    bad = tmp_path / "ca-with-key.pem"
    bad.write_bytes(pki.ca_path.read_bytes() + pki.ca_key_path.read_bytes())
    with pytest.raises(TLSConfigError, match="ca-with-key.pem.*private key"):
        make_server(cacertfile=bad)


def test_bad_crl_file_is_a_config_error_naming_the_file(make_server, pki, tmp_path):
    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    with pytest.raises(TLSConfigError, match="garbage.crl"):
        make_server(crl_files=[garbage])
    foreign = pki.crl("foreign", [], ca=pki.other_ca)
    with pytest.raises(TLSConfigError, match="foreign.crl.pem"):
        make_server(crl_files=[foreign])


def test_unreadable_cacertfile_is_a_config_error(make_server, tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    with pytest.raises(TLSConfigError, match="empty.pem"):
        make_server(cacertfile=empty)


@pytest.mark.parametrize("versions", [["tlsv1.1"], ["sslv3", "tlsv1.2"], []])
def test_versions_below_tls_1_2_are_a_config_error(make_server, versions):
    with pytest.raises(TLSConfigError, match="version"):
        make_server(versions=versions)


def test_unknown_verify_mode_is_a_config_error(make_server):
    with pytest.raises(TLSConfigError, match="verify_mode"):
        make_server(verify_mode="optional")


def test_bad_cipher_list_is_a_config_error(make_server):
    with pytest.raises(TLSConfigError, match="ciphers"):
        make_server(ciphers="NO-SUCH-CIPHER")


def test_encrypted_key_loads_with_its_password_and_the_password_is_redacted(pki, tmp_path,
                                                                            connect):
    key = tmp_path / "enc.key"
    write_private_key(key, pki.server.issued.key, password=b"s3cret!")
    server = ServerTLS(certfile=pki.server.cert, keyfile=key, cacertfile=pki.ca_path,
                       key_password="s3cret!")
    assert "s3cret" not in repr(server)
    assert connect(server).handshake_ok
    with pytest.raises(TLSConfigError, match="enc.key") as info:
        ServerTLS(certfile=pki.server.cert, keyfile=key, key_password="hunter2-bad")
    assert "hunter2" not in str(info.value)
    with pytest.raises(TLSConfigError, match="encrypted"):
        ServerTLS(certfile=pki.server.cert, keyfile=key)


def test_reload_picks_up_a_new_crl_for_new_handshakes_only(make_server, connect, pki, tmp_path):
    alice = pki.client("reload-alice", xmpp_addrs=["alice@localhost"])
    crl = tmp_path / "live.crl.pem"
    crl.write_bytes(pki.crl("reload-empty", []).read_bytes())
    server = make_server(crl_files=[crl])
    before = connect(server, alice)
    assert before.engine.peer_cert_check().ok

    crl.write_bytes(pki.crl("reload-revoked", [alice]).read_bytes())
    # nothing changes until reload()
    assert connect(server, alice).engine.peer_cert_check().ok
    server.reload()
    after = connect(server, alice)
    assert after.server_error is not None and after.server_error.reason == "revoked"
    # the connection made before the reload keeps working
    before.client.sendall(b"ping")
    before.pump()
    assert bytes(before.server_plain) == b"ping"
    before.engine.write(b"pong")
    before.pump()
    assert bytes(before.client_plain) == b"pong"


def test_failed_reload_keeps_the_previous_context(make_server, connect, pki, tmp_path):
    cert = tmp_path / "server.pem"
    cert.write_bytes(pki.server.cert.read_bytes())
    server = make_server(certfile=cert)
    cert.write_bytes(b"broken")
    with pytest.raises(TLSConfigError, match="server.pem"):
        server.reload()
    assert connect(server).handshake_ok


def test_reload_picks_up_a_new_server_certificate(make_server, connect, pki, tmp_path):
    from xmppd.pki import issue_server_cert

    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    write_cert(cert, pki.server.x509)
    write_private_key(key, pki.server.issued.key)
    server = make_server(certfile=cert, keyfile=key)
    renewed = issue_server_cert(pki.ca, ["localhost"])
    write_cert(cert, renewed.cert)
    write_private_key(key, renewed.key)
    server.reload()
    pair = connect(server)
    assert pair.client.get_peer_certificate(as_cryptography=True) == renewed.cert


def test_server_cert_chain_file_sends_the_intermediates(make_server, connect, pki, tmp_path):
    # certfile with leaf + CA: both are sent to the client
    cert = tmp_path / "chain.pem"
    write_cert(cert, pki.server.x509, pki.ca.cert)
    pair = connect(make_server(certfile=cert))
    assert pair.handshake_ok
    chain = pair.client.get_peer_cert_chain(as_cryptography=True)
    assert chain[0] == pki.server.x509 and pki.ca.cert in chain


def test_pinned_self_signed_client_cert_in_cacertfile_is_trusted_under_peer(make_server, connect,
                                                                            pki, tmp_path):
    from tests.support.pki import CertFiles

    pinned = issue_client_cert(None, xmpp_addrs=["pinned@localhost"])
    write_cert(tmp_path / "pinned.pem", pinned.cert)
    write_private_key(tmp_path / "pinned.key", pinned.key)
    files = CertFiles(pinned, tmp_path / "pinned.pem", tmp_path / "pinned.key")
    bundle = pki.bundle("pinned-bundle", pki.ca.cert, pinned.cert)
    check = connect(make_server(cacertfile=bundle), files).engine.peer_cert_check()
    assert check.ok and check.facts.xmpp_addrs == ("pinned@localhost",)
