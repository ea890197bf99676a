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
