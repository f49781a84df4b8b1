"""A throw-away PKI for tests: trusted CA, untrusted CA, server and client certs.

Plain classes and functions (no pytest import), so any suite can build one in
a session-scoped fixture::

    @pytest.fixture(scope="session")
    def pki(tmp_path_factory):
        return PKIFactory(tmp_path_factory.mktemp("pki"))

    def test_x(pki):
        alice = pki.client("alice", xmpp_addrs=["alice@localhost"])
        ServerTLS(certfile=pki.server.cert, keyfile=pki.server.key,
                  cacertfile=pki.ca_path)
        ...

Everything is EC P-256 (fast). All files are PEM under the given directory.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cryptography import x509

from xmppd.pki import (
    Issued,
    build_crl,
    create_ca,
    issue_client_cert,
    issue_server_cert,
    write_cert,
    write_crl,
    write_private_key,
)

__all__ = ["CertFiles", "PKIFactory", "make_pki"]


@dataclass(frozen=True)
class CertFiles:
    """An issued certificate plus where its PEM files were written."""

    issued: Issued
    cert: Path
    key: Path

    @property
    def x509(self) -> x509.Certificate:
        return self.issued.cert

    @property
    def serial(self) -> int:
        return self.issued.cert.serial_number

    @property
    def fingerprint_sha256(self) -> str:
        from cryptography.hazmat.primitives import hashes

        return self.issued.cert.fingerprint(hashes.SHA256()).hex()


class PKIFactory:
    """Creates, in ``directory``:

    * ``ca``        trusted CA          (``ca.pem`` = :attr:`ca_path`, ``ca.key``)
    * ``other_ca``  an untrusted CA     (``other-ca.pem`` = :attr:`other_ca_path`)
    * ``server``    server cert for ``server_hostnames`` (default ``localhost``),
      signed by ``ca`` (``server.pem``, ``server.key``)

    and client certificates on demand with :meth:`client`.
    """

    def __init__(self, directory: Path | str, *,
                 server_hostnames: Sequence[str] = ("localhost",)) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = create_ca("xmppd test CA")
        self.ca_path = self.dir / "ca.pem"
        self.ca_key_path = self.dir / "ca.key"
        write_cert(self.ca_path, self.ca.cert)
        write_private_key(self.ca_key_path, self.ca.key)

        self.other_ca = create_ca("untrusted test CA")
        self.other_ca_path = self.dir / "other-ca.pem"
        write_cert(self.other_ca_path, self.other_ca.cert)
        write_private_key(self.dir / "other-ca.key", self.other_ca.key)

        self.server = self._save("server", issue_server_cert(self.ca, list(server_hostnames)))
        self._clients: dict[str, CertFiles] = {}

    # -- certificates --------------------------------------------------------
    def _save(self, name: str, issued: Issued, *chain: x509.Certificate) -> CertFiles:
        cert_path = self.dir / f"{name}.pem"
        key_path = self.dir / f"{name}.key"
        write_cert(cert_path, issued.cert, *chain)
        write_private_key(key_path, issued.key)
        return CertFiles(issued, cert_path, key_path)

    def client(self, name: str, *, ca: Issued | str | None = "trusted", **kwargs) -> CertFiles:
        """Issue a client certificate and write ``<name>.pem``/``<name>.key``.

        ``ca``: ``"trusted"`` (default), ``"other"`` (untrusted CA), ``None``
        (self-signed) or an :class:`Issued` CA. Other keyword arguments go to
        :func:`xmppd.pki.issue_client_cert` (``xmpp_addrs``, ``common_name``,
        ``email``, ``uid``, ``not_before``, ``not_after``, ``ekus``...).
        """
        if ca == "trusted":
            issuer: Issued | None = self.ca
        elif ca == "other":
            issuer = self.other_ca
        else:
            issuer = ca  # type: ignore[assignment]
        files = self._save(name, issue_client_cert(issuer, **kwargs))
        self._clients[name] = files
        return files

    def expired_client(self, name: str, **kwargs) -> CertFiles:
        """Valid from 30 days ago until yesterday."""
        now = _dt.datetime.now(_dt.timezone.utc)
        return self.client(name, not_before=now - _dt.timedelta(days=30),
                           not_after=now - _dt.timedelta(days=1), **kwargs)

    def future_client(self, name: str, **kwargs) -> CertFiles:
        """Valid from tomorrow for 30 days."""
        now = _dt.datetime.now(_dt.timezone.utc)
        return self.client(name, not_before=now + _dt.timedelta(days=1),
                           not_after=now + _dt.timedelta(days=31), **kwargs)

    def get(self, name: str) -> CertFiles:
        return self._clients[name]

    # -- CRLs and bundles ------------------------------------------------------
    def crl(self, name: str, revoked: Iterable[CertFiles | int] = (), *,
            ca: Issued | None = None, next_update_days: int = 7) -> Path:
        """Write ``<name>.crl.pem`` listing ``revoked`` (CertFiles or serials)."""
        now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=1)
        serials = [r.serial if isinstance(r, CertFiles) else int(r) for r in revoked]
        crl = build_crl(ca or self.ca, [(s, now) for s in serials],
                        next_update_days=next_update_days)
        path = self.dir / f"{name}.crl.pem"
        write_crl(path, crl)
        return path

    def bundle(self, name: str, *certs: x509.Certificate) -> Path:
        """Write several certificates into one PEM file (e.g. a CA bundle)."""
        path = self.dir / f"{name}.pem"
        write_cert(path, *certs)
        return path


def make_pki(directory: Path | str) -> PKIFactory:
    return PKIFactory(directory)
