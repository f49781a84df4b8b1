"""Certificate issuing (CA, server and client certificates, CRLs, PKCS#12)."""

from xmppd.pki.issue import (
    XMPP_ADDR_OID,
    DevPKI,
    Issued,
    build_crl,
    create_ca,
    ensure_dev_pki,
    export_p12,
    issue_client_cert,
    issue_server_cert,
    load_issued,
    new_serial,
    write_cert,
    write_crl,
    write_private_key,
)

__all__ = [
    "XMPP_ADDR_OID",
    "DevPKI",
    "Issued",
    "build_crl",
    "create_ca",
    "ensure_dev_pki",
    "export_p12",
    "issue_client_cert",
    "issue_server_cert",
    "load_issued",
    "new_serial",
    "write_cert",
    "write_crl",
    "write_private_key",
]
