"""Multi-user chat (XEP-0045) as a module: see :mod:`xmppd.modules.muc.service`.

Parts: ``service`` (the Module: hooks, join/leave/presence), ``room`` (pure
state), ``presence`` (status codes, presence bytes), ``messages`` (groupchat,
private messages, subject, occupant iq), ``admin`` (roles, affiliations,
configuration, destroy), ``invites``, ``archive`` (XEP-0313 on rooms),
``policy`` (per-room E2EE policy), ``disco``, ``register`` (§7.10), ``voice``
(§7.13), ``options``.
"""

from .service import Muc

__all__ = ["Muc"]
