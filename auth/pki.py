"""``pki``: the certificate is the credential (MongooseIM ``ejabberd_auth_pki``).

By the time :meth:`PkiAuth.authorize_cert` is called the TLS layer has
verified the chain, validity, EKU and revocation, and the SASL EXTERNAL layer
has mapped the certificate to ``user@domain``.  Nothing is left to check, so
the method accepts.  Config: ``[auth.pki]`` with no keys.

Unlike MongooseIM, :meth:`PkiAuth.user_exists` answers ``False``: pki cannot
enumerate accounts, and answering "yes" for every name creates phantom users
(offline messages and MAM archives for people who never existed, reference
§3 #12).  The server keeps its own registry of accounts that logged in
(``xmppd.storage.accounts``) and consults it alongside the auth chain.
"""

from __future__ import annotations

from .base import SASL_EXTERNAL, AuthMethod, CertDecision, CertFacts, ScramCredentials

__all__ = ["PkiAuth"]


class PkiAuth(AuthMethod):
    name = "pki"
    option_keys = frozenset()
    can_register = False

    def supports_sasl(self, family: str) -> bool:
        return family == SASL_EXTERNAL

    async def authorize_cert(self, user: str, domain: str, cert: CertFacts) -> CertDecision:
        return CertDecision.accept()

    async def user_exists(self, user: str, domain: str) -> bool:
        return False

    # Never asked (supports_sasl says no), but answer safely if someone does.
    async def check_password(self, user: str, domain: str, password: str) -> bool:
        return False

    async def get_scram(self, user: str, domain: str, hash_name: str) -> ScramCredentials | None:
        return None
