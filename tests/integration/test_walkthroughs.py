"""The copy-paste walk-throughs of docs/UPSTREAM.md, docs/PACKAGER.md and docs/AUDITOR.md, run as written.

Every ```sh block of a document is run, in order, by one bash (-e: a failing command fails the test) in
an empty temporary directory, with this environment's ``trainwitness`` first on PATH. The only thing the
test chooses is ``PORT`` (a free loopback port for the packager's local web server).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def shell_blocks(document: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", document.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("name", ["UPSTREAM.md", "PACKAGER.md", "AUDITOR.md"])
def test_the_walkthrough_runs_as_written(name: str, tmp_path: Path) -> None:
    blocks = shell_blocks(DOCS / name)
    assert len(blocks) >= 3, f"{name} has {len(blocks)} shell blocks"
    if name == "PACKAGER.md":
        pytest.importorskip("fsspec")
        pytest.importorskip("cyclonedx")
    script = "set -euo pipefail\n" + "\n".join(blocks)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "PORT": str(_free_port()),
           "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    try:
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        pid_file = tmp_path / "server.pid"
        if pid_file.exists():  # the packager's web server, if a block failed before stopping it
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if name == "PACKAGER.md":
        assert "Debian ML-Policy class: Free Model" in done.stdout
        assert "ACCEPT | Free Model" in done.stdout
        assert (tmp_path / "audit.html").stat().st_size > 10_000
        assert "CycloneDX 1.6 machine-learning-model" in done.stdout
    if name == "UPSTREAM.md":
        assert (tmp_path / "site" / "index.html").is_file() and not list((tmp_path / "site").rglob("*.key"))
    if name == "AUDITOR.md":
        assert "s to replay all 120 steps here" in done.stdout
