"""Per-account certificate registry: login policy and XEP-0257 management.

Two halves on the hook API:

* ``authorize_cert`` — after the auth chain accepted a SASL EXTERNAL login,
  apply ``auth.cert_registry`` (or the account's override in ``cert_policy``):

  ``always``     only an *active* registered certificate logs in
                 (``cert-not-registered`` otherwise);
  ``ifpresent``  an account with registered certificates (in any state: an
                 account whose certificates were all revoked stays pinned)
                 accepts only its active ones; an account without any is
                 unaffected;
  ``never``      registration is not required.

  Under every policy a registered certificate that was disabled or revoked is
  refused (``cert-disabled`` / ``cert-revoked``): revocation must not be
  undone by a policy change.  The reason lands in the SASL ``<text/>`` and the
  audit log.  A successful check records ``last_used``.

* ``urn:xmpp:saslcert:1`` (XEP-0257 v0.3) on the account's bare JID:
  ``items`` (active certificates, with the resources using each),
  ``append``, ``disable``, ``revoke``.  Only the account itself manages its
  certificates — every lookup uses the session's *own* username **and
  domain** (Prosody's mod_client_certs lost its host check to
  ``not host == module.host``; a same-named user of another served domain
  must not reach these rows).  A session that logged in with a certificate
  appended with ``<no-cert-management/>`` may list but not change anything.
  Disabling or revoking closes the account's live sessions that logged in
  with that certificate (``<not-authorized/>``, "cert-revoked: ..."), audited.

Errors (XEP-0257 leaves most unnamed; these follow RFC 6120 §8.3.3):
``bad-request`` missing name/x509cert or not a base64 DER certificate;
``not-acceptable`` expired, not issued for this account, or revoked before;
``conflict`` name or certificate already registered; ``item-not-found`` no
such certificate; ``forbidden`` no-cert-management session or another
account's JID.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import logging
from xml.etree.ElementTree import Element, SubElement

from cryptography import x509

from xmppd_auth.base import CertDecision, CertFacts

from ..errors import StanzaErrorCondition, StreamErrorCondition
from ..jid import JID, InvalidJID
from ..storage.certs import ACTIVE, DISABLED, REVOKED, CertRegistry, DuplicateCert, add_facts
from ..stream.c2s import iq_error
from ..tls.identity import cert_facts
from ..xml.writer import serialize
from .base import Module

__all__ = ["SaslCert", "NS_SASLCERT", "cert_accepts_account"]

log = logging.getLogger("xmppd.modules.saslcert")

NS_SASLCERT = "urn:xmpp:saslcert:1"
_N = f"{{{NS_SASLCERT}}}"
#: a base64 DER certificate larger than this is refused before decoding
MAX_CERT_B64 = 64 * 1024


def cert_accepts_account(facts: CertFacts, account: JID, sasl_external: tuple[str, ...]) -> str | None:
    """None if ``facts`` may log in as ``account`` (bare) — else a reason code.

    A certificate with xmppAddrs must name the account (a full JID counts by
    its bare part); one without any is acceptable only when a configured
    fallback (``common_name``/``auth_id``) can map it to an account.
    """
    if facts.xmpp_addrs:
        for addr in facts.xmpp_addrs:
            try:
                if JID.parse(addr).bare == account:
                    return None
            except InvalidJID:
                continue
        return "wrong-account"
    if "common_name" in sasl_external or "auth_id" in sasl_external:
        return None
    return "no-xmppaddr"


class SaslCert(Module):
    name = "saslcert"
    xeps = (("0257", "0.3"),)
    features = (NS_SASLCERT,)

    def __init__(self, server, options=None) -> None:
        super().__init__(server, options)
        self.registry = CertRegistry(server.db_engine)

    def setup(self) -> None:
        h = self.server.hooks
        h.on("authorize_cert", self.authorize_cert)
        h.iq(NS_SASLCERT, get=self.handle_get, set=self.handle_set, account=True)

    async def start(self) -> None:
        self.registry.start_flusher()  # last_used, in batches

    async def stop(self) -> None:
        await self.registry.stop_flusher()

    @property
    def default_policy(self) -> str:
        return self.server.config.auth.cert_registry

    # ------------------------------------------------------------ login
    async def authorize_cert(self, user: str, domain: str, facts: CertFacts) -> CertDecision | None:
        override, states = await self.registry.login_view(user, domain)
        policy = override or self.default_policy
        state = states.get(facts.fingerprint_sha256)
        if state == REVOKED:
            return CertDecision.refuse("cert-revoked")
        if state == DISABLED:
            return CertDecision.refuse("cert-disabled")
        if state is None:
            if policy == "always" or (policy == "ifpresent" and states):
                return CertDecision.refuse("cert-not-registered")
            return None
        # registered and active: last_used is written with the next batch
        self.registry.note_used(user, domain, facts.fingerprint_sha256)
        return None

    # ------------------------------------------------------------ XEP-0257
    def _own(self, session, req: Element) -> bool:
        """The request addresses the sender's own account (no 'to', or its bare JID)."""
        to = req.get("to")
        if not to:
            return True
        try:
            return JID.parse(to).bare == session.jid.bare
        except InvalidJID:
            return False

    def handle_get(self, session, req: Element):
        if not self._own(session, req):
            return iq_error(req, StanzaErrorCondition.FORBIDDEN, "only the account itself manages its certificates")
        if req[0].tag != f"{_N}items":
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "expected <items/>")
        return self._items(session, req)

    def handle_set(self, session, req: Element):
        if not self._own(session, req):
            return iq_error(req, StanzaErrorCondition.FORBIDDEN, "only the account itself manages its certificates")
        tag = req[0].tag
        if tag == f"{_N}append":
            return self._append(session, req)
        if tag in (f"{_N}disable", f"{_N}revoke"):
            return self._disable(session, req, revoke=tag == f"{_N}revoke")
        return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "expected <append/>, <disable/> or <revoke/>")

    def _account(self, session) -> tuple[str, str]:
        jid = session.jid
        return jid.local, jid.domain

    def _users_of(self, session, fingerprint: str) -> list:
        """The account's bound sessions that logged in with this certificate."""
        bare = session.jid.bare
        return [s for s in self.server.sessions
                if s.jid is not None and s.jid.bare == bare
                and getattr(s, "login_cert", None) is not None
                and s.login_cert.fingerprint_sha256 == fingerprint]

    async def _may_manage(self, session) -> bool:
        cert = getattr(session, "login_cert", None)
        if cert is None:
            return True
        user, domain = self._account(session)
        row = await self.registry.get(user, domain, cert.fingerprint_sha256)
        return row is None or row.cert_management

    async def _items(self, session, req: Element) -> Element:
        user, domain = self._account(session)
        rows = await self.registry.list(user, domain, states=(ACTIVE,), with_der=True)
        reply = Element("{jabber:client}iq", {"type": "result"})
        items = SubElement(reply, f"{_N}items")
        for row in rows:
            item = SubElement(items, f"{_N}item")
            SubElement(item, f"{_N}name").text = row.name
            SubElement(item, f"{_N}x509cert").text = base64.b64encode(row.der or b"").decode("ascii")
            users = self._users_of(session, row.fingerprint_sha256)
            if users:
                el = SubElement(item, f"{_N}users")
                for s in users:
                    SubElement(el, f"{_N}resource").text = s.jid.resource
        return reply

    async def _append(self, session, req: Element) -> Element:
        payload = req[0]
        name = (payload.findtext(f"{_N}name") or "").strip()
        b64 = "".join((payload.findtext(f"{_N}x509cert") or "").split())
        if not name or not b64:
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "<name/> and <x509cert/> are required")
        if len(name) > 255:
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "<name/> is longer than 255 characters")
        if len(b64) > MAX_CERT_B64:
            return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE, "certificate too large")
        try:
            der = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "<x509cert/> is not base64")
        try:
            facts = cert_facts(x509.load_der_x509_certificate(der))
        except (ValueError, x509.InvalidVersion) as exc:  # ASN.1 errors, a version other than v1..v3
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST,
                            f"unparsable-certificate: <x509cert/> is not a DER X.509 certificate "
                            f"({str(exc)[:200]})")
        if not await self._may_manage(session):
            return iq_error(req, StanzaErrorCondition.FORBIDDEN,
                            "this session's certificate was registered with no-cert-management")
        now = _dt.datetime.now(_dt.timezone.utc)
        if facts.not_after <= now:
            return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE, "expired: the certificate has expired")
        problem = cert_accepts_account(facts, session.jid.bare, self.server.config.auth.sasl_external)
        if problem == "wrong-account":
            return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE,
                            f"wrong-account: the certificate is for {', '.join(facts.xmpp_addrs)}, "
                            f"not {session.jid.bare}")
        if problem is not None:
            return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE,
                            "no-xmppaddr: the certificate has no xmppAddr for this account")
        manage = payload.find(f"{_N}no-cert-management") is None
        user, domain = self._account(session)
        try:
            row = await add_facts(self.registry, user, domain, facts, name=name, cert_management=manage)
        except DuplicateCert as exc:
            if exc.what == "revoked":
                return iq_error(req, StanzaErrorCondition.NOT_ACCEPTABLE,
                                "cert-revoked: this certificate was revoked and cannot be registered again")
            return iq_error(req, StanzaErrorCondition.CONFLICT,
                            f"a certificate {'named ' + repr(name) if exc.what == 'name' else 'like this'} "
                            f"is already registered (as {exc.existing.name!r})")
        self.server.audit.write({
            "event": "cert-registered", "jid": str(session.jid.bare), "by": str(session.jid),
            "name": row.name, "cert_management": manage, "cert_fingerprint": facts.fingerprint_sha256,
            "cert_serial": facts.serial_hex, "cert_issuer": facts.issuer})
        return Element("{jabber:client}iq", {"type": "result"})

    async def _disable(self, session, req: Element, *, revoke: bool) -> Element | None:
        name = (req[0].findtext(f"{_N}name") or "").strip()
        if not name:
            return iq_error(req, StanzaErrorCondition.BAD_REQUEST, "<name/> is required")
        if not await self._may_manage(session):
            return iq_error(req, StanzaErrorCondition.FORBIDDEN,
                            "this session's certificate was registered with no-cert-management")
        user, domain = self._account(session)
        rows = [r for r in await self.registry.list(user, domain, states=(ACTIVE, DISABLED)) if r.name == name]
        if not rows:
            return iq_error(req, StanzaErrorCondition.ITEM_NOT_FOUND, f"no certificate named {name!r}")
        state = REVOKED if revoke else DISABLED
        for row in rows:
            await self.registry.set_state(user, domain, row.fingerprint_sha256, state)
        # answer first: the requesting session may be one of those about to close
        reply = Element("{jabber:client}iq", {"type": "result"})
        if req.get("id") is not None:
            reply.set("id", req.get("id"))
        reply.set("to", str(session.jid))
        reply.set("from", req.get("to") or str(session.jid.bare))
        session.send_bytes(serialize(reply))
        reason = "cert-revoked" if revoke else "cert-disabled"
        for row in rows:
            closed = self.close_sessions_using(session.jid.bare, row.fingerprint_sha256, reason,
                                               f"{reason}: the certificate {row.name!r} was "
                                               f"{'revoked' if revoke else 'disabled'} by {session.jid}")
            self.server.audit.write({
                "event": reason, "jid": str(session.jid.bare), "by": str(session.jid), "name": row.name,
                "cert_fingerprint": row.fingerprint_sha256, "cert_serial": row.serial_hex,
                "cert_issuer": row.issuer, "sessions_closed": closed})
            log.info("%s %s certificate %r (sha256 %s); closed %d session(s)", session.jid,
                     "revoked" if revoke else "disabled", row.name, row.fingerprint_sha256, closed)
        return None

    def close_sessions_using(self, account: JID, fingerprint: str, reason: str, text: str) -> int:
        """Close ``account``'s sessions that logged in with the certificate, audited one by one."""
        def doomed(s) -> bool:
            cert = getattr(s, "login_cert", None)
            return (cert is not None and cert.fingerprint_sha256 == fingerprint
                    and s.jid is not None and s.jid.bare == account)

        for s in [s for s in self.server.sessions if doomed(s)]:
            cert = s.login_cert
            listener = getattr(s, "listener", None)
            self.server.audit.write({
                "event": "session-revoked", "listener": getattr(listener, "name", None),
                "peer": getattr(s, "peer", None), "jid": str(s.jid), "reason": reason,
                "cert_fingerprint": cert.fingerprint_sha256, "cert_serial": cert.serial_hex,
                "cert_issuer": cert.issuer})
        return self.server.close_sessions(doomed, StreamErrorCondition.NOT_AUTHORIZED, text)
