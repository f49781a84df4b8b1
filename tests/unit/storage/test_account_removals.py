"""The account-removal stamp file: what `xmppd user remove` writes and the server reads."""

from __future__ import annotations

import os

from xmppd.storage import accounts as acc
from xmppd.storage.accounts import AccountRemovals, announce_removal, removal_stamp_path


def test_removals_announced_after_the_reader_started_are_read_once_each(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/xmppd.sqlite"
    assert announce_removal(url, "old", "localhost")  # before the server started: not its business
    reader = AccountRemovals(url)
    assert reader.poll() == []
    assert announce_removal(url, "bob", "localhost")
    assert announce_removal(url, "carol", "example.org")
    assert reader.poll() == [("bob", "localhost"), ("carol", "example.org")]
    assert reader.poll() == []
    assert os.stat(removal_stamp_path(url)).st_mode & 0o777 == 0o600


def test_a_half_written_line_waits_for_its_end(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/xmppd.sqlite"
    reader = AccountRemovals(url)
    path = removal_stamp_path(url)
    with open(path, "ab") as fh:
        fh.write(b"1 remove bo")
    assert reader.poll() == []
    with open(path, "ab") as fh:
        fh.write(b"b@localhost\n")
    assert reader.poll() == [("bob", "localhost")]


def test_a_stamp_file_started_afresh_past_its_size_limit_is_read_from_its_start(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path}/xmppd.sqlite"
    reader = AccountRemovals(url)
    monkeypatch.setattr(acc, "REMOVAL_STAMP_MAX_BYTES", 60)
    announce_removal(url, "a", "localhost")
    assert reader.poll() == [("a", "localhost")]
    ino = os.stat(removal_stamp_path(url)).st_ino
    announce_removal(url, "b", "localhost")  # too big: a new file with this line only
    assert os.stat(removal_stamp_path(url)).st_ino != ino
    assert reader.poll() == [("b", "localhost")]


def test_databases_without_a_file_have_no_stamp(tmp_path):
    assert removal_stamp_path("sqlite+aiosqlite:///:memory:") is None
    assert removal_stamp_path("postgresql+asyncpg://u@h/db") is None
    assert not announce_removal("postgresql+asyncpg://u@h/db", "bob", "localhost")
    assert AccountRemovals("postgresql+asyncpg://u@h/db").poll() == []
