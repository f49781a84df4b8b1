from __future__ import annotations

import datetime as dt

import pytest

from xmppd_auth.base import SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM, AuthConfigError, CertFacts
from xmppd_auth.pki import PkiAuth


def cert(addrs=("alice@example.org",)) -> CertFacts:
    return CertFacts(
        der=b"\x30\x00", fingerprint_sha256="ef" * 32, serial=42, subject="CN=alice",
        issuer="CN=CA", not_before=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
        not_after=dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc), xmpp_addrs=addrs,
    )


async def test_pki_accepts_any_verified_certificate():
    pki = PkiAuth()
    await pki.start()
    assert (await pki.authorize_cert("alice", "example.org", cert())).ok
    assert (await pki.authorize_cert("carol", "example.org", cert(()))).ok
    await pki.stop()


async def test_pki_says_user_exists_false_to_avoid_phantom_users():
    assert await PkiAuth().user_exists("alice", "example.org") is False


def test_pki_serves_only_external_and_cannot_register():
    pki = PkiAuth({}, {})
    assert pki.supports_sasl(SASL_EXTERNAL)
    assert not pki.supports_sasl(SASL_PASSWORD) and not pki.supports_sasl(SASL_SCRAM)
    assert not pki.can_register and pki.name == "pki"


async def test_pki_never_accepts_a_password():
    pki = PkiAuth()
    assert await pki.check_password("alice", "example.org", "pw") is False
    assert await pki.get_scram("alice", "example.org", "sha256") is None


def test_pki_has_no_options():
    with pytest.raises(AuthConfigError) as err:
        PkiAuth({"ca": "x"})
    assert err.value.key == "auth.pki.ca"
