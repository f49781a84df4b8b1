"""Built-in modules, on the same hook API a third-party module uses."""

from .base import Module
from .disco import Disco
from .ping import Ping
from .version import Version

#: modules every server loads, in setup order
BUILTIN: tuple[type[Module], ...] = (Disco, Ping, Version)

__all__ = ["Module", "BUILTIN"]
