"""SASL mechanisms (sans-IO): EXTERNAL, SCRAM-*(-PLUS), PLAIN.

See :mod:`xmppd.sasl.base` for the call protocol.  The shell picks what to
offer with :func:`mechanism_names` and builds the chosen one with
:func:`create_mechanism`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from xmppd_auth.base import CertFacts

from .base import (
    Challenge,
    Failure,
    Mechanism,
    Need,
    NeedCertAuthorization,
    NeedPasswordCheck,
    NeedScramCredentials,
    ProtocolMisuse,
    Step,
    Success,
    authzid_failure,
    failure,
    prepare_password,
    prepare_username,
)
from .external import ExternalMechanism, ExternalPolicy, Resolution, resolve_identity
from .plain import MAX_PLAIN_MESSAGE_BYTES, PlainMechanism
from .scram import (
    CHANNEL_BINDING_TYPES,
    MAX_SCRAM_MESSAGE_BYTES,
    ScramMechanism,
    parse_scram_mechanism_name,
    scram_mechanism_name,
)

__all__ = [
    "Challenge",
    "Failure",
    "Mechanism",
    "Need",
    "NeedCertAuthorization",
    "NeedPasswordCheck",
    "NeedScramCredentials",
    "ProtocolMisuse",
    "Step",
    "Success",
    "authzid_failure",
    "failure",
    "prepare_password",
    "prepare_username",
    "ExternalMechanism",
    "ExternalPolicy",
    "Resolution",
    "resolve_identity",
    "PlainMechanism",
    "MAX_PLAIN_MESSAGE_BYTES",
    "ScramMechanism",
    "MAX_SCRAM_MESSAGE_BYTES",
    "CHANNEL_BINDING_TYPES",
    "scram_mechanism_name",
    "parse_scram_mechanism_name",
    "ALL_MECHANISMS",
    "mechanism_names",
    "create_mechanism",
]

#: every mechanism this package implements, in the server's preference order
ALL_MECHANISMS: tuple[str, ...] = (
    "EXTERNAL",
    "SCRAM-SHA-512-PLUS",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "PLAIN",
)


def mechanism_names(enabled: Iterable[str] | None = None, *,
                    channel_bindings: Mapping[str, bytes] | None = None,
                    cert_verified: bool = False,
                    encrypted: bool = True) -> list[str]:
    """Mechanisms to advertise on this stream, in preference order.

    ``enabled``: names allowed by configuration (``None`` = all);
    EXTERNAL only when a client certificate passed verification;
    -PLUS only when the TLS layer supplied channel-binding data;
    PLAIN only on an encrypted stream.
    """
    allowed = set(ALL_MECHANISMS) if enabled is None else {n.upper() for n in enabled}
    unknown = allowed - set(ALL_MECHANISMS)
    if unknown:
        raise ValueError(f"unknown SASL mechanism(s): {', '.join(sorted(unknown))}")
    have_cb = bool(channel_bindings)
    out = []
    for name in ALL_MECHANISMS:
        if name not in allowed:
            continue
        if name == "EXTERNAL" and not cert_verified:
            continue
        if name.endswith("-PLUS") and not have_cb:
            continue
        if name == "PLAIN" and not encrypted:
            continue
        out.append(name)
    return out


def create_mechanism(name: str, *, offered: Iterable[str],
                     channel_bindings: Mapping[str, bytes] | None = None,
                     cert_facts: CertFacts | None = None,
                     stream_domain: str | None = None,
                     external_policy: ExternalPolicy | None = None,
                     nonce_factory: Callable[[], str] | None = None) -> Mechanism | None:
    """Build the mechanism the client selected; ``None`` if ``name`` was not
    in ``offered`` (the shell answers ``invalid-mechanism``)."""
    offered = list(offered)
    if name not in offered:
        return None
    if name == "EXTERNAL":
        if cert_facts is None or stream_domain is None:
            raise ProtocolMisuse("EXTERNAL offered without certificate facts / stream domain")
        return ExternalMechanism(cert_facts, stream_domain=stream_domain,
                                 policy=external_policy or ExternalPolicy())
    if name == "PLAIN":
        return PlainMechanism()
    parsed = parse_scram_mechanism_name(name)
    if parsed is None:
        return None
    hash_name, plus = parsed
    return ScramMechanism(hash_name, plus=plus, channel_bindings=dict(channel_bindings or {}),
                          server_offers_plus=any(n.endswith("-PLUS") for n in offered),
                          nonce_factory=nonce_factory)
