"""Recording a training script's own loop: ``trainwitness.record`` (the package root exports it).

A script keeps its ``for batch in loader:`` loop and is still run as ``python train.py``::

    import trainwitness as tw

    @tw.training_spec(defaults={...})            # how model, optimizer, scheduler, data are built
    def build(hp):
        ...
        return tw.TrainingSpec(model=..., optimizer=..., scheduler=..., dataset=..., step=step)

    if __name__ == "__main__":
        with tw.record(build, out="run/") as run:  # starts (or resumes) the recording
            for batch in run.data_loader(num_workers=2):
                loss = run.step(batch)             # the declared step, committed
        # leaving the block: weights written, two segments replayed, attestation signed

``out/`` then holds ``attestation.json``, ``store/``, ``model.safetensors`` and ``trainwitness.pub``
(and ``trainwitness.key`` when no key was given): the files ``trainwitness train`` and ``attest``
write, through the same machinery (``train.open_recording``, ``attest.attest_store``).

The entry point recorded is the spec function's module and name. For a script run as
``__main__``, it is ``<directory>.<script>:<function>``: the script's directory is the program's
source tree (its code identity, what ``verify --code DIR`` checks), so it must be a Python package
name; the verifier imports it as that package. Recording uses the spec loaded that way too, so
what is recorded is what the verifier will run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
import torch.utils.data
from cryptography.hazmat.primitives import serialization

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.hints import DEFAULT_EXACT
from trainwitness.commit.store import atomic_write
from trainwitness.data.datasets import Batch
from trainwitness.data.loading import BatchDataset, DeclaredBatchSampler
from trainwitness.identity.imports import ImportMonitor, source_only_imports
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.prover.attest import attest_store
from trainwitness.prover.train import Declarations, RecordedRun, RecordingSession, open_recording
from trainwitness.run.spec import SpecFunction, TrainingSpec, load_entry_point

__all__ = ["Recording", "record", "entry_point_of"]

KEY_NAME = "trainwitness"


def entry_point_of(function: SpecFunction) -> str:
    """``module:function`` for a ``@training_spec`` function, importable the way the verifier will import it.

    A function of a script run as ``__main__`` is named by the script's directory (a package) and
    file; that directory's parent is put on ``sys.path``. Raises ``ValueError`` when the function
    cannot be named so (a nested function, a directory that is not a package name).
    """
    name = getattr(function, "__name__", None)
    if not isinstance(getattr(function, "defaults", None), dict) or name is None:
        raise TypeError("record() needs a function decorated with @trainwitness.training_spec")
    qualname = getattr(function, "__qualname__", name)
    if qualname != name:
        raise ValueError(f"spec function {qualname} must be defined at module level (the verifier imports it)")
    module = function.__module__
    if module != "__main__":
        return f"{module}:{name}"
    script = Path(getattr(sys.modules["__main__"], "__file__", "") or "")
    if script.suffix != ".py":
        raise ValueError("a spec defined in an interactive session cannot be replayed: define it in a file")
    script = script.resolve()
    package, parent = script.parent.name, str(script.parent.parent)
    if not package.isidentifier() or not script.stem.isidentifier():
        raise ValueError(
            f"{script}: the script's directory and file are the program's package and module, so both must be "
            f"Python identifiers, not {package!r} and {script.stem!r}"
        )
    found = importlib.util.find_spec(package) if package not in sys.modules else sys.modules[package].__spec__
    where = None if found is None else (list(found.submodule_search_locations or []) or [str(found.origin)])
    if where and all(Path(str(w)).resolve() != script.parent for w in where):
        raise ValueError(
            f"{script}: the script's directory is the program's package, and {package!r} is already the name of "
            f"another importable package ({where[0]}); rename the directory"
        )
    if parent not in sys.path:
        sys.path.insert(0, parent)
    return f"{package}.{script.stem}:{name}"


class Recording:
    """A recording in progress (``trainwitness.record``): the built run, its ``step``, and signing at the end.

    Attributes: ``spec`` (the built ``TrainingSpec``: ``model``, ``optimizer``, ``scheduler``
    also as attributes), ``hyperparameters``, ``device``, ``entry_point``, ``out``; ``next_step``
    and ``total_steps``. Paths: ``store``, ``weights``, ``attestation``, ``public_key``.
    """

    def __init__(self, session: RecordingSession, entry_point: str, out: Path, key: Path, replay_check: bool) -> None:
        self._session = session
        self.entry_point, self.out, self._key, self._replay_check = entry_point, out, key, replay_check
        self.store, self.weights = session.store, session.weights_path
        self.attestation, self.public_key = out / "attestation.json", out / f"{KEY_NAME}.pub"
        self.result: RecordedRun | None = None

    # -- what the script's loop uses ---------------------------------------------------------------

    @property
    def spec(self) -> TrainingSpec:
        return self._session.run.spec

    @property
    def model(self) -> torch.nn.Module:
        return self.spec.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.spec.optimizer

    @property
    def scheduler(self) -> Any:
        return self.spec.scheduler

    @property
    def hyperparameters(self) -> Mapping[str, JSONValue]:
        return self._session.run.hyperparameters

    @property
    def device(self) -> torch.device:
        return self._session.run.device

    @property
    def next_step(self) -> int:
        return self._session.next_step

    @property
    def total_steps(self) -> int:
        return self._session.total_steps

    def batch_sampler(self, micro_batches: int = 1) -> DeclaredBatchSampler:
        """The declared sampler's batches of ids for the steps still to run (from the resume point), each in
        ``micro_batches`` equal parts."""
        return DeclaredBatchSampler(self._session.run.sampler, self.next_step, self.total_steps, micro_batches)

    def dataset(self) -> BatchDataset:
        """The spec's dataset as a map-style ``torch.utils.data.Dataset`` whose item for a list of ids is that batch."""
        return BatchDataset(self.spec.dataset)

    def data_loader(
        self, num_workers: int = 0, pin_memory: bool | None = None, micro_batches: int = 1, **kwargs: Any
    ) -> torch.utils.data.DataLoader[Batch]:
        """A ``DataLoader`` over the steps still to run, in the declared order, with ``num_workers`` worker processes.

        ``pin_memory`` defaults to whether the run's device is CUDA; ``micro_batches``: each step's
        batch in that many equal parts, one item each (a framework's gradient accumulation). The loader draws its workers'
        seed from a private generator (the default, torch's global one, is committed state).
        ``kwargs`` go to ``DataLoader`` (``prefetch_factor``, ``persistent_workers``, ...); the
        sampler, batching and order are fixed.
        """
        fixed = {"sampler", "batch_sampler", "batch_size", "shuffle", "drop_last", "collate_fn", "in_order", "generator"}
        if fixed & set(kwargs):
            raise TypeError(f"data_loader() fixes {', '.join(sorted(fixed & set(kwargs)))}: the order is the declared sampler's")
        if num_workers > 0:
            # The recording writes checkpoints from background threads; a worker forked while one of them
            # holds a C library lock (glibc's atexit lock was seen) waits for it forever. Workers started by
            # a fork server (or spawned) begin without those threads.
            kwargs.setdefault("multiprocessing_context", "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        return torch.utils.data.DataLoader(
            self.dataset(), sampler=self.batch_sampler(micro_batches), batch_size=None, num_workers=num_workers,
            pin_memory=self.device.type == "cuda" if pin_memory is None else pin_memory,
            generator=torch.Generator(), **kwargs,
        )

    def step(self, batch: Batch) -> Any:
        """Run the declared step on ``batch`` (the next step's batch), committing batch, generators and loss; return the loss."""
        return self._session.step(batch)

    def begin_step(self, batch: Batch) -> Batch:
        """For a framework that runs the step itself (``trainwitness.integrations``): commit the next step's
        batch and generators before it runs; returns the batch on the run's device. Then ``end_step(loss)``."""
        return self._session.begin(batch)

    def end_step(self, loss: Any) -> Any:
        """The framework's step has run and returned ``loss``: the per-step checks, then commit the loss."""
        return self._session.end(loss)

    def abort(self) -> None:
        """Stop recording without signing (the store stays resumable)."""
        self._session.abort()

    # -- the end -----------------------------------------------------------------------------------

    def finish(self) -> Path:
        """Write the final weights, replay the first and a random segment, sign; return the attestation's path.

        Raises ``MalformedInputError`` when the loop ended early (the store is kept and resumes),
        ``NotReplayableError`` when a replayed segment does not land (nothing is signed).
        """
        self.result = self._session.finish()
        key = load_private_key(self._key)
        atomic_write(self.public_key, key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        atomic_write(self.attestation, attest_store(self.store, self.weights, key, replay_check=self._replay_check))
        return self.attestation

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self._session.abort()  # what was recorded stays durable: running the script again resumes
            return
        if self.result is None:
            self.finish()


def record(
    spec: SpecFunction,
    out: str | Path,
    overrides: Mapping[str, JSONValue] | None = None,
    *,
    device: str = "cpu",
    threads: int = 1,
    exact: bool = False,
    key: str | Path | None = None,
    weights_license: str | None = None,
    source_uri: str | None = None,
    compress_level: int | None = 3,
    delta_every: int | None = None,
    progress: bool = True,
    replay_check: bool = True,
) -> Recording:
    """Start (or resume) recording the training run ``spec`` builds, into the directory ``out``.

    ``overrides``: hyperparameters that differ from the spec's defaults (unknown names are
    refused); ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (recorded; the spec still builds
    on the CPU); ``threads``: torch intra-op threads (recorded; bitwise replay uses the same);
    ``exact``: exact mode (docs/EXACT.md: verifiable on other thread counts and devices);
    ``key``: the Ed25519 private key (PEM) to sign with, else ``out/trainwitness.key``, created on
    first use; ``progress``: a progress line on stderr (plain lines every 5 s without a terminal);
    ``replay_check``: replay two segments before signing (refuse a run that does not replay).
    Returns a ``Recording``; use it as a context manager, or call ``finish()`` after the loop.
    """
    out = Path(out)
    # Local code is imported from source, and what the run imports is watched, from before the spec's
    # module is loaded until the recording ends (identity/imports.py); undone on every path out.
    watch = contextlib.ExitStack()
    try:
        refused = watch.enter_context(source_only_imports())
        monitor = ImportMonitor(refused)
        monitor.start()
        watch.callback(monitor.stop)
        entry_point = entry_point_of(spec)
        function = load_entry_point(entry_point)  # what the verifier will load, not the __main__ copy
        if function.defaults != spec.defaults:
            raise ValueError(f"{entry_point} loads a spec with other defaults than the function given")
        out.mkdir(parents=True, exist_ok=True)
        if key is None:
            key = out / f"{KEY_NAME}.key"
            if not key.exists():
                generate_keypair(key, out / f"{KEY_NAME}.pub")
        key = Path(key)
        load_private_key(key)  # refuse an unreadable key now, not after training
        session = open_recording(
            function, entry_point, dict(overrides or {}), out / "store", out / "model.safetensors",
            device=device, torch_threads=threads, compress_level=compress_level, delta_every=delta_every,
            step_progress=progress, declarations=Declarations(weights_license=weights_license, source_uri=source_uri),
            exact=DEFAULT_EXACT if exact else None, monitor=monitor, on_close=watch.close,
        )
    except BaseException:
        watch.close()
        raise
    return Recording(session, entry_point, out, key, replay_check)
