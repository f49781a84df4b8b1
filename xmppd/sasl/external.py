"""SASL EXTERNAL with a TLS client certificate (XEP-0178, RFC 6120 §6.4.6),
sans-IO.

:func:`resolve_identity` is the whole identity policy as one pure function
of (certificate facts, authzid, stream domain, policy).  Strategies use
MongooseIM's names and are tried in the configured order:

``standard``
    the certificate's id-on-xmppAddr values.  One user JID and no authzid →
    that JID; an authzid equal to it is accepted too (Conversations and old
    Gajim always send it).  Several JIDs need an authzid naming one of them.
``common_name``
    only for certificates *without* xmppAddr: ``prefix + CN + suffix`` as the
    localpart on the stream domain.
``auth_id``
    only for certificates *without* xmppAddr: trust whatever authzid the
    client sends on the stream domain.  Dangerous (ejabberd's default hole);
    opt-in, and the shell must log it loudly.

A certificate that carries a user xmppAddr is decided by ``standard`` alone:
the fallbacks never apply to it, or a certificate for bob could log in as
alice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xmppd_auth.base import CertDecision, CertFacts
from xmppd.errors import SaslFailureCondition
from xmppd.jid import JID, InvalidJID, nameprep, nodeprep

from .base import (
    Challenge,
    Failure,
    Mechanism,
    Need,
    NeedCertAuthorization,
    Step,
    Success,
    failure,
    shown_jid,
)

__all__ = [
    "ExternalPolicy",
    "Resolution",
    "resolve_identity",
    "ExternalMechanism",
    "STRATEGIES",
    "MAX_EXTERNAL_AUTHZID_BYTES",
]

#: known strategy names, MongooseIM spelling
STRATEGIES = ("standard", "common_name", "auth_id")
#: longest authzid accepted (a full JID is at most 3 * 1023 + 2 octets)
MAX_EXTERNAL_AUTHZID_BYTES = 3071

_INVALID_AUTHZID = SaslFailureCondition.INVALID_AUTHZID
_NOT_AUTHORIZED = SaslFailureCondition.NOT_AUTHORIZED
_MALFORMED = SaslFailureCondition.MALFORMED_REQUEST


@dataclass(frozen=True, slots=True)
class ExternalPolicy:
    """Which identity strategies apply, in order, and the CN decoration."""

    strategies: tuple[str, ...] = ("standard",)
    cn_prefix: str = ""
    cn_suffix: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.strategies, str):
            raise ValueError("strategies must be a sequence of names, not a string")
        object.__setattr__(self, "strategies", tuple(self.strategies))
        if not self.strategies:
            raise ValueError("at least one EXTERNAL strategy is needed")
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ValueError(f"unknown EXTERNAL strategy {s!r} (known: {', '.join(STRATEGIES)})")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError("EXTERNAL strategies listed twice")


@dataclass(frozen=True, slots=True)
class Resolution:
    """Outcome of :func:`resolve_identity`: either ``jid`` + ``strategy``, or
    ``condition`` + ``reason``.  ``text`` always explains, in one sentence
    that starts with the reason code when it failed."""

    jid: JID | None
    strategy: str | None
    condition: SaslFailureCondition | None
    reason: str | None
    text: str

    @property
    def ok(self) -> bool:
        return self.jid is not None


def _fail(condition: SaslFailureCondition, reason: str, detail: str) -> Resolution:
    return Resolution(None, None, condition, reason, f"{reason}: {detail}")


def _user_jids(xmpp_addrs: tuple[str, ...]) -> tuple[list[JID], list[str]]:
    """xmppAddr values that name a user (``local@domain``), deduplicated in
    certificate order; plus the values that were ignored."""
    users: list[JID] = []
    ignored: list[str] = []
    for value in xmpp_addrs:
        try:
            jid = JID.parse(value)
        except (InvalidJID, TypeError):
            ignored.append(value)
            continue
        if jid.local is None or jid.resource is not None:
            ignored.append(value)
            continue
        if jid not in users:
            users.append(jid)
    return users, ignored


def _parse_authzid(authzid: str | None) -> JID | None | Resolution:
    if authzid is None or authzid in ("", "="):
        return None
    try:
        jid = JID.parse(authzid)
    except InvalidJID as exc:
        return _fail(_INVALID_AUTHZID, "bad-authzid",
                     f"the authorization identity is not a valid JID ({exc})")
    if jid.local is None:
        return _fail(_INVALID_AUTHZID, "bad-authzid",
                     "the authorization identity names no user")
    return jid.bare


def resolve_identity(facts: CertFacts, authzid: str | None, *, stream_domain: str,
                     policy: ExternalPolicy) -> Resolution:
    """Map a verified certificate (+ optional authzid) to the JID it may log
    in as.  Pure: no I/O, no backend."""
    try:
        domain = nameprep(stream_domain)
    except InvalidJID:
        raise ValueError(f"invalid stream domain {stream_domain!r}") from None

    authz = _parse_authzid(authzid)
    if isinstance(authz, Resolution):
        return authz

    users, ignored = _user_jids(facts.xmpp_addrs)
    jid: JID | None = None
    strategy: str | None = None

    if users:
        # Only `standard` can decide a certificate that names users.
        if "standard" not in policy.strategies:
            return _fail(_NOT_AUTHORIZED, "standard-disabled",
                         "the certificate carries xmppAddr identities but the 'standard' "
                         "strategy is not enabled")
        strategy = "standard"
        if len(users) == 1:
            if authz is None or authz == users[0]:
                jid = users[0]
            else:
                return _fail(_INVALID_AUTHZID, "authzid-mismatch",
                             f"certificate is for {users[0]}, not {shown_jid(authz, domain)}")
        else:
            names = ", ".join(str(u) for u in users)
            if authz is None:
                return _fail(_INVALID_AUTHZID, "ambiguous-identity",
                             f"certificate names several JIDs ({names}); "
                             "send the one to log in as as the authorization identity")
            if authz not in users:
                return _fail(_INVALID_AUTHZID, "authzid-mismatch",
                             f"certificate is for {names}, not {shown_jid(authz, domain)}")
            jid = authz
    else:
        for name in policy.strategies:
            if name == "common_name":
                cn_jid = _cn_jid(facts, policy, domain)
                if cn_jid is None:
                    continue
                if authz is not None and authz != cn_jid:
                    return _fail(_INVALID_AUTHZID, "authzid-mismatch",
                                 f"certificate is for {cn_jid}, not {shown_jid(authz, domain)}")
                jid, strategy = cn_jid, name
                break
            if name == "auth_id" and authz is not None:
                jid, strategy = authz, name
                break
        if jid is None:
            extra = (f" (ignored non-user xmppAddr values: {', '.join(map(repr, ignored))})"
                     if ignored else "")
            return _fail(_NOT_AUTHORIZED, "no-xmppaddr",
                         "the certificate carries no xmppAddr user identity and no configured "
                         f"fallback strategy applies{extra}")

    if jid.domain != domain:
        return _fail(_NOT_AUTHORIZED, "wrong-domain",
                     f"certificate identity {jid if strategy != 'auth_id' else shown_jid(jid, domain)} "
                     f"is not on this server's domain {domain}")
    return Resolution(jid, strategy, None, None,
                      f"certificate identity {jid} (strategy {strategy})")


def _cn_jid(facts: CertFacts, policy: ExternalPolicy, domain: str) -> JID | None:
    if not facts.common_name:
        return None
    try:
        local = nodeprep(f"{policy.cn_prefix}{facts.common_name}{policy.cn_suffix}")
        return JID(local, domain)
    except InvalidJID:
        return None


class ExternalMechanism(Mechanism):
    """EXTERNAL for one verified client certificate.

    The response (or initial response) is the authzid; empty or ``=``
    means none.  After success, :attr:`resolution` holds the resolved JID
    and strategy (the shell logs ``auth_id`` logins loudly).
    """

    name = "EXTERNAL"

    def __init__(self, facts: CertFacts, *, stream_domain: str, policy: ExternalPolicy) -> None:
        super().__init__()
        self.facts = facts
        self.stream_domain = stream_domain
        self.policy = policy
        self.resolution: Resolution | None = None
        self._authzid_given = False

    def _on_start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(b"")  # RFC 6120 §6.4.2: the authzid comes in the response
        return self._handle(initial_response)

    def _on_response(self, data: bytes) -> Step:
        return self._handle(data)

    def _handle(self, data: bytes) -> Step:
        if len(data) > MAX_EXTERNAL_AUTHZID_BYTES:
            return failure(_MALFORMED, "malformed-request",
                           f"authorization identity longer than {MAX_EXTERNAL_AUTHZID_BYTES} octets")
        try:
            authzid = data.decode("utf-8")
        except UnicodeDecodeError:
            return failure(_MALFORMED, "malformed-request", "authorization identity is not valid UTF-8")
        res = resolve_identity(self.facts, authzid, stream_domain=self.stream_domain,
                               policy=self.policy)
        self.resolution = res
        if res.jid is None:
            assert res.condition is not None and res.reason is not None
            # the text already starts with the reason code
            return Failure(res.condition, res.reason, res.text)
        self._authzid_given = authzid not in ("", "=")
        assert res.jid.local is not None
        return NeedCertAuthorization(res.jid.local, res.jid.domain)

    def _on_answer(self, need: Need, answer: Any) -> Step:
        decision: CertDecision = answer
        res = self.resolution
        assert res is not None and res.jid is not None and res.jid.local is not None
        if decision.ok:
            return Success(res.jid.local, str(res.jid) if self._authzid_given else None, None,
                           strategy=res.strategy)
        reason = decision.reason or "not-authorized"
        condition = (SaslFailureCondition.ACCOUNT_DISABLED if reason == "account-disabled"
                     else _NOT_AUTHORIZED)
        return failure(condition, reason,
                       f"the account {res.jid} does not accept this certificate")
