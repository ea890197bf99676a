"""A plain PyTorch training loop, recorded by trainwitness and run as ``python train.py --out DIR``.

Handwritten digits (scikit-learn's bundled copy: nothing is downloaded) and a small MLP, trained the
way a typical script trains: a DataLoader with worker processes, AdamW with a warmup + cosine
schedule, dropout, a random augmentation, gradient accumulation over micro-batches, gradient
clipping and an EMA of the weights. What trainwitness needs, and why:

* ``build(hp)`` builds model, optimizer, scheduler and dataset from the hyperparameters (the verifier
  calls it to rebuild the run), and ``step(batch)`` is the training step (the verifier replays it);
* the loop is the script's own; it iterates ``run.data_loader(...)`` (the declared sample order)
  and calls ``run.step(batch)``;
* randomness inside the step comes from torch's global generator (committed by trainwitness);
  gradient accumulation happens inside one step (one ``optimizer.step()`` per committed step);
* state beyond model, optimizer and scheduler (here the EMA weights) is registered in
  ``TrainingSpec(state=...)``, so every checkpoint holds it.

    python examples/plain_loop/train.py --out /tmp/run
    trainwitness verify /tmp/run/attestation.json --store /tmp/run/store --weights /tmp/run/model.safetensors \\
        --key /tmp/run/trainwitness.pub --code examples/plain_loop --all
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import trainwitness as tw
from trainwitness.workloads.digits import load_digits

DEFAULTS = {
    "seed": 0,
    "data_seed": 1,
    "batch_size": 64,  # per committed step, split into micro_batches for accumulation
    "total_steps": 150,
    "checkpoint_interval": 25,
    "micro_batches": 2,
    "hidden": 128,
    "dropout": 0.1,
    "lr": 3e-3,
    "weight_decay": 0.01,
    "warmup_steps": 15,
    "clip_norm": 1.0,
    "ema_decay": 0.95,
}


class MLP(nn.Module):
    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def random_shift(images: torch.Tensor) -> torch.Tensor:
    """Shift each 8x8 image by up to one pixel each way (pad by one, crop at a random offset)."""
    n = images.shape[0]
    padded = F.pad(images.view(n, 8, 8), (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n, 1, 1), device=images.device)  # torch's global generator: committed
    dx = torch.randint(0, 3, (n, 1, 1), device=images.device)
    grid = torch.arange(8, device=images.device)
    rows, cols = dy + grid.view(1, 8, 1), dx + grid.view(1, 1, 8)
    return padded[torch.arange(n, device=images.device).view(n, 1, 1), rows, cols].reshape(n, 64)


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


@tw.training_spec(defaults=DEFAULTS)
def build(hp: Mapping[str, object]) -> tw.TrainingSpec:
    model = MLP(hidden=int(hp["hidden"]), dropout=float(hp["dropout"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(int(hp["warmup_steps"]), int(hp["total_steps"])))
    micro = int(hp["micro_batches"])
    ema = tw.EMA(model, decay=float(hp["ema_decay"]))

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=batch["image"].device)
        # gradient accumulation: micro-batches inside one committed step, one optimizer update
        for images, labels in zip(batch["image"].chunk(micro), batch["label"].chunk(micro), strict=True):
            loss = F.cross_entropy(model(random_shift(images)), labels) / micro
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(hp["clip_norm"]))
        optimizer.step()
        scheduler.step()
        ema.update(model)
        return total

    return tw.TrainingSpec(
        model=model, optimizer=optimizer, scheduler=scheduler, dataset=load_digits(), step=step, state={"ema": ema},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the store, weights, key and attestation")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = parser.parse_args()

    with tw.record(build, out=args.out, device=args.device) as run:
        for batch in run.data_loader(num_workers=args.workers):
            run.step(batch)
    print(f"signed {run.attestation}")


if __name__ == "__main__":
    main()
