"""CrlKeeper without a server: states, re-signing, warnings (rate-limited, louder when worse)."""

from __future__ import annotations

import datetime as _dt
import logging
import shutil

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import pytest

from tests.support.pki import PKIFactory
from xmppd.pki import crl_upkeep
from xmppd.pki.crl_upkeep import CrlKeeper, inspect_crl

NOW = _dt.datetime.now(_dt.timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKIFactory(tmp_path_factory.mktemp("pki"))


def crl(path, ca, last, next_, serials=()):
    b = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(last).next_update(next_)
    for s in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s).revocation_date(last).build())
    path.write_bytes(b.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


def layout(tmp_path, pki, key: bool):
    shutil.copy(pki.ca_path, tmp_path / "ca.pem")
    if key:
        shutil.copy(pki.ca_key_path, tmp_path / "ca.key")
    return tmp_path / "crl.pem"


def test_a_crl_is_due_when_less_than_a_third_of_its_validity_is_left(tmp_path, pki):
    path = layout(tmp_path, pki, key=False)
    day = _dt.timedelta(days=1)
    assert inspect_crl(crl(path, pki.ca, NOW - 19 * day, NOW + 11 * day)).status == "ok"
    assert inspect_crl(crl(path, pki.ca, NOW - 21 * day, NOW + 9 * day)).status == "due"
    assert inspect_crl(crl(path, pki.ca, NOW - 31 * day, NOW - day)).status == "expired"
    assert inspect_crl(tmp_path / "nothing.pem").status == "missing"
    (tmp_path / "junk.pem").write_text("junk")
    assert inspect_crl(tmp_path / "junk.pem").status == "unreadable"
    assert not inspect_crl(path).signer


async def test_the_key_holder_resigns_with_the_same_entries_validity_and_the_registry_serials(tmp_path, pki):
    path = crl(layout(tmp_path, pki, key=True), pki.ca, NOW - _dt.timedelta(days=6), NOW + _dt.timedelta(days=1),
               serials=[11])

    async def registry(issuer):
        assert issuer == pki.ca.cert.subject.rfc4514_string()
        return [(22, NOW)]

    assert await CrlKeeper([path]).upkeep(registry) == [path]
    new = x509.load_pem_x509_crl(path.read_bytes())
    assert sorted(e.serial_number for e in new) == [11, 22]
    validity = new.next_update_utc - _dt.datetime.now(_dt.timezone.utc)
    assert _dt.timedelta(days=6, hours=23) < validity <= _dt.timedelta(days=7)
    assert inspect_crl(path).status == "ok"


async def test_without_the_key_it_warns_once_per_interval_and_again_when_it_gets_worse(
        tmp_path, pki, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="xmppd.pki.crl")
    path = crl(layout(tmp_path, pki, key=False), pki.ca, NOW - _dt.timedelta(days=25), NOW + _dt.timedelta(days=5))
    keeper = CrlKeeper([path])
    assert await keeper.upkeep() == []
    assert await keeper.upkeep() == []
    assert len(caplog.records) == 1 and "expires on" in caplog.records[0].getMessage()
    crl(path, pki.ca, NOW - _dt.timedelta(days=31), NOW - _dt.timedelta(seconds=1))
    await keeper.upkeep()
    assert len(caplog.records) == 2 and "EXPIRED" in caplog.records[1].getMessage()
    assert caplog.records[1].levelno == logging.ERROR
    monkeypatch.setattr(crl_upkeep, "CRL_WARN_EVERY_S", 0.0)
    await keeper.upkeep()
    assert len(caplog.records) == 3  # still expired: repeated after CRL_WARN_EVERY_S
