"""Devices and mixed precision: a declared device, the auditor's replay device, GradScaler and EMA state in checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainwitness.cli import main
from trainwitness.commit.hints import DEFAULT_EXACT
from trainwitness.identity.signing import load_private_key
from trainwitness.run.loop import TrainingRun
from trainwitness.run.rng import capture_rng
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.state import FlatState

from ...support.forgery import edit_payload, load_checkpoint
from ...support.runs import RecordedRun, record_and_sign

SHORT = {"total_steps": 30, "checkpoint_interval": 10}


def test_mixed_precision_with_a_grad_scaler_records_its_state_and_verifies(tmp_path: Path) -> None:
    run = record_and_sign(tmp_path / "amp", "tests.support.specs.amp_spec:amp_digits", SHORT)
    extra = load_checkpoint(run.store, 30).skeleton["extra"]  # type: ignore[index]
    assert extra["scaler"]["scale"] > 2.0**8  # grew every 5 steps: the scaler's state moves with training
    assert main(run.verify_args("--all", "--sandbox", "off")) == 0


def test_a_bitwise_run_recorded_on_another_device_cannot_be_verified_here(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    def on_a_gpu(statement: dict) -> None:  # type: ignore[type-arg]
        statement["predicate"]["environment"]["device"] = "cuda:Some GPU"

    edit_payload(digits_run.attestation, on_a_gpu, load_private_key(digits_run.private_key))
    assert main(digits_run.verify_args("--segments", "1")) == 2
    assert "cannot verify bitwise on another device: use exact mode or --bounded" in capsys.readouterr().err
    # the auditor's way out: bounded mode (the run really ran on this CPU, so it lands within the bound)
    assert main(digits_run.verify_args("--segments", "1", "--bounded", "--sandbox", "off")) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_verify_on_a_device_this_machine_lacks_is_exit_2(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(digits_run.verify_args("--device", "cuda")) == 2
    assert "no CUDA device is available here" in capsys.readouterr().err
    assert main(digits_run.verify_args("--device", "tpu")) == 2


def test_a_recorded_accelerator_generator_is_carried_unchanged_by_a_cpu_replay() -> None:
    function = load_entry_point("trainwitness.workloads.digits:digits")
    run = TrainingRun.start(function, resolve_hyperparameters(function.defaults, SHORT))
    state = run.capture()
    recorded = torch.arange(16, dtype=torch.uint8)  # stands for a CUDA generator's state
    rng = capture_rng()
    tensors = {**{k: v.clone() for k, v in state.tensors.items()}, "rng/torch_cuda/0": recorded}
    skeleton = dict(state.skeleton)  # type: ignore[arg-type]
    skeleton["rng"] = dict(rng.skeleton, cuda_devices=1)  # type: ignore[arg-type]
    run.restore(FlatState(tensors, skeleton))
    assert run.carried is not None and torch.equal(run.carried[1], recorded)
    captured = run.capture()
    assert torch.equal(captured.tensors["rng/torch_cuda/0"], recorded) and captured.skeleton["rng"]["cuda_devices"] == 1  # type: ignore[index]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_recorded_on_cuda_in_exact_mode_verifies_on_the_cpu(tmp_path: Path) -> None:
    from trainwitness.identity.signing import generate_keypair
    from trainwitness.prover import attest_store, record_run

    run = RecordedRun.at(tmp_path / "gpu")
    run.root.mkdir()
    generate_keypair(run.private_key, run.public_key)
    # no dropout: random numbers drawn on the GPU come from its own generator, which a CPU cannot reproduce
    record_run("trainwitness.workloads.digits:digits", {**SHORT, "dropout": 0.0}, run.store, run.weights, device="cuda", exact=DEFAULT_EXACT)
    run.attestation.write_bytes(attest_store(run.store, run.weights, load_private_key(run.private_key)))
    assert main(run.verify_args("--all", "--device", "cpu", "--sandbox", "off")) == 0
