"""``run.json`` is read through one typed reader (``commit.run_declaration``) by the prover and the verifier.

A damaged ``run.json`` ends ``attest`` and ``verify`` in one line ``trainwitness: error: ...`` naming the
file, exit 2, never a traceback; the reader gives back the very bytes the prover wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainwitness.cli import main
from trainwitness.commit.run_declaration import MAX_RUN_FILE_BYTES, RunDeclaration
from trainwitness.errors import MalformedInputError

from ...support.runs import RecordedRun


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def apply(valid: bytes) -> bytes:
        obj = json.loads(valid)
        change(obj)
        return json.dumps(obj).encode()

    return apply


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[key]
        obj[last] = value

    return change


DAMAGED: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda valid: valid[: len(valid) // 2],
    "empty": lambda valid: b"",
    "not an object": lambda valid: b"[1, 2, 3]\n",
    "a string steps count": _edit(_set("hyperparameters.total_steps", "60")),
    "a boolean seed": _edit(_set("hyperparameters.seed", True)),
    "an environment without its device": _edit(lambda obj: obj["environment"].pop("device")),
    "no hyperparameters": _edit(lambda obj: obj.pop("hyperparameters")),
    "an unknown field": _edit(_set("surprise", 1)),
    "code that is a list": _edit(_set("code", [])),
    "a file list entry of the wrong type": _edit(_set("code_files", [{"path": 1, "sha256": "x", "executable": False}])),
    "a manifest summary that is a number": _edit(_set("data.manifest", 7)),
    "another store format": _edit(_set("format", "trainwitness-store/v0")),
    "a parent of the wrong shape": _edit(_set("parent", {"mode": "finetune"})),
}


def _damage(run: RecordedRun, how: str) -> Path:
    path = run.store / "run.json"
    path.write_bytes(DAMAGED[how](path.read_bytes()))
    return path


def _one_line_exit_2(args: list[str], capsys: pytest.CaptureFixture[str], path: Path) -> str:
    status = main(args)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainwitness: error: "), err
    assert "run.json" in lines[0] and str(path.parent) in lines[0], err  # names the file
    return lines[0]


def _attest_args(run: RecordedRun, tmp_path: Path) -> list[str]:
    return ["attest", "--store", str(run.store), "--weights", str(run.weights), "--key", str(run.private_key), "--out", str(tmp_path / "a.json")]


@pytest.mark.parametrize("how", sorted(DAMAGED))
def test_attest_on_a_damaged_run_json_is_exit_2_in_one_line_naming_it(
    how: str, digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _damage(digits_run, how)
    _one_line_exit_2(_attest_args(digits_run, tmp_path), capsys, path)
    assert not (tmp_path / "a.json").exists()  # nothing signed


@pytest.mark.parametrize("how", ["truncated", "not an object", "a string steps count", "an unknown field", "a file list entry of the wrong type"])
def test_verify_on_a_damaged_run_json_is_exit_2_in_one_line_naming_it(
    how: str, digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _damage(digits_run, how)
    _one_line_exit_2(digits_run.verify_args("--segments", "1", "--sandbox", "off"), capsys, path)


def test_a_huge_run_json_is_refused_before_it_is_read(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = digits_run.store / "run.json"
    os.truncate(path, MAX_RUN_FILE_BYTES + 1)  # sparse: its size is over the bound, nothing is written
    assert "over the limit" in _one_line_exit_2(_attest_args(digits_run, tmp_path), capsys, path)
    assert "over the limit" in _one_line_exit_2(digits_run.verify_args("--segments", "1", "--sandbox", "off"), capsys, path)


def test_the_reader_gives_back_the_bytes_the_prover_wrote(digits_run: RecordedRun) -> None:
    written = (digits_run.store / "run.json").read_bytes()
    declared = RunDeclaration.from_bytes(written, "run.json")
    assert declared.to_bytes() == written
    assert declared.entry_point == json.loads(written)["code"]["entry_point"]
    assert declared.manifest.num_samples == json.loads(written)["data"]["num_samples"]


@pytest.mark.parametrize("how", sorted(DAMAGED))
def test_the_reader_names_the_file_for_every_damage(how: str, digits_run: RecordedRun) -> None:
    damaged = DAMAGED[how]((digits_run.store / "run.json").read_bytes())
    with pytest.raises(MalformedInputError, match="^STORE/run.json"):
        RunDeclaration.from_bytes(damaged, "STORE/run.json")
