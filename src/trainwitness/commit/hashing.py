"""Domain-separated SHA-256 digests, written ``sha256:<64 hex>``.

Every hash this package computes starts with a domain tag (``trainwitness:<what>:v<n>`` and a NUL), so
a digest of one kind can never be presented as a digest of another. Large buffers are hashed in
fixed chunks whose digests are combined in order, so the chunks can be hashed on several cores
(hashlib releases the GIL) without changing the result.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from trainwitness.errors import MalformedInputError

__all__ = [
    "Digest",
    "CHUNK_BYTES",
    "domain_hash",
    "format_digest",
    "parse_digest",
    "file_sha256",
    "chunked_digest",
    "chunk_spans",
    "hash_chunks",
    "combine_chunk_digests",
]

Digest = str  # "sha256:" + 64 lowercase hex digits

CHUNK_BYTES = 1 << 22  # 4 MiB: the chunk size is part of the tensor digest's definition (v1)

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def format_digest(raw: bytes) -> Digest:
    if len(raw) != 32:
        raise ValueError("a SHA-256 digest is 32 bytes")
    return "sha256:" + raw.hex()


def parse_digest(text: object, what: str) -> bytes:
    """The raw 32 bytes of a ``sha256:<hex>`` string from untrusted input."""
    if not isinstance(text, str) or not _DIGEST_RE.match(text):
        raise MalformedInputError(f"{what}: {text!r} is not a 'sha256:<64 hex digits>' digest")
    return bytes.fromhex(text[7:])


def domain_hash(domain: str, *parts: bytes, version: int = 1) -> bytes:
    """SHA-256 over ``trainwitness:<domain>:v<version>\\0`` followed by each part, length-prefixed.

    The 8-byte big-endian length before each part makes the encoding injective: no two different
    part lists hash the same bytes. ``version`` is the definition's version (the state digest is at 2).
    """
    h = hashlib.sha256()
    h.update(f"trainwitness:{domain}:v{version}".encode("ascii") + b"\0")
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def chunk_spans(length: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of a ``length``-byte buffer; an empty buffer is one empty chunk."""
    return [(start, min(start + CHUNK_BYTES, length)) for start in range(0, max(length, 1), CHUNK_BYTES)]


def _sha256_all(chunks: Sequence[memoryview]) -> list[bytes]:
    return [hashlib.sha256(chunk).digest() for chunk in chunks]


def hash_chunks(chunks: Sequence[memoryview], executor: ThreadPoolExecutor | None = None) -> list[bytes]:
    """SHA-256 of each chunk, in input order, on the executor's threads when given.

    Chunks are packed into tasks of about ``CHUNK_BYTES`` so that many small buffers do not pay one
    task each; ``map`` keeps input order, so the worker count cannot change any result.
    """
    if executor is None or len(chunks) < 2:
        return _sha256_all(chunks)
    tasks: list[list[memoryview]] = [[]]
    size = 0
    for chunk in chunks:
        if size >= CHUNK_BYTES:
            tasks.append([])
            size = 0
        tasks[-1].append(chunk)
        size += len(chunk)
    return [digest for task in executor.map(_sha256_all, tasks) for digest in task]


def combine_chunk_digests(domain: str, header: bytes, chunk_digests: Sequence[bytes]) -> bytes:
    """``domain_hash(domain, header, SHA256(chunk_0) || SHA256(chunk_1) || ...)``."""
    return domain_hash(domain, header, b"".join(chunk_digests))


def chunked_digest(
    domain: str, header: bytes, buffer: memoryview, executor: ThreadPoolExecutor | None = None
) -> bytes:
    """``combine_chunk_digests`` over ``buffer`` cut by ``chunk_spans``; no copy of ``buffer`` is made."""
    flat = buffer.cast("B")
    chunks = [flat[start:stop] for start, stop in chunk_spans(len(flat))]
    return combine_chunk_digests(domain, header, hash_chunks(chunks, executor))


def file_sha256(path: str, max_bytes: int | None = None) -> bytes:
    """Plain SHA-256 of a file's bytes (what in-toto subjects name)."""
    h = hashlib.sha256()
    total = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            total += len(block)
            if max_bytes is not None and total > max_bytes:
                raise MalformedInputError(f"{path}: larger than the limit of {max_bytes} bytes")
            h.update(block)
    return h.digest()
