"""Every parser and reader of untrusted input, fuzzed: it returns, or raises one of our two error
families (``InputError``: unreadable, ``VerificationError``: contradicts the claim). Anything else —
a traceback from deep inside json, safetensors, zstd or torch — fails the test.

Inputs are random bytes and mutations (truncation, bit flips, insertions, splices, subtree swaps)
of valid documents, so the fuzzer gets past the first syntax check into the validation logic.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainwitness.commit.canonical import canonical_json, parse_json
from trainwitness.commit.hashing import format_digest
from trainwitness.commit.merkle import InclusionProof, MerkleTree, verify_inclusion
from trainwitness.commit.statement import Statement
from trainwitness.commit.store import INDEX_FILE, CheckpointRecord, StepRecord, read_index
from trainwitness.errors import InputError, MalformedInputError, VerificationError
from trainwitness.identity.signing import _unverified_payload, open_envelope, seal_envelope
from trainwitness.tensors.checkpoint import decode_checkpoint, decode_weights, encode_checkpoint, encode_weights
from trainwitness.tensors.state import flatten, state_digest

from ..statements import statement

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OURS = (InputError, VerificationError)

DIGEST = format_digest(bytes(range(32)))
KEY = Ed25519PrivateKey.generate()


def _statement() -> Statement:
    return statement(packages=True)


def test_the_fuzzed_statement_starts_out_valid() -> None:
    # Mutations only mean something if the document they start from parses.
    assert Statement.from_payload(_statement().to_payload()).claim.total_steps == 8


PAYLOAD = _statement().to_payload()
ENVELOPE = seal_envelope(PAYLOAD, KEY)
INDEX = b"".join(
    canonical_json(r.to_json()) + b"\n"
    for r in (
        CheckpointRecord(0, 0, DIGEST, DIGEST),
        StepRecord(0, (3, 1), DIGEST, DIGEST),
        StepRecord(1, (0, 2), DIGEST, DIGEST),
        CheckpointRecord(1, 2, DIGEST, DIGEST),
    )
)
_STATE = flatten({"model": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)},
                  "step": 3, "lr": 0.1})
CHECKPOINT = encode_checkpoint(_STATE)
CHECKPOINT_ZST = encode_checkpoint(_STATE, compress_level=3)
WEIGHTS = encode_weights({"w": torch.ones(3, 2), "b": torch.zeros(2, dtype=torch.float16)})


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` after one to four random edits."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "splice", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "splice":
            start = draw(st.integers(0, max(len(data) - 1, 0)))
            data[at:at] = data[start : start + draw(st.integers(1, 64))]
        elif op == "set" and data:
            data[at] = draw(st.sampled_from(b'"{}[],:0-e.\\\x00\xff'))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def json_subtree_swapped(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` JSON with one value somewhere inside replaced by arbitrary JSON (or a key removed)."""
    obj = parse_json(valid, "seed")
    node = obj
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = draw(json_values)
        break
    return canonical_json(obj)


def _expect_ours(function, *args):  # type: ignore[no-untyped-def]
    try:
        return function(*args)
    except OURS:
        return None


def bytes_for(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), mutated(valid))


@FUZZ
@given(data=bytes_for(PAYLOAD))
def test_parse_json_takes_any_bytes(data: bytes) -> None:
    _expect_ours(parse_json, data, "fuzz")


def test_parse_json_refuses_deep_nesting_and_oversize() -> None:
    with pytest.raises(MalformedInputError):
        parse_json(b"[" * 100_000 + b"]" * 100_000, "deep")
    with pytest.raises(MalformedInputError, match="exceeds"):
        parse_json(b" " * 101, "big", max_bytes=100)


@FUZZ
@given(data=st.one_of(bytes_for(PAYLOAD), json_subtree_swapped(PAYLOAD)))
def test_statement_from_payload_takes_any_bytes(data: bytes) -> None:
    statement = _expect_ours(Statement.from_payload, data)
    if statement is not None:  # whatever was accepted must survive being written back out
        Statement.from_payload(statement.to_payload())


def test_statement_with_a_billion_checkpoints_is_refused_without_building_them() -> None:
    obj = parse_json(PAYLOAD, "seed")
    obj["predicate"]["hyperparameters"].update(total_steps=10**9, checkpoint_interval=1)
    obj["predicate"]["data"]["sampler"]["batch_size"] = 4
    with pytest.raises(MalformedInputError, match="leaves"):
        Statement.from_payload(canonical_json(obj))


@FUZZ
@given(data=st.one_of(bytes_for(ENVELOPE), json_subtree_swapped(ENVELOPE)))
def test_envelope_readers_take_any_bytes(data: bytes) -> None:
    _expect_ours(_unverified_payload, data)
    payload = _expect_ours(open_envelope, data, KEY.public_key())
    if payload is not None:  # a mutation can only verify if it left the signed bytes intact
        assert payload == PAYLOAD


@FUZZ
@given(data=st.one_of(bytes_for(INDEX), st.lists(json_subtree_swapped(INDEX.split(b"\n")[1]), max_size=3).map(lambda ls: b"\n".join(ls) + b"\n")))
def test_read_index_takes_any_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / INDEX_FILE).write_bytes(data)
        _expect_ours(read_index, Path(d))
        _expect_ours(read_index, Path(d), True)


@FUZZ
@given(data=st.one_of(bytes_for(CHECKPOINT), mutated(CHECKPOINT_ZST)))
def test_decode_checkpoint_takes_any_bytes(data: bytes) -> None:
    flat = _expect_ours(decode_checkpoint, data, "fuzz", 1 << 20)
    if flat is not None:
        state_digest(flat)  # the verifier's next step on a decoded checkpoint must not crash either


@FUZZ
@given(data=bytes_for(WEIGHTS))
def test_decode_weights_takes_any_bytes(data: bytes) -> None:
    _expect_ours(decode_weights, data, "fuzz")


safetensors_headers = st.dictionaries(
    st.text(max_size=12),
    st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "C64", "object", 3]),
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | st.text(max_size=3),
        "data_offsets": st.lists(st.integers(-5, 200), min_size=0, max_size=3),
    }),
    max_size=4,
)


@FUZZ
@given(header=safetensors_headers, body=st.binary(max_size=200))
def test_decode_checkpoint_takes_any_safetensors_header(header: dict, body: bytes) -> None:
    encoded = canonical_json({**header, "__metadata__": {"trainwitness": "{}"}})
    raw = len(encoded).to_bytes(8, "little") + encoded + body
    _expect_ours(decode_checkpoint, raw, "fuzz", 1 << 20)
    _expect_ours(decode_weights, raw, "fuzz")


@FUZZ
@given(
    root=st.binary(min_size=0, max_size=40), leaf=st.binary(max_size=40),
    index=st.integers(-(2**65), 2**65), size=st.integers(-(2**65), 2**65),
    path=st.lists(st.binary(min_size=0, max_size=40), max_size=70),
)
def test_verify_inclusion_takes_any_proof(root: bytes, leaf: bytes, index: int, size: int, path: list[bytes]) -> None:
    try:
        verify_inclusion(root, leaf, InclusionProof(index, size, tuple(path)))
    except VerificationError:
        return
    tree = MerkleTree([leaf])  # an accept is only possible for a genuine proof
    assert (root, index, size, path) == (tree.root, 0, 1, [])
