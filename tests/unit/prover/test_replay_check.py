"""The prover refuses to sign what cannot replay: per-step checks while recording, and the pre-signing replay."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from trainwitness.cli import main
from trainwitness.errors import NotReplayableError
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.prover import attest_store, record_run
from trainwitness.prover.selfcheck import check_replay
from trainwitness.prover.session import record

from ...support.runs import RecordedRun, record_and_sign

SHORT = {"total_steps": 30, "checkpoint_interval": 10}


def test_accumulation_across_calls_is_refused_while_recording(tmp_path: Path) -> None:
    with pytest.raises(NotReplayableError, match=r"step 0: the step called optimizer.step\(\) 0 times.*accumulated across calls"):
        record_run("tests.support.specs.impure_specs:accumulate_across_calls", SHORT, tmp_path / "store", tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_a_clock_seeded_generator_inside_the_step_is_refused_with_its_site(tmp_path: Path) -> None:
    with pytest.raises(NotReplayableError, match=r"step 0: the step created a torch.Generator at .*impure_specs.py:\d+"):
        record_run("tests.support.specs.impure_specs:clock_seeded_generator", SHORT, tmp_path / "store", tmp_path / "w.safetensors")


def test_a_scheduler_stepped_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotReplayableError, match="stepped the scheduler 2 times, not 1"):
        record_run("tests.support.specs.impure_specs:scheduler_twice", SHORT, tmp_path / "store", tmp_path / "w.safetensors")


def test_a_registered_private_generator_is_committed_and_verifies(tmp_path: Path) -> None:
    run = record_and_sign(tmp_path / "run", "tests.support.specs.impure_specs:registered_generator", SHORT)
    assert main(run.verify_args("--all", "--sandbox", "off")) == 0


def test_state_kept_across_calls_is_refused_before_signing_naming_the_tensors(tmp_path: Path) -> None:
    # No per-step check sees a counter in a closure; replaying a later segment from its checkpoint does.
    store, weights = tmp_path / "store", tmp_path / "w.safetensors"
    record_run("tests.support.specs.impure_specs:state_across_calls", SHORT, store, weights)
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    check_replay(store, segments=[0])  # segment 0 starts where the recording did: it replays
    with pytest.raises(NotReplayableError) as refused:
        attest_store(store, weights, load_private_key(tmp_path / "k.key"))
    message = str(refused.value)
    assert re.search(r"segment [12] \(steps \d+->\d+\) does not replay", message) or "returned loss" in message, message
    assert "kept between calls" in message or "keeps state between calls" in message


def test_the_replay_check_names_the_differing_tensors(tmp_path: Path) -> None:
    # One step per segment: the replayed loss agrees (it is computed before the impure update), the landing state does not.
    store, weights = tmp_path / "store", tmp_path / "w.safetensors"
    record_run("tests.support.specs.impure_specs:lr_from_counter", {"total_steps": 4, "checkpoint_interval": 1}, store, weights)
    with pytest.raises(NotReplayableError) as refused:
        check_replay(store, segments=[2])
    message = str(refused.value)
    assert "segment 2 (steps 2->3) does not replay onto the recorded checkpoint at step 3" in message
    assert "differing: model/fc1.bias, model/fc1.weight" in message
    assert "Nothing was signed" in message


def test_random_numbers_drawn_between_steps_are_refused(tmp_path: Path) -> None:
    from ...support.specs.plain_specs import plain_digits

    with pytest.raises(NotReplayableError, match=r"step 1: random numbers were drawn outside the step, after step 0"):
        with record(plain_digits, tmp_path / "out", {"total_steps": 4, "checkpoint_interval": 2}, progress=False) as run:
            for batch in run.data_loader():
                run.step(batch)
                torch.rand(1)  # e.g. evaluation with dropout between steps
    assert not (tmp_path / "out" / "attestation.json").exists()


def test_a_loop_that_stops_early_is_not_signed_and_resumes(tmp_path: Path) -> None:
    from ...support.specs.plain_specs import plain_digits

    overrides = {"total_steps": 6, "checkpoint_interval": 3}
    with pytest.raises(Exception, match="ended after 4 of 6 steps"):
        with record(plain_digits, tmp_path / "out", overrides, progress=False) as run:
            for n, batch in enumerate(run.data_loader()):
                if n == 4:
                    break
                run.step(batch)
    assert not (tmp_path / "out" / "attestation.json").exists()
    with record(plain_digits, tmp_path / "out", overrides, progress=False) as run:
        assert run.next_step == 3  # resumed from the checkpoint at step 3
        for batch in run.data_loader():
            run.step(batch)
    signed = RecordedRun.at(tmp_path / "out")
    args = ["verify", str(signed.attestation), "--store", str(signed.store), "--weights", str(signed.weights),
            "--key", str(tmp_path / "out" / "trainwitness.pub"), "--all", "--sandbox", "off"]
    assert main(args) == 0


def test_the_data_loader_never_forks_workers_from_the_recording_process(tmp_path: Path) -> None:
    # The recording's writer threads may hold a C library lock at the instant of a fork (a worker
    # was seen waiting forever on glibc's atexit lock): workers come from a fork server or are spawned.
    from ...support.specs.plain_specs import plain_digits

    with record(plain_digits, tmp_path / "out", {"total_steps": 4, "checkpoint_interval": 2}, progress=False) as run:
        assert run.data_loader().multiprocessing_context is None  # no workers, nothing started
        context = run.data_loader(num_workers=2).multiprocessing_context
        assert context is not None and context.get_start_method() in ("forkserver", "spawn")
        spawned = run.data_loader(num_workers=2, multiprocessing_context="spawn").multiprocessing_context
        assert spawned is not None and spawned.get_start_method() == "spawn"  # the caller's choice is kept
        for batch in run.data_loader(num_workers=2):  # and they deliver the declared batches
            run.step(batch)
    assert (tmp_path / "out" / "attestation.json").exists()
