"""TLS for xmppd: a sans-IO pyOpenSSL engine, the server context, certificate identity."""

from xmppd.tls.context import CertCheck, ServerTLS, TLSConfigError
from xmppd.tls.engine import TLSEngine, TLSFailure
from xmppd.tls.identity import XMPP_ADDR_OID, cert_facts

__all__ = [
    "CertCheck",
    "ServerTLS",
    "TLSConfigError",
    "TLSEngine",
    "TLSFailure",
    "XMPP_ADDR_OID",
    "cert_facts",
]
