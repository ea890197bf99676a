"""The Hugging Face ``transformers`` Trainer: replay through the Trainer's own training step.

``hf_spec(trainer, dataset, hp)`` (inside a ``@training_spec`` function that builds the Trainer
from ``TrainingArguments`` in code) makes a ``TrainingSpec`` whose step is one optimizer update of
the Trainer's inner loop, done with the Trainer's own parts: the step's batch in
``gradient_accumulation_steps`` equal micro-batches, ``get_batch_samples`` (the item count the
loss is normalised by), ``training_step`` on each micro-batch (forward, loss, the Trainer's
accumulation scaling, ``accelerator.backward``), ``_clip_grad_norm`` when ``max_grad_norm > 0``,
``optimizer.step()``, ``lr_scheduler.step()``, ``model.zero_grad()``. Optimizer and scheduler are
created here (``create_optimizer_and_scheduler`` for ``total_steps``), so ``train()`` steps the
objects whose state is committed. The Trainer seeds the global generators from ``args.seed`` when
it is built; that happens inside the spec, before checkpoint 0, so replay reproduces it.

``recording_trainer(run)`` returns that Trainer ready to record ``trainer.train()``: its data
loader is the recording's (the declared order, in micro-batches), and a ``TrainerCallback``
commits each update's batch (its micro-batches, concatenated) in ``on_step_begin`` and checks the
step and commits its loss (the sum of ``training_step``'s returns) in ``on_step_end``.

Refused (``NotReplayableError``): fp16/bf16 (accelerate applies autocast in ``prepare``, which
replay does not run), more than one device or process, a ``ReduceLROnPlateau``-style scheduler,
a ``model_init``, and a batch size other than ``per_device_train_batch_size x
gradient_accumulation_steps``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
import transformers

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch, Dataset
from trainwitness.errors import NotReplayableError
from trainwitness.run.spec import TrainingSpec

__all__ = ["HFStep", "hf_spec", "RecordingCallback", "recording_trainer"]


class HFStep:
    """One optimizer update of the Trainer's inner loop on a step's batch (see the module docstring)."""

    def __init__(self, trainer: transformers.Trainer, micro_batches: int) -> None:
        self.trainer, self.micro_batches = trainer, micro_batches
        self._training_step = trainer.training_step
        self._get_batch_samples = trainer.get_batch_samples
        self.losses: list[torch.Tensor] = []  # training_step's returns since the last take_loss()
        self.samples: list[Batch] = []  # the micro-batches of the update the Trainer fetched last
        # Both the Trainer's own loop and replay go through these two (instance attributes).
        trainer.training_step = self._record_training_step  # type: ignore[method-assign]
        trainer.get_batch_samples = self._record_batch_samples  # type: ignore[method-assign]

    def _record_training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = self._training_step(model, inputs, num_items_in_batch)
        self.losses.append(loss)
        return loss

    def _record_batch_samples(self, epoch_iterator: Iterator[Any], num_batches: int, device: Any) -> tuple[list[Any], Any]:
        samples, num_items = self._get_batch_samples(epoch_iterator, num_batches, device)
        self.samples = list(samples)
        return samples, num_items

    def take_loss(self) -> torch.Tensor | None:
        """The update's loss as the Trainer logs it: the sum of its micro-batches' (scaled) losses."""
        losses, self.losses = self.losses, []
        return torch.stack(losses).sum() if losses else None

    def __call__(self, batch: Batch) -> torch.Tensor | None:
        trainer, k = self.trainer, self.micro_batches
        model: Any = trainer.model
        optimizer: Any = trainer.optimizer
        scheduler: Any = trainer.lr_scheduler
        size = len(next(iter(batch.values()))) // k
        micro = [{name: t[j * size : (j + 1) * size] for name, t in batch.items()} for j in range(k)]
        samples, num_items = trainer.get_batch_samples(iter(micro), k, trainer.args.device)
        trainer.current_gradient_accumulation_steps = len(samples)
        self.losses = []
        for i, inputs in enumerate(samples):
            trainer.accelerator.gradient_state._set_sync_gradients(i == len(samples) - 1)
            trainer.training_step(model, inputs, num_items)
        if trainer.args.max_grad_norm > 0:
            trainer._clip_grad_norm(model)  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        model.zero_grad()
        return self.take_loss()


def hf_spec(trainer: transformers.Trainer, dataset: Dataset, hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """A ``TrainingSpec`` that replays ``trainer``'s training on ``dataset`` (see the module docstring)."""
    args = trainer.args
    problems = []
    if args.fp16 or args.bf16:
        problems.append("fp16/bf16 mixed precision is not supported yet (accelerate applies it in prepare, which replay does not run)")
    if args.n_gpu > 1 or args.world_size > 1:
        problems.append(f"{max(args.n_gpu, args.world_size)} devices or processes: one is supported")
    if trainer.model_init is not None:
        problems.append("model_init: build the model in the spec instead")
    k = int(args.gradient_accumulation_steps)
    if args.per_device_train_batch_size * k != int(hp["batch_size"]):  # type: ignore[arg-type,unused-ignore]
        problems.append(
            f"per_device_train_batch_size {args.per_device_train_batch_size} x gradient_accumulation_steps {k} is not "
            f"the declared batch_size {hp['batch_size']}"
        )
    if problems:
        raise NotReplayableError("hf: this Trainer does not train the way the spec replays: " + "; ".join(problems))
    trainer.create_optimizer_and_scheduler(num_training_steps=int(hp["total_steps"]))  # type: ignore[arg-type,unused-ignore]
    # train() replaces a scheduler it created itself (for its own max_steps); this one is the spec's: keep it.
    trainer._created_lr_scheduler = False
    if isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise NotReplayableError("hf: a ReduceLROnPlateau scheduler steps on evaluation metrics, not per update")
    step = HFStep(trainer, k)
    model: Any = trainer.model
    optimizer: Any = trainer.optimizer
    return TrainingSpec(model=model, optimizer=optimizer, scheduler=trainer.lr_scheduler, dataset=dataset, step=step)


