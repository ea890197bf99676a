"""Compressed checkpoints cannot make the verifier allocate more than one piece beyond what they declare."""

from __future__ import annotations

import tracemalloc

import pytest
import torch
import zstandard

from trainwitness.errors import MalformedInputError
from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint
from trainwitness.tensors.state import flatten

GIB_OF_ZEROS_PIECES = 64  # 64 pieces of 16 MiB: 1 GiB once decompressed, about 32 KiB compressed


def _bomb(prefix: bytes) -> bytes:
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    zeros = b"\0" * (1 << 24)
    return compressor.compress(prefix) + b"".join(compressor.compress(zeros) for _ in range(GIB_OF_ZEROS_PIECES)) + compressor.flush()


def _peak_mib_while_decoding(data: bytes) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(MalformedInputError):
            decode_checkpoint(data, "bomb")
        return tracemalloc.get_traced_memory()[1] >> 20
    finally:
        tracemalloc.stop()


def test_zstd_bomb_without_a_header_stops_after_one_piece() -> None:
    assert _peak_mib_while_decoding(_bomb(b"")) < 100


def test_zstd_bomb_behind_a_valid_header_stops_at_the_declared_size() -> None:
    honest = encode_checkpoint(flatten({"model": {"w": torch.ones(3)}}))
    assert _peak_mib_while_decoding(_bomb(honest)) < 100


def test_zstd_output_over_the_cap_is_refused() -> None:
    with pytest.raises(MalformedInputError, match="more than 1000 bytes"):
        decode_checkpoint(zstandard.ZstdCompressor().compress(b"\0" * 5000), "capped", max_bytes=1000)


def test_honest_compressed_checkpoint_still_decodes() -> None:
    flat = flatten({"model": {"w": torch.arange(5.0)}, "rng": {"s": torch.zeros(700, dtype=torch.uint8)}})
    decoded = decode_checkpoint(encode_checkpoint(flat, compress_level=3), "honest")
    assert set(decoded.tensors) == set(flat.tensors)
    assert torch.equal(decoded.tensors["model/w"], flat.tensors["model/w"])


# -- the layout a run's checkpoints must have (issue 12, D8) --------------------------------------------

def _declaring(name: str, dtype: str, count: int, element: int) -> bytes:
    """A zstd checkpoint of a few KiB whose header declares one tensor of ``count`` elements (zeros)."""
    import json
    import struct

    header = json.dumps({name: {"dtype": dtype, "shape": [count], "data_offsets": [0, count * element]},
                         "__metadata__": {"trainwitness": "{}"}}).encode()
    header += b" " * (-len(header) % 8)
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    body, left = [compressor.compress(struct.pack("<Q", len(header)) + header)], count * element
    zeros = b"\0" * (1 << 24)
    while left > 0:
        body.append(compressor.compress(zeros[: min(left, len(zeros))]))
        left -= len(zeros)
    return b"".join(body) + compressor.flush()


def test_a_header_disagreeing_with_the_runs_layout_is_refused_before_allocation() -> None:
    from trainwitness.tensors.checkpoint import CheckpointLayout

    honest = flatten({"model": {"w": torch.ones(3, 4)}, "optimizer": {"state": {}}, "rng": {"s": torch.zeros(8, dtype=torch.uint8)}})
    layout = CheckpointLayout.of(honest.tensors, [12])
    assert decode_checkpoint(encode_checkpoint(honest, 3), "honest", layout=layout).tensors.keys() == honest.tensors.keys()
    bomb = _declaring("model/w", "F32", 200 << 20, 4)  # 800 MiB declared, about 26 KB on disk
    assert len(bomb) < 64 * 1024
    with pytest.raises(MalformedInputError, match=r"not a checkpoint of this run \(tensor 'model/w' is declared F32 \[209715200\], the state built from the seed holds F32 \[3, 4\]\)"):
        decode_checkpoint(bomb, "bomb", layout=layout)
    with pytest.raises(MalformedInputError, match="which the run's state has no place for"):
        decode_checkpoint(_declaring("model/extra", "F32", 4, 4), "extra", layout=layout)
    # Optimizer state appears after the first step: bounded by its parameter, not fixed.
    later = flatten({"model": {"w": torch.ones(3, 4)}, "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3, 4)}}},
                     "rng": {"s": torch.zeros(8, dtype=torch.uint8)}})
    decode_checkpoint(encode_checkpoint(later, 3), "later", layout=layout)
    huge = flatten({"model": {"w": torch.ones(3, 4)}, "optimizer": {"state": {0: {"m": torch.ones(12 * 4 + 65)}}},
                    "rng": {"s": torch.zeros(8, dtype=torch.uint8)}})
    with pytest.raises(MalformedInputError, match="optimizer state for parameter 0 declares 113 elements"):
        decode_checkpoint(encode_checkpoint(huge, 3), "huge", layout=layout)


