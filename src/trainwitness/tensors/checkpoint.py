"""Checkpoint files: one safetensors file per checkpoint, optionally zstd-compressed (``.zst``).

The tensors are the flattened state; the skeleton travels as canonical JSON in the safetensors
metadata under the key ``trainwitness``. Reading is defensive and streams: the header is parsed
strictly (duplicate names refused) and its tensors checked to tile the data exactly before any
tensor is allocated; decompression is capped, and the (decompressed) bytes go straight into each
tensor's own memory, so a file is never held whole, compressed or decompressed, beside its tensors.

A reader that knows what a run's checkpoints hold (the verifier, from the state it rebuilt from the
signed seed) passes a ``CheckpointLayout``: a header that declares anything else is refused before
any tensor is allocated, so a file of a few KiB cannot make the reader allocate more than a state
of the run takes.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import torch
import zstandard

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.json_fields import is_int
from trainwitness.commit.safe_open import open_untrusted
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.state import DTYPE_NAMES, FlatState
from trainwitness.tensors.tensorfile import Part, join_parts, safetensors_parts

__all__ = [
    "CheckpointLayout",
    "HeaderCheck",
    "HeaderEntry",
    "checkpoint_parts",
    "encode_checkpoint",
    "decode_checkpoint",
    "read_checkpoint_file",
    "read_tensors_file",
    "read_file_metadata",
    "state_from_tensors",
    "SKELETON_KEY",
    "DTYPES",
    "MAX_HEADER_BYTES",
    "encode_weights",
    "weights_parts",
    "decode_weights",
    "read_weights_file",
    "MAX_CHECKPOINT_BYTES",
]

MAX_CHECKPOINT_BYTES = 64 * 1024**3
SKELETON_KEY = "trainwitness"  # the safetensors metadata key of the state's skeleton (canonical JSON)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_KNOWN_DTYPES = set(DTYPE_NAMES.values())


def checkpoint_parts(flat: FlatState) -> list[Part]:
    """The checkpoint's safetensors file as its header and views of the tensors (``tensorfile``): no copy."""
    return safetensors_parts(flat.tensors, {SKELETON_KEY: canonical_json(flat.skeleton).decode("utf-8")})


def encode_checkpoint(flat: FlatState, compress_level: int | None = None) -> bytes:
    return join_parts(checkpoint_parts(flat), compress_level)


def weights_parts(weights: Mapping[str, torch.Tensor]) -> list[Part]:
    """The published weights file, a plain safetensors file any tool can load, as parts (``tensorfile``).

    The bytes are those of ``safetensors.torch.save(weights)``; tied weights (``head.weight`` is
    ``embed.weight``) and views are each stored under every name the model's ``state_dict`` gives
    them, so ``model.load_state_dict(safetensors.torch.load_file(path))`` restores the model.
    """
    return safetensors_parts({k: v.detach() for k, v in weights.items()}, None)


def encode_weights(weights: Mapping[str, torch.Tensor]) -> bytes:
    """``weights_parts`` as one ``bytes``."""
    return join_parts(weights_parts(weights), None)


MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header (JSON) this reader accepts
_PIECE = 1 << 24  # what one read may produce before its bytes have a place to go
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}  # safetensors dtype name -> torch dtype


