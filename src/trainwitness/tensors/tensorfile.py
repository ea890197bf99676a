"""safetensors files written from views of the tensors, piece by piece, without building them in memory.

``safetensors.torch.save`` copies every tensor into a new ``bytes`` and then copies that into the
file's ``bytes``, holding the GIL for both copies: in the recorder's writer thread that stalled the
training thread for about as long as the copies took (14 ms per checkpoint of the 16 MB text model).
Here a file is a header plus a view of each tensor's memory, in the order safetensors itself lays
them out, so the bytes are identical to ``safetensors.torch.save``'s (a test holds them to it);
zstd and the file write take the views one by one and release the GIL while they work.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import safetensors.torch
import torch
import zstandard

from trainwitness.commit.atomic import atomic_write_with
from trainwitness.tensors.state import DTYPE_NAMES, _tensor_bytes

__all__ = ["safetensors_parts", "join_parts", "write_parts"]

Part = bytes | memoryview


@functools.cache
def _dtype_rank() -> dict[torch.dtype, int]:
    """safetensors orders tensors by dtype, then name; the dtype order is asked of safetensors itself.

    (It is the order of its Rust ``Dtype`` enum, which has changed between versions.)
    """
    dtypes = list(DTYPE_NAMES)
    probe = safetensors.torch.save({f"t{i}": torch.zeros(1, dtype=d) for i, d in enumerate(dtypes)})
    (size,) = struct.unpack("<Q", probe[:8])
    names = [n for n in json.loads(probe[8 : 8 + size]) if n != "__metadata__"]
    return {dtypes[int(name[1:])]: rank for rank, name in enumerate(names)}


def safetensors_parts(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> list[Part]:
    """The safetensors file of ``tensors`` as [header, data of each tensor]: views, not copies.

    The views are of the tensors' own memory (a non-contiguous tensor is made contiguous first):
    the caller must not modify the tensors until the parts are written. Tensors that share memory
    (tied weights, views of one another) are each written whole under their own name, where
    ``safetensors.torch.save`` refuses them. ``metadata=None`` writes no ``__metadata__`` entry, as
    ``safetensors.torch.save(metadata=None)`` does.
    """
    rank = _dtype_rank()
    names = sorted(tensors, key=lambda n: (rank[tensors[n].dtype], n.encode("utf-8")))
    header: dict[str, object] = {} if metadata is None else {"__metadata__": dict(metadata)}
    data: list[Part] = []
    offset = 0
    for name in names:
        view = _tensor_bytes(tensors[name])
        t = tensors[name]
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(view)]}
        offset += len(view)
        data.append(view)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    return [struct.pack("<Q", len(text)) + text, *data]


def join_parts(parts: Sequence[Part], compress_level: int | None) -> bytes:
    """The file as one ``bytes`` (for callers that want it in memory), zstd-compressed when a level is given."""
    raw = b"".join(parts)
    if compress_level is None:
        return raw
    return zstandard.ZstdCompressor(level=compress_level, write_content_size=True).compress(raw)


def write_parts(path: Path, parts: Sequence[Part], compress_level: int | None) -> None:
    """Write the file durably (``atomic.atomic_write_with``), streaming each part through zstd if a level is given.

    The zstd frame records the total size, as ``join_parts`` does; the compressed bytes may differ
    from ``join_parts``'s (block boundaries), the decompressed bytes never do. A failed write (disk
    full) raises ``OutputError`` naming ``path``, and leaves no file.
    """

    def fill(f: BinaryIO) -> None:
        if compress_level is None:
            for part in parts:
                f.write(part)
            return
        compressor = zstandard.ZstdCompressor(level=compress_level, write_content_size=True)
        # Not a ``with`` block: after a failed write its exit would end the frame short and raise
        # zstd's "Src size is incorrect" over the OSError that matters.
        stream = compressor.stream_writer(f, size=sum(len(p) for p in parts), closefd=False)
        for part in parts:
            stream.write(part)
        stream.flush(zstandard.FLUSH_FRAME)
        stream.close()  # type: ignore[no-untyped-call]

    atomic_write_with(path, fill)
