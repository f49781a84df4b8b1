"""The command-line modules share helpers through xmppd/cli_common.py only: no import cycle, no private reach-in."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "xmppd"
#: who may import whom among the CLI modules (cli.py wires everything; the rest never import it)
ALLOWED = {
    "cli": {"cli_common", "cli_certs", "cli_audit", "cli_client"},
    "cli_certs": {"cli_common", "cli_issue"},
    "cli_issue": {"cli_common"},
    "cli_audit": {"cli_common"},
    "cli_client": {"cli_common"},
    "cli_common": set(),
}


def cli_imports(path: Path) -> set[tuple[str, tuple[str, ...]]]:
    """(module, names) for every ``from .cli... import`` / ``from xmppd.cli... import`` in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = node.module.removeprefix("xmppd.") if node.level == 0 else node.module
            if (node.level == 1 or node.module.startswith("xmppd.")) and mod.split(".")[0].startswith("cli"):
                found.add((mod.split(".")[0], tuple(a.name for a in node.names)))
    return found


def test_every_cli_module_is_known_and_imports_only_what_the_layering_allows():
    modules = {p.stem for p in PKG.glob("cli*.py")}
    assert modules == set(ALLOWED), modules
    for name in modules:
        for mod, names in cli_imports(PKG / f"{name}.py"):
            assert mod in ALLOWED[name], f"{name}.py imports {mod}: {names}"
            assert not any(n.startswith("_") for n in names), f"{name}.py imports private {names} from {mod}"


def test_cli_modules_stay_small():
    for p in PKG.glob("cli*.py"):
        assert len(p.read_text(encoding="utf-8").splitlines()) <= 500, p.name
