"""State flattening and the tensor, state and weights digests: pinned bytes and invariants."""

from __future__ import annotations

import hashlib
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.hashing import domain_hash, format_digest
from trainwitness.errors import MalformedInputError
from trainwitness.tensors.state import (
    FlatState,
    StateDigests,
    flatten,
    state_digest,
    state_digests,
    tensor_digest,
    unflatten,
    weights_digest,
    weights_of,
)


def _small() -> torch.Tensor:
    return torch.arange(6, dtype=torch.float32).reshape(2, 3)


def _small_state() -> dict[str, object]:
    return {"model": {"w": _small(), "b": torch.tensor([1, 2], dtype=torch.int64)}, "step": 3, "lr": 0.5}


# -- golden bytes ------------------------------------------------------------------------------------


def test_tensor_digest_is_pinned() -> None:
    assert tensor_digest("w", _small()).hex() == "c947f29b5a7dc28fcffc980d4c1db746c0a64d4d16f404744357b66b2c205fb8"


def test_tensor_digest_follows_its_written_definition() -> None:
    header = b'{"dtype":"F32","name":"w","shape":[2,3]}'
    data = struct.pack("<6f", 0.0, 1.0, 2.0, 3.0, 4.0, 5.0)  # row-major, little-endian IEEE 754
    assert data[:8] == b"\x00\x00\x00\x00\x00\x00\x80\x3f"  # 0.0f, 1.0f little-endian
    assert tensor_digest("w", _small()) == domain_hash("tensor", header, hashlib.sha256(data).digest())


def test_state_digest_is_pinned() -> None:
    # Format v2 (issue 11): the state digest composes the weights digest and the rest digest.
    assert state_digest(flatten(_small_state())) == (
        "sha256:0db12c9a7af640af0fa2bd5113a3f47ed6ec8a94d857c5186124ae63c25387ac"
    )


def test_state_digest_follows_its_written_definition() -> None:
    flat = flatten(_small_state())
    model = {n: t for n, t in flat.tensors.items() if n.startswith("model/")}
    others = {n: t for n, t in flat.tensors.items() if not n.startswith("model/")}
    weights = format_digest(domain_hash("weights", canonical_json({
        "skeleton": None, "tensors": {n[len("model/"):]: format_digest(tensor_digest(n[len("model/"):], t)) for n, t in model.items()},
    })))
    rest = format_digest(domain_hash("state-rest", canonical_json({
        "skeleton": flat.skeleton, "tensors": {n: format_digest(tensor_digest(n, t)) for n, t in others.items()},
    })))
    composed = canonical_json({"rest": rest, "weights": weights})
    assert composed.startswith(b'{"rest":"sha256:')
    expected = hashlib.sha256(b"trainwitness:state:v2\x00" + len(composed).to_bytes(8, "big") + composed).digest()
    assert state_digest(flat) == format_digest(expected)
    assert state_digests(flat) == StateDigests(weights=weights, rest=rest)
    assert weights == weights_digest(weights_of(flat))


def test_the_weights_digest_is_a_component_of_the_state_digest() -> None:
    # The same rest with other weights is another state: reaching a state proves its weights.
    flat = flatten(_small_state())
    edited = dict(flat.tensors)
    edited["model/w"] = flat.tensors["model/w"] + 1
    other = FlatState(edited, flat.skeleton)
    assert state_digests(other).rest == state_digests(flat).rest
    assert state_digests(other).weights != state_digests(flat).weights
    assert state_digest(other) != state_digest(flat)


def test_weights_digest_is_pinned_and_differs_from_the_state_digest_of_the_same_tensors() -> None:
    weights = {"w": _small()}
    assert weights_digest(weights) == "sha256:9d384c3e94087fcc0521a40b999d6b33446afd3261a6e209993cdcaa8bc0b6af"
    assert weights_digest(weights) != state_digest(FlatState(weights, None))


