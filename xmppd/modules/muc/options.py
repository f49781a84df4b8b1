"""``[modules.muc]`` options: names, types, defaults (documented in conf/xmppd.example.toml) and checks."""

from __future__ import annotations

from ...config import ConfigError
from .policy import LEVELS

__all__ = ["OPTIONS_SPEC", "check_options"]

#: name -> (type, default)
OPTIONS_SPEC = {
    "host": (str, "conference.@HOST@"),  # the service domain; @HOST@ = each served domain
    "max_rooms": (int, 10_000),  # rooms on the service
    "max_rooms_per_owner": (int, 100),
    "max_occupants": (int, 200),  # per room; the ceiling of muc#roomconfig_maxusers
    "max_affiliations": (int, 1000),  # per room
    "history_size": (int, 20),  # messages kept per room for the history on joining
    "max_config_bytes": (int, 8192),  # stored configuration (JSON) of one room
    "max_joins_per_user": (int, 100),  # rooms one session is in at once
    "message_rate": (float, 5.0),  # messages/s per occupant (token bucket; 0 = unlimited)
    "message_burst": (int, 20),
    "archive_default": (bool, True),  # new rooms are archived (XEP-0313)
    "e2ee_policy": (str, "none"),  # the encryption floor of every room
    "create_encrypted_only": (bool, False),  # new rooms start, and stay, at "require"
}


def check_options(options) -> None:
    p = "modules.muc"
    if "@HOST@" not in options["host"] and options["host"].count(".") < 1:
        raise ConfigError(f"{p}.host", "expected a domain such as conference.@HOST@")
    for key in ("max_rooms", "max_rooms_per_owner", "max_occupants", "max_affiliations",
                "max_joins_per_user", "message_burst"):
        if options[key] < 1:
            raise ConfigError(f"{p}.{key}", "must be >= 1")
    if options["history_size"] < 0:
        raise ConfigError(f"{p}.history_size", "must be >= 0")
    if options["max_config_bytes"] < 512:
        raise ConfigError(f"{p}.max_config_bytes", "must be >= 512")
    if options["message_rate"] < 0:
        raise ConfigError(f"{p}.message_rate", "must be >= 0 (0 = unlimited)")
    if options["e2ee_policy"] not in LEVELS:
        raise ConfigError(f"{p}.e2ee_policy", f"expected one of {', '.join(LEVELS)}")
