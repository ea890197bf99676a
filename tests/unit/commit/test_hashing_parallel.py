"""Parallel hashing: the worker count and the chunking of work never change a digest."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import torch

from trainwitness.commit.hashing import CHUNK_BYTES, chunked_digest, combine_chunk_digests, hash_chunks
from trainwitness.tensors.state import digest_tensors, tensor_digest


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    huge = torch.randn(CHUNK_BYTES // 4 * 2 + 1234, generator=g)  # three chunks, the last one short
    return {
        "huge": huge,
        "small": torch.randn(33, generator=g),
        "ints": torch.arange(1000, dtype=torch.int64),
        "empty": torch.zeros(0),
        "transposed": torch.randn(64, 48, generator=g).t(),  # not contiguous
    }


def test_max_workers_does_not_change_state_digest() -> None:
    state = _state()
    serial = digest_tensors("state", state, {"k": 1})
    with ThreadPoolExecutor(max_workers=1) as one, ThreadPoolExecutor(max_workers=4) as four:
        assert digest_tensors("state", state, {"k": 1}, one) == serial
        assert digest_tensors("state", state, {"k": 1}, four) == serial


def test_max_workers_does_not_change_tensor_digest_of_multi_chunk_tensor() -> None:
    huge = _state()["huge"]
    with ThreadPoolExecutor(max_workers=4) as four:
        assert tensor_digest("huge", huge, four) == tensor_digest("huge", huge)


def test_chunked_digest_is_the_documented_combination_of_plain_sha256_chunks() -> None:
    data = bytes(range(256)) * (CHUNK_BYTES // 256 + 3)
    expected_chunks = [hashlib.sha256(data[i : i + CHUNK_BYTES]).digest() for i in range(0, len(data), CHUNK_BYTES)]
    assert len(expected_chunks) == 2
    expected = combine_chunk_digests("tensor", b"hdr", expected_chunks)
    with ThreadPoolExecutor(max_workers=4) as four:
        assert chunked_digest("tensor", b"hdr", memoryview(data), four) == expected
    assert chunked_digest("tensor", b"hdr", memoryview(data)) == expected


def test_hash_chunks_keeps_input_order_when_packing_small_chunks() -> None:
    chunks = [memoryview(bytes([i]) * (i * 40_000 + 1)) for i in range(30)]  # about four tasks
    with ThreadPoolExecutor(max_workers=4) as four:
        assert hash_chunks(chunks, four) == [hashlib.sha256(c).digest() for c in chunks]
