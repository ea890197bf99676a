"""Distribution answers: the Debian ML-Policy class from the verified audit, and the CycloneDX export of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainwitness.cli import main
from trainwitness.commit.canonical import canonical_json
from trainwitness.identity.signing import load_private_key
from trainwitness.prover import attest_store

from ...support.forgery import load_checkpoint, write_checkpoint
from ...support.runs import RecordedRun, record_and_sign

pytest.importorskip("license_expression")


@pytest.fixture(scope="module")
def _licensed(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    return record_and_sign(
        tmp_path_factory.mktemp("licensed"), weights_license="CC-BY-4.0", allow_local_uri=False, source_uri="https://example.org/upstream.git",
    )


@pytest.fixture
def licensed(_licensed: RecordedRun, tmp_path: Path) -> RecordedRun:
    return _licensed.copied_to(tmp_path / "run")


def _resign_declared(run: RecordedRun, edit) -> None:  # type: ignore[no-untyped-def]
    """Edit run.json's declarations (and the manifest header with them), then re-sign with the prover's key."""
    declared = json.loads((run.store / "run.json").read_text())
    edit(declared)
    manifest = run.store / "manifest.jsonl"
    lines = manifest.read_bytes().split(b"\n")
    lines[0] = canonical_json(declared["data"]["manifest"])
    manifest.write_bytes(b"\n".join(lines))
    (run.store / "run.json").write_text(json.dumps(declared))
    run.attestation.write_bytes(attest_store(run.store, run.weights, load_private_key(run.private_key), allow_local_uri=True))


def _class_line(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out
    return next(line for line in out.splitlines() if "Debian ML-Policy class" in line)


def test_a_verified_run_with_free_weights_and_data_is_a_free_model(licensed: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(licensed.verify_args("--segments", "2", "--seed", "3", "--sandbox", "off", "--policy", "debian-dfsg")) == 0
    line = _class_line(capsys)
    assert "class: Free Model (" in line and "3 of 6 segments replayed" in line  # 2 drawn and the last


def test_weights_under_a_non_free_licence_are_non_free(licensed: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    _resign_declared(licensed, lambda d: d.update(weights_license="CC-BY-NC-4.0"))
    assert main(licensed.verify_args("--segments", "1", "--sandbox", "off", "--policy", "debian-dfsg")) == 1
    assert "class: Non-free (the weights' own licence is not free under debian-dfsg" in _class_line(capsys)


def test_free_weights_whose_training_is_not_verified_are_toxic_candy(licensed: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    flat = load_checkpoint(licensed.store, 40)
    weight = flat.tensors["model/fc1.weight"].clone()
    weight.view(-1)[0] += 1.0
    write_checkpoint(licensed.store, 40, type(flat)({**flat.tensors, "model/fc1.weight": weight}, flat.skeleton))
    assert main(licensed.verify_args("--all", "--sandbox", "off", "--policy", "debian-dfsg")) == 1
    line = _class_line(capsys)
    assert "class: ToxicCandy (" in line and "training claim was not verified (replay failed" in line


def test_free_weights_on_data_no_one_can_obtain_are_toxic_candy(licensed: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    def local(declared: dict) -> None:  # type: ignore[type-arg]
        declared["data"]["manifest"]["sources"][0]["uri"] = "/home/upstream/digits.csv.gz"

    _resign_declared(licensed, local)
    assert main(licensed.verify_args("--segments", "1", "--sandbox", "off", "--policy", "debian-dfsg")) == 0
    assert "class: ToxicCandy (" in (line := _class_line(capsys)) and "uci-digits declares no public place to obtain it" in line


def test_export_writes_a_cyclonedx_ml_bom_that_its_library_validates(licensed: RecordedRun, tmp_path: Path) -> None:
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    out = tmp_path / "bom.json"
    args = licensed.verify_args("--segments", "1", "--sandbox", "off", "--policy", "debian-dfsg", "--out", str(out))
    assert main(["export", *args[1:]]) == 0
    text = out.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    assert model["hashes"][0]["content"] == json.loads(
        __import__("base64").b64decode(json.loads(licensed.attestation.read_text())["payload"])
    )["subject"][0]["digest"]["sha256"]
    properties = {p["name"]: p["value"] for p in model["properties"]}
    assert properties["trainwitness:verdict"] == "ACCEPT" and properties["trainwitness:ml-policy-class"] == "Free Model"
    assert [c["type"] for c in bom["components"]] == ["application", "data"]
    assert bom["components"][1]["licenses"][0]["expression"] == "CC-BY-4.0"
    payload = json.loads(__import__("base64").b64decode(json.loads(licensed.attestation.read_text())["payload"]))
    assert properties["trainwitness:predicate-type"] == payload["predicateType"]  # the statement's own version
    (reference,) = bom["components"][0]["externalReferences"]  # the signed source URI: declared, not checked
    assert reference["url"] == "https://example.org/upstream.git" and "declared by the prover, not verified" in reference["comment"]


def test_export_writes_nothing_for_a_rejected_audit(licensed: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cyclonedx")
    flat = load_checkpoint(licensed.store, 0)
    write_checkpoint(licensed.store, 0, type(flat)({k: torch.zeros_like(v) if k.startswith("model/") else v for k, v in flat.tensors.items()}, flat.skeleton))
    out = tmp_path / "bom.json"
    assert main(["export", *licensed.verify_args("--all", "--sandbox", "off", "--out", str(out))[1:]]) == 1
    assert not out.exists()
    assert "nothing exported" in capsys.readouterr().err
