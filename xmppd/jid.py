"""Immutable JIDs (RFC 7622) with PRECIS enforcement.

localpart: UsernameCaseMapped profile, minus the characters RFC 7622 §3.3.1
forbids; domainpart: lower-cased, IDNA-checked labels; resourcepart:
OpaqueString.  Each part at most 1023 octets.
"""

from __future__ import annotations

import functools

import precis_i18n

__all__ = ["JID", "InvalidJID"]

_MAX_PART = 1023
_LOCAL_FORBIDDEN = frozenset('"&\'/:<>@')
_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_RESOURCE = precis_i18n.get_profile("OpaqueString")


class InvalidJID(ValueError):
    pass


def _check_len(part: str, what: str) -> None:
    if not part:
        raise InvalidJID(f"empty {what}")
    if len(part.encode("utf-8")) > _MAX_PART:
        raise InvalidJID(f"{what} longer than {_MAX_PART} octets")


@functools.lru_cache(maxsize=4096)
def nodeprep(local: str) -> str:
    _check_len(local, "localpart")
    try:
        out = _USERNAME.enforce(local)
    except UnicodeError as exc:
        raise InvalidJID(f"localpart: {exc}") from None
    if _LOCAL_FORBIDDEN.intersection(out):
        raise InvalidJID("localpart contains a forbidden character")
    _check_len(out, "localpart")
    return out


@functools.lru_cache(maxsize=1024)
def nameprep(domain: str) -> str:
    if domain.endswith("."):
        domain = domain[:-1]
    _check_len(domain, "domainpart")
    out = domain.lower()
    if out.startswith("[") and out.endswith("]"):  # IPv6 literal
        return out
    for label in out.split("."):
        if not label or len(label) > 63:
            raise InvalidJID("domainpart has an empty or overlong label")
        if any(c in label for c in " /@\\:<>\"'&") or any(ord(c) < 0x21 for c in label):
            raise InvalidJID("domainpart contains a forbidden character")
    return out


@functools.lru_cache(maxsize=4096)
def resourceprep(resource: str) -> str:
    _check_len(resource, "resourcepart")
    try:
        out = _RESOURCE.enforce(resource)
    except UnicodeError as exc:
        raise InvalidJID(f"resourcepart: {exc}") from None
    _check_len(out, "resourcepart")
    return out


class JID:
    """An immutable, normalised JID. Compare and hash by value."""

    __slots__ = ("local", "domain", "resource", "_str", "_bare")

    local: str | None
    domain: str
    resource: str | None

    def __init__(self, local: str | None, domain: str, resource: str | None = None) -> None:
        object.__setattr__(self, "local", nodeprep(local) if local is not None else None)
        object.__setattr__(self, "domain", nameprep(domain))
        object.__setattr__(self, "resource", resourceprep(resource) if resource is not None else None)
        s = self.domain
        if self.local is not None:
            s = f"{self.local}@{s}"
        if self.resource is not None:
            s = f"{s}/{self.resource}"
        object.__setattr__(self, "_str", s)
        object.__setattr__(self, "_bare", None)  # a full JID's bare JID, once asked for

    @classmethod
    def _normalised(cls, local: str | None, domain: str) -> "JID":
        """A bare JID from parts that are already normalised (no PRECIS run again)."""
        jid = object.__new__(cls)
        object.__setattr__(jid, "local", local)
        object.__setattr__(jid, "domain", domain)
        object.__setattr__(jid, "resource", None)
        object.__setattr__(jid, "_str", domain if local is None else f"{local}@{domain}")
        object.__setattr__(jid, "_bare", None)
        return jid

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("JID is immutable")

    @classmethod
    @functools.lru_cache(maxsize=8192)
    def parse(cls, text: str) -> "JID":
        """Parse ``[local@]domain[/resource]`` (RFC 7622 §3.1)."""
        if not isinstance(text, str) or not text:
            raise InvalidJID("empty JID")
        rest, slash, resource = text.partition("/")
        if slash and not resource:
            raise InvalidJID("empty resourcepart")
        local, at, domain = rest.rpartition("@") if "@" in rest else (None, "", rest)
        if at and not local:
            raise InvalidJID("empty localpart")
        if local is not None and "@" in local:
            raise InvalidJID("more than one @")
        return cls(local if at else None, domain, resource if slash else None)

    @property
    def bare(self) -> "JID":
        """The bare JID, built once per JID (the hot path asks for it on every stanza)."""
        if self.resource is None:
            return self
        bare = self._bare
        if bare is None:
            bare = JID._normalised(self.local, self.domain)
            object.__setattr__(self, "_bare", bare)
        return bare

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    def with_resource(self, resource: str) -> "JID":
        return JID(self.local, self.domain, resource)

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"JID({self._str!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JID) and self._str == other._str

    def __hash__(self) -> int:
        return hash(self._str)
