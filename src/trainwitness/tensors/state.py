"""Training state as canonical (tensors, skeleton) pairs, and the digests that name them.

A state (model, optimizer and scheduler ``state_dict``s, RNG states) is flattened into a flat map
of named tensors plus a JSON *skeleton* in which every tensor is replaced by ``{"$tensor": name}``.
Nothing is pickled: values that are neither tensors nor plain JSON are refused.

Tensor digest (``tensor``): header = canonical JSON ``{"dtype","name","shape"}``, then the tensor's
little-endian bytes in row-major order, hashed in 4 MiB chunks (see ``hashing.chunked_digest``).
Digest over named tensors (``digest_tensors``): canonical JSON ``{"skeleton": ..., "tensors": {name:
tensor digest}}`` under a domain.
Weights digest (``weights``): over the model tensors (``model/...``) alone, named as in ``state_dict``,
skeleton null: exactly the tensors of the published weights file.
Rest digest (``state-rest``): over every other tensor (optimizer, scheduler, RNG) and the whole skeleton.
State digest (``state``, v2): ``store.compose_state_digest(weights digest, rest digest)``; the weights
digest is a component of it, so whoever reaches a state has reached its weights.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from trainwitness.commit.canonical import JSONValue, canonical_json
from trainwitness.commit.hashing import (
    chunk_spans,
    chunked_digest,
    combine_chunk_digests,
    domain_hash,
    format_digest,
    hash_chunks,
)
from trainwitness.commit.store import compose_state_digest
from trainwitness.errors import MalformedInputError

__all__ = [
    "MODEL_PREFIX",
    "StateDigests",
    "weights_of",
    "rest_of",
    "state_digests",
    "DTYPE_NAMES",
    "FlatState",
    "flatten",
    "unflatten",
    "tensor_digest",
    "digest_tensors",
    "digest_tensor_sets",
    "state_digest",
    "weights_digest",
]

# safetensors' dtype names: independent of the torch version that wrote them. Every dtype that
# safetensors' torch bindings both write and read back (safetensors 0.8: ``safetensors.torch._TYPES``);
# a state holding any other (complex128, float8_e8m0fnu, float4, sub-byte unsigned) is refused by
# name before anything is written, since the published weights must load back.
DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint64: "U64",
    torch.uint32: "U32",
    torch.uint16: "U16",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e4m3fnuz: "F8_E4M3FNUZ",
    torch.float8_e5m2: "F8_E5M2",
    torch.float8_e5m2fnuz: "F8_E5M2FNUZ",
    torch.complex64: "C64",
}

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("trainwitness hashes tensors' in-memory bytes and needs a little-endian host")


MODEL_PREFIX = "model/"  # the flattened model state_dict; the rest is optimizer, scheduler and RNG


@dataclass(frozen=True)
class FlatState:
    """A state as named tensors plus the JSON skeleton that says where each one goes."""

    tensors: dict[str, torch.Tensor]
    skeleton: JSONValue


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> JSONValue:
    if isinstance(value, torch.Tensor):
        if path in tensors:
            raise ValueError(f"two state entries flatten to the tensor name {path!r}")
        if value.dtype not in DTYPE_NAMES:
            raise ValueError(
                f"{path}: dtype {value.dtype} cannot be stored (safetensors holds {', '.join(sorted(DTYPE_NAMES.values()))})"
            )
        tensors[path] = value
        return {"$tensor": path}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in value.items()}
        items = []
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise ValueError(f"{path}: mapping key {k!r} is neither str nor int")
            items.append([k, _encode(v, f"{path}/{k}", tensors)])
        return {"$map": items}
    raise ValueError(f"{path}: {type(value).__name__} cannot be stored without pickling")


def flatten(state: Mapping[str, Any]) -> FlatState:
    """Flatten a nested state (dicts, lists, tuples, tensors, plain values) without copying tensors."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {key: _encode(value, key, tensors) for key, value in state.items()}
    return FlatState(tensors=tensors, skeleton=skeleton)


def _decode(node: JSONValue, tensors: Mapping[str, torch.Tensor], used: set[str]) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors, used) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (tag, body), = node.items()
        if tag == "$tensor":
            if not isinstance(body, str) or body not in tensors:
                raise MalformedInputError(f"skeleton names tensor {body!r}, which is not stored")
            if body in used:
                raise MalformedInputError(f"skeleton names tensor {body!r} twice")
            used.add(body)
            return tensors[body]
        if tag == "$float":
            if body not in ("nan", "inf", "-inf"):
                raise MalformedInputError(f"skeleton float {body!r} is not nan/inf/-inf")
            return float(body)
        if tag == "$tuple" and isinstance(body, list):
            return tuple(_decode(v, tensors, used) for v in body)
        if tag == "$map" and isinstance(body, list):
            out: dict[Any, Any] = {}
            for item in body:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))):
                    raise MalformedInputError("skeleton $map entry is not a [key, value] pair")
                out[item[0]] = _decode(item[1], tensors, used)
            return out
    if any(k.startswith("$") for k in node):
        raise MalformedInputError(f"skeleton has an unknown tag among {sorted(node)!r}")
    return {k: _decode(v, tensors, used) for k, v in node.items()}


