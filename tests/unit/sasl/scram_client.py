"""A small SCRAM client, for tests only (RFC 5802 §3, §7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from xmppd.sasl import prepare_password

_ALGOS = {"sha1": "sha1", "sha256": "sha256", "sha512": "sha512"}


def escape_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """Builds client-first/client-final and checks the server signature.

    ``cb_flag`` is the GS2 flag: ``"n"``, ``"y"`` or ``"p=<type>"``;
    ``cb_data`` the channel-binding data the client sees on its side.
    """

    def __init__(self, hash_name: str, username: str, password: str, *,
                 authzid: str | None = None, cb_flag: str = "n", cb_data: bytes = b"",
                 nonce: str | None = None) -> None:
        self.algo = _ALGOS[hash_name]
        self.username = username
        self.password = prepare_password(password)
        self.authzid = authzid
        self.cb_flag = cb_flag
        self.cb_data = cb_data
        self.cnonce = nonce or secrets.token_urlsafe(18)
        self.gs2_header = f"{cb_flag},{'a=' + escape_saslname(authzid) if authzid else ''},"
        self.client_first_bare = f"n={escape_saslname(username)},r={self.cnonce}"
        self.server_signature: bytes | None = None

    def first(self) -> bytes:
        return (self.gs2_header + self.client_first_bare).encode("utf-8")

    def final(self, server_first: bytes, *, tamper_proof: bool = False,
              password: str | None = None) -> bytes:
        text = server_first.decode("utf-8")
        attrs = dict(a.split("=", 1) for a in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        assert nonce.startswith(self.cnonce)
        cbind = base64.b64encode(self.gs2_header.encode("utf-8") + self.cb_data).decode("ascii")
        without_proof = f"c={cbind},r={nonce}"
        pw = self.password if password is None else prepare_password(password)
        salted = hashlib.pbkdf2_hmac(self.algo, pw.encode("utf-8"), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", self.algo)
        stored_key = hashlib.new(self.algo, client_key).digest()
        auth_message = f"{self.client_first_bare},{text},{without_proof}".encode("utf-8")
        client_signature = hmac.digest(stored_key, auth_message, self.algo)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature))
        if tamper_proof:
            proof = bytes([proof[0] ^ 1]) + proof[1:]
        server_key = hmac.digest(salted, b"Server Key", self.algo)
        self.server_signature = hmac.digest(server_key, auth_message, self.algo)
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("utf-8")

    def verify(self, server_final: bytes) -> bool:
        assert self.server_signature is not None
        text = server_final.decode("ascii")
        return text.startswith("v=") and hmac.compare_digest(
            base64.b64decode(text[2:]), self.server_signature)