class RecordingCallback(transformers.TrainerCallback):
    """Commits each optimizer update of ``trainer.train()`` into a ``trainwitness.record`` recording."""

    def __init__(self, recording: Any) -> None:
        step = recording.spec.step
        if not isinstance(step, HFStep):
            raise TypeError("RecordingCallback records a spec built by trainwitness.integrations.hf.hf_spec")
        self.recording, self.step = recording, step

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        samples = self.step.samples
        if len(samples) != self.step.micro_batches:
            raise NotReplayableError(f"hf: an update of {len(samples)} micro-batches, not gradient_accumulation_steps={self.step.micro_batches}")
        batch = {name: torch.cat([s[name] for s in samples]) for name in samples[0]}  # copy point: the update's batch
        self.step.losses = []
        self.recording.begin_step(batch)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.recording.end_step(self.step.take_loss())


def recording_trainer(recording: Any, num_workers: int = 0) -> transformers.Trainer:
    """The recording's Trainer (the one ``hf_spec`` wrapped), set to record ``train()``: the recording's
    data loader in the declared order, in micro-batches; ``max_steps`` the steps still to run; the callback."""
    step = recording.spec.step
    if not isinstance(step, HFStep):
        raise TypeError("recording_trainer needs a recording of a spec built by trainwitness.integrations.hf.hf_spec")
    trainer = step.trainer
    loader = recording.data_loader(num_workers=num_workers, micro_batches=step.micro_batches)
    trainer.get_train_dataloader = lambda: loader  # type: ignore[method-assign]
    trainer.args.max_steps = recording.total_steps - recording.next_step
    trainer.add_callback(RecordingCallback(recording))
    return trainer
