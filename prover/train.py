"""``trainwitness train``: run a training spec with recording, resuming a store a crash left behind."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.hints import HINTS_FILE, ExactMode
from trainwitness.commit.store import (
    INDEX_FILE,
    MANIFEST_FILE,
    RUN_FILE,
    CheckpointRecord,
    atomic_write,
    checkpoint_steps,
    read_index,
    read_store_file,
)
from trainwitness.data.datasets import build_dataset_manifest
from trainwitness.errors import MalformedInputError, MissingInputError
from trainwitness.identity.code import code_identity
from trainwitness.prover.lineage import parent_declaration, read_inputs, read_parent
from trainwitness.prover.recorder import Recorder
from trainwitness.run.distributed import current_group
from trainwitness.run.environment import apply_execution_settings, capture_environment
from trainwitness.run.loop import ExactHooks, TrainingRun, weights_of
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint import encode_weights
from trainwitness.tensors.delta import read_checkpoint
from trainwitness.tensors.state import FlatState, state_digest

__all__ = ["Declarations", "RecordedRun", "record_run"]

STORE_FORMAT = "trainwitness-store/v1"
TIMING_FILE = "timing.json"  # {"training_wall_seconds": s}: what training took, declared (not verified)

# (steps done, total steps) -> None, for progress display.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RecordedRun:
    store: Path
    weights_path: Path
    final: CheckpointRecord
    resumed_from_step: int | None


@dataclass(frozen=True)
class Declarations:
    """What the prover declares beyond the spec itself: licence of the weights, where the code can be obtained."""

    weights_license: str | None = None  # SPDX expression
    source_uri: str | None = None


def _declare(
    entry_point: str, hp: Mapping[str, JSONValue], run: TrainingRun, compress_level: int | None, manifest: Path,
    declarations: Declarations, exact: ExactMode | None, delta_every: int | None, lineage: dict[str, JSONValue],
) -> dict[str, JSONValue]:
    identity, files = code_identity(entry_point)
    identity["source_uri"] = declarations.source_uri
    summary = build_dataset_manifest(run.spec.dataset, manifest)
    storage: dict[str, JSONValue] = {} if delta_every is None else {"delta_keyframe_every": delta_every}
    # A data-parallel run (docs/DISTRIBUTED.md): world size, backend, split and reduction
    parallel: dict[str, JSONValue] = {} if run.parallel is None else {"distributed": run.parallel.declaration().to_json()}
    return {
        **storage,
        **parallel,
        **lineage,  # parent and frozen inputs (docs/FORMAT.md section 7), absent for a seeded start without inputs
        **({} if exact is None else {"exact": exact.to_json()}),  # exact mode (docs/EXACT.md)
        "format": STORE_FORMAT,
        "code": identity,
        "code_files": [{"path": f.path, "sha256": f.sha256, "executable": f.executable} for f in files],
        "environment": capture_environment(),
        "hyperparameters": dict(hp),
        "data": {
            "dataset": run.spec.dataset.name,
            "manifest": summary.to_json(),
            "num_samples": len(run.spec.dataset),
            "sampler": run.sampler.describe(),
        },
        "compression": compress_level,
        "weights_license": declarations.weights_license,
    }


def _resume_point(store: Path, run: TrainingRun) -> CheckpointRecord | None:
    """Cut the index back to its last checkpoint whose file is intact, and restore that checkpoint."""
    index = read_index(store, allow_torn_tail=True)
    steps = [c.step for c in index.checkpoints]
    for record in reversed(index.checkpoints):
        try:
            flat, _ = read_checkpoint(store, steps, record.index)
        except (MalformedInputError, MissingInputError):
            continue
        if state_digest(flat) != record.state_digest:
            continue
        # Drop what follows the checkpoint (step records the re-run will write again, identically).
        data = (store / INDEX_FILE).read_bytes()
        lines = data.split(b"\n")
        keep = 0
        for number, line in enumerate(lines):
            if line == canonical_json(record.to_json()):
                keep = number + 1
                break
        atomic_write(store / INDEX_FILE, b"\n".join(lines[:keep]) + b"\n")
        _cut_hints(store, record.step)
        run.restore(flat)
        return record
    (store / INDEX_FILE).write_bytes(b"")
    _cut_hints(store, 0)
    return None


def _cut_hints(store: Path, steps: int) -> None:
    """Exact mode: keep the hints of the steps before ``steps``; the re-run writes the rest again."""
    path = store / HINTS_FILE
    if path.exists():
        lines = path.read_bytes().split(b"\n")[:steps]
        atomic_write(path, b"".join(line + b"\n" for line in lines))


def _add_training_time(store: Path, seconds: float) -> None:
    """Add this session's wall-clock training time to ``STORE/timing.json`` (declared in the attestation, not verified)."""
    path = store / TIMING_FILE
    before = 0.0
    if path.exists():
        previous = parse_json(read_store_file(store, TIMING_FILE, 1 << 16), f"{store}/{TIMING_FILE}")
        if isinstance(previous, dict) and isinstance(previous.get("training_wall_seconds"), (int, float)):
            before = float(previous["training_wall_seconds"])
    atomic_write(path, canonical_json({"training_wall_seconds": round(before + seconds, 3)}) + b"\n")


