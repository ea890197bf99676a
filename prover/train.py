"""``trainwitness train``: run a training spec with recording, resuming a store a crash left behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainwitness.commit.atomic import (
    move_into_place,
    os_error_in,
    output_error,
    remove_stale_temporaries,
    temporary_path,
    writing,
)
from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.hints import HINTS_FILE, MAX_HINTS_BYTES, ExactMode
from trainwitness.commit.run_declaration import MAX_RUN_FILE_BYTES, STORE_FORMAT, RunDeclaration
from trainwitness.commit.store import (
    CHECKPOINT_DIR,
    IMPORTS_FILE,
    INDEX_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MAX_INDEX_BYTES,
    RUN_FILE,
    CheckpointRecord,
    atomic_write,
    checkpoint_steps,
    read_index,
    read_store_file,
    store_lock,
)
from trainwitness.data.datasets import Batch, build_dataset_manifest
from trainwitness.errors import MalformedInputError, MissingInputError, OutputError
from trainwitness.identity.code import code_identity, package_identity
from trainwitness.identity.imports import ImportedCode, ImportMonitor, source_only_imports
from trainwitness.progress import StepProgress
from trainwitness.prover.lineage import parent_declaration, read_inputs, read_parent
from trainwitness.prover.recorder import Recorder
from trainwitness.run.device import parse_device
from trainwitness.run.distributed import current_group
from trainwitness.run.environment import apply_execution_settings, capture_environment
from trainwitness.run.loop import ExactHooks, TrainingRun, loss_value, weights_of
from trainwitness.run.spec import SpecFunction, load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint import weights_parts
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.delta import MAX_DELTA_CHAIN
from trainwitness.tensors.state import state_digest
from trainwitness.tensors.tensorfile import write_parts

__all__ = ["Declarations", "RecordedRun", "RecordingSession", "open_recording", "record_run"]

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
) -> RunDeclaration:
    """``run.json`` for this run, read back through the verifier's own reader (nothing it would refuse is written)."""
    identity, files = code_identity(entry_point)
    identity["source_uri"] = declarations.source_uri
    summary = build_dataset_manifest(run.spec.dataset, manifest)
    storage: dict[str, JSONValue] = {} if delta_every is None else {"delta_keyframe_every": delta_every}
    # A data-parallel run (docs/DISTRIBUTED.md): world size, backend, split and reduction
    parallel: dict[str, JSONValue] = {} if run.parallel is None else {"distributed": run.parallel.declaration().to_json()}
    declared: dict[str, JSONValue] = {
        **storage,
        **parallel,
        **lineage,  # parent and frozen inputs (docs/FORMAT.md section 7), absent for a seeded start without inputs
        **({} if exact is None else {"exact": exact.to_json()}),  # exact mode (docs/EXACT.md)
        "format": STORE_FORMAT,
        "code": identity,
        "code_files": [{"path": f.path, "sha256": f.sha256, "executable": f.executable} for f in files],
        "environment": capture_environment(run.device),
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
    return RunDeclaration.from_json(declared, "the run declaration (run.json) being written")


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
        data = read_store_file(store, INDEX_FILE, MAX_INDEX_BYTES)
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
    atomic_write(store / INDEX_FILE, b"")
    _cut_hints(store, 0)
    return None


def _cut_hints(store: Path, steps: int) -> None:
    """Exact mode: keep the hints of the steps before ``steps``; the re-run writes the rest again."""
    path = store / HINTS_FILE
    if path.exists():
        lines = read_store_file(store, HINTS_FILE, MAX_HINTS_BYTES).split(b"\n")[:steps]
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
    """Create the store, or resume it; the caller holds its lock. Returns the checkpoint resumed from.

    Every state a kill can leave is one of: nothing but the lock and temporary files (no
    ``run.json``: a fresh start, the temporaries removed); or ``run.json`` with or without
    ``manifest.jsonl`` and ``index.jsonl`` (both made again here), plus whatever the recorder wrote.
    ``run.json`` is the commit point: written once everything that can be refused has been.
    """
    for directory in (store, store / CHECKPOINT_DIR):  # under the lock every temporary is a dead writer's
        remove_stale_temporaries(directory, any_pid=True)
    fresh = not os.path.lexists(store / RUN_FILE)
    if fresh:
        leftovers = sorted(set(os.listdir(store)) - {LOCK_FILE})
        if leftovers:
            raise MalformedInputError(
                f"store {store} is not empty and has no {RUN_FILE} (it holds {', '.join(leftovers[:3])}"
                f"{', ...' if len(leftovers) > 3 else ''}); use a new or empty directory"
            )
    # The manifest is built under a temporary name and moved in only once the store is known to be ours.
    staged = temporary_path(store / MANIFEST_FILE, "staged")
    try:
        try:
            declared = _declare(entry_point, hp, run, compress_level, staged, declarations, exact, delta_every, lineage)
        except OutputError as e:  # name the file the user knows, not its temporary name
            cause = os_error_in(e)
            raise (e if cause is None else output_error(store / MANIFEST_FILE, cause)) from e
        if fresh:
            atomic_write(store / RUN_FILE, declared.to_bytes())
        else:
            previous = RunDeclaration.from_bytes(read_store_file(store, RUN_FILE, MAX_RUN_FILE_BYTES), f"{store}/{RUN_FILE}")
            if previous.to_json() != declared.to_json():
                raise MalformedInputError(f"store {store} holds a different run; use a new store directory")
        move_into_place(staged, store / MANIFEST_FILE)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
    if not os.path.lexists(store / INDEX_FILE):
        atomic_write(store / INDEX_FILE, b"")
    return None if fresh else _resume_point(store, run)


class RecordingSession:
    """One recording in progress: the run, its recorder, and the next step to commit.

    Both ``trainwitness train`` (``record_run``, which builds each batch from the dataset) and the
    Python API for a training script's own loop (``trainwitness.record``, where batches come from
    a ``DataLoader``) call ``step(batch)`` once per committed step, then ``finish()``.
    """

    def __init__(
        self, run: TrainingRun, store: Path, weights_path: Path, resumed: CheckpointRecord | None,
        recorder: Recorder, exact: ExactMode | None, progress: Progress | None, step_progress: StepProgress | None,
        lock: contextlib.ExitStack | None = None, imports: Callable[[], None] = lambda: None,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self._lock = lock  # the store's lock (``_lock_store``), released when the weights are written or on failure
        self.run, self.store, self.weights_path, self.resumed = run, store, weights_path, resumed
        self.recorder, self.exact, self.progress, self.step_progress = recorder, exact, progress, step_progress
        self._record_imports = imports  # before each checkpoint: the code the steps imported, made durable first
        self._on_close = on_close  # the import watch ends with the recording
        hp = run.hyperparameters
        self.total_steps = int(hp["total_steps"])
        self.checkpoint_steps = checkpoint_steps(self.total_steps, int(hp["checkpoint_interval"]))
        self._next_checkpoint = 1 if resumed is None else resumed.index + 1
        self.next_step = 0 if resumed is None else resumed.step
        self._last_loss: object = None
        if resumed is None:
            recorder.record_checkpoint(0, 0, run.capture())
        if run.guard is not None:  # the first step must start from the generators checkpoint 0 (or the resume point) holds
            run.guard.expect_rng(run.capture_rng(), "checkpoint 0 (the state built from the seed)" if resumed is None else f"the checkpoint at step {resumed.step}")
        self._hooks = None if exact is None else ExactHooks(exact, lambda step: None, recorder.record_hints)
        self.closed = False
        self._open: int | None = None
        self._started = time.monotonic()  # this session's training time, declared in the attestation (timing.json)

    def _finished(self, step: int, loss: object) -> None:
        self.recorder.record_loss(step, loss)
        self._last_loss = loss

    def _next(self) -> int:
        if self.closed:
            raise ValueError("this recording is finished or failed; start a new one")
        if self._open is not None:
            raise ValueError(f"step {self._open} has begun and not ended")
        if self.next_step >= self.total_steps:
            raise ValueError(f"all {self.total_steps} steps are recorded (hyperparameter total_steps); call finish()")
        return self.next_step

    def _advance(self) -> object:
        """The step that just ended is committed: checkpoint when one is due, show progress."""
        self.next_step += 1
        if self.next_step == self.checkpoint_steps[self._next_checkpoint]:
            self._record_imports()
            self.recorder.record_checkpoint(self._next_checkpoint, self.next_step, self.run.capture())
            self._next_checkpoint += 1
            if self.progress is not None:
                self.progress(self.next_step, self.total_steps)
        if self.step_progress is not None:
            self.step_progress.update(self.next_step, lambda: loss_value(self._last_loss))
        return self._last_loss

    def step(self, batch: Batch) -> object:
        """Commit and run the next step on ``batch`` (the declared sampler's batch for it); return its loss."""
        step = self._next()
        try:
            self.run.step(step, self.run.sampler.batch_ids(step), batch, self.recorder.record_step, self._hooks, self._finished)
            return self._advance()
        except BaseException:
            self.abort()
            raise

    def begin(self, batch: Batch) -> Batch:
        """For a framework that runs the step itself: commit the next step's batch (as the dataset built it,
        here or on the device) and the generators; return the batch on the run's device. Then ``end(loss)``."""
        step = self._next()
        if self.exact is not None:
            raise ValueError("exact mode rounds inside the spec's step: a framework's own step cannot record it yet")
        try:
            on_device = self.run.begin_step(step, self.run.sampler.batch_ids(step), batch, self.recorder.record_step)
        except BaseException:
            self.abort()
            raise
        self._open = step
        return on_device

    def end(self, loss: object) -> object:
        """The framework's step that ``begin`` opened has run and returned ``loss``: check it, commit it."""
        step = self._open
        if step is None:
            raise ValueError("end() without begin()")
        self._open = None
        try:
            self.run.end_step(step, loss, self._finished)
            return self._advance()
        except BaseException:
            self.abort()
            raise

    def finish(self) -> RecordedRun:
        """Wait until everything is durable and write the final weights; refuses an incomplete run."""
        if self.closed:
            raise ValueError("this recording is already finished or failed")
        if self.next_step != self.total_steps:
            self.abort()
            raise MalformedInputError(
                f"the training loop ended after {self.next_step} of {self.total_steps} steps (hyperparameter total_steps); "
                "the store is kept: run again to resume and finish it"
            )
        try:
            final_state = self.run.capture_on_host()
            self.recorder.wait()
            self._stop()
            final = read_index(self.store).checkpoints[-1]
            _add_training_time(self.store, time.monotonic() - self._started)
            remove_stale_temporaries(self.weights_path.parent, final_name=self.weights_path.name)
            write_parts(self.weights_path, weights_parts(weights_of(final_state)), None)
        finally:
            self.abort()  # releases the store's lock
        return RecordedRun(
            store=self.store, weights_path=self.weights_path, final=final,
            resumed_from_step=None if self.resumed is None else self.resumed.step,
        )

    def abort(self) -> None:
        """Stop recording and release the store (what was recorded stays durable and resumable)."""
        try:
            self._stop()
        finally:
            if self._lock is not None:
                lock, self._lock = self._lock, None
                lock.close()

    def _stop(self) -> None:
        if not self.closed:
            self.closed = True
            if self._open is not None:
                self.run.abandon_step()
            try:
                if self.run.guard is not None:
                    self.run.guard.close()
                self.recorder.close()
            finally:
                self._on_close()


def _lock_store(store: Path) -> contextlib.ExitStack:
    """Create the store's directory and take its lock (``StoreLockedError`` naming the holder), held
    until the returned stack is closed; the kernel releases it if the process dies first."""
    held = contextlib.ExitStack()
    with writing(store):
        store.mkdir(parents=True, exist_ok=True)
    held.enter_context(store_lock(store))
    return held


def _refuse_early(run: TrainingRun, compress_level: int | None, delta_every: int | None) -> None:
    """What can be refused before the store is touched, beyond what building the run refused."""
    run.capture()  # a state tensor of a dtype that cannot be stored, refused by name
    if delta_every is not None and not (1 <= delta_every <= MAX_DELTA_CHAIN and compress_level is not None):
        raise MalformedInputError(f"--delta-every must be in [1, {MAX_DELTA_CHAIN}] and needs compression")


def _start(
    function: SpecFunction, hp: Mapping[str, JSONValue], group: Any, device: Any, guarded: bool,
    parent: Path | None, parent_mode: str, inputs: Mapping[str, Path] | None,
) -> tuple[TrainingRun, dict[str, JSONValue]]:
    """Build the run (from its parent, with its frozen inputs) and the lineage it declares."""
    source = None if parent is None else read_parent(parent, parent_mode)
    input_weights, declared_inputs = read_inputs(inputs or {})
    run = TrainingRun.start(
        function, hp, group, parent=None if source is None else source.start, inputs=input_weights, device=device, guarded=guarded,
    )
    unread = sorted(set(declared_inputs) - run.inputs_read)
    if unread:
        raise MalformedInputError(f"the training spec did not read the declared frozen inputs {', '.join(unread)}")
    lineage: dict[str, JSONValue] = {}
    if source is not None:
        lineage["parent"] = parent_declaration(source, run.start_record)
    if declared_inputs:
        lineage["inputs"] = {name: frozen.to_json() for name, frozen in declared_inputs.items()}
    return run, lineage


def open_recording(
    function: SpecFunction,
    entry_point: str,
    overrides: Mapping[str, JSONValue],
    store: Path,
    weights_path: Path,
    *,
    device: str = "cpu",
    torch_threads: int = 1,
    compress_level: int | None = 3,
    delta_every: int | None = None,
    progress: Progress | None = None,
    step_progress: bool = False,
    declarations: Declarations = Declarations(),
    exact: ExactMode | None = None,
    parent: Path | None = None,
    parent_mode: str = "finetune",
    inputs: Mapping[str, Path] | None = None,
    monitor: ImportMonitor | None = None,
    on_close: Callable[[], None] = lambda: None,
) -> RecordingSession:
    """Build the run of ``function`` (named ``entry_point``) and start recording it into ``store``, resuming a crashed store.

    (1) Everything that can be refused is refused before the store is touched: hyperparameter
    ranges, the spec itself, a batch larger than the dataset, a state tensor that cannot be
    stored, the lineage. (2) The store's lock is taken (``StoreLockedError`` naming the holder if
    another ``train`` has it) and held until the session writes the weights or fails. (3) The store
    is created or resumed (``_open_store``). A kill at any instant, or a full disk (``OutputError``
    naming the file), leaves a store that the same call resumes.

    ``monitor``: watching imports since before ``entry_point`` was imported (``ImportMonitor``);
    without one, what the build and the steps import is watched from here on. The local packages
    and distributions it finds are written to ``imports.json`` once the store is open and before
    every checkpoint. ``on_close`` runs when the recording ends (finished or not).
    """
    if monitor is None:
        monitor = ImportMonitor()
        monitor.start()
        then = on_close

        def on_close() -> None:
            monitor.stop()
            then()

    # (1)
    apply_execution_settings(torch_threads)
    run_device = parse_device(device)
    hp = resolve_hyperparameters(function.defaults, overrides)
    run, lineage = _start(function, hp, None, run_device, True, parent, parent_mode, inputs)
    monitor.scan()
    _refuse_early(run, compress_level, delta_every)
    # (2)
    lock = _lock_store(store)
    try:
        # (3)
        resumed = _open_store(entry_point, hp, run, store, compress_level, declarations, exact, delta_every, lineage)
        _write_imports(store, entry_point, monitor.found)

        def record_imports() -> None:
            if monitor.scan():
                _write_imports(store, entry_point, monitor.found)

        recorder = Recorder(store, compress_level=compress_level, delta_every=delta_every)
        try:
            shown = StepProgress(int(hp["total_steps"])) if step_progress else None
            return RecordingSession(run, store, weights_path, resumed, recorder, exact, progress, shown, lock, record_imports, on_close)
        except BaseException:
            recorder.close()
            raise
    except BaseException:
        lock.close()
        on_close()
        raise


def record_run(
    entry_point: str,
    overrides: Mapping[str, JSONValue],
    store: Path,
    weights_path: Path,
    *,
    device: str = "cpu",
    torch_threads: int = 1,
    compress_level: int | None = 3,
    delta_every: int | None = None,
    progress: Progress | None = None,
    step_progress: bool = False,
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

    Everything that can be refused (hyperparameter ranges, a batch larger than the dataset, a state
    tensor safetensors cannot store, the lineage) is refused before the store is touched; the
    process that writes the store holds its lock (``StoreLockedError`` naming the holder) until the
    weights are written. A kill at any instant, or a full disk (``OutputError`` naming the file),
    leaves a store that the same call resumes (``open_recording``, ``_open_store``).

    In one process each step's batch is built from the spec's dataset
    (``dataset.batch(sampler.batch_ids(step))``) and goes through the same ``RecordingSession`` as a
    script's own loop (``trainwitness.record``): per-step checks, the loss committed, ``device``.
    Not signed here: ``attest_store`` replays recorded segments first and signs only a run that replays.

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
    with contextlib.ExitStack() as cleanup:
        refused = cleanup.enter_context(source_only_imports())
        monitor = ImportMonitor(refused)  # before the entry point is imported: everything the run imports is seen
        monitor.start()
        cleanup.callback(monitor.stop)
        group = current_group()
        function = load_entry_point(entry_point)
        if group is None:
            session = open_recording(
                function, entry_point, overrides, store, weights_path, device=device, torch_threads=torch_threads,
                compress_level=compress_level, delta_every=delta_every, progress=progress, step_progress=step_progress,
                declarations=declarations, exact=exact, parent=parent, parent_mode=parent_mode, inputs=inputs, monitor=monitor,
            )
            dataset, sampler = session.run.spec.dataset, session.run.sampler
            for step in range(session.next_step, session.total_steps):
                session.step(dataset.batch(sampler.batch_ids(step)))
            return session.finish()
        if device != "cpu":
            raise MalformedInputError("a data-parallel run is recorded on the CPU (gloo) only, not on another device")
        apply_execution_settings(torch_threads)
        hp = resolve_hyperparameters(function.defaults, overrides)
        run, lineage = _start(function, hp, group, "cpu", False, parent, parent_mode, inputs)
        monitor.scan()
        _refuse_early(run, compress_level, delta_every)
        from trainwitness.prover.distributed import record_ranks

        started = time.monotonic()
        with contextlib.ExitStack() as held:

            def open_store() -> CheckpointRecord | None:
                # rank 0 only; an error here (a held lock) reaches every rank through record_ranks
                held.enter_context(_lock_store(store))  # released once the weights are written, or on any error
                resumed = _open_store(entry_point, hp, run, store, compress_level, declarations, exact, delta_every, lineage)
                _write_imports(store, entry_point, monitor.found)
                return resumed

            def record_imports() -> None:  # the steps imported more code: durable before the checkpoint that follows them
                if monitor.scan():
                    _write_imports(store, entry_point, monitor.found)

            final, final_state, resumed = record_ranks(
                run, group, store, open_store, compress_level=compress_level, delta_every=delta_every, progress=progress, exact=exact,
                before_checkpoint=record_imports,
            )
            if group.rank == 0:
                _add_training_time(store, time.monotonic() - started)
                remove_stale_temporaries(weights_path.parent, final_name=weights_path.name)
                write_parts(weights_path, weights_parts(weights_of(final_state)), None)
        torch.distributed.barrier()  # every rank returns once the weights are written
        return RecordedRun(store=store, weights_path=weights_path, final=final, resumed_from_step=None if resumed is None else resumed.step)
