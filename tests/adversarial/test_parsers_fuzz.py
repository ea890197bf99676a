"""Every parser and reader of untrusted input, fuzzed: it returns, or raises one of our two error
families (``InputError``: unreadable, exit 2; ``VerificationError``: contradicts the claim, exit 1)
with the exit status of its kind and a one-line message. Anything else — a traceback from deep inside
json, tomllib, safetensors, zstd, cryptography or torch — fails the test (``fuzzing.py``).

Inputs are random bytes and mutations (truncation, bit flips, insertions, splices, subtree swaps,
planted huge or overflowing numbers and lone surrogates) of valid documents, so the fuzzer gets past
the first syntax check into the validation logic. Each parser has a quick test in the default run
and a thorough one (at least 200 examples) marked slow; the command line is fuzzed the same way,
asserting its exit status and its one-line error.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from trainwitness.cli import main
from trainwitness.commit.canonical import canonical_json, parse_json
from trainwitness.commit.hashing import format_digest
from trainwitness.commit.hints import StepHints, hints_record, parse_hints_record
from trainwitness.commit.merkle import InclusionProof, MerkleTree, verify_inclusion
from trainwitness.commit.statement import Statement
from trainwitness.commit.store import INDEX_FILE, CheckpointRecord, StepRecord, read_index
from trainwitness.data.manifest import ManifestSummary, read_manifest
from trainwitness.errors import MalformedInputError, VerificationError
from trainwitness.identity.code import files_from_json
from trainwitness.identity.signing import _unverified_payload, load_public_key, open_envelope, seal_envelope
from trainwitness.run.rng import capture_rng, restore_rng
from trainwitness.tensors.checkpoint import (
    CheckpointLayout,
    decode_checkpoint,
    decode_weights,
    encode_checkpoint,
    encode_weights,
)
from trainwitness.tensors.state import FlatState, flatten, state_digest
from trainwitness.verifier.policy import parse_policy_toml

from ..support.fuzzing import bytes_for, check_error, expect_ours, fuzz, json_subtree_swapped, json_values, mutated
from ..support.runs import RecordedRun
from ..support.statements import statement

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
LAYOUT = CheckpointLayout.of(_STATE.tensors, [6, 2])
WEIGHTS = encode_weights({"w": torch.ones(3, 2), "b": torch.zeros(2, dtype=torch.float16)})
HINTS = hints_record(0, StepHints((1, -2), bytes(range(8)) * 2, bytes(8)))
POLICY = b"""[policy]
name = "fuzz"
source = "written for the fuzzer"
[[allow]]
id = "MIT"
reason = "fine"
[[deny]]
id = "CC-BY-NC-4.0"
reason = "non-commercial"
"""
PUBLIC_PEM = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
CODE_FILES = canonical_json([{"executable": False, "path": "a.py", "sha256": DIGEST}, {"executable": True, "path": "b/c.py", "sha256": DIGEST}])


def test_the_fuzzed_documents_start_out_valid() -> None:
    # Mutations only mean something if the documents they start from parse.
    assert Statement.from_payload(PAYLOAD).claim.total_steps == 8
    assert parse_hints_record(HINTS, 0, "hints").gradient_scales == (1, -2)
    assert parse_policy_toml(POLICY, "policy").name == "fuzz"
    assert len(files_from_json(parse_json(CODE_FILES, "files"), "files")) == 2
    assert decode_checkpoint(CHECKPOINT_ZST, "fuzz", layout=LAYOUT).tensors.keys() == _STATE.tensors.keys()


# -- JSON, the statement, the envelope --------------------------------------------------------------------


def _parse_json(data: bytes) -> None:
    expect_ours(parse_json, data, "fuzz")


test_parse_json_takes_any_bytes, test_parse_json_takes_any_bytes_thoroughly = fuzz(data=bytes_for(PAYLOAD))(_parse_json)


def test_parse_json_refuses_deep_nesting_and_oversize() -> None:
    with pytest.raises(MalformedInputError):
        parse_json(b"[" * 100_000 + b"]" * 100_000, "deep")
    with pytest.raises(MalformedInputError, match="exceeds"):
        parse_json(b" " * 101, "big", max_bytes=100)


def _statement_from_payload(data: bytes) -> None:
    statement = expect_ours(Statement.from_payload, data)
    if statement is not None:  # whatever was accepted must survive being written back out
        Statement.from_payload(statement.to_payload())


test_statement_from_payload_takes_any_bytes, test_statement_from_payload_takes_any_bytes_thoroughly = fuzz(
    data=st.one_of(bytes_for(PAYLOAD), json_subtree_swapped(PAYLOAD))
)(_statement_from_payload)


def test_statement_with_a_billion_checkpoints_is_refused_without_building_them() -> None:
    obj = parse_json(PAYLOAD, "seed")
    obj["predicate"]["hyperparameters"].update(total_steps=10**9, checkpoint_interval=1)
    obj["predicate"]["data"]["sampler"]["batch_size"] = 4
    with pytest.raises(MalformedInputError, match="leaves"):
        Statement.from_payload(canonical_json(obj))


def _envelope_readers(data: bytes) -> None:
    expect_ours(_unverified_payload, data)
    payload = expect_ours(open_envelope, data, KEY.public_key(), statuses=(1, 2))
    if payload is not None:  # a mutation can only verify if it left the signed bytes intact
        assert payload == PAYLOAD


test_envelope_readers_take_any_bytes, test_envelope_readers_take_any_bytes_thoroughly = fuzz(
    data=st.one_of(bytes_for(ENVELOPE), json_subtree_swapped(ENVELOPE))
)(_envelope_readers)


def _public_key(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "k.pub").write_bytes(data)
        expect_ours(load_public_key, Path(d) / "k.pub")


_PEM_BODY = PUBLIC_PEM.split(b"\n")[1]
test_public_key_reader_takes_any_bytes, test_public_key_reader_takes_any_bytes_thoroughly = fuzz(
    data=st.one_of(
        bytes_for(PUBLIC_PEM),
        # well-formed PEM around a mutated DER body: algorithm OIDs and lengths the library does not know
        mutated(base64.b64decode(_PEM_BODY)).map(
            lambda der: b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n"
        ),
    )
)(_public_key)


# -- the store: index, run.json's file list, manifest, hints, checkpoints, weights ---------------------------


def _read_index(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / INDEX_FILE).write_bytes(data)
        expect_ours(read_index, Path(d))
        expect_ours(read_index, Path(d), True)


test_read_index_takes_any_bytes, test_read_index_takes_any_bytes_thoroughly = fuzz(
    data=st.one_of(
        bytes_for(INDEX),
        st.lists(json_subtree_swapped(INDEX.split(b"\n")[1]), max_size=3).map(lambda ls: b"\n".join(ls) + b"\n"),
    )
)(_read_index)


def _code_files(data: bytes) -> None:
    value = expect_ours(parse_json, data, "run.json")
    if value is not None:
        expect_ours(files_from_json, value, "run.json code_files")


test_code_file_list_takes_any_bytes, test_code_file_list_takes_any_bytes_thoroughly = fuzz(
    data=st.one_of(bytes_for(CODE_FILES), json_subtree_swapped(CODE_FILES))
)(_code_files)


def _hints_record(data: bytes) -> None:
    expect_ours(parse_hints_record, data, 0, "hints.jsonl line 1")


test_hints_record_takes_any_bytes, test_hints_record_takes_any_bytes_thoroughly = fuzz(
    data=st.one_of(bytes_for(HINTS), json_subtree_swapped(HINTS),
                   st.text(max_size=40).map(lambda t: HINTS.replace(b'"state_hints":"', b'"state_hints":"' + t.encode("utf-8", "surrogatepass"))))
)(_hints_record)


def _manifest_pair() -> tuple[ManifestSummary, bytes]:
    from trainwitness.data.manifest import ManifestBuilder, record_digest

    with tempfile.TemporaryDirectory() as d:
        builder = ManifestBuilder(Path(d) / "manifest.jsonl")
        builder.add_source(name="s", uri=None, archive_sha256=None, license="MIT", description="", format="lines",
                           compression=None, samples=[(record_digest(r), len(r)) for r in (b"ab", b"cd", b"ef")])
        summary = builder.finish()
        return summary, (Path(d) / "manifest.jsonl").read_bytes()


SIGNED_SUMMARY, MANIFEST = _manifest_pair()


def _read_manifest(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "manifest.jsonl").write_bytes(data)
        expect_ours(read_manifest, Path(d) / "manifest.jsonl", SIGNED_SUMMARY, statuses=(1, 2))


test_read_manifest_takes_any_bytes, test_read_manifest_takes_any_bytes_thoroughly = fuzz(
    data=st.one_of(bytes_for(MANIFEST),
                   st.lists(json_subtree_swapped(MANIFEST.split(b"\n")[1]), max_size=3).map(
                       lambda ls: MANIFEST.split(b"\n")[0] + b"\n" + b"\n".join(ls) + b"\n"))
)(_read_manifest)


def _decode_checkpoint(data: bytes) -> None:
    flat = expect_ours(decode_checkpoint, data, "fuzz", 1 << 20)
    if flat is not None:
        state_digest(flat)  # the verifier's next step on a decoded checkpoint must not crash either
    expect_ours(decode_checkpoint, data, "fuzz", 1 << 20, LAYOUT)


test_decode_checkpoint_takes_any_bytes, test_decode_checkpoint_takes_any_bytes_thoroughly = fuzz(
    data=st.one_of(bytes_for(CHECKPOINT), mutated(CHECKPOINT_ZST))
)(_decode_checkpoint)


def _decode_weights(data: bytes) -> None:
    expect_ours(decode_weights, data, "fuzz")


test_decode_weights_takes_any_bytes, test_decode_weights_takes_any_bytes_thoroughly = fuzz(data=bytes_for(WEIGHTS))(_decode_weights)


safetensors_headers = st.dictionaries(
    st.text(max_size=12),
    st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "C64", "object", 3]),
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | st.text(max_size=3),
        "data_offsets": st.lists(st.integers(-5, 200), min_size=0, max_size=3),
    }),
    max_size=4,
)


def _safetensors_header(header: dict, body: bytes) -> None:  # type: ignore[type-arg]
    encoded = canonical_json({**header, "__metadata__": {"trainwitness": "{}"}})
    raw = len(encoded).to_bytes(8, "little") + encoded + body
    expect_ours(decode_checkpoint, raw, "fuzz", 1 << 20)
    expect_ours(decode_checkpoint, raw, "fuzz", 1 << 20, LAYOUT)
    expect_ours(decode_weights, raw, "fuzz")


test_decode_checkpoint_takes_any_safetensors_header, test_decode_checkpoint_takes_any_safetensors_header_thoroughly = fuzz(
    header=safetensors_headers, body=st.binary(max_size=200)
)(_safetensors_header)


# -- a committed RNG state, restored -------------------------------------------------------------------------

_RNG = capture_rng()


@st.composite
def rng_states(draw: st.DrawFn) -> FlatState:
    tensors = {k: v.clone() for k, v in _RNG.tensors.items()}
    skeleton = parse_json(canonical_json(_RNG.skeleton), "rng")
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["python", "numpy", "torch", "skeleton"]))
        if target == "python":
            tensors["rng/python_state"][draw(st.integers(0, 624))] = draw(st.integers(-(2**63), 2**63 - 1))
        elif target == "numpy":
            tensors["rng/numpy_keys"][draw(st.integers(0, 623))] = draw(st.integers(-(2**63), 2**63 - 1))
        elif target == "torch":
            tensors["rng/torch_cpu"] = tensors["rng/torch_cpu"][: draw(st.integers(0, 6000))]
        else:
            section = draw(st.sampled_from(["numpy", "python", "cuda_devices"]))
            if section == "cuda_devices":
                skeleton["cuda_devices"] = draw(json_values)
            else:
                skeleton[section][draw(st.sampled_from(sorted(skeleton[section])))] = draw(json_values)
    return FlatState(tensors, skeleton)


def _restore_rng(flat: FlatState) -> None:
    before = capture_rng()
    try:
        expect_ours(restore_rng, flat)
    finally:
        restore_rng(before)


test_restore_rng_takes_any_committed_state, test_restore_rng_takes_any_committed_state_thoroughly = fuzz(flat=rng_states())(_restore_rng)


# -- the licence policy --------------------------------------------------------------------------------------


def _policy(data: bytes) -> None:
    expect_ours(parse_policy_toml, data, "policy.toml")


test_policy_reader_takes_any_bytes, test_policy_reader_takes_any_bytes_thoroughly = fuzz(
    data=st.one_of(bytes_for(POLICY), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
)(_policy)


# -- Merkle inclusion proofs -----------------------------------------------------------------------------------


def _inclusion(root: bytes, leaf: bytes, index: int, size: int, path: list[bytes]) -> None:
    try:
        verify_inclusion(root, leaf, InclusionProof(index, size, tuple(path)))
    except VerificationError as e:
        check_error(e, (1,))
        return
    tree = MerkleTree([leaf])  # an accept is only possible for a genuine proof
    assert (root, index, size, path) == (tree.root, 0, 1, [])


test_verify_inclusion_takes_any_proof, test_verify_inclusion_takes_any_proof_thoroughly = fuzz(
    root=st.binary(min_size=0, max_size=40), leaf=st.binary(max_size=40),
    index=st.integers(-(2**65), 2**65), size=st.integers(-(2**65), 2**65),
    path=st.lists(st.binary(min_size=0, max_size=40), max_size=70),
)(_inclusion)


# -- the command line: exit status and one line, whatever file is mutated ----------------------------------------


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str], statuses: tuple[int, ...]) -> None:
    status = main(argv)
    out, err = capsys.readouterr()
    assert status in statuses, (status, out, err)
    assert "Traceback" not in out + err
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("trainwitness: error: "), err
    elif status == 1:
        assert len([line for line in out.splitlines() if "[FAIL]" in line]) == 1, out


@pytest.fixture(scope="module")
def fuzzed_run(_recorded_digits: RecordedRun, tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    """A private copy of the honest run, whose files each example rewrites and puts back."""
    return _recorded_digits.copied_to(tmp_path_factory.mktemp("fuzzed") / "run")


def _with_file(path: Path, data: bytes, then) -> None:  # type: ignore[no-untyped-def]
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        then()
    finally:
        path.write_bytes(original)


def _cli_fuzz(target: str, command: str):  # type: ignore[no-untyped-def]
    """A property of the command line: ``target`` (a file of the run) mutated, then ``command`` run on it."""

    def check(fuzzed_run: RecordedRun, capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
        path = fuzzed_run.root / target
        valid = path.read_bytes()
        edits = mutated(valid) if target.endswith(".jsonl") else st.one_of(mutated(valid), json_subtree_swapped(valid))
        if command == "inspect":
            argv, statuses = ["inspect", str(fuzzed_run.attestation)], (0, 2)
        else:  # one segment, in-process: what a mutation leaves valid is replayed quickly
            argv, statuses = fuzzed_run.verify_args("--segments", "1", "--seed", "0", "--sandbox", "off"), (0, 1, 2)
        _with_file(path, data.draw(edits, label=target), lambda: _cli(argv, capsys, statuses))

    return check


test_inspect_takes_any_attestation, test_inspect_takes_any_attestation_thoroughly = fuzz(data=st.data())(
    _cli_fuzz("attestation.json", "inspect"))
test_verify_takes_any_attestation, test_verify_takes_any_attestation_thoroughly = fuzz(data=st.data())(
    _cli_fuzz("attestation.json", "verify"))
test_verify_takes_any_index, test_verify_takes_any_index_thoroughly = fuzz(data=st.data())(
    _cli_fuzz("store/index.jsonl", "verify"))
test_verify_takes_any_run_json, test_verify_takes_any_run_json_thoroughly = fuzz(data=st.data())(
    _cli_fuzz("store/run.json", "verify"))
test_verify_takes_any_manifest, test_verify_takes_any_manifest_thoroughly = fuzz(data=st.data())(
    _cli_fuzz("store/manifest.jsonl", "verify"))


# -- a keyring (the other TOML file the verifier is given) ------------------------------------------------------

KEYRING = b'[keys]\nupstream = """' + PUBLIC_PEM + b'"""\n'


def _keyring(data: bytes) -> None:
    from trainwitness.identity.keyring import load_keyring

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "keyring.toml").write_bytes(data)
        expect_ours(load_keyring, Path(d) / "keyring.toml")


test_keyring_reader_takes_any_bytes, test_keyring_reader_takes_any_bytes_thoroughly = fuzz(data=bytes_for(KEYRING))(_keyring)
