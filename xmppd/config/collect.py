"""Build a :class:`~xmppd.config.schema.Config` and collect *every* error.

:func:`xmppd.config.schema.build_section` stops at the first problem; an admin
fixing a config then needs one run per mistake.  :func:`build_collecting`
walks the same specs (the schema stays the single description of every key)
but keeps going: each bad value, unknown key or missing required key is
recorded with its TOML key path, and the walk continues with the next key.

What cannot be checked after an error is skipped rather than reported twice:
a section with a bad field gets no derived defaults and no cross-field
``_validate``, and so does every section that contains it.
"""

from __future__ import annotations

import difflib
from typing import Any

from .schema import (
    DERIVED,
    REQUIRED,
    _HINTS,
    _MISSING,
    ConfigError,
    Table,
    TableArray,
    TableMap,
    _claim_tree,
    _fail_type,
    _join,
    _lookup,
    _specs,
    _toml_name,
)

__all__ = ["ConfigErrors", "build_collecting"]


class ConfigErrors(ConfigError):
    """Several configuration problems at once.

    ``key``/``message`` are those of the first error (so code that handles a
    single :class:`ConfigError` keeps working); ``errors`` holds them all, in
    file order; ``warnings`` the lines of :attr:`Config.warnings` gathered
    before the errors were found.
    """

    def __init__(self, errors: list[ConfigError], warnings: tuple[str, ...] = ()) -> None:
        assert errors
        super().__init__(errors[0].key, errors[0].message)
        self.errors = list(errors)
        self.warnings = tuple(warnings)

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return str(self.errors[0])
        lines = [f"{len(self.errors)} errors:"]
        lines += [f"  {e}" for e in self.errors]
        return "\n".join(lines)


class _Failed:
    """Marks a section that could not be built (its errors are recorded)."""

    def __repr__(self) -> str:
        return "<failed>"


FAILED: Any = _Failed()


def _unknown_keys(data: dict[str, Any], tree: dict[str, Any], prefix: str, errors: list[ConfigError]) -> None:
    for name, value in data.items():
        key = _join(prefix, name)
        if name not in tree:
            message = "unknown key"
            if name in _HINTS:
                hint = _HINTS[name]
                message += f"; did you mean {hint!r}?" if hint else " (MongooseIM option not supported by xmppd)"
            else:
                close = difflib.get_close_matches(name, list(tree), n=1)
                if close:
                    message += f"; did you mean {close[0]!r}?"
            errors.append(ConfigError(key, message))
            continue
        node = tree[name]
        if isinstance(node, dict):  # intermediate table such as `listen`
            if not isinstance(value, dict):
                errors.append(_fail_type(key, "table", value))
            else:
                _unknown_keys(value, node, key, errors)


def build_collecting(cls: type, data: dict[str, Any], prefix: str, errors: list[ConfigError],
                     root: dict[str, Any] | None = None) -> Any:
    """Like :func:`~xmppd.config.schema.build_section`, but appends every
    :class:`ConfigError` to ``errors`` and returns :data:`FAILED` for a
    section that has any."""
    start = len(errors)
    _unknown_keys(data, _claim_tree(cls), prefix, errors)
    values: dict[str, Any] = {}
    if root is None:
        root = values
    derived = []
    for f, spec in _specs(cls):
        kind = spec.kind
        if isinstance(kind, TableMap):
            claimed = {n: data[n] for n in data if n in kind.claims()}
            values[f.name] = _leaf(kind, claimed, prefix, root, errors)
            continue
        key = _join(prefix, _toml_name(f, spec))
        raw = _lookup(data, _toml_name(f, spec))
        if raw is _MISSING:
            if spec.default is REQUIRED:
                errors.append(ConfigError(key, "required key is missing"))
                continue
            if spec.default is DERIVED:
                derived.append((f, spec, key))
                continue
            if spec.default is None:
                values[f.name] = None
                continue
            raw = spec.default
        if isinstance(kind, Table):
            if not isinstance(raw, dict):
                errors.append(_fail_type(key, "table", raw))
                continue
            values[f.name] = build_collecting(kind.section, raw, key, errors, root)
        elif isinstance(kind, TableArray):
            if not isinstance(raw, list):
                errors.append(_fail_type(key, f"array of tables ([[{key}]])", raw))
                continue
            items = []
            for i, item in enumerate(raw):
                ikey = f"{key}[{i}]"
                if not isinstance(item, dict):
                    errors.append(_fail_type(ikey, "table", item))
                    continue
                items.append(build_collecting(kind.section, item, ikey, errors, root))
            values[f.name] = tuple(items)
        else:
            values[f.name] = _leaf(kind, raw, key, root, errors)
    if len(errors) > start:
        return FAILED
    for f, spec, key in derived:
        assert spec.derive is not None, f.name
        try:
            derived_value = spec.derive(root, values)
        except (AttributeError, TypeError, KeyError, IndexError):
            if errors or any(v is FAILED for v in root.values()):
                return FAILED  # it depends on a section that failed: already reported
            raise
        value = _leaf(spec.kind, derived_value, key, root, errors)
        if value is FAILED:
            return FAILED
        values[f.name] = value
    validate = getattr(cls, "_validate", None)
    if validate is not None:
        try:
            validate(values, prefix, root)
        except ConfigError as exc:
            errors.append(exc)
            return FAILED
    return cls(**values)


def _leaf(kind: Any, raw: Any, key: str, root: dict[str, Any], errors: list[ConfigError]) -> Any:
    try:
        return kind.build(raw, key, root)
    except ConfigError as exc:
        errors.append(exc)
        return FAILED
