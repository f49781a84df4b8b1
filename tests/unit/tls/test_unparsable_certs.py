"""Client certificates that OpenSSL decodes but cryptography cannot: a refusal, never an exception."""

from __future__ import annotations

import pytest

from tests.support.badcerts import printable_string_subject_cert
from tests.unit.tls.conftest import Pair, client_conn


@pytest.mark.parametrize("signed_by", ["self", "trusted-ca"])
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_unparsable_leaf_completes_the_handshake_as_refused_with_its_fingerprint(
        make_server, pki, signed_by, verify_mode):
    bad = printable_string_subject_cert(pki, f"bad-{signed_by}-{verify_mode}",
                                        ca=pki.ca if signed_by == "trusted-ca" else None)
    server = make_server(verify_mode=verify_mode, disconnect_on_failure=False)
    pair = Pair(server.new_engine(), client_conn(pki, bad)).pump()
    assert pair.handshake_ok
    check = pair.engine.peer_cert_check()
    assert (check.presented, check.ok, check.reason) == (True, False, "unparsable-certificate")
    assert check.facts is None
    assert check.fingerprint == bad.fingerprint_sha256


def test_unparsable_leaf_with_disconnect_on_failure_aborts_with_the_reason_and_fingerprint(make_server, pki):
    bad = printable_string_subject_cert(pki, "bad-strict", ca=pki.ca)
    pair = Pair(make_server(disconnect_on_failure=True).new_engine(), client_conn(pki, bad)).pump()
    assert pair.server_error is not None
    assert pair.server_error.reason == "unparsable-certificate"
    assert pair.server_error.fingerprint_sha256 == bad.fingerprint_sha256
    check = pair.engine.peer_cert_check()
    assert check.reason == "unparsable-certificate" and check.fingerprint == bad.fingerprint_sha256
