"""Every forgery issue 3 names is rejected with exit status 1 and a message naming the cause.

Each test starts from a private copy of an honest signed run (``digits_run``), tampers with it the way
a forger would, and runs the real CLI in-process. "Re-signed" forgeries use the prover's own key:
the signature is then valid, so only the evidence can give the forgery away.
"""

from __future__ import annotations

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainwitness.cli import main
from trainwitness.commit.canonical import canonical_json, parse_json
from trainwitness.commit.hashing import file_sha256, parse_digest
from trainwitness.commit.merkle import MerkleTree, verify_inclusion
from trainwitness.commit.store import INDEX_FILE, RUN_FILE, checkpoint_steps, read_index
from trainwitness.data.datasets import batch_digest
from trainwitness.errors import CommitmentError
from trainwitness.identity.signing import key_id, load_private_key, load_public_key
from trainwitness.prover.recorder import Recorder
from trainwitness.run.loop import TrainingRun, weights_of
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint import decode_weights, encode_weights
from trainwitness.tensors.state import state_digests
from trainwitness.workloads.digits import digits

from ..support.forgery import (
    checkpoint_record,
    edit_payload,
    index_records,
    load_checkpoint,
    payload_of,
    resign,
    step_record,
    write_checkpoint,
    write_index,
)
from ..support.runs import DIGITS, SHORT_DIGITS, RecordedRun


def assert_rejected(run: RecordedRun, capsys: pytest.CaptureFixture[str], check: str, *causes: str) -> str:
    """Verify every segment; demand exit 1, REJECT, and a failed ``check`` whose detail names a cause."""
    status = main(run.verify_args("--all"))
    out = capsys.readouterr().out
    assert status == 1, out
    assert "trainwitness verify: REJECT" in out
    failed = [line for line in out.splitlines() if line.strip().startswith("[FAIL]")]
    assert len(failed) == 1, out
    assert failed[0].strip().startswith(f"[FAIL] {check}: "), out
    assert any(cause in failed[0] for cause in causes), out
    return failed[0]


