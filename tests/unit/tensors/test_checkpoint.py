"""Checkpoint files: safetensors (+ optional zstd) round trips, and defensive decoding of hostile bytes."""

from __future__ import annotations

import json
import struct

import pytest
import safetensors.torch
import torch
import zstandard

from trainwitness.errors import MalformedInputError
from trainwitness.tensors.checkpoint import decode_checkpoint, decode_weights, encode_checkpoint, encode_weights
from trainwitness.tensors.state import flatten, state_digest, weights_digest


def _flat():  # type: ignore[no-untyped-def]
    return flatten({"model": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, "step": 4, "odd": float("nan")})


@pytest.mark.parametrize("level", [None, 3])
def test_checkpoint_round_trips_to_the_same_state_digest(level: int | None) -> None:
    flat = _flat()
    data = encode_checkpoint(flat, level)
    assert (data[:4] == b"\x28\xb5\x2f\xfd") == (level is not None)
    decoded = decode_checkpoint(data, "ckpt")
    assert decoded.skeleton == flat.skeleton
    assert state_digest(decoded) == state_digest(flat)


def test_weights_file_is_plain_safetensors() -> None:
    weights = {"w": torch.ones(2, 2), "b": torch.zeros(2)}
    data = encode_weights(weights)
    assert set(safetensors.torch.load(data)) == {"w", "b"}
    assert weights_digest(decode_weights(data, "weights")) == weights_digest(weights)


@pytest.mark.parametrize("level", [None, 3])
def test_truncated_checkpoint_is_malformed_and_says_so(level: int | None) -> None:
    data = encode_checkpoint(_flat(), level)
    for cut in (3, 8, len(data) // 2, len(data) - 1):
        with pytest.raises(MalformedInputError, match="^ckpt: .*(truncated|not a valid safetensors)"):
            decode_checkpoint(data[:cut], "ckpt")


def test_decompression_is_capped() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * 100_000)
    with pytest.raises(MalformedInputError, match="decompresses to more than 1000 bytes"):
        decode_checkpoint(bomb, "ckpt", max_bytes=1000)


def _safetensors_with_header(header: dict[str, object], data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


@pytest.mark.parametrize(
    ("header", "cause"),
    [
        ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 400]}}, "lies outside the file"),
        ({"t": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 4]}}, "unsupported dtype"),
        ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, "no trainwitness skeleton"),
    ],
)
def test_hostile_headers_are_refused_before_loading(header: dict[str, object], cause: str) -> None:
    with pytest.raises(MalformedInputError, match=cause):
        decode_checkpoint(_safetensors_with_header(header, b"\0" * 4), "ckpt")


def test_duplicate_tensor_names_in_the_header_are_refused() -> None:
    entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    header = ('{"t":' + entry + ',"t":' + entry + "}").encode()
    with pytest.raises(MalformedInputError, match="duplicate JSON key 't'"):
        decode_checkpoint(struct.pack("<Q", len(header)) + header + b"\0" * 4, "ckpt")


def test_header_size_beyond_the_file_is_truncation() -> None:
    with pytest.raises(MalformedInputError, match="header claims 1000 bytes"):
        decode_weights(struct.pack("<Q", 1000) + b"{}", "weights")
