"""Packaging: what another project's CI gets when it installs xmppd.

The repository keeps its ``auth/`` folder (the layout is asked for), but it installs
as ``xmppd_auth``: a consumer project with its own ``auth`` package must still be
able to use the ``xmppd_server`` fixture.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONSUMER_TEST = '''
def test_consumer_uses_the_fixture(xmppd_server):
    import auth, auth.registry  # the consumer's own package, untouched by xmppd
    assert auth.registry.MINE == "consumer"
    import xmppd, xmppd_auth
    assert "installed" in xmppd.__file__ and "installed" in xmppd_auth.__file__, xmppd.__file__
    assert xmppd_server.accounts[0].jid.endswith("@localhost")
'''


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _packages_on_disk() -> set[str]:
    found = set()
    for init in (ROOT / "xmppd").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def test_every_xmppd_package_is_listed_in_pyproject() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    assert _packages_on_disk() <= listed, sorted(_packages_on_disk() - listed)
    assert cfg["package-dir"] == {"xmppd_auth": "auth"}
    assert "auth" not in listed


def test_runtime_dependencies_are_ranges_and_ci_pins_them() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = [d for d in project["dependencies"] if "==" in d]
    assert not pinned, f"runtime dependencies pinned exactly: {pinned}"
    constraints = (ROOT / ".ci" / "constraints.txt").read_text().split()
    names = {_norm(line.split("==")[0]) for line in constraints if "==" in line}
    for dep in project["dependencies"] + project["optional-dependencies"]["test"]:
        name = _norm(re.split(r"[<>=\[ ]", dep)[0])
        assert name in names, f"{name} has no exact pin in .ci/constraints.txt"


@pytest.mark.timeout(600)
def test_consumer_project_with_its_own_auth_package_uses_the_fixture(tmp_path: Path) -> None:
    # build from a copy: an in-tree build leaves build/ and *.egg-info in the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "var", "certs"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("xmppd-*.whl")
    installed = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(installed),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    assert (installed / "xmppd_auth" / "registry.py").is_file()
    assert not (installed / "auth").exists()

    project = tmp_path / "consumer"
    (project / "auth").mkdir(parents=True)
    (project / "auth" / "__init__.py").write_text("")
    (project / "auth" / "registry.py").write_text('MINE = "consumer"\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_consumer.py").write_text(CONSUMER_TEST)
    (project / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    # the installed copy comes first on sys.path; the repository is not on it at all
    env["PYTHONPATH"] = f"{project}{os.pathsep}{installed}"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout


def test_nothing_imports_the_repository_auth_folder_by_its_folder_name() -> None:
    # from the repository root, "auth" is importable as a second copy of xmppd_auth;
    # code that names it would work here and break once installed
    code = ("import pkgutil, sys, xmppd, xmppd_auth\n"
            "for m in pkgutil.walk_packages(xmppd.__path__, 'xmppd.'):\n"
            "    if m.name != 'xmppd.__main__': __import__(m.name)\n"
            "for m in pkgutil.walk_packages(xmppd_auth.__path__, 'xmppd_auth.'): __import__(m.name)\n"
            "assert 'auth' not in sys.modules, 'something imported the top-level auth package'\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
