"""PyTorch Lightning: replay through the ``LightningModule``'s own ``training_step`` and ``configure_optimizers``.

``lightning_spec(module, dataset, ...)`` (inside a ``@training_spec`` function) makes a
``TrainingSpec`` whose step does what Lightning's automatic optimization does for one batch, in
its order, calling the module's own hooks: ``training_step(batch, batch_idx)`` (under
``torch.autocast`` for ``bf16-mixed``), ``on_before_zero_grad``, ``optimizer.zero_grad()``,
``on_before_backward``, ``backward``, ``on_after_backward``, ``on_before_optimizer_step``, gradient
clipping as the Trainer is configured (declared here, checked against the Trainer), ``optimizer.step()``,
then the scheduler (``interval: "step"``). ``batch_idx`` is the committed step's index.
``configure_optimizers`` is called once; the module returns the same optimizer and scheduler
when the Trainer calls it again, so the Trainer steps the objects whose state is committed.

``RecordingCallback(recording)`` records ``trainer.fit``: each batch is committed in
``on_train_batch_start`` and each step checked and its loss committed in ``on_train_batch_end``.
At ``on_fit_start`` it refuses (``NotReplayableError``) a Trainer whose configuration the spec does
not replay: another device, gradient clipping or precision than declared, ``accumulate_grad_batches``
other than 1, more than one epoch of the recording's loader, manual optimization, and overridden
``optimizer_step``/``optimizer_zero_grad``/``configure_gradient_clipping``. Other callbacks that
change state (EMA, SWA) are not replayed; the pre-signing replay refuses the run they produce.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from trainwitness.data.datasets import Batch, Dataset
from trainwitness.errors import NotReplayableError
from trainwitness.run.device import current_device
from trainwitness.run.loop import current_step
from trainwitness.run.spec import TrainingSpec

__all__ = ["PRECISIONS", "LightningStep", "lightning_spec", "RecordingCallback"]

PRECISIONS = ("32-true", "32", "bf16-mixed")
_NOT_REPLAYED = ("optimizer_step", "optimizer_zero_grad", "configure_gradient_clipping")


def _optimizers(config: Any) -> tuple[torch.optim.Optimizer, Any]:
    """(optimizer, scheduler or None) from what ``configure_optimizers`` returned, in the forms one optimizer allows."""
    scheduler: Any = None
    if isinstance(config, Mapping):
        optimizer, scheduler = config.get("optimizer"), config.get("lr_scheduler")
    elif isinstance(config, (list, tuple)) and len(config) == 2 and all(isinstance(c, (list, tuple)) for c in config):
        if len(config[0]) != 1 or len(config[1]) > 1:
            raise NotReplayableError("lightning: configure_optimizers returns more than one optimizer or scheduler; one of each is supported")
        optimizer, scheduler = config[0][0], (config[1][0] if config[1] else None)
        if scheduler is not None and not isinstance(scheduler, Mapping):
            scheduler = {"scheduler": scheduler, "interval": "epoch"}  # Lightning's default interval for this form
    elif isinstance(config, (list, tuple)) and len(config) == 1:
        optimizer = config[0]
    else:
        optimizer = config
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise NotReplayableError(f"lightning: configure_optimizers returned {type(config).__name__}; one torch optimizer is supported")
    if isinstance(scheduler, Mapping):
        interval, frequency = scheduler.get("interval", "epoch"), scheduler.get("frequency", 1)
        if interval != "step" or frequency != 1 or scheduler.get("monitor") is not None:
            raise NotReplayableError(
                "lightning: the scheduler must step after every optimizer step ({'interval': 'step', 'frequency': 1}, "
                f"no monitor), not interval {interval!r}, frequency {frequency!r}: an epoch-interval scheduler steps "
                "outside the committed steps"
            )
        scheduler = scheduler["scheduler"]
    elif scheduler is not None:
        raise NotReplayableError("lightning: give the scheduler as {'scheduler': s, 'interval': 'step'}; Lightning steps a bare one per epoch")
    return optimizer, scheduler


class LightningStep:
    """One Lightning automatic-optimization step on a batch (what the Trainer does, in its order)."""

    def __init__(self, module: pl.LightningModule, optimizer: torch.optim.Optimizer, scheduler: Any,
                 gradient_clip_val: float | None, gradient_clip_algorithm: str, precision: str) -> None:
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.gradient_clip_val, self.gradient_clip_algorithm, self.precision = gradient_clip_val, gradient_clip_algorithm, precision

    def __call__(self, batch: Batch) -> torch.Tensor | None:
        module, optimizer = self.module, self.optimizer
        module.train()
        batch_idx = current_step() or 0
        autocast = (
            torch.autocast(current_device().type, dtype=torch.bfloat16) if self.precision == "bf16-mixed" else contextlib.nullcontext()
        )
        with autocast:
            output = module.training_step(batch, batch_idx)
        loss = output["loss"] if isinstance(output, Mapping) else output
        module.on_before_zero_grad(optimizer)
        optimizer.zero_grad()
        if loss is not None:
            module.on_before_backward(loss)
            module.backward(loss)
            module.on_after_backward()
        module.on_before_optimizer_step(optimizer)
        if self.gradient_clip_val:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            if self.gradient_clip_algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(parameters, self.gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(parameters, self.gradient_clip_val)
        optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return None if loss is None else loss.detach()


def lightning_spec(
    module: pl.LightningModule,
    dataset: Dataset,
    *,
    gradient_clip_val: float | None = None,
    gradient_clip_algorithm: str = "norm",
    precision: str = "32-true",
    state: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> TrainingSpec:
    """A ``TrainingSpec`` that replays ``module`` as the Lightning Trainer trains it (see the module docstring).

    ``gradient_clip_val``/``gradient_clip_algorithm``/``precision``: the Trainer's settings, declared
    here because replay runs without a Trainer (``RecordingCallback`` checks they agree).
    Raises ``NotReplayableError`` for a module this integration does not replay (manual
    optimization, several optimizers, an epoch-interval scheduler, overridden optimizer hooks).
    """
    if not module.automatic_optimization:
        raise NotReplayableError("lightning: manual optimization is not supported yet: use automatic optimization")
    overridden = [name for name in _NOT_REPLAYED if getattr(type(module), name) is not getattr(pl.LightningModule, name)]
    if overridden:
        raise NotReplayableError(f"lightning: the module overrides {', '.join(overridden)}, which replay does not run")
    if precision not in PRECISIONS:
        raise NotReplayableError(f"lightning: precision {precision!r} is not supported yet (supported: {', '.join(PRECISIONS)})")
    if gradient_clip_algorithm not in ("norm", "value"):
        raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', not {gradient_clip_algorithm!r}")
    config = module.configure_optimizers()
    optimizer, scheduler = _optimizers(config)
    module.configure_optimizers = lambda: config  # type: ignore[method-assign]  # the Trainer steps these very objects
    step = LightningStep(module, optimizer, scheduler, gradient_clip_val, gradient_clip_algorithm, precision)
    return TrainingSpec(
        model=module, optimizer=optimizer, scheduler=scheduler, dataset=dataset, step=step,
        state=dict(state or {}), generators=dict(generators or {}),
    )


class RecordingCallback(pl.Callback):
    """Records ``trainer.fit`` into a ``trainwitness.record`` recording whose spec ``lightning_spec`` built.

    Train the recording's module on the recording's loader for one epoch::

        trainer = L.Trainer(max_epochs=1, callbacks=[RecordingCallback(run)], ...)
        trainer.fit(run.model, train_dataloaders=run.data_loader(num_workers=2))
    """

    def __init__(self, recording: Any) -> None:
        step = recording.spec.step
        if not isinstance(step, LightningStep):
            raise TypeError("RecordingCallback records a spec built by trainwitness.integrations.lightning.lightning_spec")
        self.recording, self.declared = recording, step

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        declared, problems = self.declared, []
        if pl_module is not self.recording.model:
            problems.append("the Trainer fits another module than the recording's (use run.model)")
        if trainer.accumulate_grad_batches != 1:
            problems.append(f"accumulate_grad_batches={trainer.accumulate_grad_batches} (accumulate inside training_step instead)")
        if (trainer.gradient_clip_val or None) != (declared.gradient_clip_val or None):
            problems.append(f"gradient_clip_val={trainer.gradient_clip_val}, the spec declares {declared.gradient_clip_val}")
        if trainer.gradient_clip_val and (trainer.gradient_clip_algorithm or "norm") != declared.gradient_clip_algorithm:
            problems.append(f"gradient_clip_algorithm={trainer.gradient_clip_algorithm}, the spec declares {declared.gradient_clip_algorithm}")
        precision = str(trainer.precision)
        if precision.replace("32-true", "32") != declared.precision.replace("32-true", "32"):
            problems.append(f"precision={precision}, the spec declares {declared.precision}")
        if pl_module.device.type != self.recording.device.type:
            problems.append(f"the Trainer runs on {pl_module.device}, the recording on {self.recording.device}")
        if trainer.max_epochs not in (1, None) and trainer.max_steps in (-1, None):
            problems.append(f"max_epochs={trainer.max_epochs}: the recording's loader is one epoch of all its steps (max_epochs=1)")
        if problems:
            self.recording.abort()
            raise NotReplayableError("lightning: this Trainer does not train the way the spec replays: " + "; ".join(problems))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self.recording.begin_step(batch)  # the batch on the device, as the step receives it; committed as a host copy

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        self.recording.end_step(loss)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.recording.abort()