class Readable(Protocol):
    """A binary file open for reading: a store file, ``io.BytesIO``, or zstd's stream reader."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int: ...


class _Source:
    """The bytes of a checkpoint file, decompressed on the fly when it is zstd, counted against a cap.

    Nothing is allocated from a zstd frame's own size claim: the first read is one bounded piece
    (a zstd bomb costs at most that), the header is read in bounded pieces, and tensor bytes are
    written straight into the memory of the tensor they belong to. That tensor is allocated at the
    size the header declares, only after the header is checked (exact tiling, the cap), and unfilled
    (``torch.empty``): memory the stream never reaches is never touched.
    """

    def __init__(self, f: BinaryIO, length: int, what: str, max_bytes: int, first_piece: int = _PIECE) -> None:
        self.what = what
        magic = f.read(4)
        f.seek(-len(magic), io.SEEK_CUR)
        self.compressed = magic == _ZSTD_MAGIC
        self.reader: Readable = (
            zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True, closefd=False)
            if self.compressed
            else cast(Readable, f)  # every binary file has readinto; typing.BinaryIO does not declare it
        )
        # A plain file's length is known, a compressed one's only once it has been decompressed.
        self.length: int | None = None if self.compressed else length
        self.max_bytes = max_bytes if self.compressed else length
        self.total = 0
        self.pending = memoryview(self._read(min(first_piece, self.max_bytes + 1)))
        self._count(len(self.pending))

    def _read(self, n: int) -> bytes:
        try:
            return self.reader.read(n)
        except zstandard.ZstdError as e:
            raise MalformedInputError(f"{self.what}: corrupt or truncated zstd data ({e})") from e

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self.max_bytes:
            if not self.compressed:  # the file grew after it was opened
                raise MalformedInputError(f"{self.what}: holds more than the {self.max_bytes} bytes it was opened with")
            raise MalformedInputError(f"{self.what}: decompresses to more than {self.max_bytes} bytes")

    def read_into(self, out: memoryview) -> int:
        """Fill ``out`` (fewer bytes only at the end of the data); returns how many bytes were written."""
        done = min(len(out), len(self.pending))
        out[:done] = self.pending[:done]
        self.pending = self.pending[done:]
        while done < len(out):
            try:
                got = self.reader.readinto(out[done : done + _PIECE])
            except zstandard.ZstdError as e:
                raise MalformedInputError(f"{self.what}: corrupt or truncated zstd data ({e})") from e
            if not got:
                break
            self._count(got)
            done += got
        return done

    def read_bytes(self, n: int) -> bytes:
        """Up to ``n`` bytes, read in bounded pieces: a claimed length costs only what is produced."""
        pieces = []
        while n > 0:
            piece = bytearray(min(n, _PIECE))
            got = self.read_into(memoryview(piece))
            pieces.append(bytes(piece[:got]))
            if got < len(piece):
                break
            n -= got
        return b"".join(pieces)

    def expect_end(self, declared: int) -> None:
        if len(self.pending) or self._read(1):
            if self.compressed:
                raise MalformedInputError(f"{self.what}: decompresses to more than the {declared} bytes its header declares")
            raise MalformedInputError(f"{self.what}: not a valid safetensors file (bytes after the last tensor)")


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: torch.dtype
    shape: list[int]
    begin: int
    end: int


@dataclass(frozen=True)
class HeaderEntry:
    """A tensor as a header declares it, before anything is allocated for it."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]


_OPTIMIZER_STATE = re.compile(r"optimizer/state/(0|[1-9][0-9]{0,8})/.+")
# Per parameter, the optimizer's state tensors together hold at most this many elements per element of
# the parameter (plus a few scalars): Adam with amsgrad holds 3, SGD with momentum 1, Adafactor less.
OPTIMIZER_ELEMENTS_PER_PARAMETER = 4
_OPTIMIZER_SCALARS = 64


@dataclass(frozen=True)
class CheckpointLayout:
    """Every tensor a checkpoint of one run may declare, known before any checkpoint file is read.

    ``fixed``: name -> (dtype, shape) of each tensor every checkpoint holds exactly so (the model,
    the RNG states, scheduler and param-group tensors: those of the state rebuilt from the seed).
    ``parameters``: element count of each parameter the optimizer steps, by its position in the
    optimizer's ``state_dict`` (``optimizer/state/<k>/...``). Optimizer state appears after the
    first step, so it is bounded rather than fixed: per parameter k at most
    ``OPTIMIZER_ELEMENTS_PER_PARAMETER`` x its elements (+ 64), each element at most 8 bytes.
    A header is accepted only if it declares every fixed tensor as fixed, and nothing else but
    optimizer state within those bounds. The bytes that leaves to a hostile file are at most those
    of the rebuilt state plus 32 bytes per parameter element.
    """

    fixed: Mapping[str, tuple[torch.dtype, tuple[int, ...]]]
    parameters: Sequence[int]

    @classmethod
    def of(cls, rebuilt: Mapping[str, torch.Tensor], parameters: Sequence[int]) -> CheckpointLayout:
        """From a rebuilt state's tensors (flattened names) and the optimizer's parameter sizes, in order."""
        fixed = {n: (t.dtype, tuple(t.shape)) for n, t in rebuilt.items() if not _OPTIMIZER_STATE.fullmatch(n)}
        return cls(fixed=fixed, parameters=tuple(parameters))

    def check(self, entries: Sequence[HeaderEntry], what: str) -> None:
        """Raise ``MalformedInputError`` naming the first tensor of ``entries`` that the layout does not allow."""
        where = f"{what}: not a checkpoint of this run"
        per_parameter: dict[int, int] = {}
        for entry in entries:
            numel = math.prod(entry.shape)
            expected = self.fixed.get(entry.name)
            if expected is not None:
                if (entry.dtype, entry.shape) != expected:
                    raise MalformedInputError(
                        f"{where} (tensor {entry.name!r} is declared {_show(entry.dtype, entry.shape)}, "
                        f"the state built from the seed holds {_show(*expected)})"
                    )
                continue
            match = _OPTIMIZER_STATE.fullmatch(entry.name)
            if match is None or int(match.group(1)) >= len(self.parameters):
                raise MalformedInputError(f"{where} (it declares tensor {entry.name[:120]!r}, which the run's state has no place for)")
            k = int(match.group(1))
            if torch.empty(0, dtype=entry.dtype).element_size() > 8:
                raise MalformedInputError(f"{where} (optimizer tensor {entry.name!r} has elements wider than 8 bytes)")
            per_parameter[k] = per_parameter.get(k, 0) + numel
            if per_parameter[k] > OPTIMIZER_ELEMENTS_PER_PARAMETER * self.parameters[k] + _OPTIMIZER_SCALARS:
                raise MalformedInputError(
                    f"{where} (its optimizer state for parameter {k} declares {per_parameter[k]} elements, more than "
                    f"{OPTIMIZER_ELEMENTS_PER_PARAMETER} per element of the parameter's {self.parameters[k]})"
                )
        missing = sorted(set(self.fixed) - {e.name for e in entries})
        if missing:
            raise MalformedInputError(f"{where} (it lacks {', '.join(repr(n) for n in missing[:3])}{' and more' if len(missing) > 3 else ''})")


