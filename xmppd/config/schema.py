"""The xmppd configuration schema: frozen dataclasses that *are* the schema.

Rules of this file:

* Every TOML key is declared exactly once, as a dataclass field carrying a
  :class:`Spec` (``option(...)``, ``table(...)``, ``table_array(...)``,
  ``table_map(...)``).  The loader (:mod:`xmppd.config.loader`) walks these
  specs generically; nothing else knows the key names.  A section owned by a
  future module is declared the same way and composed into :class:`Config`.
* Defaults are written as *TOML values* and go through the same converter as
  user input, so a default can never be invalid and paths resolve the same way.
* Key names follow MongooseIM (``listen.c2s``, ``tls.verify_mode``,
  ``auth.methods``, ``sasl_external``...) so admins can port configs; the one
  MongooseIM alias we accept is ``rdbms`` for ``sql``.
* Field order is build order: a *derived* default (``default_server_domain``,
  ``storage.url``, ``audit.file``) may only depend on fields built before it.
* Secrets (``tls.password``, the password in ``storage.url``, secret-looking
  keys of the per-method auth tables) never appear in ``repr``.

Objects here are built only by the loader; dataclass fields are keyword-only
and have no Python defaults on purpose (the TOML default lives in the Spec).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

__all__ = [
    "ConfigError",
    "Config",
    "GeneralConfig",
    "C2SListener",
    "TLSConfig",
    "AuthConfig",
    "CommonNameConfig",
    "PasswordConfig",
    "StorageConfig",
    "AuditConfig",
    "ModulesConfig",
    "MODULE_NAMES",
    "iter_schema_keys",
    "LOGLEVELS",
    "TLS_MODES",
    "VERIFY_MODES",
    "TLS_VERSIONS",
    "OCSP_MODES",
    "AUTH_METHODS",
    "AUTH_METHOD_ALIASES",
    "SASL_MECHANISMS",
    "SASL_EXTERNAL_STRATEGIES",
    "PASSWORD_HASHES",
    "STORAGE_SCHEMES",
]


class ConfigError(Exception):
    """A configuration problem; ``key`` is the dotted TOML path.

    Array-of-tables elements are indexed from 0: ``listen.c2s[1].tls.mode`` is
    the ``tls.mode`` of the second ``[[listen.c2s]]``.  For a TOML syntax error
    or an unreadable file, ``key`` is the file path.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


# --------------------------------------------------------------------------
# Allowed values
# --------------------------------------------------------------------------

LOGLEVELS = ("debug", "info", "warning", "error")
TLS_MODES = ("starttls", "starttls_required", "tls")
VERIFY_MODES = ("peer", "selfsigned_peer", "none")
TLS_VERSIONS = ("tlsv1.2", "tlsv1.3")
OCSP_MODES = ("off", "soft", "hard")
AUTH_METHODS = ("pki", "sql", "http", "ldap")
AUTH_METHOD_ALIASES: Mapping[str, str] = {"rdbms": "sql"}  # MongooseIM name -> ours
SASL_MECHANISMS = (
    "external",
    "scram_sha1",
    "scram_sha256",
    "scram_sha512",
    "scram_sha1_plus",
    "scram_sha256_plus",
    "scram_sha512_plus",
    "plain",
)
SASL_EXTERNAL_STRATEGIES = ("standard", "common_name", "auth_id")
PASSWORD_HASHES = ("sha1", "sha256", "sha512")
STORAGE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")

# --------------------------------------------------------------------------
# Value kinds: each converts one TOML value (already parsed) into Python
# --------------------------------------------------------------------------


