"""Delta checkpoints: XOR against the previous checkpoint, byte-plane shuffled, zstd; keyframes every F."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import zstandard

from trainwitness.cli import main
from trainwitness.commit.store import atomic_write, delta_relpath
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.delta import encode_delta
from trainwitness.tensors.state import FlatState, state_digest

from ...support.runs import SHORT_DIGITS, record_and_sign


def _state(scale: float) -> FlatState:
    g = torch.Generator().manual_seed(3)
    tensors = {
        "model/w": torch.randn(40, 30, generator=g) * scale,
        "model/h": (torch.randn(17, generator=g) * scale).to(torch.bfloat16),
        "optimizer/step": torch.tensor(int(scale * 10), dtype=torch.int64),
        "rng/mask": torch.rand(9, generator=g) > scale / 4,
    }
    return FlatState(tensors, {"scale": scale, "names": sorted(tensors)})


def _write_chain(store: Path, states: list[FlatState], keyframe_every: int) -> list[int]:
    steps = [10 * i for i in range(len(states))]
    for i, flat in enumerate(states):
        base = None if i % keyframe_every == 0 else states[i - 1]
        atomic_write(store / delta_relpath(steps[i]), encode_delta(flat, base, None if base is None else i - 1))
    return steps


def test_delta_chain_reconstructs_every_checkpoint_bitwise(tmp_path: Path) -> None:
    states = [_state(1.0 + 0.01 * i) for i in range(7)]
    states[4].tensors["model/new"] = torch.ones(2, 2)  # a tensor the base lacks is stored whole
    steps = _write_chain(tmp_path, states, keyframe_every=3)
    seen: list[int] = []
    for i, expected in enumerate(states):
        seen.clear()
        flat, read = read_checkpoint(tmp_path, steps, i, check=lambda j, _: seen.append(j))
        assert state_digest(flat) == state_digest(expected)
        assert read > 0
        assert seen == list(range(i - i % 3, i + 1))  # from its keyframe, in order


def test_delta_reconstruction_resumes_from_a_state_already_built(tmp_path: Path) -> None:
    states = [_state(1.0 + 0.01 * i) for i in range(5)]
    steps = _write_chain(tmp_path, states, keyframe_every=5)
    seen: list[int] = []
    flat, _ = read_checkpoint(tmp_path, steps, 4, check=lambda j, _: seen.append(j), start=(2, states[2]))
    assert seen == [3, 4]
    assert state_digest(flat) == state_digest(states[4])


def test_delta_against_a_checkpoint_other_than_the_previous_is_refused(tmp_path: Path) -> None:
    states = [_state(1.0), _state(1.1), _state(1.2)]
    steps = [0, 10, 20]
    atomic_write(tmp_path / delta_relpath(0), encode_delta(states[0], None, None))
    atomic_write(tmp_path / delta_relpath(10), encode_delta(states[1], states[0], 0))
    atomic_write(tmp_path / delta_relpath(20), encode_delta(states[2], states[0], 0))  # skips checkpoint 1
    with pytest.raises(MalformedInputError, match="previous checkpoint"):
        read_checkpoint(tmp_path, steps, 2)


def test_delta_file_golden_bytes() -> None:
    flat = FlatState({"a": torch.tensor([1.0, 2.0], dtype=torch.float32)}, {"a": {"$tensor": "a"}})
    base = FlatState({"a": torch.tensor([1.0, 3.0], dtype=torch.float32)}, {"a": {"$tensor": "a"}})
    raw = zstandard.ZstdDecompressor().decompress(encode_delta(flat, base, 4))
    # XOR: [0, 0x40000000 ^ 0x40400000 = 0x00400000] little-endian, shuffled into byte planes 0..3.
    assert raw.endswith(bytes([0, 0, 0, 0, 0, 0x40, 0, 0]))
    assert b'{\\"base\\":4,\\"format\\":\\"trainwitness-delta/v1\\",\\"tensors\\":{\\"a\\":{\\"dtype\\":\\"F32\\",\\"shape\\":[2],\\"xor\\":true}}}' in raw
    # safetensors writes its metadata map in no fixed order, so the header is compared parsed.
    size = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + size]) == {
        "__metadata__": {
            "trainwitness": '{"a":{"$tensor":"a"}}',
            "trainwitness-delta": '{"base":4,"format":"trainwitness-delta/v1","tensors":{"a":{"dtype":"F32","shape":[2],"xor":true}}}',
        },
        "a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
    }
    assert len(raw) == 8 + size + 8


def test_delta_store_verifies_and_a_corrupt_delta_is_caught(tmp_path: Path) -> None:
    run = record_and_sign(tmp_path / "run", overrides=SHORT_DIGITS, delta_every=4)
    files = sorted(p.name for p in (run.store / "checkpoints").iterdir())
    assert files and all(name.endswith(".delta.safetensors.zst") for name in files)
    assert main(run.verify_args("--all")) == 0
    # Replace checkpoint 2 (a delta) with a well-formed delta that encodes different numbers.
    steps = [20 * i for i in range(7)]
    honest1, _ = read_checkpoint(run.store, steps, 1)
    honest2, _ = read_checkpoint(run.store, steps, 2)
    forged = FlatState({k: (v + 1 if v.is_floating_point() else v) for k, v in honest2.tensors.items()}, honest2.skeleton)
    atomic_write(run.store / delta_relpath(steps[2]), encode_delta(forged, honest1, 1))
    assert main(run.verify_args("--all")) == 1


def test_resume_after_a_crash_rebuilds_a_delta_checkpoint_and_ends_identically(tmp_path: Path) -> None:
    from trainwitness.commit.canonical import canonical_json
    from trainwitness.commit.store import INDEX_FILE, read_index
    from trainwitness.prover import record_run

    store, weights = tmp_path / "store", tmp_path / "model.safetensors"
    first = record_run("trainwitness.workloads.digits:digits", SHORT_DIGITS, store, weights, delta_every=3)
    index = read_index(store)
    # Crash after checkpoint 4 (a delta on keyframe 3) and two more steps; later files never written.
    lines = (store / INDEX_FILE).read_bytes().split(b"\n")
    cut = lines.index(canonical_json(index.checkpoints[4].to_json())) + 3
    (store / INDEX_FILE).write_bytes(b"\n".join(lines[:cut]) + b"\n")
    for record in index.checkpoints[5:]:
        (store / delta_relpath(record.step)).unlink()
    again = record_run("trainwitness.workloads.digits:digits", SHORT_DIGITS, store, weights, delta_every=3)
    assert again.resumed_from_step == index.checkpoints[4].step
    assert again.final == first.final
