"""Per-room end-to-end-encryption policy: ``none`` / ``warn`` / ``require``.

The levels and the message classification are those of
:mod:`xmppd.modules.e2ee_policy` (OMEMO both namespaces, OpenPGP, receipts,
chat states and markers always pass; a ``<body>`` without an encrypted payload
is plaintext).  Resolution for one room, the strictest wins:

1. the service floor ``[modules.muc] e2ee_policy`` (admin);
2. the floor of the service's parent domain in ``[modules.e2ee_policy] domains``
   when that domain is at ``require`` (a domain that requires E2EE for 1:1 also
   requires it in its rooms);
3. the room's creation floor (``create_encrypted_only``: rooms created while it is
   on start, and stay, at ``require``);
4. the owner's choice, room config field ``xmppd#e2ee_policy``.

The owner cannot choose a level below the floor (1-3): the config form is
refused with ``not-acceptable`` and a text naming the floor.  Under ``require``
a plaintext message to the room (groupchat or private) bounces to its sender
with ``policy-violation`` and :data:`ROOM_REQUIRE_TEXT`; under ``warn`` it is
delivered and the sender is told once per room and session.
"""

from __future__ import annotations

from ..e2ee_policy import LEVELS, is_plaintext

__all__ = ["LEVELS", "CONFIG_VAR", "ROOMINFO_VAR", "ROOM_REQUIRE_TEXT", "RoomPolicy", "stricter", "is_plaintext"]

#: muc#roomconfig field the owner sets, and the muc#roominfo field (XEP-0128) clients read
CONFIG_VAR = "xmppd#e2ee_policy"
ROOMINFO_VAR = "xmppd#e2ee_policy"
ROOM_REQUIRE_TEXT = ("this room requires end-to-end encryption (OMEMO or OpenPGP); "
                     "the plaintext message was not delivered")
ROOM_WARN_TEXT = ("Your message to {room} was not end-to-end encrypted: this room asks for OMEMO or "
                  "OpenPGP. It was delivered; you are told once per room and session.")
_RANK = {level: i for i, level in enumerate(LEVELS)}


def stricter(*levels: str) -> str:
    return max(levels, key=lambda lv: _RANK[lv])


class RoomPolicy:
    """Resolves a room's level; ``domain_level(domain) -> level`` comes from the e2ee_policy module."""

    def __init__(self, *, service_floor: str, parent_domain: str, domain_level=None) -> None:
        self.service_floor = service_floor
        self.parent_domain = parent_domain
        self._domain_level = domain_level

    def floor(self, room) -> tuple[str, str]:
        """(level, source): the lowest level the owner may choose."""
        level, source = self.service_floor, "service"
        if self._domain_level is not None and self._domain_level(self.parent_domain) == "require":
            level, source = "require", "domain"
        if _RANK[room.config.e2ee_floor] > _RANK[level]:
            level, source = room.config.e2ee_floor, "creation"
        return level, source

    def effective(self, room) -> str:
        return stricter(self.floor(room)[0], room.config.e2ee)

    def check_choice(self, room, level: str) -> str | None:
        """A reason text when the owner may not set ``level``, else None."""
        if level not in LEVELS:
            return f"{CONFIG_VAR} must be one of {', '.join(LEVELS)}"
        floor, source = self.floor(room)
        if _RANK[level] < _RANK[floor]:
            why = {"service": "this service", "domain": f"the domain {self.parent_domain}",
                   "creation": "this room was created encrypted-only"}[source]
            return f"{why} requires at least {floor!r}; the room cannot be set to {level!r}"
        return None

    def verdict(self, room, message) -> str:
        """``pass`` | ``warn`` | ``refuse`` for a message element sent to the room."""
        level = self.effective(room)
        if level == "none" or not is_plaintext(message):
            return "pass"
        return "refuse" if level == "require" else "warn"
