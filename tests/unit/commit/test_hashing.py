"""Domain-separated SHA-256: pinned bytes, injective framing, chunking independent of the worker count."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trainwitness.commit.hashing import (
    CHUNK_BYTES,
    chunked_digest,
    domain_hash,
    file_sha256,
    format_digest,
    parse_digest,
)
from trainwitness.errors import MalformedInputError


def test_domain_hash_is_pinned_and_follows_its_definition() -> None:
    expected = hashlib.sha256(b"trainwitness:x:v1\0" + (2).to_bytes(8, "big") + b"ab").digest()
    assert domain_hash("x", b"ab") == expected
    assert expected.hex() == "deb75c2c84d4938597763616b9932694c4ddbd0b29a765b19a3aee6fed8dc970"


def test_domains_separate_equal_inputs() -> None:
    assert domain_hash("tensor", b"same") != domain_hash("state", b"same")


def test_length_prefix_makes_part_lists_injective() -> None:
    assert domain_hash("x", b"ab", b"c") != domain_hash("x", b"a", b"bc")
    assert domain_hash("x", b"abc") != domain_hash("x", b"ab", b"c")
    assert domain_hash("x") != domain_hash("x", b"")


def test_chunked_digest_follows_its_definition_across_chunk_boundaries() -> None:
    buffer = bytes(range(256)) * (CHUNK_BYTES // 256) + b"tail"  # two chunks, the second short
    chunks = [buffer[:CHUNK_BYTES], buffer[CHUNK_BYTES:]]
    expected = domain_hash("d", b"hdr", b"".join(hashlib.sha256(c).digest() for c in chunks))
    assert chunked_digest("d", b"hdr", memoryview(buffer)) == expected


def test_chunked_digest_of_empty_buffer_is_one_empty_chunk() -> None:
    assert chunked_digest("d", b"h", memoryview(b"")) == domain_hash("d", b"h", hashlib.sha256(b"").digest())


def test_worker_count_does_not_change_the_chunked_digest() -> None:
    buffer = memoryview(bytes(range(251)) * (3 * CHUNK_BYTES // 251 + 7))
    with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(4) as four:
        by_four = chunked_digest("d", b"h", buffer, four)
        assert chunked_digest("d", b"h", buffer, one) == by_four
    assert chunked_digest("d", b"h", buffer, None) == by_four


def test_digest_text_round_trips_and_rejects_malformed_text() -> None:
    raw = hashlib.sha256(b"x").digest()
    assert parse_digest(format_digest(raw), "d") == raw
    for bad in ("sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 64, 7, None):
        with pytest.raises(MalformedInputError, match="^field: "):
            parse_digest(bad, "field")
    with pytest.raises(ValueError):
        format_digest(b"short")


def test_file_sha256_is_plain_sha256_and_honours_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello world")
    assert file_sha256(str(path)) == hashlib.sha256(b"hello world").digest()
    with pytest.raises(MalformedInputError, match="larger than the limit"):
        file_sha256(str(path), max_bytes=5)
