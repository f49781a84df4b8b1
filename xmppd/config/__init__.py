"""xmppd configuration: TOML schema (frozen dataclasses) and loader.

    from xmppd.config import load_config, ConfigError
    config = load_config("conf/xmppd.example.toml")

Every error is a :class:`ConfigError` naming the dotted TOML key path.
``conf/xmppd.example.toml`` documents every key (a test enforces it).
"""

from .collect import ConfigErrors
from .loader import default_config, load_config, parse_config
from .schema import (
    AuditConfig,
    AuthConfig,
    C2SListener,
    CommonNameConfig,
    Config,
    ConfigError,
    GeneralConfig,
    PasswordConfig,
    StorageConfig,
    TLSConfig,
    iter_schema_keys,
)

__all__ = [
    "AuditConfig",
    "AuthConfig",
    "C2SListener",
    "CommonNameConfig",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "GeneralConfig",
    "PasswordConfig",
    "StorageConfig",
    "TLSConfig",
    "default_config",
    "iter_schema_keys",
    "load_config",
    "parse_config",
]
