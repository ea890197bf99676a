"""A PyTorch Lightning script, recorded by trainwitness and run as ``python train.py --out DIR``.

The ``LightningModule`` is the script's own: ``training_step`` and ``configure_optimizers`` are what
replay runs. What changes for trainwitness: the module and data are built in a ``@training_spec``
function and wrapped by ``lightning_spec`` (which declares the Trainer's clipping and precision), the
Trainer gets ``RecordingCallback(run)`` and trains on ``run.data_loader(...)`` for one epoch, and the
scheduler steps per optimizer step (``"interval": "step"``).

    python examples/lightning_trainer/train.py --out /tmp/run
    trainwitness verify /tmp/run/attestation.json --store /tmp/run/store --weights /tmp/run/model.safetensors \\
        --key /tmp/run/trainwitness.pub --code examples/lightning_trainer --all
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

import trainwitness as tw
from trainwitness.integrations.lightning import RecordingCallback, lightning_spec
from trainwitness.workloads.digits import load_digits

DEFAULTS = {
    "seed": 0,
    "data_seed": 1,
    "batch_size": 32,
    "total_steps": 120,
    "checkpoint_interval": 20,
    "hidden": 96,
    "dropout": 0.1,
    "lr": 3e-3,
    "weight_decay": 0.01,
    "warmup_steps": 10,
    "clip_norm": 1.0,
}


class DigitsClassifier(pl.LightningModule):
    def __init__(self, hidden: int, dropout: float, lr: float, weight_decay: float, warmup: int, total: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 10))
        self.lr, self.weight_decay, self.warmup, self.total = lr, weight_decay, warmup, total

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self.net(batch["image"]), batch["label"])

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def factor(step: int) -> float:
            if step < self.warmup:
                return (step + 1) / self.warmup
            return 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup) / max(1, self.total - self.warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@tw.training_spec(defaults=DEFAULTS)
def build(hp: Mapping[str, object]) -> tw.TrainingSpec:
    module = DigitsClassifier(
        hidden=int(hp["hidden"]), dropout=float(hp["dropout"]), lr=float(hp["lr"]),
        weight_decay=float(hp["weight_decay"]), warmup=int(hp["warmup_steps"]), total=int(hp["total_steps"]),
    )
    return lightning_spec(module, load_digits(), gradient_clip_val=float(hp["clip_norm"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    with tw.record(build, out=args.out) as run:
        trainer = pl.Trainer(
            max_epochs=1, accelerator="cpu", devices=1, gradient_clip_val=DEFAULTS["clip_norm"],
            callbacks=[RecordingCallback(run)], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(run.model, train_dataloaders=run.data_loader(num_workers=args.workers))
    print(f"signed {run.attestation}")


if __name__ == "__main__":
    main()
