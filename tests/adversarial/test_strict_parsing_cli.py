"""Values no parser may let through, in every file the verifier reads: exit 2, one line naming the file.

A JSON integer of more than 4,300 digits (the interpreter's own limit, which otherwise surfaces as a
ValueError), a number that overflows a float (``1e400``), a string holding a lone surrogate (which no
UTF-8 output can print), each in the envelope (before the signature is checked), the signed
statement, the index, run.json and the manifest; and in `inspect`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.identity.signing import load_private_key, seal_envelope

from ..support.forgery import payload_of
from ..support.runs import RecordedRun

HUGE = b"1" * 5000
SURROGATE = b'"\\ud800"'


def _replace_once(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data, old
    path.write_bytes(data.replace(old, new, 1))


def _sign_raw(run: RecordedRun, edit: Callable[[bytes], bytes]) -> None:
    """A forger with the key signs payload bytes no canonical encoder would write."""
    from trainwitness.commit.canonical import canonical_json

    payload = edit(canonical_json(payload_of(run.attestation)))
    run.attestation.write_bytes(seal_envelope(payload, load_private_key(run.private_key)))


CASES: dict[str, tuple[Callable[[RecordedRun], None], Callable[[RecordedRun], str], str]] = {
    "envelope-huge-integer": (
        lambda r: _replace_once(r.attestation, b'{"payload"', b'{"extra":' + HUGE + b',"payload"'),
        lambda r: f"DSSE envelope {r.attestation}", "an integer of 5000 digits",
    ),
    "statement-huge-integer": (
        lambda r: _sign_raw(r, lambda p: p.replace(b'"seed":0', b'"seed":' + HUGE, 1)),
        lambda r: "attestation statement", "an integer of 5000 digits",
    ),
    "statement-1e400": (
        lambda r: _sign_raw(r, lambda p: p.replace(b'"lr":0.05', b'"lr":1e400', 1)),
        lambda r: "attestation statement", "the number 1e400 overflows a float",
    ),
    "statement-lone-surrogate": (
        lambda r: _sign_raw(r, lambda p: p.replace(b'"weights_license":null', b'"weights_license":' + SURROGATE, 1)),
        lambda r: "attestation statement", "a string holds a lone surrogate",
    ),
    "index-huge-integer": (
        lambda r: _replace_once(r.store / "index.jsonl", b'"step":0', b'"step":' + HUGE),
        lambda r: "index.jsonl line 1", "an integer of 5000 digits",
    ),
    "index-1e999": (
        lambda r: _replace_once(r.store / "index.jsonl", b'"step":0', b'"step":1e999'),
        lambda r: "index.jsonl line 1", "the number 1e999 overflows a float",
    ),
    "run-json-huge-integer": (
        lambda r: _replace_once(r.store / "run.json", b'"seed":0', b'"seed":' + HUGE),
        lambda r: f"{r.store}/run.json", "an integer of 5000 digits",
    ),
    "manifest-huge-integer": (
        lambda r: _replace_once(r.store / "manifest.jsonl", b'"id":5,', b'"id":' + HUGE + b","),
        lambda r: "manifest", "an integer of 5000 digits",
    ),
    "manifest-lone-surrogate": (
        lambda r: _replace_once(r.store / "manifest.jsonl", b'"source":"uci-digits"}', b'"source":' + SURROGATE + b"}"),
        lambda r: "manifest", "a string holds a lone surrogate",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_value_no_parser_may_let_through_is_exit_2_naming_the_file(
    name: str, digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    plant, where, why = CASES[name]
    plant(digits_run)
    status = main(digits_run.verify_args("--all", "--sandbox", "off"))
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainwitness: error: "), err
    assert where(digits_run) in lines[0] and why in lines[0], lines[0]


@pytest.mark.parametrize("name", ["envelope-huge-integer", "statement-huge-integer", "statement-1e400", "statement-lone-surrogate"])
def test_inspect_refuses_the_same_values_in_one_line(name: str, digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    plant, _, why = CASES[name]
    plant(digits_run)
    assert main(["inspect", str(digits_run.attestation)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and why in lines[0], err


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        (b"[policy]\nname = \"caf\xe9\"\n", "not UTF-8 text"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        (b"[policy]\nname = \"n\"\nx = " + HUGE + b"\n", "not valid TOML"),
        (b"policy = 5\n", "[policy] must be a table"),
        (b"[[allow]]\nid = 5\nreason = \"r\"\n", "every [[allow]] entry holds exactly an id and a reason"),
        (b"[policy]\nname = \"n\"\n[extra]\n", "unknown keys ['extra']"),
    ],
    ids=["not-utf8", "deep", "huge-integer", "policy-is-5", "id-is-5", "unknown-table"],
)
def test_a_malformed_policy_file_is_exit_2_naming_it(
    policy: bytes, why: str, digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(policy)
    assert main(digits_run.verify_args("--segments", "1", "--policy", str(path))) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and why in lines[0], lines


def test_a_public_key_of_an_unknown_algorithm_is_exit_2(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    import base64

    # SubjectPublicKeyInfo whose algorithm is OID 1.2.3.4: cryptography raises UnsupportedAlgorithm for it.
    der = bytes([0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2A, 0x03, 0x04, 0x03, 0x21, 0x00]) + bytes(32)
    digits_run.public_key.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n")
    assert main(digits_run.verify_args()) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{digits_run.public_key} is not a PEM public key" in lines[0], lines


def test_a_hints_record_with_a_huge_integer_or_a_non_ascii_base64_field_is_one_line() -> None:
    from trainwitness.commit.hints import StepHints, hints_record, parse_hints_record
    from trainwitness.errors import MalformedInputError

    record = hints_record(3, StepHints((1,), bytes(8), b""))
    with pytest.raises(MalformedInputError, match="^hints.jsonl line 4: an integer of 5000 digits"):
        parse_hints_record(record.replace(b'"step":3', b'"step":' + HUGE), 3, "hints.jsonl line 4")
    with pytest.raises(MalformedInputError, match="^hints.jsonl line 4: gradient_hints is not base64 \\(it holds non-ASCII characters\\)"):
        parse_hints_record(record.replace(b'"gradient_hints":"', '"gradient_hints":"é'.encode()), 3, "hints.jsonl line 4")


def test_a_checkpoint_skeleton_holding_1e400_is_refused_when_read() -> None:
    import torch

    from trainwitness.errors import MalformedInputError
    from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint
    from trainwitness.tensors.state import flatten

    data = encode_checkpoint(flatten({"model": {"w": torch.ones(2)}, "lr": 0.125}))
    forged = data.replace(b'\\"lr\\":0.125', b'\\"lr\\":1e400')  # the same length: the header still tiles
    assert forged != data
    with pytest.raises(MalformedInputError, match="skeleton: the number 1e400 overflows a float"):
        decode_checkpoint(forged, "checkpoints/0000000000.safetensors")
