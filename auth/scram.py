"""SCRAM key derivation (RFC 5802 §3) and the stored-password format.

Shared by the SASL mechanism (``xmppd.sasl.scram``) and by methods that store
passwords (``auth.sql``).  The storage format is MongooseIM's
``==MULTI_SCRAM==`` serialisation so exported password tables port over::

    ==MULTI_SCRAM==,i=10000,===SHA1===<salt>|<stored>|<server>,===SHA256===...

with every binary field base64-encoded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from .base import ScramCredentials

__all__ = [
    "HASHES",
    "DEFAULT_ITERATIONS",
    "MIN_ITERATIONS",
    "SALT_BYTES",
    "derive",
    "new_credentials",
    "verify_password",
    "serialize",
    "deserialize",
]

#: hash name -> (hashlib name, MongooseIM tag)
HASHES: dict[str, tuple[str, str]] = {
    "sha1": ("sha1", "SHA1"),
    "sha256": ("sha256", "SHA256"),
    "sha512": ("sha512", "SHA512"),
}
_TAG_TO_NAME = {tag: name for name, (_, tag) in HASHES.items()}
DEFAULT_ITERATIONS = 10_000
MIN_ITERATIONS = 4096  # RFC 7677 §4 minimum for SCRAM-SHA-256
SALT_BYTES = 16
_PREFIX = "==MULTI_SCRAM=="


def derive(password: str, hash_name: str, salt: bytes, iterations: int) -> ScramCredentials:
    """RFC 5802 §3: SaltedPassword, ClientKey, StoredKey, ServerKey.

    ``password`` must already be prepared (OpaqueString / SASLprep).
    """
    algo = HASHES[hash_name][0]
    salted = hashlib.pbkdf2_hmac(algo, password.encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", algo)
    stored_key = hashlib.new(algo, client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", algo)
    return ScramCredentials(hash_name, salt, iterations, stored_key, server_key)


def new_credentials(password: str, hash_names: list[str] | tuple[str, ...],
                    iterations: int = DEFAULT_ITERATIONS) -> dict[str, ScramCredentials]:
    """Fresh random salt per hash."""
    return {h: derive(password, h, os.urandom(SALT_BYTES), iterations) for h in hash_names}


def verify_password(password: str, creds: ScramCredentials) -> bool:
    """True if ``password`` produces the stored key (constant-time compare)."""
    candidate = derive(password, creds.hash_name, creds.salt, creds.iterations)
    return hmac.compare_digest(candidate.stored_key, creds.stored_key)


def serialize(creds: dict[str, ScramCredentials]) -> str:
    if not creds:
        raise ValueError("no credentials to serialise")
    iterations = {c.iterations for c in creds.values()}
    if len(iterations) != 1:
        raise ValueError("all hashes must share one iteration count")
    parts = [_PREFIX, f"i={iterations.pop()}"]
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    for name in HASHES:  # stable order
        c = creds.get(name)
        if c is not None:
            parts.append(f"==={HASHES[name][1]}==={b64(c.salt)}|{b64(c.stored_key)}|{b64(c.server_key)}")
    return ",".join(parts)


def deserialize(text: str) -> dict[str, ScramCredentials]:
    """Parse :func:`serialize` output. Raises ValueError on anything else."""
    fields = text.split(",")
    if len(fields) < 3 or fields[0] != _PREFIX or not fields[1].startswith("i="):
        raise ValueError("not a ==MULTI_SCRAM== value")
    try:
        iterations = int(fields[1][2:])
    except ValueError:
        raise ValueError("bad iteration count") from None
    if iterations < 1:
        raise ValueError("bad iteration count")
    out: dict[str, ScramCredentials] = {}
    for field in fields[2:]:
        if not field.startswith("===") or field.count("===") < 2:
            raise ValueError("bad hash section")
        _, tag, rest = field.split("===", 2)
        name = _TAG_TO_NAME.get(tag)
        if name is None:
            raise ValueError(f"unknown hash {tag!r}")
        try:
            salt, stored, server = (base64.b64decode(p, validate=True) for p in rest.split("|"))
        except (ValueError, TypeError):
            raise ValueError("bad base64 in hash section") from None
        out[name] = ScramCredentials(name, salt, iterations, stored, server)
    return out
