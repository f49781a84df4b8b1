"""The per-account quota keys of [modules.offline], [modules.mam], [modules.pep] and
[modules.vcard]: documented defaults, and a bad value names its TOML key."""

from __future__ import annotations

import pytest

from xmppd.config import ConfigError
from xmppd.modules.base import parse_module_options
from xmppd.modules.mam import Mam
from xmppd.modules.offline import Offline
from xmppd.modules.pep import Pep
from xmppd.modules.vcard import VCard


def test_quota_defaults():
    offline = parse_module_options(Offline, {})
    assert (offline["max_per_user"], offline["max_bytes_per_user"], offline["max_sender_share"],
            offline["max_pending_per_sender"]) == (1000, 16 * 1024 * 1024, 0.5, 500)
    assert parse_module_options(Mam, {})["max_per_user"] == 100_000
    pep = parse_module_options(Pep, {})
    assert (pep["max_items_per_account"], pep["max_bytes_per_account"]) == (10_000, 16 * 1024 * 1024)
    assert parse_module_options(VCard, {})["max_bytes"] == 64 * 1024


def test_an_integer_share_is_read_as_a_fraction():
    assert parse_module_options(Offline, {"max_sender_share": 1})["max_sender_share"] == 1.0


@pytest.mark.parametrize("cls, options, key", [
    (Offline, {"max_sender_share": 0}, "modules.offline.max_sender_share"),
    (Offline, {"max_sender_share": 1.5}, "modules.offline.max_sender_share"),
    (Offline, {"max_bytes_per_user": 100}, "modules.offline.max_bytes_per_user"),
    (Offline, {"max_pending_per_sender": 0}, "modules.offline.max_pending_per_sender"),
    (Offline, {"max_per_user": 0}, "modules.offline.max_per_user"),
    (Mam, {"max_per_user": -1}, "modules.mam.max_per_user"),
    (Pep, {"max_items_per_account": 0}, "modules.pep.max_items_per_account"),
    (Pep, {"max_bytes_per_account": 1000}, "modules.pep.max_bytes_per_account"),  # < max_item_bytes
    (VCard, {"max_bytes": 10}, "modules.vcard.max_bytes"),
])
def test_a_bad_quota_names_its_toml_key(cls, options, key):
    with pytest.raises(ConfigError) as err:
        parse_module_options(cls, options)
    assert err.value.key == key