# -- invariants --------------------------------------------------------------------------------------


def test_state_digest_is_independent_of_dict_order() -> None:
    a = {"model": {"w": _small(), "b": torch.ones(2)}, "opt": {"lr": 0.1, "m": 0.9}}
    b = {"opt": {"m": 0.9, "lr": 0.1}, "model": {"b": torch.ones(2), "w": _small()}}
    assert state_digest(flatten(a)) == state_digest(flatten(b))
    assert weights_digest({"x": torch.ones(1), "y": torch.zeros(1)}) == weights_digest({"y": torch.zeros(1), "x": torch.ones(1)})


def test_hash_worker_count_does_not_change_the_state_digest() -> None:
    generator = torch.Generator().manual_seed(0)
    # Several tensors, one larger than a hashing chunk (4 MiB), so both levels of parallelism run.
    state = {f"t{i}": torch.randn(100 + i, generator=generator) for i in range(9)}
    state["big"] = torch.randn(1_200_000, generator=generator)
    flat = flatten(state)
    with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(4) as four:
        by_one, by_four = state_digest(flat, one), state_digest(flat, four)
        big_by_four = tensor_digest("big", state["big"], four)
    assert by_one == by_four == state_digest(flat)
    assert big_by_four == tensor_digest("big", state["big"])


@pytest.mark.parametrize(
    "changed",
    [
        ("w", _small().to(torch.float64)),  # dtype
        ("w", _small().reshape(3, 2)),  # shape, same bytes
        ("w", _small().reshape(6)),  # rank, same bytes
        ("v", _small()),  # name
    ],
)
def test_dtype_shape_and_name_each_change_the_tensor_digest(changed: tuple[str, torch.Tensor]) -> None:
    assert tensor_digest(*changed) != tensor_digest("w", _small())


def test_one_changed_bit_changes_the_tensor_digest() -> None:
    t = _small()
    t.view(torch.int32)[1, 2] ^= 1
    assert tensor_digest("w", t) != tensor_digest("w", _small())


def test_non_contiguous_tensor_digests_as_its_contiguous_copy() -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    assert not t.is_contiguous()
    assert tensor_digest("t", t) == tensor_digest("t", t.contiguous())


def test_skeleton_changes_the_state_digest() -> None:
    assert state_digest(flatten({"w": _small(), "lr": 0.5})) != state_digest(flatten({"w": _small(), "lr": 0.25}))


# -- flatten / unflatten ------------------------------------------------------------------------------


def test_flatten_round_trips_nested_state() -> None:
    state = {
        "model": {"w": _small()},
        "optimizer": {"state": {0: {"momentum": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "pair": (1, torch.zeros(1)),
        "odd": float("inf"),
        "none": None,
    }
    back = unflatten(flatten(state))
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert isinstance(back["pair"], tuple) and back["pair"][0] == 1
    assert back["optimizer"]["state"][0]["momentum"].tolist() == [1.0, 1.0]
    assert back["odd"] == float("inf") and back["none"] is None


def test_flatten_refuses_what_would_need_pickling() -> None:
    with pytest.raises(ValueError, match="cannot be stored without pickling"):
        flatten({"x": object()})


@pytest.mark.parametrize(
    ("skeleton", "cause"),
    [
        ({"a": {"$tensor": "missing"}}, "not stored"),
        ({"a": {"$tensor": "t"}, "b": {"$tensor": "t"}}, "twice"),
        ({"a": {"$float": "1e308"}}, "not nan/inf/-inf"),
        ({"a": {"$evil": 1, "x": 2}}, "unknown tag"),
        ({}, "not named by the skeleton"),
    ],
)
def test_unflatten_refuses_a_hostile_skeleton(skeleton: dict[str, object], cause: str) -> None:
    with pytest.raises(MalformedInputError, match=cause):
        unflatten(FlatState({"t": torch.zeros(1)}, skeleton))
