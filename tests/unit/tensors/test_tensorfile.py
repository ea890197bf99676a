"""safetensors files written from tensor views: the same bytes as safetensors.torch.save, streamed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import safetensors.torch
import torch
import zstandard

from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint
from trainwitness.tensors.state import DTYPE_NAMES, FlatState, digest_tensor_sets, digest_tensors, weights_digest
from trainwitness.tensors.tensorfile import join_parts, safetensors_parts, write_parts

# Every supported dtype, names that sort differently by bytes and by dtype, a non-contiguous view,
# an empty tensor, and metadata that needs JSON escaping (quotes, backslash, control and non-ASCII).
TENSORS = {
    **{f"t{i}": torch.arange(6).reshape(2, 3).to(dtype) for i, dtype in enumerate(DTYPE_NAMES)},
    'a"b': torch.zeros(0),
    "\u00e9/x": torch.ones(3),
    "Z": torch.arange(12.0).reshape(3, 4).t(),
}
METADATA = {"trainwitness": '{"a":"\\\\x\\n\u00e9\x01\x7f\u2028"}'}


def test_parts_are_byte_identical_to_safetensors_save() -> None:
    expected = safetensors.torch.save({k: v.contiguous() for k, v in TENSORS.items()}, metadata=METADATA)
    assert join_parts(safetensors_parts(TENSORS, METADATA), None) == expected


def test_streamed_compressed_file_decompresses_to_the_same_bytes(tmp_path: Path) -> None:
    write_parts(tmp_path / "f.zst", safetensors_parts(TENSORS, METADATA), 3)
    data = (tmp_path / "f.zst").read_bytes()
    assert zstandard.ZstdDecompressor().decompress(data) == join_parts(safetensors_parts(TENSORS, METADATA), None)
    write_parts(tmp_path / "f", safetensors_parts(TENSORS, METADATA), None)
    assert (tmp_path / "f").read_bytes() == join_parts(safetensors_parts(TENSORS, METADATA), None)


def test_checkpoint_round_trips_through_parts() -> None:
    flat = FlatState({"model/w": torch.randn(4, 5), "optimizer/s": torch.tensor(3)}, {"k": [1, "x"]})
    back = decode_checkpoint(encode_checkpoint(flat, 3), "c")
    assert back.skeleton == flat.skeleton
    assert all(torch.equal(back.tensors[n], t) for n, t in flat.tensors.items())


def test_shared_tensor_sets_digest_as_separate_digests() -> None:
    w, b = torch.randn(1 << 20), torch.randn(7)  # w spans two 4 MiB chunks
    flat = FlatState({"model/w": w, "model/b": b, "optimizer/m": torch.randn(3)}, {"s": 1})
    weights = {"w": w, "b": b}
    expected = [digest_tensors("state-rest", flat.tensors, flat.skeleton), weights_digest(weights)]
    assert digest_tensor_sets([("state-rest", flat.tensors, flat.skeleton), ("weights", weights, None)]) == expected
    with ThreadPoolExecutor(3) as pool:
        assert digest_tensor_sets([("state-rest", flat.tensors, flat.skeleton), ("weights", weights, None)], pool) == expected