def toml_type_name(value: Any) -> str:
    """The TOML name of a parsed value's type (for error messages)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return "date/time"
    return type(value).__name__


def _fail_type(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(key, f"expected {expected}, got {toml_type_name(value)}")


class Kind:
    """Converts and validates one TOML value.  ``noun`` names the expected type."""

    noun: ClassVar[str] = "value"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Str(Kind):
    """A string, optionally an enum (``choices``, with ``aliases`` normalised
    to their canonical value), ``refuse``d values with a tailored message, or a
    ``check`` that returns the normalised value or raises ``ValueError``."""

    choices: tuple[str, ...] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    refuse: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[str], str] | None = None
    non_empty: bool = False

    noun: ClassVar[str] = "string"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> str:
        if not isinstance(value, str):
            raise _fail_type(key, "string", value)
        if value in self.refuse:
            raise ConfigError(key, self.refuse[value])
        value = self.aliases.get(value, value)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(self.choices)
            extra = "".join(f"; {a!r} is accepted as an alias of {c!r}" for a, c in self.aliases.items())
            raise ConfigError(key, f"invalid value {value!r}; allowed values: {allowed}{extra}")
        if self.non_empty and not value:
            raise ConfigError(key, "must not be empty")
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as exc:
                raise ConfigError(key, str(exc)) from None
        return value


@dataclass(frozen=True, slots=True)
class Int(Kind):
    lo: int | None = None
    hi: int | None = None

    noun: ClassVar[str] = "integer"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> int:
        # bool is a subclass of int in Python, but `true` is not a number in TOML.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail_type(key, "integer", value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ConfigError(key, f"{value} is out of range; {_range_text(self.lo, self.hi)}")
        return value


def _range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"must be between {lo} and {hi}"
    if lo is not None:
        return f"must be >= {lo}"
    return f"must be <= {hi}"


@dataclass(frozen=True, slots=True)
class Float(Kind):
    """A finite number strictly greater than ``gt``; integers are accepted.
    ``zero_off``: 0 is also accepted (it means "disabled")."""

    gt: float = 0.0
    zero_off: bool = False

    noun: ClassVar[str] = "number"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail_type(key, "number (float or integer)", value)
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(key, f"{value} is out of range; must be a finite number")
        if self.zero_off and value == 0:
            return value
        if value <= self.gt:
            extra = " (or 0 to disable)" if self.zero_off else ""
            raise ConfigError(key, f"{value} is out of range; must be greater than {self.gt:g}{extra}")
        return value


@dataclass(frozen=True, slots=True)
class Bool(Kind):
    noun: ClassVar[str] = "boolean"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> bool:
        if not isinstance(value, bool):
            raise _fail_type(key, "boolean (true or false)", value)
        return value


@dataclass(frozen=True, slots=True)
class PathKind(Kind):
    """A file-system path; relative paths are made absolute against the current
    working directory at load time (``~`` is expanded)."""

    noun: ClassVar[str] = "path"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> Path:
        if isinstance(value, Path):  # derived defaults are computed as Paths
            return _absolute(value)
        if not isinstance(value, str):
            raise _fail_type(key, "string (a file path)", value)
        if not value:
            raise ConfigError(key, "must not be empty")
        if "\x00" in value:
            raise ConfigError(key, "must not contain NUL characters")
        return _absolute(Path(value))


def _absolute(path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else Path.cwd() / path


@dataclass(frozen=True, slots=True)
class ListOf(Kind):
    """A TOML array, converted to a tuple."""

    item: Kind
    non_empty: bool = False
    unique: bool = False

    noun: ClassVar[str] = "array"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _fail_type(key, f"array of {self.item.noun}s", value)
        if self.non_empty and not value:
            raise ConfigError(key, "must not be empty")
        out: list[Any] = []
        for i, raw in enumerate(value):
            try:
                item = self.item.build(raw, key, root)
            except ConfigError as exc:
                raise ConfigError(key, f"item {i}: {exc.message}") from None
            if self.unique and item in out:
                via = f" ({raw!r} is an alias of {item!r})" if raw != item else ""
                raise ConfigError(key, f"item {i}: duplicate value {item!r}{via}")
            out.append(item)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class LevelMap(Kind):
    """A table of logger name -> level (one of LOGLEVELS)."""

    noun: ClassVar[str] = "table"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _fail_type(key, "table of logger name = level", value)
        out: dict[str, str] = {}
        for name, level in value.items():
            if isinstance(level, dict):  # unquoted dotted key: xmppd.router = "debug"
                out.update(self.build({f"{name}.{k}": v for k, v in level.items()}, key, root))
                continue
            if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", name):
                raise ConfigError(f"{key}.{name}", "not a logger name (dotted identifiers, e.g. \"xmppd.router\")")
            out[name] = Str(choices=LOGLEVELS).build(level, f"{key}.{name}", root)
        return out


@dataclass(frozen=True, slots=True)
class Table(Kind):
    """A sub-table (``[a.b]`` or dotted keys ``b.x = ...``) built into ``section``."""

    section: type

    noun: ClassVar[str] = "table"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> Any:
        if not isinstance(value, dict):
            raise _fail_type(key, "table", value)
        return build_section(self.section, value, key, root)


@dataclass(frozen=True, slots=True)
class TableArray(Kind):
    """An array of tables (``[[listen.c2s]]``), each built into ``section``."""

    section: type

    noun: ClassVar[str] = "array of tables"

    def build(self, value: Any, key: str, root: dict[str, Any]) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _fail_type(key, f"array of tables ([[{key}]])", value)
        out = []
        for i, item in enumerate(value):
            ikey = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise _fail_type(ikey, "table", item)
            out.append(build_section(self.section, item, ikey, root))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class TableMap(Kind):
    """Free-form option tables kept as plain dicts, keyed by normalised name.

    Used for ``[auth.<method>]``: each auth method validates its own keys when
    it is constructed; here we only check that the name is known and the value
    is a table.  The loader hands this kind the dict of the claimed names that
    are present.
    """

    names: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)

    noun: ClassVar[str] = "table"

    def claims(self) -> tuple[str, ...]:
        return self.names + tuple(self.aliases)

    def build(self, value: Any, key: str, root: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        origin: dict[str, str] = {}
        prefix = f"{key}." if key else ""
        for name, table in value.items():
            tkey = prefix + name
            if not isinstance(table, dict):
                raise _fail_type(tkey, "table", table)
            canon = self.aliases.get(name, name)
            if canon in out:
                raise ConfigError(
                    tkey,
                    f"[{prefix}{name}] and [{prefix}{origin[canon]}] are the same table "
                    f"({name!r} is an alias of {canon!r}); keep one",
                )
            out[canon] = _deep_copy(table)
            origin[canon] = name
        return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# --------------------------------------------------------------------------
# Spec: one per TOML key, attached to a dataclass field
# --------------------------------------------------------------------------

_META = "xmppd.config"
REQUIRED: Any = object()
DERIVED: Any = object()


@dataclass(frozen=True, slots=True)
class Spec:
    kind: Kind
    toml: str | None  # dotted name relative to the section; None for TableMap
    default: Any = None  # a TOML value, None (absent), REQUIRED or DERIVED
    derive: Callable[[dict[str, Any], dict[str, Any]], Any] | None = None
    secret: bool = False
    redact: Callable[[Any], Any] | None = None


def option(kind: Kind, default: Any = None, *, toml: str | None = None, derive=None,
           secret: bool = False, redact=None) -> Any:
    """Declare a TOML key.  ``toml`` defaults to the field name."""
    spec = Spec(kind, toml, default, derive, secret, redact)
    return field(metadata={_META: spec})


def table(section: type, *, toml: str | None = None) -> Any:
    return option(Table(section), {}, toml=toml)


def table_array(section: type, *, toml: str | None = None) -> Any:
    return option(TableArray(section), [], toml=toml)


def table_map(names: tuple[str, ...], aliases: Mapping[str, str] | None = None, *, redact=None) -> Any:
    return option(TableMap(names, dict(aliases or {})), {}, redact=redact)


def _specs(cls: type) -> Iterator[tuple[dataclasses.Field, Spec]]:
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_META)
        if spec is not None:
            yield f, spec


def _toml_name(f: dataclasses.Field, spec: Spec) -> str:
    return spec.toml or f.name


class _Section:
    """Base of every config section: a ``repr`` that never shows secrets."""

    __slots__ = ()

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            spec = f.metadata.get(_META)
            if spec is not None and spec.secret and value is not None:
                text = "'***'"
            elif spec is not None and spec.redact is not None:
                text = repr(spec.redact(value))
            else:
                text = repr(value)
            parts.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(parts)})"


def section(cls: type) -> type:
    """Make ``cls`` a config section: frozen, slotted, keyword-only dataclass."""
    return dataclass(frozen=True, slots=True, kw_only=True, repr=False)(cls)


# --------------------------------------------------------------------------
# Building (generic; used by the loader)
# --------------------------------------------------------------------------

_MISSING: Any = object()

# Keys people bring from MongooseIM (or mistype) that we reject with a hint.
_HINTS: Mapping[str, str] = {
    "max_stanza_size": "max_stanza_bytes",
    "verify_peer": "verify_mode",
    "method": "methods",
    "host": "hosts",
    "dhfile": None,  # type: ignore[dict-item]
    "host_types": None,  # type: ignore[dict-item]
    "shaper": None,  # type: ignore[dict-item]
    "access": None,  # type: ignore[dict-item]
}


def _claim_tree(cls: type) -> dict[str, Any]:
    """Map of the keys a section's table may contain: name -> field, or a
    nested dict for intermediate tables of a dotted ``toml`` name."""
    tree: dict[str, Any] = {}
    for f, spec in _specs(cls):
        if isinstance(spec.kind, TableMap):
            for name in spec.kind.claims():
                tree[name] = f
            continue
        *parents, leaf = _toml_name(f, spec).split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = f
    return tree


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_unknown(data: dict[str, Any], tree: dict[str, Any], prefix: str) -> None:
    for name, value in data.items():
        key = _join(prefix, name)
        if name not in tree:
            message = "unknown key"
            if name in _HINTS:
                hint = _HINTS[name]
                message += f"; did you mean {hint!r}?" if hint else " (MongooseIM option not supported by xmppd)"
            else:
                import difflib

                close = difflib.get_close_matches(name, list(tree), n=1)
                if close:
                    message += f"; did you mean {close[0]!r}?"
            raise ConfigError(key, message)
        node = tree[name]
        if isinstance(node, dict):  # intermediate table such as `listen`
            if not isinstance(value, dict):
                raise _fail_type(key, "table", value)
            _check_unknown(value, node, key)


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def build_section(cls: type, data: dict[str, Any], prefix: str, root: dict[str, Any] | None = None) -> Any:
    """Build section ``cls`` from its TOML table ``data`` found at ``prefix``.

    ``root`` collects the values of the top-level :class:`Config` as they are
    built, for derived defaults and cross-section checks.  Raises
    :class:`ConfigError` naming the full key path.
    """
    _check_unknown(data, _claim_tree(cls), prefix)
    values: dict[str, Any] = {}
    if root is None:
        root = values
    derived = []
    for f, spec in _specs(cls):
        if isinstance(spec.kind, TableMap):
            claimed = {n: data[n] for n in data if n in spec.kind.claims()}
            values[f.name] = spec.kind.build(claimed, prefix, root)
            continue
        key = _join(prefix, _toml_name(f, spec))
        raw = _lookup(data, _toml_name(f, spec))
        if raw is _MISSING:
            if spec.default is REQUIRED:
                raise ConfigError(key, "required key is missing")
            if spec.default is DERIVED:
                derived.append((f, spec, key))
                continue
            if spec.default is None:
                values[f.name] = None
                continue
            raw = spec.default
        values[f.name] = spec.kind.build(raw, key, root)
    for f, spec, key in derived:
        assert spec.derive is not None, f.name
        values[f.name] = spec.kind.build(spec.derive(root, values), key, root)
    validate = getattr(cls, "_validate", None)
    if validate is not None:
        validate(values, prefix, root)
    return cls(**values)


def iter_keys(cls: type, prefix: str = "") -> Iterator[str]:
    for f, spec in _specs(cls):
        if isinstance(spec.kind, TableMap):
            continue  # free-form tables: their owners document their keys
        key = _join(prefix, _toml_name(f, spec))
        if isinstance(spec.kind, (Table, TableArray)):
            yield from iter_keys(spec.kind.section, key)
        else:
            yield key


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_domain(value: str) -> str:
    """A lower-case DNS domain (IDN labels allowed in U-label form)."""
    if value != value.lower():
        raise ValueError(f"{value!r} is not a valid domain: must be lower-case")
    if not value or len(value) > 253 or value.endswith("."):
        raise ValueError(f"{value!r} is not a valid domain")
    for label in value.split("."):
        if label.isascii():
            ok = bool(_LDH_LABEL.match(label))
        else:
            try:
                ok = 0 < len(label.encode("idna")) <= 63
            except UnicodeError:
                ok = False
        if not ok:
            raise ValueError(f"{value!r} is not a valid domain (bad label {label!r})")
    return value


def check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def check_storage_url(value: str) -> str:
    """A SQLAlchemy async URL with an accepted scheme; a relative SQLite
    database path is made absolute against the current working directory."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"not a valid SQLAlchemy URL ({exc})") from None
    if url.drivername not in STORAGE_SCHEMES:
        hint = ""
        if url.drivername.split("+")[0] in ("postgresql", "postgres"):
            hint = "; use postgresql+asyncpg://"
        elif url.drivername.split("+")[0] == "sqlite":
            hint = "; use sqlite+aiosqlite:///"
        allowed = ", ".join(STORAGE_SCHEMES)
        raise ValueError(f"unsupported scheme {url.drivername!r}; allowed: {allowed}{hint}")
    if url.drivername.startswith("sqlite"):
        db = url.database
        if db and db != ":memory:" and not db.startswith("file:"):
            path = Path(db).expanduser()
            if not path.is_absolute():
                return url.set(database=str(Path.cwd() / path)).render_as_string(hide_password=False)
    return value


