"""Frozen inputs: a distillation run reads the digits MLP as its teacher, bound by digest, with its own verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.prover import attest_store, record_run
from trainwitness.run.inputs import frozen_input
from trainwitness.tensors.checkpoint import decode_weights, encode_weights

from ...support.forgery import payload_of
from ...support.runs import RecordedRun

DISTILL = "tests.support.specs.distill_spec:distill"


@pytest.fixture(scope="module")
def _distilled(tmp_path_factory: pytest.TempPathFactory, _recorded_digits: RecordedRun) -> tuple[RecordedRun, RecordedRun]:
    base = tmp_path_factory.mktemp("distilled")
    teacher = _recorded_digits.copied_to(base / "teacher")
    student = RecordedRun.at(base / "student")
    student.root.mkdir()
    generate_keypair(student.private_key, student.public_key)
    record_run(DISTILL, {}, student.store, student.weights, inputs={"teacher": teacher.root})
    student.attestation.write_bytes(attest_store(student.store, student.weights, load_private_key(student.private_key)))
    return teacher, student


def verify_args(student: RecordedRun, teacher: RecordedRun, teacher_input: Path | None, *extra: str) -> list[str]:
    args = [
        "verify", str(student.attestation), "--store", str(student.store), "--weights", str(student.weights),
        "--key", str(student.public_key), "--key", str(teacher.public_key), "--sandbox", "off", "--segments", "1", *extra,
    ]
    return args if teacher_input is None else [*args, "--input", f"teacher={teacher_input}"]


def test_the_statement_binds_the_input_by_weights_digest_and_attestation(_distilled) -> None:
    teacher, student = _distilled
    declared = payload_of(student.attestation)["predicate"]["inputs"]
    teacher_final = payload_of(teacher.attestation)["predicate"]["final"]["weights_digest"]
    assert declared["teacher"]["weights_digest"] == teacher_final
    assert declared["teacher"]["attestation"].startswith("sha256:")


def test_an_input_given_with_its_attestation_is_verified(_distilled, tmp_path: Path, capsys) -> None:
    teacher, student = _distilled
    report = tmp_path / "r.json"
    assert main(verify_args(student, teacher, teacher.root, "--json", str(report))) == 0
    out = capsys.readouterr().out
    assert f"teacher (read by {student.root}): weights sha256:" in out and ": verified (signed by" in out
    inputs = json.loads(report.read_text())["lineage"]["inputs"]
    assert [(i["name"], i["status"]) for i in inputs] == [("teacher", "verified")]
    assert inputs[0]["links"][0]["verdict"] == "ACCEPT"


def test_an_input_given_as_a_bare_file_is_declared_not_verified(_distilled, capsys) -> None:
    teacher, student = _distilled
    assert main(verify_args(student, teacher, teacher.weights)) == 0
    out = capsys.readouterr().out
    assert "declared, not verified" in out and "its attestation sha256:" in out


def test_an_input_file_holding_other_weights_is_rejected(_distilled, tmp_path: Path, capsys) -> None:
    teacher, student = _distilled
    other = tmp_path / "teacher.safetensors"
    weights = decode_weights(teacher.weights.read_bytes(), "teacher")
    weights["head.bias"] = weights["head.bias"] * 2
    other.write_bytes(encode_weights(weights))
    assert main(verify_args(student, teacher, other)) == 1
    assert f"inputs: frozen input teacher: {other} does not hold the declared weights" in capsys.readouterr().out


def test_an_input_whose_attestation_does_not_verify_rejects_the_chain(_distilled, tmp_path: Path, capsys) -> None:
    teacher = _distilled[0].copied_to(tmp_path / "teacher")
    student = _distilled[1]
    args = verify_args(student, teacher, teacher.root)
    at = args.index(str(teacher.public_key))
    del args[at - 1 : at + 1]  # only the student's key is trusted, not the teacher's signer
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"teacher (read by {student.root})" in out and "REJECTED" in out
    assert "frozen input teacher, link 1 of 1" in out and "signature: no signature" in out


def test_a_missing_input_is_exit_2_naming_it(_distilled, capsys) -> None:
    teacher, student = _distilled
    assert main(verify_args(student, teacher, None)) == 2
    assert "declares frozen input teacher" in capsys.readouterr().err


def test_recording_refuses_an_input_the_spec_does_not_read(tmp_path: Path, digits_run: RecordedRun) -> None:
    from trainwitness.errors import MalformedInputError

    with pytest.raises(MalformedInputError, match="did not read the declared frozen inputs teacher"):
        record_run(
            "trainwitness.workloads.digits:digits", {"total_steps": 2, "checkpoint_interval": 1},
            tmp_path / "store", tmp_path / "w.safetensors", inputs={"teacher": digits_run.weights},
        )


def test_frozen_input_is_refused_outside_a_build_and_for_undeclared_names() -> None:
    from trainwitness.errors import MissingInputError
    from trainwitness.run.inputs import provide_inputs

    with pytest.raises(ValueError, match="only available while"):
        frozen_input("teacher")
    with provide_inputs({}), pytest.raises(MissingInputError, match="--input teacher=PATH"):
        frozen_input("teacher")
