"""Base class for modules: everything past RFC 6120 core plugs in here."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..server import Server

__all__ = ["Module"]


class Module:
    name: ClassVar[str] = ""
    #: XEPs implemented, as (number, version/notes) — listed in docs and logs
    xeps: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: disco#info features this module adds to the server
    features: ClassVar[tuple[str, ...]] = ()

    def __init__(self, server: "Server") -> None:
        self.server = server

    def setup(self) -> None:
        """Register hooks on ``self.server.hooks``."""

    async def stop(self) -> None:
        """Release resources."""
