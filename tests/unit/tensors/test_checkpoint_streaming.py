"""Checkpoints are decoded as a stream: never held whole, each tensor in memory of its own, the
header's layout checked before anything is allocated (peak memory of verify, docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import struct
import sys
import tracemalloc
from pathlib import Path

import pytest
import torch
import zstandard

from trainwitness.commit.store import atomic_write, checkpoint_relpath
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.state import FlatState, flatten, state_digest

SKELETON = json.dumps({"model": {"w": {"$tensor": "model/w"}}})


def _safetensors(entries: dict[str, object], data: bytes) -> bytes:
    header = json.dumps({**entries, "__metadata__": {"trainwitness": SKELETON}}).encode()
    return struct.pack("<Q", len(header)) + header + data


def _rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


def test_decoded_tensors_each_own_their_memory() -> None:
    flat = flatten({"model": {"a": torch.arange(6.0), "b": torch.ones(3, dtype=torch.int64)}, "rng": {"s": torch.zeros(5, dtype=torch.uint8)}})
    for level in (None, 3):
        decoded = decode_checkpoint(encode_checkpoint(flat, level), "ckpt")
        assert state_digest(decoded) == state_digest(flat)
        for t in decoded.tensors.values():  # not views into one shared buffer: a tensor may be handed on alone
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
        storages = {t.untyped_storage().data_ptr() for t in decoded.tensors.values()}
        assert len(storages) == len(decoded.tensors)


@pytest.mark.parametrize(
    ("entries", "cause"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlaps another"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, "leaves a gap"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "shape does not fit its bytes"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "extra": 1}}, "fields besides"),
    ],
)
def test_a_header_whose_tensors_do_not_tile_the_data_is_refused(entries: dict[str, object], cause: str) -> None:
    raw = _safetensors(entries, b"\0" * 12)
    for data in (raw, zstandard.ZstdCompressor().compress(raw)):
        with pytest.raises(MalformedInputError, match=f"not a valid safetensors file.*{cause}"):
            decode_checkpoint(data, "ckpt")


def test_bytes_after_the_last_tensor_are_refused() -> None:
    raw = _safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 5)
    with pytest.raises(MalformedInputError, match="bytes after the last tensor"):
        decode_checkpoint(raw, "ckpt")
    with pytest.raises(MalformedInputError, match="more than the .* bytes its header declares"):
        decode_checkpoint(zstandard.ZstdCompressor().compress(raw), "ckpt")


def test_a_header_declaring_more_than_the_cap_is_refused_before_allocating() -> None:
    raw = _safetensors({"a": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 1 << 32]}}, b"")
    with pytest.raises(MalformedInputError, match="its header declares"):
        decode_checkpoint(zstandard.ZstdCompressor().compress(raw), "ckpt", max_bytes=1 << 20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
def test_a_declared_tensor_the_stream_never_fills_costs_no_memory() -> None:
    # 512 MiB declared (within the cap), a few bytes delivered: the tensor is allocated unfilled, so
    # what the process holds tracks the bytes produced, not the header's claim.
    raw = _safetensors({"model/w": {"dtype": "F32", "shape": [1 << 27], "data_offsets": [0, 1 << 29]}}, b"\1" * 64)
    before = _rss_bytes()
    with pytest.raises(MalformedInputError, match="tensor 'model/w' lies outside the file"):
        decode_checkpoint(zstandard.ZstdCompressor().compress(raw), "ckpt")
    assert _rss_bytes() - before < 64 << 20


def test_a_checkpoint_file_is_never_held_whole(tmp_path: Path) -> None:
    # 64 MiB of incompressible floats: the old reader held the compressed file and the decompressed
    # bytes beside the tensors (over 128 MiB of Python bytes); streaming holds one 16 MiB piece.
    g = torch.Generator().manual_seed(0)
    flat = FlatState({"model/w": torch.randn(1 << 24, generator=g)}, {"model": {"w": {"$tensor": "model/w"}}})
    atomic_write(tmp_path / checkpoint_relpath(0, compressed=True), encode_checkpoint(flat, compress_level=1))
    tracemalloc.start()
    try:
        decoded, read = read_checkpoint(tmp_path, [0], 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read > 56 << 20  # randn floats barely compress
    assert peak < 24 << 20
    assert torch.equal(decoded.tensors["model/w"], flat.tensors["model/w"])
