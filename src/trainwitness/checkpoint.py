"""Checkpoint files: one safetensors file per checkpoint, optionally zstd-compressed (``.zst``).

The tensors are the flattened state; the skeleton travels as canonical JSON in the safetensors
metadata under the key ``trainwitness``. Reading is defensive: the header is parsed strictly
(duplicate names refused) before safetensors touches the bytes, and decompression is capped.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import safetensors
import safetensors.torch
import torch
import zstandard

from .canonical import JSONValue, canonical_json, parse_json
from .errors import MalformedInputError
from .state import DTYPE_NAMES, FlatState
from .tensorfile import Part, join_parts, safetensors_parts

__all__ = ["checkpoint_parts", "encode_checkpoint", "decode_checkpoint", "encode_weights", "decode_weights", "MAX_CHECKPOINT_BYTES"]

MAX_CHECKPOINT_BYTES = 64 * 1024**3
_METADATA_KEY = "trainwitness"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_KNOWN_DTYPES = set(DTYPE_NAMES.values())


def checkpoint_parts(flat: FlatState) -> list[Part]:
    """The checkpoint's safetensors file as its header and views of the tensors (``tensorfile``): no copy."""
    return safetensors_parts(flat.tensors, {_METADATA_KEY: canonical_json(flat.skeleton).decode("utf-8")})


def encode_checkpoint(flat: FlatState, compress_level: int | None = None) -> bytes:
    return join_parts(checkpoint_parts(flat), compress_level)


def encode_weights(weights: Mapping[str, torch.Tensor]) -> bytes:
    """The published weights file: a plain safetensors file any tool can load."""
    return safetensors.torch.save({k: v.detach().contiguous() for k, v in weights.items()})


_MAX_HEADER_BYTES = 100 * 1024 * 1024


def _declared_size(prefix: bytes, what: str) -> int | None:
    """The file size a safetensors header declares (8 + header + last data offset), once it is all in."""
    if len(prefix) < 8:
        return None
    size: int = struct.unpack("<Q", prefix[:8])[0]
    if size > _MAX_HEADER_BYTES:
        raise MalformedInputError(f"{what}: truncated or corrupt (header claims {size} bytes)")
    if len(prefix) < 8 + size:
        return None
    header = parse_json(prefix[8 : 8 + size], f"{what} header")
    ends: list[int] = [
        o
        for info in (header.values() if isinstance(header, dict) else ())
        if isinstance(info, dict) and isinstance(info.get("data_offsets"), list)
        for o in info["data_offsets"]
        if isinstance(o, int)
    ]
    return 8 + size + max(ends, default=0)


def _decompress(data: bytes, what: str, max_bytes: int) -> bytes:
    """Decompress in bounded pieces, stopping at ``max_bytes`` or as soon as the output outgrows what
    its own header declares: a zstd bomb (a little data expanding to gigabytes) costs one piece."""
    chunks: list[bytes] = []
    total = 0
    declared: int | None = None
    # The frame's recorded content size is not trusted for an up-front allocation: a bomb can record
    # any size. Pieces are bounded, and checked against the size the safetensors header declares.
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        while piece := reader.read(1 << 24):
            total += len(piece)
            if total > max_bytes:
                raise MalformedInputError(f"{what}: decompresses to more than {max_bytes} bytes")
            chunks.append(piece)
            if declared is None:
                declared = _declared_size(b"".join(chunks), what)
            if declared is not None and total > declared:
                raise MalformedInputError(f"{what}: decompresses to more than the {declared} bytes its header declares")
    except zstandard.ZstdError as e:
        raise MalformedInputError(f"{what}: corrupt or truncated zstd data ({e})") from e
    return b"".join(chunks)


def decompress_if_zstd(data: bytes, what: str, max_bytes: int = MAX_CHECKPOINT_BYTES) -> bytes:
    """The safetensors bytes of a checkpoint file, compressed or not (decoding it is idempotent)."""
    return _decompress(data, what, max_bytes) if data[:4] == _ZSTD_MAGIC else data


def _read_header(raw: bytes, what: str) -> dict[str, JSONValue]:
    if len(raw) < 8:
        raise MalformedInputError(f"{what}: truncated (no safetensors header)")
    (size,) = struct.unpack("<Q", raw[:8])
    if size > len(raw) - 8 or size > 100 * 1024 * 1024:
        raise MalformedInputError(f"{what}: truncated or corrupt (header claims {size} bytes)")
    header = parse_json(raw[8 : 8 + size], f"{what} header")
    if not isinstance(header, dict):
        raise MalformedInputError(f"{what}: header is not a JSON object")
    data_len = len(raw) - 8 - size
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _KNOWN_DTYPES:
            raise MalformedInputError(f"{what}: tensor {name!r} has an unsupported dtype")
        offsets = info.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and 0 <= o <= data_len for o in offsets)
        ):
            raise MalformedInputError(f"{what}: truncated or corrupt (tensor {name!r} lies outside the file)")
    return header


def _load(raw: bytes, what: str) -> tuple[dict[str, torch.Tensor], dict[str, JSONValue]]:
    header = _read_header(raw, what)
    try:
        tensors = safetensors.torch.load(raw)
    except (safetensors.SafetensorError, ValueError, RuntimeError) as e:
        raise MalformedInputError(f"{what}: not a valid safetensors file ({e})") from e
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise MalformedInputError(f"{what}: safetensors metadata is not an object")
    return tensors, metadata


def decode_checkpoint(data: bytes, what: str, max_bytes: int = MAX_CHECKPOINT_BYTES) -> FlatState:
    raw = decompress_if_zstd(data, what, max_bytes)
    tensors, metadata = _load(raw, what)
    text = metadata.get(_METADATA_KEY)
    if not isinstance(text, str):
        raise MalformedInputError(f"{what}: no trainwitness skeleton in the safetensors metadata")
    skeleton = parse_json(text.encode("utf-8"), f"{what} skeleton")
    return FlatState(tensors=tensors, skeleton=skeleton)


def decode_weights(data: bytes, what: str) -> dict[str, torch.Tensor]:
    tensors, _ = _load(data, what)
    return tensors
