"""The text workload: a byte-level transformer on the standard library's source, recorded and replayed bitwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from trainwitness.data.datasets import sample_digest
from trainwitness.errors import MalformedInputError, MissingInputError
from trainwitness.run.loop import TrainingRun
from trainwitness.run.spec import resolve_hyperparameters
from trainwitness.tensors.state import flatten, unflatten
from trainwitness.verifier import VerifyOptions, verify_run
from trainwitness.workloads import lm as lm_module
from trainwitness.workloads.lm import (
    CORPUS_FILES,
    DEFAULTS,
    GPT,
    GPTConfig,
    byte_windows,
    lm,
    load_stdlib_corpus,
    stdlib_directory,
)

from ...support.runs import RecordedRun, record_and_sign

LM = "trainwitness.workloads.lm:lm"
# A tiny run: 12 steps at interval 4 (3 segments) on short windows; a few seconds on one core.
SHORT_LM = {"total_steps": 12, "checkpoint_interval": 4, "warmup_steps": 2, "batch_size": 4, "block_size": 32}


def _sample_digests(dataset) -> list[str]:  # type: ignore[no-untyped-def]
    """What the manifest commits to for a dataset built in code: each sample's content digest."""
    return [sample_digest(dataset, i) for i in range(len(dataset))]


def _stdlib_copy(tmp_path: Path) -> Path:
    """A private copy of the corpus files, laid out as in the stdlib directory."""
    root = tmp_path / "stdlib"
    for name in CORPUS_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stdlib_directory() / name, root / name)
    return root


def test_default_model_has_at_least_a_million_parameters() -> None:
    model = GPT(GPTConfig.from_hyperparameters(DEFAULTS))
    assert sum(p.numel() for p in model.parameters()) >= 1_000_000


def test_corpus_dataset_digest_is_the_same_when_loaded_twice() -> None:
    first = load_stdlib_corpus(CORPUS_FILES, 128)
    second = load_stdlib_corpus(CORPUS_FILES, 128)
    assert first.name == second.name and "stdlib-bytes" in first.name
    assert _sample_digests(first) == _sample_digests(second)


def test_one_changed_corpus_byte_changes_the__sample_digests(tmp_path: Path) -> None:
    root = _stdlib_copy(tmp_path)
    honest = _sample_digests(load_stdlib_corpus(CORPUS_FILES, 128, root))
    assert honest == _sample_digests(load_stdlib_corpus(CORPUS_FILES, 128))
    target = root / "json/decoder.py"
    content = bytearray(target.read_bytes())
    content[100] ^= 0x01
    target.write_bytes(bytes(content))
    assert _sample_digests(load_stdlib_corpus(CORPUS_FILES, 128, root)) != honest


def test_byte_windows_overlap_by_one_token_for_next_byte_targets() -> None:
    windows = byte_windows(b"abcdefghij", 3)
    assert windows.tolist() == [list(b"abcd"), list(b"defg"), list(b"ghij")]
    assert windows.dtype == torch.uint8


def test_missing_corpus_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = _stdlib_copy(tmp_path)
    (root / "heapq.py").unlink()
    with pytest.raises(MissingInputError, match="heapq.py"):
        load_stdlib_corpus(CORPUS_FILES, 128, root)


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "json/../../x.py", ""])
def test_corpus_path_outside_the_stdlib_is_refused(name: str) -> None:
    with pytest.raises(MalformedInputError, match="not a plain path"):
        load_stdlib_corpus([name], 128)


def test_scheduler_state_round_trips_through_flatten() -> None:
    hp = resolve_hyperparameters(lm.defaults, SHORT_LM)
    run = TrainingRun.start(lm, hp)
    for step in range(3):  # into the cosine phase: the sequential scheduler has switched once
        run.spec.step(run.spec.dataset.batch(run.sampler.batch_ids(step)))
    saved = run.spec.scheduler.state_dict()  # type: ignore[union-attr]
    fresh = TrainingRun.start(lm, hp)
    fresh.spec.optimizer.load_state_dict(run.spec.optimizer.state_dict())
    fresh.spec.scheduler.load_state_dict(unflatten(flatten({"s": saved}))["s"])  # type: ignore[union-attr]
    for _ in range(4):
        assert fresh.spec.scheduler.get_last_lr() == run.spec.scheduler.get_last_lr()  # type: ignore[union-attr]
        fresh.spec.optimizer.step()
        run.spec.optimizer.step()
        fresh.spec.scheduler.step()  # type: ignore[union-attr]
        run.spec.scheduler.step()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def short_lm_run(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    """One honest short run, shared: the tests below only read its store."""
    return record_and_sign(tmp_path_factory.mktemp("lm-run"), LM, SHORT_LM)


def test_short_lm_run_records_attests_and_verifies_every_segment_bitwise(short_lm_run: RecordedRun) -> None:
    run = short_lm_run
    report = verify_run(run.attestation, run.store, run.weights, run.public_key, VerifyOptions(segments=None))
    assert report.accepted, report.to_text()
    assert report.sampled == [0, 1, 2]
    assert [(s.first_step, s.last_step) for s in report.segments] == [(0, 4), (4, 8), (8, 12)]


def test_verify_rejects_lm_run_when_the_auditors_stdlib_differs(
    short_lm_run: RecordedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = short_lm_run
    root = _stdlib_copy(tmp_path)
    # One byte inserted at the very start of the corpus shifts every window: whatever the replayed
    # steps read differs. (The audit reads only the samples replayed steps use, each proven.)
    target = root / CORPUS_FILES[0]
    target.write_bytes(b" " + target.read_bytes())
    monkeypatch.setattr(lm_module, "stdlib_directory", lambda: root)
    # In-process replay: the monkeypatched corpus location does not reach a sandbox worker.
    report = verify_run(run.attestation, run.store, run.weights, run.public_key, VerifyOptions(segments=None, sandbox="off"))
    assert not report.accepted
    failed = [c for c in report.checks if not c.passed]
    assert failed[0].name == "data" and "stdlib-bytes" in failed[0].detail


def test_loss_decreases_over_a_short_run() -> None:
    hp = resolve_hyperparameters(lm.defaults, {**SHORT_LM, "total_steps": 30, "warmup_steps": 3, "batch_size": 8})
    run = TrainingRun.start(lm, hp)
    losses = [float(run.spec.step(run.spec.dataset.batch(run.sampler.batch_ids(step)))) for step in range(30)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0  # from ~ln(256) = 5.5 toward byte frequencies