def check_ocsp_url(value: str) -> str:
    """An http(s) URL of an OCSP responder, or "" (use the certificate's AIA)."""
    if not value:
        return value
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def redact_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        from sqlalchemy.engine import make_url

        return make_url(value).render_as_string(hide_password=True)
    except Exception:  # never let repr leak a malformed URL
        return "***"


_SECRET_WORDS = ("password", "passwd", "secret", "token", "basic_auth", "credential", "api_key", "private")


def redact_options(value: Any) -> Any:
    """Copy of nested option tables with secret-looking values replaced."""
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in _SECRET_WORDS) else redact_options(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_options(v) for v in value]
    return value


_AUTH_METHOD = Str(choices=AUTH_METHODS, aliases=AUTH_METHOD_ALIASES)

# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


@section
class GeneralConfig(_Section):
    """``[general]``"""

    hosts: tuple[str, ...] = option(ListOf(Str(check=check_domain), non_empty=True, unique=True), ["localhost"])
    default_server_domain: str = option(Str(check=check_domain), DERIVED, derive=lambda root, sec: sec["hosts"][0])
    loglevel: str = option(Str(choices=LOGLEVELS), "info")
    #: per-logger levels, {"xmppd.router" = "debug", "aiosqlite" = "info"} (xmppd/logsetup.py)
    loglevels: dict[str, str] = option(LevelMap(), {})
    data_dir: Path = option(PathKind(), "var")
    #: seconds between checks of every listener's TLS files (certfile, keyfile,
    #: cacertfile, crl_files); a change triggers a reload; 0 = no watcher
    reload_check_interval_s: float = option(Float(0, zero_off=True), 5.0)

    @staticmethod
    def _validate(values: dict[str, Any], prefix: str, root: dict[str, Any]) -> None:
        if values["default_server_domain"] not in values["hosts"]:
            raise ConfigError(
                _join(prefix, "default_server_domain"),
                f"{values['default_server_domain']!r} is not one of general.hosts",
            )


