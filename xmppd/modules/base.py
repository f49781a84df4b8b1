"""Base class for modules: everything past RFC 6120 core plugs in here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ..config import ConfigError

if TYPE_CHECKING:
    from ..server import Server

__all__ = ["Module", "parse_module_options"]


class Module:
    name: ClassVar[str] = ""
    #: XEPs implemented, as (number, version/notes) — listed in docs and logs
    xeps: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: disco#info features this module adds to the server
    features: ClassVar[tuple[str, ...]] = ()
    #: ``[modules.<name>]`` keys: name -> (type or tuple of types, default)
    options_spec: ClassVar[dict[str, tuple[Any, Any]]] = {}

    def __init__(self, server: "Server", options: Mapping[str, Any] | None = None) -> None:
        self.server = server
        self.options = parse_module_options(type(self), options or {})

    def setup(self) -> None:
        """Register hooks on ``self.server.hooks``."""

    async def start(self) -> None:
        """Called once storage is ready, before listeners open."""

    def before_stop(self) -> None:
        """The server is stopping; client sessions are still open (last words to them)."""

    async def stop(self) -> None:
        """Release resources."""

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Checks beyond the types of ``options_spec`` (values inside a table or
        list, ranges); raise ConfigError naming the key.  Runs at config load."""


def parse_module_options(cls: type[Module], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``[modules.<name>]``; errors name the TOML key."""
    out = {k: default for k, (_, default) in cls.options_spec.items()}
    for key, value in raw.items():
        path = f"modules.{cls.name}.{key}"
        if key == "enabled":
            if not isinstance(value, bool):
                raise ConfigError(path, "expected boolean")
            continue
        if key not in cls.options_spec:
            raise ConfigError(path, "unknown key")
        types, _ = cls.options_spec[key]
        types = types if isinstance(types, tuple) else (types,)
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(path, f"expected {' or '.join(t.__name__ for t in types)}, got boolean")
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, types):
            raise ConfigError(path, f"expected {' or '.join(t.__name__ for t in types)}, "
                                    f"got {type(value).__name__}")
        out[key] = value
    cls.check_options(out)
    return out
