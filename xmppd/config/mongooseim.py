"""Read a MongooseIM ``mongooseim.toml`` as far as xmppd can.

:func:`translate` runs on the parsed TOML before the schema sees it.  For
every key that is not an xmppd key:

* a MongooseIM key that xmppd implements under another name or unit is
  *applied*: ``max_stanza_size`` -> ``max_stanza_bytes``, ``c2s_state_timeout``
  (ms) -> ``negotiation_timeout_s``, ``[outgoing_pools.rdbms.default]`` ->
  ``storage.url``, ``[outgoing_pools.http.auth]`` -> ``[auth.http]``,
  ``[outgoing_pools.ldap.default]`` -> ``[auth.ldap]``, ``mod_stream_management``
  ``resume_timeout``/``buffer_max``/``ack_freq``, ``mod_mam`` result limits,
  ``general.loglevel = "notice"`` -> ``"info"``, ``password.hash = ["sha"]`` ->
  ``"sha1"`` ...;
* a documented MongooseIM key that xmppd does not implement is removed, with
  one warning: ``MongooseIM key X: not supported by xmppd, ignored``;
* anything else is left in place, so the schema reports it as an unknown key
  (a typo stays an error, with its key path).

Inside a section xmppd does not implement at all (``[s2s]``, ``[[listen.http]]``,
``[[host_config]]``, ``[outgoing_pools.redis.*]``...) the keys are still checked
against MongooseIM's tables one level down, so a typo there is an error too;
the section as a whole gets one warning.  The tables are data, in
:mod:`xmppd.config.mongooseim_keys`.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Iterable
from urllib.parse import quote

from . import mongooseim_keys as M
from .schema import (
    AUTH_METHOD_ALIASES,
    AUTH_METHODS,
    LOGLEVELS,
    MODULE_ALIASES,
    MODULE_NAMES,
    PASSWORD_HASHES,
    SASL_MECHANISMS,
    AuthConfig,
    C2SListener,
    Config,
    ConfigError,
    GeneralConfig,
    StorageConfig,
    TLSConfig,
    _claim_tree,
)

__all__ = ["translate", "unsupported_message", "MODULE_RENAMES", "MODULE_SAME_NAME"]

#: MongooseIM loglevel -> xmppd loglevel
LOGLEVEL_MAP = {"none": "error", "emergency": "error", "alert": "error", "critical": "error", "error": "error",
                "warning": "warning", "notice": "info", "info": "info", "debug": "debug", "all": "debug"}
#: module option renames: MongooseIM name -> (xmppd name, factor applied to the value)
MODULE_RENAMES: dict[str, dict[str, tuple[str, float | None]]] = {
    "mod_stream_management": {"resume_timeout": ("resume_timeout_s", None), "buffer_max": ("max_unacked", None),
                              "ack_freq": ("ack_every", None)},
    "mod_mam": {"max_result_limit": ("max_page_size", None), "default_result_limit": ("default_page_size", None)},
    "mod_csi": {"buffer_max": ("max_queue", None)},
}
MODULE_RENAMES["mod_mam_meta"] = MODULE_RENAMES["mod_mam"]
#: MongooseIM module options xmppd's module has under the same name
MODULE_SAME_NAME: dict[str, frozenset[str]] = {"mod_caps": frozenset({"cache_size"})}
#: the MongooseIM pool tags xmppd reads
RDBMS_POOL_TAG = "default"
HTTP_AUTH_POOL_TAG = "auth"
LDAP_POOL_TAG = "default"


def unsupported_message(key: str, detail: str = "") -> str:
    return f"MongooseIM key {key}: not supported by xmppd, ignored{detail}"


class _Report:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.errors: list[ConfigError] = []

    def unsupported(self, key: str, detail: str = "") -> None:
        self.warnings.append(unsupported_message(key, detail))

    def unknown(self, key: str, name: str, known: Iterable[str]) -> None:
        message = "unknown key (neither an xmppd key nor a documented MongooseIM one)"
        close = difflib.get_close_matches(name, sorted(known), n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        self.errors.append(ConfigError(key, message))

    def check_keys(self, table: Any, key: str, known: frozenset[str]) -> bool:
        """Error for each key of ``table`` not in ``known``; False if not a table."""
        if not isinstance(table, dict):
            self.errors.append(ConfigError(key, f"expected a table, got {type(table).__name__}"))
            return False
        for name in table:
            if name not in known:
                self.unknown(f"{key}.{name}", name, known)
        return True


def _keys(cls: type) -> frozenset[str]:
    return frozenset(_claim_tree(cls))


def translate(data: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[ConfigError]]:
    """(data for the schema, warnings, errors); ``data`` itself is not changed."""
    data = copy.deepcopy(data)
    r = _Report()
    ours = _keys(Config)
    pools = data.pop("outgoing_pools", None) if "outgoing_pools" not in ours else None
    for name in list(data):
        if name in ours or name not in M.TOP_LEVEL:
            continue
        _unsupported_section(name, data.pop(name), r)
    if isinstance(data.get("general"), dict):
        _general(data["general"], r)
    if isinstance(data.get("listen"), dict):
        _listen(data["listen"], r)
    if isinstance(data.get("auth"), dict):
        _auth(data["auth"], r)
    if isinstance(data.get("modules"), dict):
        _modules(data["modules"], r)
    if pools is not None:
        if r.check_keys(pools, "outgoing_pools", M.OUTGOING_POOL_TYPES):
            _pools(pools, data, r)
    return data, r.warnings, r.errors


# ------------------------------------------------------------------ sections xmppd does not have
def _unsupported_section(name: str, value: Any, r: _Report) -> None:
    if name in ("shaper", "acl", "access"):  # user-named rules: nothing to check by name
        if isinstance(value, dict):
            r.unsupported(name)
        else:
            r.errors.append(ConfigError(name, "expected a table"))
    elif name == "s2s":
        if r.check_keys(value, name, M.S2S):
            r.unsupported(name)
    elif name == "host_config":
        if not isinstance(value, list):
            r.errors.append(ConfigError(name, "expected an array of tables ([[host_config]])"))
            return
        for i, entry in enumerate(value):
            key = f"{name}[{i}]"
            if r.check_keys(entry, key, M.HOST_CONFIG):
                which = entry.get("host", entry.get("host_type", "?"))
                r.unsupported(key, f" (settings for {which!r}; xmppd configures all hosts alike)")
    else:
        known = {"internal_databases": frozenset(M.INTERNAL_DATABASES), "services": M.SERVICES,
                 "instrumentation": M.INSTRUMENTATION}[name]
        if r.check_keys(value, name, known):
            for item, options in value.items():
                if item not in known:
                    continue
                if name == "internal_databases" and not r.check_keys(options, f"{name}.{item}",
                                                                     M.INTERNAL_DATABASES[item]):
                    continue
                r.unsupported(f"{name}.{item}")


# ------------------------------------------------------------------ [general]
def _general(general: dict[str, Any], r: _Report) -> None:
    ours = _keys(GeneralConfig)
    level = general.get("loglevel")
    if isinstance(level, str) and level not in LOGLEVELS and level in LOGLEVEL_MAP:
        general["loglevel"] = LOGLEVEL_MAP[level]
    for name in list(general):
        if name not in ours and name in M.GENERAL:
            del general[name]
            r.unsupported(f"general.{name}")


# ------------------------------------------------------------------ [[listen.*]]
def _listen(listen: dict[str, Any], r: _Report) -> None:
    for kind in list(listen):
        if kind == "c2s" or kind not in M.LISTENER_TYPES:
            continue
        items = listen.pop(kind)
        if not isinstance(items, list):
            r.errors.append(ConfigError(f"listen.{kind}", f"expected an array of tables ([[listen.{kind}]])"))
            continue
        known = {"s2s": M.LISTEN_S2S, "service": M.LISTEN_SERVICE, "component": M.LISTEN_SERVICE,
                 "http": M.LISTEN_HTTP}[kind]
        for i, item in enumerate(items):
            key = f"listen.{kind}[{i}]"
            if not r.check_keys(item, key, known):
                continue
            handlers = item.get("handlers")
            if kind == "http" and handlers is not None:
                r.check_keys(handlers, f"{key}.handlers", M.HTTP_HANDLERS)
            r.unsupported(key, f" (port {item.get('port', '?')})")
    c2s = listen.get("c2s")
    if isinstance(c2s, list):
        for i, item in enumerate(c2s):
            if isinstance(item, dict):
                _c2s(item, f"listen.c2s[{i}]", r)


def _c2s(item: dict[str, Any], key: str, r: _Report) -> None:
    ours = _keys(C2SListener)
    size = item.get("max_stanza_size")
    if "max_stanza_size" in item and "max_stanza_bytes" not in item:
        del item["max_stanza_size"]
        if size == "infinity":
            r.unsupported(f"{key}.max_stanza_size = \"infinity\"", " (xmppd bounds every stanza: max_stanza_bytes)")
        else:
            item["max_stanza_bytes"] = size
            if isinstance(size, int) and "max_stanza_bytes_preauth" not in item:
                preauth = _default(C2SListener, "max_stanza_bytes_preauth")
                if size < preauth:
                    item["max_stanza_bytes_preauth"] = size
    for old in ("state_timeout", "c2s_state_timeout"):
        if old in item and "negotiation_timeout_s" not in item:
            ms = item.pop(old)
            if isinstance(ms, int) and not isinstance(ms, bool) and ms > 0:
                item["negotiation_timeout_s"] = ms / 1000
            else:
                r.unsupported(f"{key}.{old} = {ms!r}", " (negotiation_timeout_s must be > 0 seconds)")
    if item.get("max_connections") == "infinity":
        del item["max_connections"]
        r.unsupported(f"{key}.max_connections = \"infinity\"", " (xmppd bounds connections: max_connections)")
    if isinstance(item.get("allowed_auth_methods"), list):
        item["allowed_auth_methods"] = _filter_values(item["allowed_auth_methods"], f"{key}.allowed_auth_methods",
                                                      M.AUTH_METHODS, AUTH_METHODS + tuple(AUTH_METHOD_ALIASES), r)
    for name in list(item):
        if name not in ours and name in M.LISTEN_C2S:
            del item[name]
            r.unsupported(f"{key}.{name}")
    tls = item.get("tls")
    if isinstance(tls, dict):
        tls_ours = _keys(TLSConfig)
        if "verify_peer" in tls and "verify_mode" not in tls and isinstance(tls["verify_peer"], bool):
            tls["verify_mode"] = "peer" if tls.pop("verify_peer") else "none"
        for name in list(tls):
            if name not in tls_ours and name in M.TLS:
                del tls[name]
                r.unsupported(f"{key}.tls.{name}")


def _default(cls: type, name: str) -> Any:
    import dataclasses

    from .schema import _META

    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata[_META].default
    raise KeyError(name)


def _filter_values(values: list[Any], key: str, theirs: Iterable[str], ours: Iterable[str], r: _Report) -> list[Any]:
    """Drop (with a warning) MongooseIM values xmppd does not implement; keep the rest."""
    theirs, ours = set(theirs), set(ours)
    out = []
    for v in values:
        if isinstance(v, str) and v in theirs and v not in ours:
            r.unsupported(f"{key} = {v!r}")
        else:
            out.append(v)
    return out


# ------------------------------------------------------------------ [auth]
def _auth(auth: dict[str, Any], r: _Report) -> None:
    ours = _keys(AuthConfig)
    method_names = AUTH_METHODS + tuple(AUTH_METHOD_ALIASES)
    if isinstance(auth.get("methods"), list):
        auth["methods"] = _filter_values(auth["methods"], "auth.methods", M.AUTH_METHODS, method_names, r)
    if isinstance(auth.get("sasl_mechanisms"), list):
        auth["sasl_mechanisms"] = _filter_values(auth["sasl_mechanisms"], "auth.sasl_mechanisms",
                                                 M.SASL_MECHANISMS, SASL_MECHANISMS, r)
    if "scram_iterations" in auth:  # MongooseIM < 5 spelling
        password = auth.setdefault("password", {})
        if isinstance(password, dict) and "scram_iterations" not in password:
            password["scram_iterations"] = auth.pop("scram_iterations")
    password = auth.get("password")
    if isinstance(password, dict) and isinstance(password.get("hash"), list):
        hashes = ["sha1" if h == "sha" else h for h in password["hash"]]
        password["hash"] = _filter_values(hashes, "auth.password.hash", M.PASSWORD_HASHES, PASSWORD_HASHES, r)
    for name in list(auth):
        if name in ours:
            continue
        if name in M.AUTH_METHOD_OPTIONS:
            r.check_keys(auth[name], f"auth.{name}", M.AUTH_METHOD_OPTIONS[name])
            del auth[name]
            r.unsupported(f"auth.{name}")
        elif name in M.AUTH:
            del auth[name]
            r.unsupported(f"auth.{name}")
    for name in ("pki", "sql", "rdbms", "http", "ldap"):
        table = auth.get(name)
        if not isinstance(table, dict):
            continue
        canonical = AUTH_METHOD_ALIASES.get(name, name)
        theirs = M.AUTH_METHOD_OPTIONS.get(name if name != "sql" else "rdbms", frozenset())
        supported = _method_option_keys(canonical)
        for option in list(table):
            if option in theirs and option not in supported and option not in ("pool_tag", "bind_pool_tag"):
                del table[option]
                r.unsupported(f"auth.{name}.{option}")


def _method_option_keys(method: str) -> frozenset[str]:
    from xmppd_auth.base import AuthConfigError
    from xmppd_auth.registry import method_class

    try:
        return frozenset(method_class(method).option_keys)
    except AuthConfigError:  # not installed: reported when the method is built
        return frozenset()


# ------------------------------------------------------------------ [modules]
def _modules(modules: dict[str, Any], r: _Report) -> None:
    ours = set(MODULE_NAMES) | set(MODULE_ALIASES)
    done = set()
    if "mod_mam_meta" in modules and "mod_mam" not in modules and "mam" not in modules:
        modules["mod_mam"] = modules.pop("mod_mam_meta")  # MongooseIM < 6 name
        _module_options(modules["mod_mam"], "mod_mam_meta", "modules.mod_mam_meta", r)
        done.add("mod_mam")
    for name in list(modules):
        if name in ours:
            if name in M.MODULE_OPTIONS and name not in done:
                _module_options(modules[name], name, f"modules.{name}", r)
        elif name in M.MODULES:
            del modules[name]
            r.unsupported(f"modules.{name}")


def _module_options(options: Any, module: str, key: str, r: _Report) -> None:
    if not isinstance(options, dict):
        return
    renames = MODULE_RENAMES.get(module, {})
    for old, (new, _factor) in renames.items():
        if old in options and new not in options:
            value = options.pop(old)
            if value == "infinity":
                r.unsupported(f"{key}.{old} = \"infinity\"", f" (xmppd bounds it: {new})")
            else:
                options[new] = value
    drop = M.MODULE_OPTIONS.get(module, frozenset()) - set(renames) - MODULE_SAME_NAME.get(module, frozenset())
    for name in list(options):
        if name in drop:
            del options[name]
            r.unsupported(f"{key}.{name}")


# ------------------------------------------------------------------ [outgoing_pools]
def _pools(pools: dict[str, Any], data: dict[str, Any], r: _Report) -> None:
    auth = data.get("auth") if isinstance(data.get("auth"), dict) else {}
    ldap_tag = auth.get("ldap", {}).get("pool_tag", LDAP_POOL_TAG) if isinstance(auth.get("ldap"), dict) \
        else LDAP_POOL_TAG
    if isinstance(auth.get("ldap"), dict):
        auth["ldap"].pop("pool_tag", None)
        if auth["ldap"].pop("bind_pool_tag", None) is not None:
            r.unsupported("auth.ldap.bind_pool_tag", " (xmppd binds on the same pool)")
    for kind, tagged in pools.items():
        if kind not in M.OUTGOING_POOL_TYPES:
            continue
        if not isinstance(tagged, dict):
            r.errors.append(ConfigError(f"outgoing_pools.{kind}", "expected a table of pools"))
            continue
        for tag, pool in tagged.items():
            key = f"outgoing_pools.{kind}.{tag}"
            if not r.check_keys(pool, key, M.OUTGOING_POOL):
                continue
            conn = pool.get("connection", {})
            if not r.check_keys(conn, f"{key}.connection", M.OUTGOING_CONNECTION[kind]):
                continue
            if isinstance(conn.get("tls"), dict):
                r.check_keys(conn["tls"], f"{key}.connection.tls", M.TLS)
            if kind == "rdbms" and tag == RDBMS_POOL_TAG:
                _rdbms_pool(pool, conn, key, data, r)
            elif kind == "http" and tag == HTTP_AUTH_POOL_TAG and "http" in auth:
                _apply(pool, conn, key, auth["http"], {"host": "host", "path_prefix": "path_prefix",
                                                       "request_timeout": "request_timeout"}, r)
            elif kind == "ldap" and tag == ldap_tag and "ldap" in auth:
                if conn.get("encrypt") == "tls":
                    auth["ldap"].setdefault("tls", True)
                conn.pop("encrypt", None)
                _apply(pool, conn, key, auth["ldap"], {"servers": "servers", "port": "port", "rootdn": "rootdn",
                                                       "password": "password"}, r)
            else:
                r.unsupported(key)


def _apply(pool: dict[str, Any], conn: dict[str, Any], key: str, target: dict[str, Any],
           mapping: dict[str, str], r: _Report) -> None:
    """Copy the mapped connection keys (and workers, tls.cacertfile) of a pool into an auth method table."""
    for src, dst in mapping.items():
        if src in conn:
            target.setdefault(dst, conn.pop(src))
    if "workers" in pool:
        target.setdefault("pool_size", pool.pop("workers"))
    tls = conn.get("tls")
    if isinstance(tls, dict) and "cacertfile" in tls:
        target.setdefault("cacertfile", tls.pop("cacertfile"))
    _leftovers(pool, conn, key, r)


def _leftovers(pool: dict[str, Any], conn: dict[str, Any], key: str, r: _Report) -> None:
    for name in sorted(k for k in pool if k != "connection"):
        r.unsupported(f"{key}.{name}")
    for name in sorted(conn):
        if name == "tls" and isinstance(conn[name], dict):
            for t in sorted(conn[name]):
                r.unsupported(f"{key}.connection.tls.{t}")
        else:
            r.unsupported(f"{key}.connection.{name}")


def _rdbms_pool(pool: dict[str, Any], conn: dict[str, Any], key: str, data: dict[str, Any], r: _Report) -> None:
    storage = data.setdefault("storage", {})
    if not isinstance(storage, dict):
        return
    if "url" in storage:
        r.warnings.append(f"MongooseIM key {key}: not used, storage.url is set")
        return
    driver = conn.pop("driver", None)
    if driver != "pgsql":
        r.unsupported(key, f" (driver {driver!r}: xmppd stores in PostgreSQL or SQLite; "
                           "storage stays at the SQLite default)")
        return
    user = quote(str(conn.pop("username", "")), safe="")
    password = conn.pop("password", None)
    auth = f"{user}:{quote(str(password), safe='')}@" if password is not None else (f"{user}@" if user else "")
    host = conn.pop("host", "localhost")
    port = conn.pop("port", None)
    database = quote(str(conn.pop("database", "")), safe="")
    storage["url"] = f"postgresql+asyncpg://{auth}{host}{f':{port}' if port is not None else ''}/{database}"
    if "workers" in pool and "pool_size" in _keys(StorageConfig):
        storage.setdefault("pool_size", pool.pop("workers"))
    _leftovers(pool, conn, key, r)