@section
class TLSConfig(_Section):
    """``tls.*`` of a listener (MongooseIM key names)."""

    mode: str = option(Str(choices=TLS_MODES), "starttls")
    certfile: Path = option(PathKind(), REQUIRED)
    keyfile: Path = option(PathKind(), REQUIRED)
    password: str | None = option(Str(), None, secret=True)
    cacertfile: Path | None = option(PathKind(), None)
    verify_mode: str = option(Str(choices=VERIFY_MODES), "peer")
    disconnect_on_failure: bool = option(Bool(), True)
    crl_files: tuple[Path, ...] = option(ListOf(PathKind()), [])
    versions: tuple[str, ...] = option(ListOf(Str(choices=TLS_VERSIONS), non_empty=True, unique=True),
                                       ["tlsv1.2", "tlsv1.3"])
    ciphers: str | None = option(Str(non_empty=True), None)
    ocsp: str = option(Str(choices=OCSP_MODES), "off")
    ocsp_timeout_s: float = option(Float(0), 3.0)
    ocsp_url: str = option(Str(check=check_ocsp_url), "")  # "" = the certificate's AIA URL
    ocsp_cache_s: float = option(Float(0, zero_off=True), 300.0)

    @property
    def direct(self) -> bool:
        """True for direct TLS (XEP-0368, port 5223): TLS before the stream opens."""
        return self.mode == "tls"


