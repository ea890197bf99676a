"""Recording overhead through each integration, against the same training without trainwitness, in one run;
and the pre-signing replay's cost as a fraction of the training time.

For each of the examples (plain loop with a 2-worker DataLoader, Lightning, the HF Trainer), with
hyperparameters that make a step take tens of milliseconds, train twice in this process, bare (the
example's own spec and loop, no recording) and recorded (``trainwitness.record``, at checkpoint
interval k), alternating ``repetitions`` times; report the median wall time of each and their ratio.
The recorded time includes waiting for the recorder to finish writing; the pre-signing replay
(``check_replay``: rebuild, checkpoint 0, two segments) is timed apart and given as a fraction of
the recorded training time.

    python benchmarks/integrations.py [--quick] [--only plain_loop]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402

from trainwitness.data.loading import BatchDataset, DeclaredBatchSampler  # noqa: E402
from trainwitness.prover.selfcheck import check_replay  # noqa: E402
from trainwitness.prover.session import record  # noqa: E402
from trainwitness.run.environment import apply_execution_settings  # noqa: E402
from trainwitness.run.loop import TrainingRun  # noqa: E402
from trainwitness.run.spec import resolve_hyperparameters  # noqa: E402

# example -> hyperparameters that give steps of tens of milliseconds on one core
FULL: dict[str, dict[str, Any]] = {
    "plain_loop": {"hidden": 1536},
    "lightning_trainer": {"hidden": 16384},
    "hf_trainer": {},
}


def _loader(run: TrainingRun, workers: int, micro: int = 1) -> torch.utils.data.DataLoader:
    sampler = DeclaredBatchSampler(run.sampler, 0, int(run.hyperparameters["total_steps"]), micro)
    return torch.utils.data.DataLoader(
        BatchDataset(run.spec.dataset), sampler=sampler, batch_size=None, num_workers=workers, generator=torch.Generator()
    )


def _bare(name: str, build: Any, hp: dict[str, Any]) -> None:
    """The example's training without trainwitness: its own spec and loop, nothing recorded."""
    run = TrainingRun.start(build, hp)
    if name == "plain_loop":
        for batch in _loader(run, 2):
            run.spec.step(batch)
    elif name == "lightning_trainer":
        import lightning.pytorch as pl

        trainer = pl.Trainer(
            max_epochs=1, accelerator="cpu", devices=1, gradient_clip_val=run.spec.step.gradient_clip_val,  # type: ignore[attr-defined]
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(run.spec.model, train_dataloaders=_loader(run, 2))  # type: ignore[arg-type]
    else:
        trainer = run.spec.step.trainer  # type: ignore[attr-defined]
        loader = _loader(run, 2, run.spec.step.micro_batches)  # type: ignore[attr-defined]
        trainer.get_train_dataloader = lambda: loader
        trainer.train()


def _recorded(name: str, build: Any, overrides: dict[str, Any], out: Path) -> None:
    with record(build, out, overrides, progress=False, replay_check=False) as run:
        if name == "plain_loop":
            for batch in run.data_loader(num_workers=2):
                run.step(batch)
        elif name == "lightning_trainer":
            import lightning.pytorch as pl

            from trainwitness.integrations.lightning import RecordingCallback

            trainer = pl.Trainer(
                max_epochs=1, accelerator="cpu", devices=1, gradient_clip_val=run.spec.step.gradient_clip_val,
                callbacks=[RecordingCallback(run)], logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False,
            )
            trainer.fit(run.model, train_dataloaders=run.data_loader(num_workers=2))
        else:
            from trainwitness.integrations.hf import recording_trainer

            recording_trainer(run, num_workers=2).train()


def _timed(work: Callable[[], None]) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        work()
    return time.perf_counter() - started


def measure(name: str, extra: dict[str, Any], k: int, steps: int, repetitions: int) -> dict[str, Any]:
    module = __import__(f"{name}.train", fromlist=["build"])
    build = module.build
    overrides = {**extra, "total_steps": steps, "checkpoint_interval": k}
    hp = resolve_hyperparameters(build.defaults, overrides)
    bare, recorded, checks = [], [], []
    for _ in range(repetitions):
        apply_execution_settings(1)
        bare.append(_timed(lambda: _bare(name, build, hp)))
        with tempfile.TemporaryDirectory(prefix="trainwitness-bench-") as tmp:
            recorded.append(_timed(lambda: _recorded(name, build, overrides, Path(tmp) / "out")))
            checks.append(_timed(lambda: check_replay(Path(tmp) / "out" / "store")))
    bare_s, recorded_s, check_s = statistics.median(bare), statistics.median(recorded), statistics.median(checks)
    return {
        "integration": name, "k": k, "steps": steps, "repetitions": repetitions, "overrides": extra,
        "bare_step_ms": 1e3 * bare_s / steps, "recorded_step_ms": 1e3 * recorded_s / steps,
        "ratio": recorded_s / bare_s, "ratios": [r / b for r, b in zip(recorded, bare, strict=True)],
        "pre_signing_replay_s": check_s, "pre_signing_replay_fraction": check_s / recorded_s,
    }


def run_all(quick: bool = False, only: list[str] | None = None) -> list[dict[str, Any]]:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    plan = {10: (20, 1), 20: (20, 1)} if quick else {10: (100, 3), 100: (200, 3)}
    rows = []
    for name, extra in FULL.items():
        if only and name not in only:
            continue
        if name == "lightning_trainer" and not _importable("lightning"):
            continue
        if name == "hf_trainer" and not _importable("transformers"):
            continue
        for k, (steps, repetitions) in plan.items():
            rows.append(measure(name, {} if quick else extra, k, steps, repetitions))
    return rows


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", action="append")
    args = parser.parse_args()
    print(json.dumps(run_all(args.quick, args.only), indent=1))


if __name__ == "__main__":
    main()
