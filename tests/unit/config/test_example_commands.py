"""Every ``xmppd ...`` command shown in a conf/*.toml header comment works as written."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from .cli_support import ROOT, xmppd

CONF = ROOT / "conf"
COMMAND = re.compile(r"(?<![\w.-])xmppd\s+(?:run|check-config|certs|user|audit)\b.*$")


def header_commands(path: Path) -> list[list[str]]:
    """The commands in the comment block a file starts with, in order; ``a && b`` is two."""
    commands = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = COMMAND.search(line)
        if m:
            for part in m.group(0).split("&&"):
                words = shlex.split(part.strip().rstrip("."))
                assert words[0] == "xmppd", part
                commands.append(words[1:])
    return commands


def test_the_example_header_shows_the_check_config_command():
    assert ["check-config", "conf/xmppd.example.toml"] in header_commands(CONF / "xmppd.example.toml")


def test_header_commands_are_found_inline_too(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("# This file is valid as-is:  xmppd check-config --config conf/x.toml\n[general]\n"
                 "# xmppd run --config later.toml (not in the header)\n")
    assert header_commands(f) == [["check-config", "--config", "conf/x.toml"]]


@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("*.toml") if header_commands(p)))
def test_every_command_in_the_header_runs(tmp_path, name):
    shutil.copytree(CONF, tmp_path / "conf")
    for args in header_commands(CONF / name):
        r = xmppd(tmp_path, *args)
        assert r.returncode == 0, (name, args, r.stdout, r.stderr)