@section
class C2SListener(_Section):
    """One ``[[listen.c2s]]`` table."""

    port: int = option(Int(0, 65535), REQUIRED)
    ip_address: str = option(Str(check=check_ip), "::")  # dual-stack: IPv6 and IPv4
    backlog: int = option(Int(1), 1024)
    max_stanza_bytes: int = option(Int(4096), 262144)
    max_stanza_bytes_preauth: int = option(Int(1024), 16384)
    max_xml_depth: int = option(Int(4, 256), 32)
    negotiation_timeout_s: float = option(Float(0), 30.0)
    idle_timeout_s: float = option(Float(0), 900.0)
    stanza_timeout_s: float = option(Float(0), 60.0)
    max_auth_attempts: int = option(Int(1, 20), 3)
    max_connections: int = option(Int(1), 100000)
    #: connections one client address (IPv6: its /64) may hold before authenticating; 0 = no limit
    max_preauth_connections_per_ip: int = option(Int(0), 100)
    allowed_auth_methods: tuple[str, ...] = option(ListOf(_AUTH_METHOD, unique=True), [])
    tls: TLSConfig = table(TLSConfig)

    def effective_auth_methods(self, auth: "AuthConfig") -> tuple[str, ...]:
        """Auth methods usable on this listener, in ``auth.methods`` order."""
        if not self.allowed_auth_methods:
            return auth.methods
        return tuple(m for m in auth.methods if m in self.allowed_auth_methods)

    @staticmethod
    def _validate(values: dict[str, Any], prefix: str, root: dict[str, Any]) -> None:
        if values["max_stanza_bytes_preauth"] > values["max_stanza_bytes"]:
            raise ConfigError(
                _join(prefix, "max_stanza_bytes_preauth"),
                f"{values['max_stanza_bytes_preauth']} must be <= max_stanza_bytes "
                f"({values['max_stanza_bytes']})",
            )


