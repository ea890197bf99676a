"""``trainwitness train``: run a training spec with recording, resuming a store a crash left behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.hints import HINTS_FILE, ExactMode
from trainwitness.commit.store import (
    IMPORTS_FILE,
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
from trainwitness.identity.code import code_identity, package_identity
from trainwitness.identity.imports import ImportedCode, ImportMonitor, source_only_imports
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

STORE_FORMAT = "trainwitness-store/v2"  # docs/FORMAT.md, version 2

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


def _imports_record(store: Path, entry_point: str, found: ImportedCode) -> dict[str, JSONValue]:
    """``imports.json``: the local packages (other than the entry point's own) and distributions imported so far.

    On a resumed run, what an earlier process recorded is kept: a package whose tree changed since is refused.
    """
    entry_top = entry_point.partition(":")[0].split(".")[0]
    packages: dict[str, dict[str, JSONValue]] = {}
    distributions: dict[str, str] = {}
    if (store / IMPORTS_FILE).exists():
        previous = parse_json(read_store_file(store, IMPORTS_FILE, 1 << 26), f"{store}/{IMPORTS_FILE}")
        if not isinstance(previous, dict) or set(previous) != {"distributions", "packages"}:
            raise MalformedInputError(f"store {store}: {IMPORTS_FILE} is not a record of imports")
        packages = {str(p["name"]): p for p in previous["packages"]}  # type: ignore[index, union-attr]
        distributions = {str(d["name"]): str(d["version"]) for d in previous["distributions"]}  # type: ignore[index, union-attr]
    for name in sorted(found.local):
        if name == entry_top:
            continue  # the entry point's own tree: run.json's code identity
        identity, files = package_identity(name)
        identity["files"] = [{"path": f.path, "sha256": f.sha256, "executable": f.executable} for f in files]
        if name in packages and packages[name]["tree_digest"] != identity["tree_digest"]:
            raise MalformedInputError(f"local package {name} changed since this run began (its tree digest differs); use a new store")
        packages[name] = identity
    for dist, version in found.distributions.items():
        if distributions.setdefault(dist, version) != version:
            raise MalformedInputError(f"installed distribution {dist} changed since this run began ({distributions[dist]} -> {version})")
    return {
        "distributions": [{"name": d, "version": distributions[d]} for d in sorted(distributions)],
        "packages": [packages[n] for n in sorted(packages)],
    }


def _write_imports(store: Path, entry_point: str, found: ImportedCode) -> None:
    atomic_write(store / IMPORTS_FILE, canonical_json(_imports_record(store, entry_point, found)) + b"\n")


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

    The run imports its local code from source only (``imports.source_only_imports``): what is
    hashed as the code identity is what runs. Local packages and distributions it imports are
    recorded in ``imports.json`` after the build and before every checkpoint whose steps imported
    more (``identity/imports.py``).
    """
    with source_only_imports() as refused:
        return _record(entry_point, overrides, store, weights_path, torch_threads, compress_level, delta_every, progress,
                       declarations, exact, parent, parent_mode, inputs, refused)


def _record(
    entry_point: str, overrides: Mapping[str, JSONValue], store: Path, weights_path: Path, torch_threads: int,
    compress_level: int | None, delta_every: int | None, progress: Progress | None, declarations: Declarations,
    exact: ExactMode | None, parent: Path | None, parent_mode: str, inputs: Mapping[str, Path] | None, refused: list[str],
) -> RecordedRun:
    monitor = ImportMonitor(refused)  # before the entry point is imported: everything the run imports is seen
    apply_execution_settings(torch_threads)
    group = current_group()
    function = load_entry_point(entry_point)
    hp = resolve_hyperparameters(function.defaults, overrides)
    source = None if parent is None else read_parent(parent, parent_mode)
    input_weights, declared_inputs = read_inputs(inputs or {})
    run = TrainingRun.start(function, hp, group, parent=None if source is None else source.start, inputs=input_weights)
    monitor.scan()
    unread = sorted(set(declared_inputs) - run.inputs_read)
    if unread:
        raise MalformedInputError(f"the training spec did not read the declared frozen inputs {', '.join(unread)}")
    lineage: dict[str, JSONValue] = {}
    if source is not None:
        lineage["parent"] = parent_declaration(source, run.start_record)
    if declared_inputs:
        lineage["inputs"] = {name: frozen.to_json() for name, frozen in declared_inputs.items()}

    def record_imports() -> None:  # the steps imported more code: durable before the checkpoint that follows them
        if monitor.scan():
            _write_imports(store, entry_point, monitor.found)

    def open_store() -> CheckpointRecord | None:
        resumed = _open_store(entry_point, hp, run, store, compress_level, declarations, exact, delta_every, lineage)
        _write_imports(store, entry_point, monitor.found)
        return resumed

    if group is not None:
        from trainwitness.prover.distributed import record_ranks

        final, final_state, resumed = record_ranks(
            run, group, store, open_store, compress_level=compress_level, delta_every=delta_every, progress=progress, exact=exact,
            before_checkpoint=record_imports,
        )
    else:
        resumed = open_store()
        final_state = _record_segments(run, store, resumed, compress_level, delta_every, progress, exact, record_imports)
        final = read_index(store).checkpoints[-1]
    if group is None or group.rank == 0:
        atomic_write(weights_path, encode_weights(weights_of(final_state)))
    if group is not None:
        torch.distributed.barrier()  # every rank returns once the weights are written
    return RecordedRun(store=store, weights_path=weights_path, final=final, resumed_from_step=None if resumed is None else resumed.step)


def _record_segments(
    run: TrainingRun, store: Path, resumed: CheckpointRecord | None, compress_level: int | None, delta_every: int | None,
    progress: Progress | None, exact: ExactMode | None, before_checkpoint: Callable[[], None],
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
            before_checkpoint()
            recorder.record_checkpoint(index, steps[index], run.capture())
            if progress is not None:
                progress(steps[index], steps[-1])
        final_state = run.capture()
        recorder.wait()
    finally:
        recorder.close()
    return final_state
