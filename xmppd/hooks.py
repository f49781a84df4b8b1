"""The hook API modules are built on.

Every hook is declared here once.  Modules register handlers in
``Module.setup()``; the router calls them.  Built-in features use exactly
this API, so a third-party module can do anything they do.

Hooks
-----
``iq_server`` (namespace, type) -> handler(session, element)
    iq addressed to the server domain (RFC 6120 §10.3).
``iq_account`` (namespace, type) -> handler(session, element)
    iq addressed to a bare JID, handled on behalf of the account (RFC 6121 §8.5.1).
    A handler returns a reply Element, None (it replied itself), or an awaitable of either.
``session_bound(session)`` / ``session_closed(session)``
    run in priority order (lower first).
``authorize_cert(user, domain, facts) -> awaitable CertDecision | None``
    after the auth chain accepted a certificate login: a module may refuse it
    (certificate registry policy); ``None`` means no opinion.
``stanza_out(session, stanza, to) -> bool``
    every stanza from a bound client, after ``from`` is stamped and before it
    is routed (``to`` is the parsed JID or None).  True = consumed: routing
    stops (blocking, E2EE policy bounce...).  Hot path: keep handlers cheap.
``stanza_in(sender_jid, to, stanza) -> bool``
    a message/presence/iq about to be delivered to a local account ``to``
    (bare or full).  True = consumed (e.g. the recipient blocks the sender).
``message_delivered(sender_jid, to_bare, stanza, targets)``
    after a message reached ``targets`` (list of sessions, may be empty when
    stored offline): carbons copies, archiving.
``message_undeliverable(router, sender, to, stanza) -> bool``
    a message for a local account with no available resource (offline storage
    claims it by returning True); unclaimed → service-unavailable.
``presence_out(session, stanza, to, typ) -> bool``
    a presence from a bound client, after ``from`` is stamped and ``to``
    checked (``to`` is None for broadcast presence, else a local JID).  True =
    consumed: the router's default (own-resource broadcast, directed presence,
    raw forwarding) is skipped.  The roster module claims subscription types
    (RFC 6121 §3), the presence module broadcast and probes (§4).
``initial_presence(session)``
    a session just sent its initial available presence (RFC 6121 §4.2):
    the moment to deliver stored offline messages (``session_bound`` is too
    early: the client is not yet ready to receive).
``message_stamp(sender_jid, to_bare, stanza, data) -> bytes``
    transform the exact bytes a message to local account ``to_bare`` will be
    delivered (or stored offline) as; each handler gets the previous one's
    output.  Used to insert ``<stanza-id/>`` (XEP-0359) by byte insertion.
    ``Router.message_bytes`` runs the chain; it must be idempotent per stanza.
``caps_changed(session, features, previous)``
    the XEP-0115 entity capabilities of a bound session became known or
    changed (``modules.caps``): ``features`` / ``previous`` are frozensets of
    disco#info feature vars (empty when unknown).  PEP uses it for
    ``+notify`` filtering and to send last published items (XEP-0163 §4.3).
``stream_features`` (list of bytes)
    extra ``<stream:features/>`` children offered after authentication, next
    to ``<bind/>`` (e.g. ``<csi xmlns='urn:xmpp:csi:0'/>``, XEP-0352).
``nonza`` (Clark tag) -> handler(session, element)
    top-level elements other than message/presence/iq sent by a bound client
    (e.g. XEP-0352 ``<active/>``); a tag without a handler closes the stream
    with ``unsupported-stanza-type`` (RFC 6120 §8.1).
``disco features / identities``
    static data declared by modules (``Module.features``, ``Module.identities``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Hooks", "PRIO_EARLY", "PRIO_NORMAL", "PRIO_LATE"]

PRIO_EARLY = 10
PRIO_NORMAL = 50
PRIO_LATE = 90

IqHandler = Callable[[Any, Any], Any]


@dataclass
class Hooks:
    iq_server: dict[tuple[str, str], IqHandler] = field(default_factory=dict)
    iq_account: dict[tuple[str, str], IqHandler] = field(default_factory=dict)
    #: account iq handlers other users may call too (e.g. disco on someone's bare JID)
    iq_account_public: set[tuple[str, str]] = field(default_factory=set)
    features: set[str] = field(default_factory=set)
    identities: set[tuple[str, str, str]] = field(default_factory=set)  # (category, type, name)
    #: disco#info of an account's bare JID (e.g. PEP: identity pubsub/pep)
    account_features: set[str] = field(default_factory=set)
    account_identities: set[tuple[str, str, str]] = field(default_factory=set)
    #: bind-phase stream features (bytes), see ``stream_features`` above
    stream_features: list[bytes] = field(default_factory=list)
    #: top-level elements after bind: Clark tag -> handler(session, element)
    nonza: dict[str, Callable[[Any, Any], None]] = field(default_factory=dict)
    _events: dict[str, list[tuple[int, Callable]]] = field(default_factory=dict)
    #: event -> handlers in priority order; rebuilt lazily after on() (hot path: no list per call)
    _cache: dict[str, tuple[Callable, ...]] = field(default_factory=dict, repr=False)

    EVENTS = frozenset({"session_bound", "session_closed", "message_undeliverable", "authorize_cert",
                        "stanza_out", "stanza_in", "message_delivered",
                        "initial_presence", "message_stamp", "presence_out", "caps_changed"})

    def on(self, event: str, handler: Callable, priority: int = PRIO_NORMAL) -> None:
        if event not in self.EVENTS:
            raise ValueError(f"unknown hook {event!r}")
        lst = self._events.setdefault(event, [])
        lst.append((priority, handler))
        lst.sort(key=lambda p: p[0])
        self._cache.pop(event, None)

    def handlers(self, event: str) -> tuple[Callable, ...]:
        cached = self._cache.get(event)
        if cached is None:
            cached = self._cache[event] = tuple(h for _, h in self._events.get(event, ()))
        return cached

    def iq(self, namespace: str, *, get: IqHandler | None = None, set: IqHandler | None = None,
           account: bool = False, public: bool = False) -> None:
        table = self.iq_account if account else self.iq_server
        for typ, h in (("get", get), ("set", set)):
            if h is not None:
                if (namespace, typ) in table:
                    raise ValueError(f"two handlers for iq {typ} {namespace}")
                table[(namespace, typ)] = h
                if account and public:
                    self.iq_account_public.add((namespace, typ))