def _open_store(
    entry_point: str, hp: Mapping[str, JSONValue], run: TrainingRun, store: Path, compress_level: int | None,
    declarations: Declarations, exact: ExactMode | None, delta_every: int | None, lineage: dict[str, JSONValue],
) -> CheckpointRecord | None:
    """Declare the run into a new store, or check the store holds this run and resume it (restoring ``run``)."""
    # The manifest is built aside and moved into the store only once the store is known to be ours.
    fd, staged_name = tempfile.mkstemp(prefix="trainwitness-manifest-", suffix=".jsonl")
    os.close(fd)
    staged = Path(staged_name)
    try:
        declared = _declare(entry_point, hp, run, compress_level, staged, declarations, exact, delta_every, lineage)
        if (store / RUN_FILE).exists():
            previous = parse_json(read_store_file(store, RUN_FILE, 1 << 26), f"{store}/{RUN_FILE}")
            if previous != declared:
                raise MalformedInputError(f"store {store} holds a different run; use a new store directory")
            atomic_write(store / MANIFEST_FILE, staged.read_bytes())
            return _resume_point(store, run)
        store.mkdir(parents=True, exist_ok=True)
        if any(store.iterdir()):
            raise MalformedInputError(f"store {store} is not empty and has no {RUN_FILE}")
        atomic_write(store / MANIFEST_FILE, staged.read_bytes())
        atomic_write(store / RUN_FILE, canonical_json(declared) + b"\n")
        (store / INDEX_FILE).touch()
        return None
    finally:
        staged.unlink(missing_ok=True)


def record_run(
    entry_point: str,
    overrides: Mapping[str, JSONValue],
    store: Path,
    weights_path: Path,
    *,
    torch_threads: int = 1,
    compress_level: int | None = 3,
    delta_every: int | None = None,
    progress: Progress | None = None,
    declarations: Declarations = Declarations(),
    exact: ExactMode | None = None,
    parent: Path | None = None,
    parent_mode: str = "finetune",
    inputs: Mapping[str, Path] | None = None,
) -> RecordedRun:
    """Train ``entry_point`` with recording into ``store``; resume if the store holds the same run.

    Called on every rank of a ``torch.distributed`` process group of W > 1 ranks (e.g. under
    ``torchrun``), it records the data-parallel run (``trainwitness.prover.distributed``): rank 0
    writes the store, every rank trains on its shard. Raises ``MalformedInputError`` for a store
    that holds another run, ``ReplicaDivergenceError`` when the ranks' states part.

    ``parent``: a link directory (``trainwitness.commit.link.LinkFiles``: attestation.json, store/,
    model.safetensors) whose final weights (``parent_mode="finetune"``) or whole final state
    (``"continue"``) checkpoint 0 starts from, declared in the statement (``trainwitness.run.parent``).
    ``inputs``: frozen inputs by name, each a weights file or a link directory, read by the spec
    through ``trainwitness.run.inputs.frozen_input``. Raises ``LineageError`` when the parent's files
    are not the ones its attestation names, ``MalformedInputError`` when they do not fit the spec or
    a declared input is not read.
    """
    apply_execution_settings(torch_threads)
    group = current_group()
    function = load_entry_point(entry_point)
    hp = resolve_hyperparameters(function.defaults, overrides)
    source = None if parent is None else read_parent(parent, parent_mode)
    input_weights, declared_inputs = read_inputs(inputs or {})
    run = TrainingRun.start(function, hp, group, parent=None if source is None else source.start, inputs=input_weights)
    started = time.monotonic()
    unread = sorted(set(declared_inputs) - run.inputs_read)
    if unread:
        raise MalformedInputError(f"the training spec did not read the declared frozen inputs {', '.join(unread)}")
    lineage: dict[str, JSONValue] = {}
    if source is not None:
        lineage["parent"] = parent_declaration(source, run.start_record)
    if declared_inputs:
        lineage["inputs"] = {name: frozen.to_json() for name, frozen in declared_inputs.items()}
    if group is not None:
        from trainwitness.prover.distributed import record_ranks

        def open_store() -> CheckpointRecord | None:
            return _open_store(entry_point, hp, run, store, compress_level, declarations, exact, delta_every, lineage)

        final, final_state, resumed = record_ranks(
            run, group, store, open_store, compress_level=compress_level, delta_every=delta_every, progress=progress, exact=exact,
        )
    else:
        resumed = _open_store(entry_point, hp, run, store, compress_level, declarations, exact, delta_every, lineage)
        final_state = _record_segments(run, store, resumed, compress_level, delta_every, progress, exact)
        final = read_index(store).checkpoints[-1]
    if group is None or group.rank == 0:
        _add_training_time(store, time.monotonic() - started)
        atomic_write(weights_path, encode_weights(weights_of(final_state)))
    if group is not None:
        torch.distributed.barrier()  # every rank returns once the weights are written
    return RecordedRun(store=store, weights_path=weights_path, final=final, resumed_from_step=None if resumed is None else resumed.step)


def _record_segments(
    run: TrainingRun, store: Path, resumed: CheckpointRecord | None, compress_level: int | None, delta_every: int | None,
    progress: Progress | None, exact: ExactMode | None,
) -> FlatState:
    """One process: every segment from the resume point on, recorded; returns the final state."""
    hp = run.hyperparameters
    steps = checkpoint_steps(int(hp["total_steps"]), int(hp["checkpoint_interval"]))
    start_index = 0 if resumed is None else resumed.index + 1
    recorder = Recorder(store, compress_level=compress_level, delta_every=delta_every)
    try:
        if resumed is None:
            recorder.record_checkpoint(0, 0, run.capture())
            start_index = 1
        for index in range(start_index, len(steps)):
            hooks = None if exact is None else ExactHooks(exact, lambda step: None, recorder.record_hints)
            run.run(steps[index - 1], steps[index], recorder.record_step, hooks)
            recorder.record_checkpoint(index, steps[index], run.capture())
            if progress is not None:
                progress(steps[index], steps[-1])
        final_state = run.capture()
        recorder.wait()
    finally:
        recorder.close()
    return final_state