def unflatten(flat: FlatState) -> dict[str, Any]:
    """Inverse of ``flatten``; every stored tensor must be used exactly once."""
    if not isinstance(flat.skeleton, dict):
        raise MalformedInputError("state skeleton is not a JSON object")
    used: set[str] = set()
    state = {k: _decode(v, flat.tensors, used) for k, v in flat.skeleton.items()}
    unused = set(flat.tensors) - used
    if unused:
        raise MalformedInputError(f"stored tensors not named by the skeleton: {sorted(unused)[:5]}")
    return state


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    # A view of the tensor's memory, not a copy, for contiguous CPU tensors (every state_dict tensor
    # and every checkpoint snapshot); only a non-contiguous view is made contiguous first.
    t = tensor.detach()
    if t.device.type != "cpu":
        raise ValueError("tensor digests are taken on CPU tensors; copy device tensors first")
    t = t.contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]


def _tensor_header(name: str, tensor: torch.Tensor) -> bytes:
    return canonical_json({"dtype": DTYPE_NAMES[tensor.dtype], "name": name, "shape": list(tensor.shape)})


def tensor_digest(name: str, tensor: torch.Tensor, executor: ThreadPoolExecutor | None = None) -> bytes:
    return chunked_digest("tensor", _tensor_header(name, tensor), _tensor_bytes(tensor), executor)


def _chunk_digests(tensors: list[torch.Tensor], executor: ThreadPoolExecutor | None) -> dict[int, list[bytes]]:
    """SHA-256 of every 4 MiB chunk of each distinct tensor (by identity), every chunk one unit of work.

    Flattening all tensors' chunks into one ordered list lets many small tensors and one huge tensor
    alike spread over every worker; the chunk digests are regrouped per tensor in order afterwards.
    """
    distinct = list({id(t): t for t in tensors}.items())
    chunks: list[memoryview] = []
    counts: list[int] = []
    for _, tensor in distinct:
        data = _tensor_bytes(tensor)
        spans = chunk_spans(len(data))
        chunks.extend(data[start:stop] for start, stop in spans)
        counts.append(len(spans))
    chunk_digests = hash_chunks(chunks, executor)
    by_tensor: dict[int, list[bytes]] = {}
    offset = 0
    for (key, _), count in zip(distinct, counts, strict=True):
        by_tensor[key] = chunk_digests[offset : offset + count]
        offset += count
    return by_tensor


def digest_tensor_sets(
    sets: list[tuple[str, Mapping[str, torch.Tensor], JSONValue]], executor: ThreadPoolExecutor | None = None
) -> list[str]:
    """``digest_tensors(domain, tensors, skeleton)`` of each set, every tensor's chunks hashed in one pass.

    A tensor found in several sets (the same tensor under other names: the tensor digests differ by
    their headers only) has its bytes hashed once; all chunks spread over the executor together.
    """
    chunk_digests = _chunk_digests([t for _, tensors, _ in sets for t in tensors.values()], executor)
    results = []
    for domain, tensors, skeleton in sets:
        names = sorted(tensors)
        digests = {
            n: format_digest(combine_chunk_digests("tensor", _tensor_header(n, tensors[n]), chunk_digests[id(tensors[n])]))
            for n in names
        }
        results.append(format_digest(domain_hash(domain, canonical_json({"skeleton": skeleton, "tensors": digests}))))
    return results


def digest_tensors(
    domain: str,
    tensors: Mapping[str, torch.Tensor],
    skeleton: JSONValue,
    executor: ThreadPoolExecutor | None = None,
) -> str:
    """Digest of named tensors plus a skeleton; independent of dict order and of worker count."""
    return digest_tensor_sets([(domain, tensors, skeleton)], executor)[0]


def weights_of(flat: FlatState) -> dict[str, torch.Tensor]:
    """The model tensors of a state, named as the model's ``state_dict`` names them (no copy)."""
    return {name[len(MODEL_PREFIX) :]: t for name, t in flat.tensors.items() if name.startswith(MODEL_PREFIX)}


def rest_of(flat: FlatState) -> dict[str, torch.Tensor]:
    """Every tensor of a state that is not a model tensor (optimizer, scheduler, RNG), by its flat name."""
    return {name: t for name, t in flat.tensors.items() if not name.startswith(MODEL_PREFIX)}


@dataclass(frozen=True)
class StateDigests:
    """A state's two component digests; its state digest is derived from them, never stored apart."""

    weights: str
    rest: str

    @property
    def state(self) -> str:
        return compose_state_digest(self.weights, self.rest)


def state_digests(flat: FlatState, executor: ThreadPoolExecutor | None = None) -> StateDigests:
    """The weights and rest digests of a state, each tensor's bytes hashed once."""
    weights, rest = digest_tensor_sets([("weights", weights_of(flat), None), ("state-rest", rest_of(flat), flat.skeleton)], executor)
    return StateDigests(weights=weights, rest=rest)


def state_digest(flat: FlatState, executor: ThreadPoolExecutor | None = None) -> str:
    """The state digest (v2): ``compose_state_digest(weights digest, rest digest)`` (docs/FORMAT.md section 2)."""
    return state_digests(flat, executor).state


def weights_digest(weights: Mapping[str, torch.Tensor], executor: ThreadPoolExecutor | None = None) -> str:
    """Digest of a model's weights as a ``state_dict`` names them (the final weights file's tensors)."""
    return digest_tensors("weights", weights, None, executor)
