"""Built-in modules, on the same hook API a third-party module uses."""

from .base import Module
from .blocking import Blocking
from .caps import Caps
from .disco import Disco
from .e2ee_policy import E2EEPolicy
from .ping import Ping
from .vcard import VCard
from .csi import Csi
from .carbons import Carbons
from .offline import Offline
from .pep import Pep
from .presence import PresenceModule
from .private import Private
from .bookmarks import Bookmarks
from .roster import RosterModule
from .mam import Mam
from .muc import Muc
from .saslcert import SaslCert
from .session import LegacySession
from .sm import StreamManagement
from .version import Version

#: modules every server loads, in setup order
BUILTIN: tuple[type[Module], ...] = (Disco, Ping, Version, LegacySession, SaslCert, E2EEPolicy, Offline,
                                      RosterModule, PresenceModule, Blocking, Carbons, Mam, Csi,
                                      StreamManagement, VCard, Caps, Pep, Private, Bookmarks, Muc)

__all__ = ["Module", "BUILTIN", "enabled_modules"]


def enabled_modules(config) -> list[tuple[type[Module], dict]]:
    """(class, options) for every built-in module not disabled with ``enabled = false``;
    raises ConfigError for bad ``[modules.<name>]`` keys (also used by check-config)."""
    from .base import parse_module_options

    out = []
    for cls in BUILTIN:
        raw = config.modules.options_for(cls.name)
        parse_module_options(cls, raw)
        if raw.get("enabled", True):
            out.append((cls, raw))
    return out
