"""Cluster layer: the bus interface (bus.py), the session directory, and the NATS implementation.

Modules and the router only see :class:`~xmppd.cluster.bus.Bus`; a single
process runs :class:`~xmppd.cluster.bus.LocalBus`.  ``nats_bus`` is imported
only when ``[cluster]`` is configured (nats-py is needed only then).
"""

from .bus import Bus, Delivery, LocalBus
from .directory import Entry, SessionDirectory

__all__ = ["Bus", "Delivery", "LocalBus", "Entry", "SessionDirectory"]
