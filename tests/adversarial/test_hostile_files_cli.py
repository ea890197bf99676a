"""Every hostile file handed to ``trainwitness verify`` ends in exit 2 (unreadable) or 1 (contradicts
the claim) with a one-line reason: never a traceback, a hang or an accept."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import zstandard

from trainwitness.cli import main
from trainwitness.commit.hashing import file_sha256
from trainwitness.commit.statement import Statement
from trainwitness.commit.store import find_checkpoint
from trainwitness.identity.signing import load_private_key, load_public_key, open_envelope, seal_envelope
from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint, encode_weights
from trainwitness.tensors.state import FlatState

from ..support.runs import RecordedRun


def _pickle_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": torch.ones(3)}, buffer)  # a pickle-based file; trainwitness must never load it
    return buffer.getvalue()


def _first_checkpoint(run: RecordedRun) -> Path:
    return run.store / find_checkpoint(run.store, 0)


def _last_checkpoint(run: RecordedRun) -> Path:
    return sorted((run.store / "checkpoints").iterdir())[-1]


def _resign(run: RecordedRun, edit: Callable[[Statement], Statement]) -> None:
    """A forger with the prover's key signs an edited statement."""
    statement = Statement.from_payload(open_envelope(run.attestation.read_bytes(), load_public_key(run.public_key)))
    run.attestation.write_bytes(seal_envelope(edit(statement).to_payload(), load_private_key(run.private_key)))


def _publish_weights(run: RecordedRun, data: bytes) -> None:
    """Hostile weights, with the attestation re-signed so the subject digest matches them."""
    run.weights.write_bytes(data)
    _resign(run, lambda s: Statement(s.subject_name, file_sha256(str(run.weights)).hex(), s.claim))


def _with_entry_point(entry_point: str) -> Callable[[Statement], Statement]:
    def edit(s: Statement) -> Statement:
        claim = dataclasses.replace(s.claim, code={**s.claim.code, "entry_point": entry_point})
        return Statement(s.subject_name, s.subject_sha256, claim)

    return edit