def _show(dtype: torch.dtype, shape: tuple[int, ...]) -> str:
    return f"{DTYPE_NAMES.get(dtype, str(dtype))} {list(shape)}"


# (the tensors a header declares, its metadata) -> None; raises to refuse the file before allocation.
HeaderCheck = Callable[[list[HeaderEntry], dict[str, JSONValue]], None]


def _layout(header: dict[str, JSONValue], data_len: int | None, what: str) -> list[_Entry]:
    """The tensors a header declares, in file order, checked to tile the data exactly (no gap, no overlap)."""
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _KNOWN_DTYPES:
            raise MalformedInputError(f"{what}: tensor {name!r} has an unsupported dtype")
        offsets, shape = info.get("data_offsets"), info.get("shape")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(is_int(o) and 0 <= o for o in offsets)
            or offsets[0] > offsets[1]
            or (data_len is not None and offsets[1] > data_len)
        ):
            raise MalformedInputError(f"{what}: truncated or corrupt (tensor {name!r} lies outside the file)")
        if set(info) != {"dtype", "shape", "data_offsets"}:
            raise MalformedInputError(f"{what}: not a valid safetensors file (tensor {name!r} has fields besides dtype, shape, data_offsets)")
        dtype = DTYPES[str(info["dtype"])]
        if (
            not isinstance(shape, list)
            or not all(is_int(d) and 0 <= d < 2**62 for d in shape)
            or math.prod(shape) * torch.empty(0, dtype=dtype).element_size() != offsets[1] - offsets[0]
        ):
            raise MalformedInputError(f"{what}: not a valid safetensors file (tensor {name!r}: shape does not fit its bytes)")
        entries.append(_Entry(name, dtype, shape, offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e.begin, e.end))
    position = 0
    for entry in entries:
        if entry.begin != position:
            raise MalformedInputError(f"{what}: not a valid safetensors file (tensor {entry.name!r} overlaps another or leaves a gap)")
        position = entry.end
    return entries


def _byte_view(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]


