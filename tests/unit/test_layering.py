"""The package's layout and import contracts hold, checked on what a user installs (the wheel).

import-linter reads a package from one directory, and ``trainwitness.prover`` and
``trainwitness.verifier`` live outside ``src/`` in the repository (setuptools ``package-dir``):
so the contracts are checked against the package as the wheel lays it out, installed into a
scratch directory. A broken copy proves the check can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, unpacked into a scratch directory."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (work / "dist").glob("trainwitness-*.whl")
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    return target


def _lint(site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([_tool("lint-imports")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_holds_every_package_of_the_three_trees(installed: Path) -> None:
    # Every directory with an __init__.py under src/trainwitness, prover/ and verifier/ is in the wheel.
    expected = {p.parent.relative_to(ROOT / "src") for p in (ROOT / "src" / "trainwitness").rglob("__init__.py")}
    for tree in ("prover", "verifier"):
        expected |= {Path("trainwitness", tree) / p.parent.relative_to(ROOT / tree) for p in (ROOT / tree).rglob("__init__.py")}
    found = {p.parent.relative_to(installed) for p in (installed / "trainwitness").rglob("__init__.py")}
    assert found == expected
    assert (installed / "trainwitness" / "verifier" / "policies" / "debian-dfsg.toml").is_file()
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == {".".join(p.parts) for p in expected}


def test_wheel_imports_prover_and_verifier_under_their_names(installed: Path) -> None:
    code = "import trainwitness.prover.recorder as p, trainwitness.verifier.verify as v; print(p.__file__); print(v.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(installed)},
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert all(Path(f).is_relative_to(installed) for f in out)


def test_import_contracts_hold(installed: Path) -> None:
    result = _lint(installed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


def test_import_contracts_catch_a_verifier_that_imports_the_prover(installed: Path, tmp_path: Path) -> None:
    broken = tmp_path / "site"
    shutil.copytree(installed, broken)
    replay = broken / "trainwitness" / "verifier" / "replay.py"
    replay.write_text(replay.read_text() + "\nimport trainwitness.prover.recorder  # noqa\n")
    result = _lint(broken)
    assert result.returncode != 0 and "The verifier never imports prover code BROKEN" in result.stdout


def test_statement_parser_imports_no_torch() -> None:
    code = (
        "import sys, trainwitness.commit.statement, trainwitness.commit.hints, trainwitness.identity.signing; "
        "sys.exit('torch' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