def _safetensors(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def _edit_checkpoint(path: Path, edit: Callable[[FlatState], FlatState]) -> None:
    flat = decode_checkpoint(path.read_bytes(), "fixture")
    path.write_bytes(encode_checkpoint(edit(flat), 3 if path.name.endswith(".zst") else None))


def _nan_model(flat: FlatState) -> FlatState:
    tensors = dict(flat.tensors)
    name = next(n for n in tensors if n.startswith("model/"))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    return FlatState(tensors, flat.skeleton)


def _symlink_out(path: Path, target: Path) -> None:
    target.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(target)


def _checkpoints_dir_out(run: RecordedRun) -> None:
    outside = run.root / "outside"
    shutil.move(run.store / "checkpoints", outside)
    (run.store / "checkpoints").symlink_to(outside)


HOSTILE: dict[str, Callable[[RecordedRun], None]] = {
    # the attestation
    "attestation-empty": lambda r: r.attestation.write_bytes(b""),
    "attestation-truncated": lambda r: r.attestation.write_bytes(r.attestation.read_bytes()[:100]),
    "attestation-oversized": lambda r: r.attestation.write_bytes(b" " * (17 * 1024 * 1024) + r.attestation.read_bytes()),
    "attestation-pickle": lambda r: r.attestation.write_bytes(_pickle_bytes()),
    "attestation-nan": lambda r: r.attestation.write_bytes(r.attestation.read_bytes().replace(b'"payloadType"', b'"x":NaN,"payloadType"')),
    "attestation-duplicate-key": lambda r: r.attestation.write_bytes(r.attestation.read_bytes().replace(b'{"payload"', b'{"payloadType":"x","payload"')),
    "attestation-is-directory": lambda r: (r.attestation.unlink(), r.attestation.mkdir()),
    "attestation-is-fifo": lambda r: (r.attestation.unlink(), os.mkfifo(r.attestation)),
    "subject-path-traversal": lambda r: _resign(r, lambda s: Statement("../../etc/passwd", s.subject_sha256, s.claim)),
    "subject-absolute-path": lambda r: _resign(r, lambda s: Statement("/etc/passwd", s.subject_sha256, s.claim)),
    "entry-point-traversal": lambda r: _resign(r, _with_entry_point("../../etc:passwd")),
    "entry-point-absolute": lambda r: _resign(r, _with_entry_point("/tmp/evil.py:run")),
    "entry-point-stdlib": lambda r: _resign(r, _with_entry_point("os:system")),
    # the weights
    "weights-pickle-renamed": lambda r: r.weights.write_bytes(_pickle_bytes()),
    "weights-pickle-signed": lambda r: _publish_weights(r, _pickle_bytes()),
    "weights-truncated-signed": lambda r: _publish_weights(r, r.weights.read_bytes()[:50]),
    "weights-nan-signed": lambda r: _publish_weights(r, encode_weights({"fc1.weight": torch.full((128, 64), float("nan"))})),
    "weights-inf-signed": lambda r: _publish_weights(r, encode_weights({"fc1.weight": torch.full((128, 64), float("inf"))})),
    "weights-wrong-dtype-signed": lambda r: _publish_weights(r, encode_weights({"fc1.weight": torch.zeros((128, 64), dtype=torch.float64)})),
    "weights-wrong-shape-signed": lambda r: _publish_weights(r, encode_weights({"fc1.weight": torch.zeros((64, 128))})),
    "weights-duplicate-names-signed": lambda r: _publish_weights(r, _safetensors(
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)),
    "weights-traversal-name-signed": lambda r: _publish_weights(r, encode_weights({"../../etc/passwd": torch.zeros(2)})),
    "weights-shape-overflow-signed": lambda r: _publish_weights(r, _safetensors(
        b'{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}', b"\0" * 4)),
    "weights-symlink-to-fifo": lambda r: (r.weights.unlink(), os.mkfifo(r.root / "fifo"), r.weights.symlink_to(r.root / "fifo")),
    # the store
    "index-truncated": lambda r: (r.store / "index.jsonl").write_bytes((r.store / "index.jsonl").read_bytes()[:-7]),
    "index-empty": lambda r: (r.store / "index.jsonl").write_bytes(b""),
    "index-symlink-out": lambda r: _symlink_out(r.store / "index.jsonl", r.root / "elsewhere.jsonl"),
    "index-is-fifo": lambda r: ((r.store / "index.jsonl").unlink(), os.mkfifo(r.store / "index.jsonl")),
    "manifest-is-fifo": lambda r: ((r.store / "manifest.jsonl").unlink(), os.mkfifo(r.store / "manifest.jsonl")),
    "manifest-is-directory": lambda r: ((r.store / "manifest.jsonl").unlink(), (r.store / "manifest.jsonl").mkdir()),
    "manifest-one-huge-line": lambda r: (r.store / "manifest.jsonl").write_bytes(b"{" + b" " * (2 << 20) + b"}\n"),
    "checkpoint-pickle": lambda r: _first_checkpoint(r).write_bytes(_pickle_bytes()),
    "checkpoint-truncated": lambda r: _first_checkpoint(r).write_bytes(_first_checkpoint(r).read_bytes()[:300]),
    "checkpoint-zstd-bomb": lambda r: _first_checkpoint(r).write_bytes(zstandard.ZstdCompressor(level=1).compress(b"\0" * (256 << 20))),
    "checkpoint-nan": lambda r: _edit_checkpoint(_first_checkpoint(r), _nan_model),
    "checkpoint-missing": lambda r: _first_checkpoint(r).unlink(),
    "checkpoint-symlink-out": lambda r: _symlink_out(_first_checkpoint(r), r.root / "elsewhere.safetensors"),
    "checkpoints-dir-symlink-out": _checkpoints_dir_out,
    "store-missing": lambda r: shutil.rmtree(r.store),
    # the key
    "key-garbage": lambda r: r.public_key.write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_verify_gives_exit_1_or_2_with_one_line_reason(name: str, digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    HOSTILE[name](digits_run)
    # In-process: these tests are about parsing (one sandboxed case below covers the worker's path).
    _assert_exit_1_or_2_with_one_line(main(digits_run.verify_args("--all", "--sandbox", "off")), capsys)


@pytest.mark.parametrize("name", ["checkpoint-pickle", "checkpoint-nan"])
def test_sandboxed_verify_reports_hostile_checkpoints_in_one_line(name: str, digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    HOSTILE[name](digits_run)
    _assert_exit_1_or_2_with_one_line(main(digits_run.verify_args("--all", "--sandbox", "auto")), capsys)


def _assert_exit_1_or_2_with_one_line(status: int, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("trainwitness: error: ")
    else:
        assert status == 1
        assert "REJECT" in out
        assert len([line for line in out.splitlines() if "[FAIL]" in line]) == 1


def test_tampered_last_checkpoint_file_is_never_read_so_cannot_sway_the_verdict(digits_run: RecordedRun) -> None:
    """The last checkpoint is checked through its committed digest (replay lands on it, the weights file
    hashes to it); its file is only opened to name differing tensors after a mismatch. Garbage there
    changes nothing that the verdict rests on."""
    _edit_checkpoint(_last_checkpoint(digits_run), _nan_model)
    assert main(digits_run.verify_args("--all", "--sandbox", "off")) == 0