def _read_header(source: _Source) -> tuple[dict[str, JSONValue], dict[str, JSONValue], int]:
    """The safetensors header (8-byte little-endian length, then JSON): the header object, its
    ``__metadata__`` ({} when absent) and the header's length in bytes. The one header parser."""
    what = source.what
    prefix = source.read_bytes(8)
    if len(prefix) < 8:
        raise MalformedInputError(f"{what}: truncated (no safetensors header)")
    (size,) = struct.unpack("<Q", prefix)
    if size > MAX_HEADER_BYTES or (source.length is not None and size > source.length - 8):
        raise MalformedInputError(f"{what}: truncated or corrupt (header claims {size} bytes)")
    text = source.read_bytes(size)
    if len(text) < size:
        raise MalformedInputError(f"{what}: truncated or corrupt (header claims {size} bytes)")
    header = parse_json(text, f"{what} header")
    if not isinstance(header, dict):
        raise MalformedInputError(f"{what}: header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise MalformedInputError(f"{what}: safetensors metadata is not an object")
    return header, metadata, size


def read_file_metadata(f: BinaryIO, length: int, what: str, max_bytes: int = MAX_CHECKPOINT_BYTES) -> dict[str, JSONValue]:
    """The safetensors metadata of an open file of ``length`` bytes (zstd or not), reading (and
    decompressing) no more than its header. ``MalformedInputError`` when the header is malformed."""
    return _read_header(_Source(f, length, what, max_bytes, first_piece=8))[1]


def _load_stream(source: _Source, check: HeaderCheck | None = None) -> tuple[dict[str, torch.Tensor], dict[str, JSONValue]]:
    what = source.what
    header, metadata, size = _read_header(source)
    entries = _layout(header, None if source.length is None else source.length - 8 - size, what)
    declared = 8 + size + (entries[-1].end if entries else 0)
    if declared > source.max_bytes:
        raise MalformedInputError(f"{what}: decompresses to more than {source.max_bytes} bytes (its header declares {declared})")
    if check is not None:  # before any allocation: the header against what the reader knows the file must hold
        check([HeaderEntry(e.name, e.dtype, tuple(e.shape)) for e in entries], metadata)
    tensors: dict[str, torch.Tensor] = {}
    for entry in entries:
        # Copy point: the only one. Each tensor gets its own memory (never a view of a shared buffer,
        # so a caller may hand single tensors on), and the stream is written straight into it.
        try:
            tensor = torch.empty(entry.shape, dtype=entry.dtype)
        except RuntimeError as e:  # the size is within the cap, but this machine cannot hold it
            raise MalformedInputError(f"{what}: tensor {entry.name!r} cannot be allocated ({e})") from e
        if source.read_into(_byte_view(tensor)) != entry.end - entry.begin:
            raise MalformedInputError(f"{what}: truncated or corrupt (tensor {entry.name!r} lies outside the file)")
        tensors[entry.name] = tensor
    source.expect_end(declared)
    return dict(sorted(tensors.items())), metadata


def _load(data: bytes, what: str, max_bytes: int = MAX_CHECKPOINT_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, JSONValue]]:
    return _load_stream(_Source(io.BytesIO(data), len(data), what, max_bytes))


def state_from_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, JSONValue], what: str) -> FlatState:
    """The flat state of a checkpoint's tensors and the skeleton its metadata holds under ``SKELETON_KEY``."""
    text = metadata.get(SKELETON_KEY)
    if not isinstance(text, str):
        raise MalformedInputError(f"{what}: no trainwitness skeleton in the safetensors metadata")
    skeleton = parse_json(text.encode("utf-8"), f"{what} skeleton")
    return FlatState(tensors=tensors, skeleton=skeleton)


def read_checkpoint_file(
    f: BinaryIO, length: int, what: str, max_bytes: int = MAX_CHECKPOINT_BYTES, layout: CheckpointLayout | None = None
) -> FlatState:
    """A checkpoint streamed from an open file of ``length`` bytes (zstd or not): never held whole.

    Every tensor is decoded straight into memory of its own, so the caller owns it outright. With
    ``layout``, a header declaring other tensors is refused (``MalformedInputError``) before any
    tensor is allocated.
    """
    return state_from_tensors(*_load_stream(_Source(f, length, what, max_bytes), _checked_against(layout, what)), what)


def read_tensors_file(
    f: BinaryIO, length: int, what: str, max_bytes: int = MAX_CHECKPOINT_BYTES, check: HeaderCheck | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, JSONValue]]:
    """The tensors and safetensors metadata of a file streamed like ``read_checkpoint_file``'s;
    ``check`` sees the header's tensors and metadata before any tensor is allocated."""
    return _load_stream(_Source(f, length, what, max_bytes), check)


def decode_checkpoint(data: bytes, what: str, max_bytes: int = MAX_CHECKPOINT_BYTES, layout: CheckpointLayout | None = None) -> FlatState:
    return state_from_tensors(*_load_stream(_Source(io.BytesIO(data), len(data), what, max_bytes), _checked_against(layout, what)), what)


def _checked_against(layout: CheckpointLayout | None, what: str) -> HeaderCheck | None:
    if layout is None:
        return None

    def check(entries: list[HeaderEntry], metadata: dict[str, JSONValue]) -> None:
        layout.check(entries, what)

    return check


def decode_weights(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """The published weights file: plain safetensors (never compressed), so what it may make the
    reader allocate is bounded by its own length."""
    if data[:4] == _ZSTD_MAGIC:
        raise MalformedInputError(f"{what}: zstd-compressed; a weights file is a plain safetensors file")
    tensors, _ = _load(data, what)
    return tensors


def read_weights_file(path: Path, what: str, max_bytes: int = MAX_CHECKPOINT_BYTES) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (safetensors, optionally zstd) at ``path``, streamed, opened safely.

    The file must be a regular file, not a symlink (``safe_open.open_untrusted``);
    ``MissingInputError`` when it does not exist, ``MalformedInputError`` when it cannot be decoded.
    """
    with open_untrusted(path, f"{what} {path}", max_bytes) as (f, size):
        tensors, _ = read_tensors_file(f, size, f"{what} {path}", max_bytes)
    return tensors