@section
class CommonNameConfig(_Section):
    """``auth.sasl_external_common_name.*``: how a certificate CN maps to a
    username when ``common_name`` is in ``auth.sasl_external`` (the CN must
    start with ``prefix`` and end with ``suffix``; both are stripped)."""

    prefix: str = option(Str(), "")
    suffix: str = option(Str(), "")


@section
class PasswordConfig(_Section):
    """``auth.password.*``"""

    format: str = option(
        Str(
            choices=("scram",),
            refuse={
                "plain": "plaintext password storage is refused; use format = \"scram\" "
                "(passwords are stored as salted SCRAM keys, RFC 5802)",
            },
        ),
        "scram",
    )
    hash: tuple[str, ...] = option(ListOf(Str(choices=PASSWORD_HASHES), non_empty=True, unique=True),
                                   ["sha1", "sha256", "sha512"])
    scram_iterations: int = option(Int(4096), 10000)


@section
class AuthConfig(_Section):
    """``[auth]``"""

    methods: tuple[str, ...] = option(ListOf(_AUTH_METHOD, unique=True), ["pki", "sql"])
    sasl_mechanisms: tuple[str, ...] = option(
        ListOf(Str(choices=SASL_MECHANISMS), non_empty=True, unique=True),
        ["external", "scram_sha512_plus", "scram_sha256_plus", "scram_sha1_plus",
         "scram_sha512", "scram_sha256", "scram_sha1"],
    )
    sasl_external: tuple[str, ...] = option(
        ListOf(Str(choices=SASL_EXTERNAL_STRATEGIES), non_empty=True, unique=True), ["standard"])
    sasl_external_common_name: CommonNameConfig = table(CommonNameConfig)
    #: per-account client-certificate registry (XEP-0257) for EXTERNAL logins:
    #: "always" | "ifpresent" | "never"; accounts may override it (`xmppd certs policy`)
    cert_registry: str = option(Str(choices=("always", "ifpresent", "never")), "ifpresent")
    password: PasswordConfig = table(PasswordConfig)
    # [auth.pki], [auth.sql] (alias [auth.rdbms]), [auth.http], [auth.ldap]
    method_options: dict[str, dict[str, Any]] = table_map(AUTH_METHODS, AUTH_METHOD_ALIASES,
                                                          redact=redact_options)

    def options_for(self, method: str) -> dict[str, Any]:
        """The ``[auth.<method>]`` table (``{}`` when absent)."""
        return self.method_options.get(AUTH_METHOD_ALIASES.get(method, method), {})


