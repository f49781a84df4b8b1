"""E2EE relay proof: xmppd carries OMEMO without ever holding the plaintext.

* Two real OMEMO clients (slixmpp + slixmpp-omemo 2.2.0) exchange a message
  through xmppd and the receiver decrypts it.  Needs PEP (XEP-0163) for device
  lists and bundles: skipped, with that reason only, while xmppd has no PEP.
* Storage side, runs today: an OMEMO-shaped message (AES-256-GCM payload, as
  OMEMO encrypts the body) stored offline keeps its payload byte-identical and
  decryptable, while a plaintext control message with a unique marker is found
  in the database — the scan can see bodies, and the secret is nowhere: not in
  the SQLite files (database, WAL, shm), the audit log, any archive table, or
  xmppd's log records.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xmppd.modules import BUILTIN

from .rawclient import RawClient

HAS_PEP = any(cls.name == "pep" for cls in BUILTIN)
HAS_OFFLINE = any(cls.name == "offline" for cls in BUILTIN)
NEEDS_PEP = ("needs PEP (XEP-0163): OMEMO clients publish and fetch their device lists and bundles "
             "(eu.siacs.conversations.axolotl.devicelist / urn:xmpp:omemo:2:devices) over PEP, which xmppd "
             "does not have yet")
WAIT_S = 20.0


def unique(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(8)}"


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def found_in(root: Path, needle: str) -> list[str]:
    """Files under ``root`` whose raw bytes contain ``needle`` (UTF-8, or UTF-16 as SQLite may store text)."""
    forms = {needle.encode(), needle.encode("utf-16-le"), needle.encode("utf-16-be")}
    return [str(p) for p in files_under(root) if any(f in p.read_bytes() for f in forms)]


def xmppd_log_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("xmppd"))


def server_root(server) -> Path:
    """The directory holding the server's database, data_dir and audit log (the test's s<N>/)."""
    return Path(server.config.general.data_dir).parent


async def wait_stored(server, user: str, n: int) -> None:
    mod = next(m for m in server.modules if m.name == "offline")
    for _ in range(int(WAIT_S * 20)):
        if await mod.store.count(user, "localhost") == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user}: {n} offline message(s) never stored")


async def raw_login(server, pki, user: str, resource: str) -> RawClient:
    cert = pki.client(f"omemo-{user}-{resource}", xmpp_addrs=[f"{user}@localhost"])
    c = await RawClient.open(server.listener_port(0), ca=pki.ca_path, cert=cert)
    await c.login_external(resource=resource)
    return c


# ------------------------------------------------------------------ storage side (no PEP needed)
@pytest.mark.skipif(not HAS_OFFLINE, reason="needs offline storage (XEP-0160) to have something stored")
async def test_omemo_payload_stored_offline_is_opaque_while_a_plaintext_control_is_visible(
        make_server, pki, caplog):
    caplog.set_level(logging.DEBUG)
    server = await make_server()
    assert await server.auth_chain.register("carol", "localhost", "carol-pw-omemo")
    root = server_root(server)

    secret, control = unique("OMEMO-SECRET"), unique("PLAINTEXT-CONTROL")
    key, iv = AESGCM.generate_key(bit_length=256), os.urandom(12)
    payload = base64.b64encode(AESGCM(key).encrypt(iv, secret.encode(), None)).decode()
    omemo = (f"<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27183'>"
             f"<key rid='31415' prekey='true'>{base64.b64encode(os.urandom(64)).decode()}</key>"
             f"<iv>{base64.b64encode(iv).decode()}</iv></header><payload>{payload}</payload></encrypted>")
    fallback = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."

    alice = await raw_login(server, pki, "alice", "phone")
    try:
        await alice.send(f"<message to='carol@localhost' type='chat' id='om1'>{omemo}"
                         f"<body>{fallback}</body><store xmlns='urn:xmpp:hints'/></message>")
        await alice.send(f"<message to='carol@localhost' type='chat' id='pc1'><body>{control}</body></message>")
        await wait_stored(server, "carol", 2)

        # while stored: the control body is visible in the database files, the secret is not anywhere
        assert found_in(root, control), "the scan must be able to see a stored plaintext body"
        assert found_in(root, payload), "the OMEMO payload itself is what is stored"
        assert found_in(root, secret) == []

        # carol comes online: the payload arrives byte-identical and decrypts to the secret
        carol = await raw_login(server, pki, "carol", "laptop")
        try:
            await carol.send("<presence/>")
            got = await carol.read_until(rb"id='pc1'.*?</message>")
            assert omemo.encode() in got
            m = re.search(rb"<payload>([^<]+)</payload>", got)
            assert AESGCM(key).decrypt(iv, base64.b64decode(m.group(1)), None) == secret.encode()
        finally:
            await carol.close()
    finally:
        await alice.close()
    await server.stop()  # checkpoints the WAL into the database file

    assert found_in(root, secret) == []
    assert secret not in xmppd_log_text(caplog)


# ------------------------------------------------------------------ two real OMEMO clients
class _MemoryStorage:
    """omemo.storage.Storage kept in a dict (one per client)."""

    @staticmethod
    def make():
        from omemo.storage import Just, Maybe, Nothing, Storage

        class MemoryStorage(Storage):
            def __init__(self) -> None:
                super().__init__()
                self._data: dict = {}

            async def _load(self, key: str) -> Maybe:
                return Just(self._data[key]) if key in self._data else Nothing()

            async def _store(self, key: str, value) -> None:
                self._data[key] = value

            async def _delete(self, key: str) -> None:
                self._data.pop(key, None)

        return MemoryStorage()


def _omemo_plugin():
    """An XEP_0384 implementation with in-memory storage and blind trust (BTBV)."""
    from slixmpp.plugins import register_plugin
    from slixmpp_omemo import XEP_0384

    class TestOMEMO(XEP_0384):
        default_config = {"fallback_message": "This message is OMEMO encrypted.", "json_file_path": None}

        def plugin_init(self) -> None:
            self._store = _MemoryStorage.make()
            super().plugin_init()

        @property
        def storage(self):
            return self._store

        @property
        def _btbv_enabled(self) -> bool:
            return True

        async def _devices_blindly_trusted(self, blindly_trusted, identifier) -> None:
            return None

        async def _prompt_manual_trust(self, manually_trusted, identifier) -> None:
            raise AssertionError("BTBV is on: no manual trust decision expected")

    register_plugin(TestOMEMO)
    return TestOMEMO


@pytest.mark.skipif(not HAS_PEP, reason=NEEDS_PEP)
@pytest.mark.parametrize("policy", ["none", "require"])
async def test_two_omemo_clients_exchange_a_message_the_server_never_sees_in_plaintext(
        make_server, clients, pki, caplog, policy):
    pytest.importorskip("slixmpp_omemo")
    from slixmpp import JID

    caplog.set_level(logging.DEBUG)
    _omemo_plugin()
    # under "require" the OMEMO message still passes; carol (the control's recipient) is exempt
    server = await make_server({"modules": {"e2ee_policy": {"default": policy, "allow": ["carol@localhost"]}}})
    root = server_root(server)
    assert await server.auth_chain.register("carol", "localhost", "carol-pw-omemo")
    secret, control = unique("OMEMO-SECRET"), unique("PLAINTEXT-CONTROL")

    made = {}
    for user in ("alice", "bob"):
        cert = pki.client(f"omemo-real-{user}", xmpp_addrs=[f"{user}@localhost"])
        c = clients(f"{user}@localhost", cert=cert)
        c.register_plugin("xep_0384")
        ready = asyncio.get_running_loop().create_future()
        c.add_event_handler("omemo_initialized", lambda _e, f=ready: f.done() or f.set_result(True))
        await c.login(server.listener_port(0))
        c.send_presence()
        await asyncio.wait_for(ready, WAIT_S)  # device list and bundle published over PEP
        made[user] = c
    alice, bob = made["alice"], made["bob"]

    plain = alice.make_message(mto=JID("bob@localhost"), mtype="chat")
    plain["body"] = secret
    encrypted, errors = await alice.plugin["xep_0384"].encrypt_message(plain, JID("bob@localhost"))
    assert encrypted is not None and not errors, errors
    encrypted.send()

    while True:
        msg = await bob.next_message(WAIT_S)
        if bob.plugin["xep_0384"].is_encrypted(msg):
            break
    assert secret not in str(msg)  # what travelled is ciphertext plus the fallback body
    decrypted, _device = await bob.plugin["xep_0384"].decrypt_message(msg)
    assert decrypted["body"] == secret

    # control: a plaintext to offline carol is stored where the scan can see it
    alice.send_message(mto="carol@localhost", mbody=control, mtype="chat")
    if HAS_OFFLINE:
        await wait_stored(server, "carol", 1)
        assert found_in(root, control)
    assert found_in(root, secret) == []

    await alice.close()
    await bob.close()
    await server.stop()
    assert found_in(root, secret) == []  # database, WAL, audit log, archives
    assert secret not in xmppd_log_text(caplog)