def test_honest_copy_is_accepted(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    # The control for every test below: without the tampering, the same copy verifies.
    assert main(digits_run.verify_args("--all")) == 0
    assert "ACCEPT" in capsys.readouterr().out


# -- a checkpoint ------------------------------------------------------------------------------------


def _nudge_one_float(run: RecordedRun, step: int) -> None:
    flat = load_checkpoint(run.store, step)
    weight = flat.tensors["model/fc1.weight"].clone()
    weight.view(-1)[7] = torch.nextafter(weight.view(-1)[7], torch.tensor(1.0))  # one ulp, one float
    write_checkpoint(run.store, step, type(flat)({**flat.tensors, "model/fc1.weight": weight}, flat.skeleton))


def test_verify_rejects_one_float_changed_in_a_stored_checkpoint(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    _nudge_one_float(digits_run, 60)
    assert_rejected(digits_run, capsys, "replay", "checkpoints/0000000060.safetensors.zst does not hash to its committed state digest")


def test_verify_rejects_a_changed_checkpoint_whose_digest_was_re_signed(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    _nudge_one_float(digits_run, 60)
    records = index_records(digits_run.store)
    digests = state_digests(load_checkpoint(digits_run.store, 60))
    checkpoint_record(records, 3).update(weights_digest=digests.weights, rest_digest=digests.rest)
    write_index(digits_run.store, records)
    resign(digits_run)
    assert_rejected(digits_run, capsys, "replay", "segment 2 (steps 40->60): replay does not land on checkpoint 3; differing: model/fc1.weight")


# -- a batch -----------------------------------------------------------------------------------------


def _swap_two_ids_in_one_batch(run: RecordedRun, step: int) -> list[int]:
    records = index_records(run.store)
    ids = step_record(records, step)["sample_ids"]
    ids[0], ids[1] = ids[1], ids[0]
    write_index(run.store, records)
    return ids


def test_verify_rejects_swapped_batch_ids_in_the_index(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    _swap_two_ids_in_one_batch(digits_run, 45)
    assert_rejected(digits_run, capsys, "commitments", "store index does not match the attested batches root")


def test_verify_rejects_swapped_batch_ids_re_signed_by_the_prover_key(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _swap_two_ids_in_one_batch(digits_run, 45)
    # The forger even makes the batch digest agree with the swapped ids: only re-deriving the batch
    # from the declared sampler can tell.
    records = index_records(digits_run.store)
    step_record(records, 45)["batch_digest"] = batch_digest(digits(resolve_hyperparameters(digits.defaults, SHORT_DIGITS)).dataset.batch(ids))
    write_index(digits_run.store, records)
    resign(digits_run)
    assert_rejected(digits_run, capsys, "data", "step 45: the committed batch reorders sample ids")


def test_verify_rejects_a_committed_loss_the_step_did_not_return(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    # A prettier loss curve, re-signed: the leaves and roots agree, the replayed step's own loss does not.
    records = index_records(digits_run.store)
    honest = step_record(records, 45)["loss"]
    step_record(records, 45)["loss"] = honest / 2
    write_index(digits_run.store, records)
    resign(digits_run)
    assert_rejected(digits_run, capsys, "replay", f"step 45: the replayed step returned loss {honest!r}, the committed loss is {honest / 2!r}")


# -- the hyperparameters -----------------------------------------------------------------------------


def _raise_lr(statement: dict) -> None:  # type: ignore[type-arg]
    statement["predicate"]["hyperparameters"]["lr"] = 0.5


def test_verify_rejects_lr_changed_in_the_attestation_with_the_old_signature(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_payload(digits_run.attestation, _raise_lr)
    assert payload_of(digits_run.attestation)["predicate"]["hyperparameters"]["lr"] == 0.5
    assert_rejected(digits_run, capsys, "signature", "no signature in the envelope verifies")


def test_verify_rejects_lr_changed_in_run_json_and_re_signed(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    run_file = digits_run.store / RUN_FILE
    declared = parse_json(run_file.read_bytes(), "run.json")
    declared["hyperparameters"]["lr"] = 0.5
    run_file.write_bytes(canonical_json(declared) + b"\n")
    resign(digits_run)
    assert payload_of(digits_run.attestation)["predicate"]["hyperparameters"]["lr"] == 0.5
    # The optimizer's lr is part of checkpoint 0's state, so the seeded start already disagrees.
    assert_rejected(digits_run, capsys, "initial-state", "the state built from the declared seed is not checkpoint 0")


# -- the key -----------------------------------------------------------------------------------------


def test_verify_rejects_an_attestation_signed_by_another_key_naming_the_key_it_carries(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    other = Ed25519PrivateKey.generate()
    resign(digits_run, other)
    given = key_id(load_public_key(digits_run.public_key))
    assert_rejected(digits_run, capsys, "signature", f"verifies under the key {digits_run.public_key} ({given}); it names key id {key_id(other.public_key())}")


def test_a_rejected_signature_shows_no_claims_and_no_blank_lines(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    resign(digits_run, Ed25519PrivateKey.generate())
    assert main(digits_run.verify_args("--segments", "1")) == 1
    out = capsys.readouterr().out
    assert "subject" not in out and "entry point" not in out  # nothing of an unverified statement is shown
    assert all(line.strip() for line in out.splitlines())


# -- the final weights -------------------------------------------------------------------------------


def _edit_weights_file(run: RecordedRun) -> None:
    weights = decode_weights(run.weights.read_bytes(), "weights")
    weights["head.bias"] = weights["head.bias"] + 1e-3
    run.weights.write_bytes(encode_weights(weights))


def test_verify_rejects_final_weights_changed_after_the_last_checkpoint(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_weights_file(digits_run)
    assert_rejected(digits_run, capsys, "final-weights", "is not the attested subject (sha256 differs)")


def test_verify_rejects_changed_final_weights_re_signed_with_their_sha256(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_weights_file(digits_run)
    new_sha256 = file_sha256(str(digits_run.weights)).hex()

    def name_new_weights(statement: dict) -> None:  # type: ignore[type-arg]
        statement["subject"][0]["digest"]["sha256"] = new_sha256

    # attest_store itself refuses weights that are not the last checkpoint's, so the forger seals by hand.
    edit_payload(digits_run.attestation, name_new_weights, load_private_key(digits_run.private_key))
    assert_rejected(digits_run, capsys, "final-weights", "does not hold the last checkpoint's weights")


# -- the Merkle commitments --------------------------------------------------------------------------


def test_inclusion_proof_for_a_different_leaf_is_rejected(digits_run: RecordedRun) -> None:
    index = read_index(digits_run.store)
    tree = MerkleTree(index.batch_leaves())
    root = parse_digest(payload_of(digits_run.attestation)["predicate"]["commitments"]["batches"]["root"], "root")
    verify_inclusion(root, index.steps[45].batch_leaf(), tree.proof(45))  # the honest proof holds
    with pytest.raises(CommitmentError, match="leaf 46 of 120 does not lead to the committed root"):
        verify_inclusion(root, index.steps[45].batch_leaf(), tree.proof(46))


def test_verify_cannot_decide_on_an_index_with_a_dropped_step_record(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    lines = (digits_run.store / INDEX_FILE).read_bytes().splitlines(keepends=True)
    (digits_run.store / INDEX_FILE).write_bytes(b"".join(lines[:-3] + lines[-2:]))  # one step before the end
    status = main(digits_run.verify_args("--all"))
    captured = capsys.readouterr()
    # The index no longer parses in step order: unreadable evidence, nothing decided.
    assert status == 2
    assert "out of order" in captured.err


# -- the starting point ------------------------------------------------------------------------------


def test_verify_rejects_a_run_started_from_other_weights(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    """A self-consistent forgery: every segment replays, but checkpoint 0 is not the seeded start."""
    hp = resolve_hyperparameters(digits.defaults, SHORT_DIGITS)
    trained = decode_weights(digits_run.weights.read_bytes(), "weights")
    run = TrainingRun.start(load_entry_point(DIGITS), hp)
    run.spec.model.load_state_dict(trained)  # the forger's head start

    for path in (digits_run.store / "checkpoints").iterdir():
        path.unlink()
    (digits_run.store / INDEX_FILE).write_bytes(b"")
    steps = checkpoint_steps(int(hp["total_steps"]), int(hp["checkpoint_interval"]))
    recorder = Recorder(digits_run.store)
    try:
        recorder.record_checkpoint(0, 0, run.capture())
        for i in range(1, len(steps)):
            run.run(steps[i - 1], steps[i], recorder.record_step)
            recorder.record_checkpoint(i, steps[i], run.capture())
        recorder.wait()
    finally:
        recorder.close()
    digits_run.weights.write_bytes(encode_weights(weights_of(run.capture())))
    resign(digits_run)
    assert_rejected(digits_run, capsys, "initial-state", "the state built from the declared seed is not checkpoint 0")


def test_verify_rejects_an_attestation_that_leaves_a_hyperparameter_unstated(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without lr in the signed claim, the verifier would replay with the spec's default: a value nobody signed.
    run_file = digits_run.store / RUN_FILE
    declared = parse_json(run_file.read_bytes(), "run.json")
    del declared["hyperparameters"]["lr"]
    run_file.write_bytes(canonical_json(declared) + b"\n")
    resign(digits_run)
    assert_rejected(digits_run, capsys, "code", "does not state the hyperparameters ['lr']")


def _resign_with_data_claim(digits_run: RecordedRun, field: tuple[str, ...], value: object) -> None:
    run_file = digits_run.store / RUN_FILE
    declared = parse_json(run_file.read_bytes(), "run.json")
    node = declared["data"]
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    run_file.write_bytes(canonical_json(declared) + b"\n")
    resign(digits_run)


def test_verify_rejects_a_false_sampler_claim_re_signed(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    # Replay would still pass (the spec builds the real sampler), so the signed claim would be a false statement.
    _resign_with_data_claim(digits_run, ("sampler", "name"), "sequential/v1")
    assert_rejected(digits_run, capsys, "data", "the attested sampler is not the one the spec builds")


@pytest.mark.parametrize("field", [("num_samples",), ("sampler", "num_samples")])
def test_verify_refuses_a_sample_count_that_contradicts_the_signed_manifest(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], field: tuple[str, ...]
) -> None:
    # The statement contradicts itself: it is refused as malformed (exit 2) before anything is believed.
    _resign_with_data_claim(digits_run, field, 1000)
    assert main(digits_run.verify_args("--all")) == 2
    err = capsys.readouterr().err
    assert "is not the manifest's sample count" in err
    assert "Traceback" not in err