#: module names accepted as [modules.<name>] tables; MongooseIM's mod_* names are aliases
MODULE_NAMES = ("disco", "ping", "version", "session", "roster", "presence", "blocking", "offline", "carbons", "mam",
                "vcard", "caps", "csi", "pep", "stream_management", "e2ee_policy", "saslcert",
                "muc", "private", "bookmarks")
MODULE_ALIASES: Mapping[str, str] = {
    "mod_disco": "disco", "mod_ping": "ping", "mod_version": "version", "mod_roster": "roster",
    "mod_presence": "presence", "mod_blocking": "blocking", "mod_offline": "offline",
    "mod_carboncopy": "carbons", "mod_mam": "mam", "mod_vcard": "vcard", "mod_caps": "caps",
    "mod_csi": "csi", "mod_pep": "pep", "mod_stream_management": "stream_management",
    "mod_e2ee_policy": "e2ee_policy", "mod_saslcert": "saslcert", "mod_muc": "muc",
    "mod_private": "private", "mod_bookmarks": "bookmarks",
}


@section
class ModulesConfig(_Section):
    """``[modules.<name>]``: one table per module; each module validates its own keys
    (``xmppd.modules.base.Module.options``); ``enabled = false`` turns a module off."""

    options: dict[str, dict[str, Any]] = table_map(MODULE_NAMES, MODULE_ALIASES, redact=redact_options)

    def options_for(self, name: str) -> dict[str, Any]:
        return self.options.get(MODULE_ALIASES.get(name, name), {})


@section
class StorageConfig(_Section):
    """``[storage]``"""

    url: str = option(
        Str(check=check_storage_url),
        DERIVED,
        derive=lambda root, sec: f"sqlite+aiosqlite:///{root['general'].data_dir / 'xmppd.sqlite'}",
        redact=redact_url,
    )
    pool_size: int = option(Int(1, 1000), 10)
    echo: bool = option(Bool(), False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@section
class AuditConfig(_Section):
    """``[audit]``"""

    enabled: bool = option(Bool(), True)
    file: Path = option(PathKind(), DERIVED, derive=lambda root, sec: root["general"].data_dir / "audit.jsonl")
    max_bytes: int = option(Int(4096), 50 * 1024 * 1024)
    keep: int = option(Int(0, 1000), 10)
    retention_days: int = option(Int(0), 90)


@section
class Config(_Section):
    """The whole configuration.  ``source`` is the file it came from (None for
    :func:`~xmppd.config.default_config` and :func:`parse_config` without one)."""

    general: GeneralConfig = table(GeneralConfig)
    listeners: tuple[C2SListener, ...] = table_array(C2SListener, toml="listen.c2s")
    auth: AuthConfig = table(AuthConfig)
    modules: ModulesConfig = table(ModulesConfig)
    storage: StorageConfig = table(StorageConfig)
    audit: AuditConfig = table(AuditConfig)
    source: Path | None = None
    #: one line per MongooseIM key read but not implemented (xmppd.config.mongooseim)
    warnings: tuple[str, ...] = ()

    @staticmethod
    def _validate(values: dict[str, Any], prefix: str, root: dict[str, Any]) -> None:
        methods = values["auth"].methods
        for i, listener in enumerate(values["listeners"]):
            for m in listener.allowed_auth_methods:
                if m not in methods:
                    raise ConfigError(
                        f"listen.c2s[{i}].allowed_auth_methods",
                        f"{m!r} is not enabled in auth.methods ({', '.join(methods) or 'empty'})",
                    )


def iter_schema_keys() -> Iterator[str]:
    """Every leaf TOML key path of the schema, without array indexes
    (``listen.c2s.tls.verify_mode``).  Free-form ``[auth.<method>]`` tables are
    documented by their owners and not listed."""
    return iter_keys(Config)