def test_a_delta_file_disagreeing_with_the_runs_layout_is_refused_before_allocation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trainwitness.commit.store import delta_relpath
    from trainwitness.tensors.checkpoint import CheckpointLayout
    from trainwitness.tensors.checkpoint_reader import read_checkpoint
    from trainwitness.tensors.delta import encode_delta

    state = flatten({"model": {"w": torch.ones(3, 4)}, "rng": {"s": torch.zeros(8, dtype=torch.uint8)}})
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / delta_relpath(0)).write_bytes(encode_delta(state, None, None))
    assert read_checkpoint(tmp_path, [0], 0, layout=CheckpointLayout.of(state.tensors, []))[0].tensors.keys() == state.tensors.keys()
    other = CheckpointLayout.of(flatten({"model": {"w": torch.ones(4, 3)}, "rng": {"s": torch.zeros(8, dtype=torch.uint8)}}).tensors, [])
    with pytest.raises(MalformedInputError, match="not a checkpoint of this run"):
        read_checkpoint(tmp_path, [0], 0, layout=other)


_PEAK = """
import resource, sys
from trainwitness.cli import main
status = main(sys.argv[1:])
print("PEAK", status, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def _verify_peak_kib(args: list[str]) -> tuple[int, int]:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, env=env, timeout=900)
    line = next(line for line in result.stdout.splitlines() if line.startswith("PEAK"))
    _, status, peak = line.split()
    return int(status), int(peak)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's")
def test_a_checkpoint_declaring_800_mib_costs_the_verifier_no_more_memory_than_an_honest_one(digits_run) -> None:  # type: ignore[no-untyped-def]
    from trainwitness.commit.store import find_checkpoint
    from trainwitness.verifier.draw import choose_segments

    seed = next(s for s in range(10_000) if choose_segments(6, 1, s) == [1, 5])  # the segment that starts at checkpoint 1, and the last
    args = digits_run.verify_args("--segments", "1", "--seed", str(seed), "--sandbox", "off")
    status, honest_kib = _verify_peak_kib(args)
    assert status == 0
    path = digits_run.store / find_checkpoint(digits_run.store, 20)
    path.write_bytes(_declaring("model/fc1.weight", "F32", 200 << 20, 4))  # 800 MiB of zeros, declared and delivered
    status, hostile_kib = _verify_peak_kib(args)
    assert status == 2  # refused before allocation: not a checkpoint of this run
    assert hostile_kib < honest_kib + 64 * 1024, (honest_kib, hostile_kib)


def test_a_hints_field_that_inflates_like_a_bomb_is_refused_before_it_is_held() -> None:
    import base64

    from trainwitness.commit.canonical import canonical_json
    from trainwitness.commit.hints import parse_hints_record

    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(64 << 20))  # 64 MiB of zero entries, a few KiB packed
    record = canonical_json({"gradient_hints": base64.b64encode(bomb).decode(), "gradient_scales": [], "state_hints": "", "step": 0})
    with pytest.raises(MalformedInputError, match="a zstd bomb"):
        parse_hints_record(record, 0, "hints.jsonl line 1")


def test_a_compressed_weights_file_is_refused_so_it_costs_no_more_than_its_length() -> None:
    from trainwitness.tensors.checkpoint import decode_weights, encode_weights

    data = zstandard.ZstdCompressor().compress(encode_weights({"w": torch.ones(3)}))
    with pytest.raises(MalformedInputError, match="a weights file is a plain safetensors file"):
        decode_weights(data, "model.safetensors")
