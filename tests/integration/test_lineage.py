"""Lineage: runs that start from an attested parent (fine-tune, continued training), verified as a chain.

The parent is the session's short digits run (``conftest``), signed with its own key; each child is
signed with a second key, so every chain here has two signers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from trainwitness.cli import main
from trainwitness.commit.link import LinkFiles
from trainwitness.commit.store import read_index
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.prover import attest_store, record_run
from trainwitness.prover import train as prover_train
from trainwitness.run.parent import ParentStart
from trainwitness.tensors.checkpoint import decode_weights, encode_weights

from ..support.forgery import payload_of
from ..support.runs import DIGITS, RecordedRun

CHILD_STEPS = {"total_steps": 40, "checkpoint_interval": 20, "seed": 5}


def record_child(root: Path, parent: RecordedRun, mode: str = "finetune", overrides: dict | None = None) -> RecordedRun:
    """A digits run started from ``parent`` and signed with a key of its own (``root``/k.key)."""
    root.mkdir(parents=True)
    child = RecordedRun.at(root)
    generate_keypair(child.private_key, child.public_key)
    record_run(
        DIGITS, overrides if overrides is not None else CHILD_STEPS, child.store, child.weights,
        parent=parent.root, parent_mode=mode,
    )
    child.attestation.write_bytes(attest_store(child.store, child.weights, load_private_key(child.private_key)))
    return child


def chain_args(child: RecordedRun, parent: RecordedRun, *extra: str, keys: tuple[Path, ...] | None = None) -> list[str]:
    keys = keys if keys is not None else (parent.public_key, child.public_key)
    args = ["verify", str(child.attestation), "--store", str(child.store), "--weights", str(child.weights), "--parent", str(parent.root)]
    for key in keys:
        args += ["--key", str(key)]
    return [*args, "--sandbox", "off", *extra]


@pytest.fixture(scope="module")
def _finetuned(tmp_path_factory: pytest.TempPathFactory, _recorded_digits: RecordedRun) -> tuple[RecordedRun, RecordedRun]:
    base = tmp_path_factory.mktemp("finetuned")
    parent = _recorded_digits.copied_to(base / "parent")
    return parent, record_child(base / "child", parent)


def test_finetuned_digits_verify_as_a_two_link_chain_with_two_keys(_finetuned, tmp_path: Path, capsys) -> None:
    parent, child = _finetuned
    report = tmp_path / "report.json"
    assert main(chain_args(child, parent, "--segments", "2", "--seed", "1", "--json", str(report))) == 0
    out = capsys.readouterr().out
    assert "ACCEPT (a chain of 2 links)" in out
    assert "checkpoint 0 is the parent's final weights" in out
    lineage = json.loads(report.read_text())["lineage"]
    assert [link["verdict"] for link in lineage["links"]] == ["ACCEPT", "ACCEPT"]
    signers = [link["signer"]["name"] for link in lineage["links"]]
    assert signers == [str(parent.public_key), str(child.public_key)]
    assert lineage["links"][0]["parent"] is None
    declared = lineage["links"][1]["parent"]
    assert declared["mode"] == "finetune" and declared["attestation"] == lineage["links"][0]["statement_digest"]
    assert all(link["detection_probability"] for link in lineage["links"])  # each link has its own replay


def test_continued_training_from_the_parents_full_state_verifies(tmp_path: Path, digits_run: RecordedRun, capsys) -> None:
    child = record_child(tmp_path / "child", digits_run, mode="continue", overrides={"total_steps": 40, "checkpoint_interval": 20})
    # The start is the parent's whole final state: the same state digest, optimizer and RNG included.
    parent_final = payload_of(digits_run.attestation)["predicate"]["final"]["state_digest"]
    assert read_index(child.store).checkpoints[0].state_digest == parent_final  # derived from the record's weights and rest
    assert main(chain_args(child, digits_run, "--all")) == 0
    out = capsys.readouterr().out
    assert f"checkpoint 0 is the parent's final state {parent_final}" in out


def test_a_parent_finetuned_after_signing_is_rejected_naming_the_link(_finetuned, tmp_path: Path, capsys) -> None:
    parent = _finetuned[0].copied_to(tmp_path / "parent")
    child = _finetuned[1].copied_to(tmp_path / "child")
    weights = decode_weights(parent.weights.read_bytes(), "parent")
    weights["head.bias"] = weights["head.bias"] + 0.01  # further training the signature does not cover
    parent.weights.write_bytes(encode_weights(weights))
    assert main(chain_args(child, parent, "--segments", "1")) == 1
    out = capsys.readouterr().out
    assert f"REJECTED link 1 of 2 ({parent.root}): final-weights" in out
    assert f"REJECTED link 2 of 2 ({child.root}): lineage" in out  # the child's start cannot be formed from it


def test_a_parent_signed_by_a_key_not_in_the_keyring_is_rejected_naming_the_link(_finetuned, tmp_path: Path, capsys) -> None:
    parent, child = _finetuned
    keyring = tmp_path / "keys.toml"
    keyring.write_text(f'[keys]\nfinetuner = "{child.public_key}"\n')
    args = chain_args(child, parent, "--segments", "1", keys=())
    assert main([*args, "--keyring", str(keyring)]) == 1
    out = capsys.readouterr().out
    assert f"REJECTED link 1 of 2 ({parent.root}): signature: no signature" in out
    assert "signed by finetuner" in out  # the child's own link verified, under its keyring name


def test_a_child_that_claims_a_parent_but_starts_from_other_weights_is_rejected(
    tmp_path: Path, digits_run: RecordedRun, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    honest = prover_train.read_parent

    def other_weights(directory: Path, mode: str):  # type: ignore[no-untyped-def]
        source = honest(directory, mode)
        weights = {name: t + 0.001 for name, t in source.start.weights.items()}
        return replace(source, start=ParentStart("finetune", weights=weights))

    monkeypatch.setattr(prover_train, "read_parent", other_weights)
    child = record_child(tmp_path / "child", digits_run)  # declares the genuine parent, by digest
    monkeypatch.undo()
    assert main(chain_args(child, digits_run, "--segments", "1")) == 1
    out = capsys.readouterr().out
    assert f"REJECTED link 2 of 2 ({child.root}): initial-state: checkpoint 0 is not the state formed from the parent's final weights" in out
    assert "1. " in out and "ACCEPT" in out.splitlines()[2]  # the parent itself verifies


def test_a_child_declaring_other_parent_weights_than_the_parent_attests_is_rejected(_finetuned, tmp_path: Path, capsys) -> None:
    parent = _finetuned[0]
    child = _finetuned[1].copied_to(tmp_path / "child")
    run_json = json.loads((child.store / "run.json").read_text())
    run_json["parent"]["weights_digest"] = "sha256:" + "0" * 64
    (child.store / "run.json").write_text(json.dumps(run_json))
    child.attestation.write_bytes(attest_store(child.store, child.weights, load_private_key(child.private_key)))
    assert main(chain_args(child, parent, "--segments", "1")) == 1
    assert f"REJECTED link 2 of 2 ({child.root}): lineage: the declared parent weights" in capsys.readouterr().out


def test_a_missing_parent_is_exit_2_naming_it(_finetuned, capsys) -> None:
    parent, child = _finetuned
    declared = payload_of(child.attestation)["predicate"]["parent"]["attestation"]
    args = chain_args(child, parent)
    without_parent = args[:6] + args[8:]
    assert "--parent" not in without_parent
    assert main(without_parent) == 2
    err = capsys.readouterr().err
    assert declared in err and "--parent DIR" in err and "Traceback" not in err


def test_a_parent_directory_outside_the_lineage_is_exit_2(_finetuned, tmp_path: Path, capsys) -> None:
    parent, child = _finetuned
    other = parent.copied_to(tmp_path / "other")  # another statement (a licence added), so another digest
    run_json = json.loads((other.store / "run.json").read_text())
    run_json["weights_license"] = "MIT"
    (other.store / "run.json").write_text(json.dumps(run_json))
    other.attestation.write_bytes(attest_store(other.store, other.weights, load_private_key(other.private_key)))
    assert main([*chain_args(child, parent), "--parent", str(other.root)]) == 2
    assert f"--parent {other.root} is no link of the declared lineage" in capsys.readouterr().err


def test_a_finetune_whose_model_lacks_a_parent_tensor_names_it(tmp_path: Path, digits_run: RecordedRun) -> None:
    from trainwitness.errors import ParentMismatchError

    with pytest.raises(ParentMismatchError, match="fc1.weight"):
        record_run(DIGITS, {**CHILD_STEPS, "hidden": 64}, tmp_path / "store", tmp_path / "w.safetensors", parent=digits_run.root)


def test_inspect_shows_the_declared_chain_without_verifying(_finetuned, capsys) -> None:
    parent, child = _finetuned
    assert main(["inspect", str(child.attestation), "--parent", str(parent.root)]) == 0
    out = capsys.readouterr().out
    assert "declared lineage (UNVERIFIED)" in out
    assert "starts from its parent (finetune)" in out and "starts from its seed (the origin)" in out
    assert main(["inspect", str(child.attestation)]) == 0
    assert "not given: pass its directory with --parent DIR" in capsys.readouterr().out


def test_finetune_loads_every_parent_tensor_but_the_declared_ones(digits_run: RecordedRun) -> None:
    from trainwitness.run.loop import TrainingRun
    from trainwitness.run.parent import read_parent_weights
    from trainwitness.run.spec import TrainingSpec, load_entry_point, resolve_hyperparameters

    function = load_entry_point(DIGITS)

    def with_new_head(hp):  # type: ignore[no-untyped-def]
        return replace(function(hp), reinitialised=("head",))

    with_new_head.defaults = function.defaults  # type: ignore[attr-defined]
    hp = resolve_hyperparameters(function.defaults, {"seed": 9})
    files = LinkFiles.at(digits_run.root)
    final = payload_of(digits_run.attestation)["predicate"]["final"]["weights_digest"]
    parent = read_parent_weights(files.weights, final)
    run = TrainingRun.start(with_new_head, hp, parent=ParentStart("finetune", weights=parent))
    seeded = TrainingRun.start(with_new_head, hp)
    model = run.spec.model.state_dict()
    assert run.start_record is not None and run.start_record.reinitialised == ("head.bias", "head.weight")
    for name, tensor in model.items():
        expected = seeded.spec.model.state_dict()[name] if name.startswith("head.") else parent[name]
        assert torch.equal(tensor, expected), name
    assert isinstance(run.spec, TrainingSpec)


def test_an_auditors_code_copy_is_checked_for_every_link_it_is_the_source_of(_finetuned, tmp_path: Path, capsys) -> None:
    parent, child = _finetuned
    from trainwitness.identity.code import locate_source_root

    copy = tmp_path / "workloads"
    shutil.copytree(locate_source_root(DIGITS), copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "digits.py").write_text((copy / "digits.py").read_text() + "\n# changed\n")
    assert main(chain_args(child, parent, "--segments", "1", "--code", str(copy))) == 1
    out = capsys.readouterr().out
    assert f"REJECTED link 1 of 2 ({parent.root}): code" in out and f"REJECTED link 2 of 2 ({child.root}): code" in out
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert main(chain_args(child, parent, "--code", str(other))) == 2
    assert "is the source tree of no link of the lineage" in capsys.readouterr().err
