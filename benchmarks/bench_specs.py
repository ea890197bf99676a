"""Training specs used only by the benchmarks (imported as the top-level module ``bench_specs``).

``tinylm`` is a stand-in for the text model (``trainwitness.workloads.lm:lm``) until that lands:
a byte-level GPT of the same shape (4 layers, 160 wide, AdamW, warmup then cosine) on a seeded
synthetic corpus, so nothing is read from outside the repository. ``wide_mlp`` is the >= 50 M
parameter model for the commit path: a few steps are enough to time what a checkpoint costs.
This module is its own source root (a single file), so benchmark outputs never enter its code digest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch, TensorDataset
from trainwitness.run.spec import TrainingSpec, training_spec

VOCAB = 256


def synthetic_bytes(n_windows: int, block: int, seed: int) -> TensorDataset:
    """Windows of a seeded order-1 Markov byte stream: learnable, and the same on every machine."""
    g = torch.Generator().manual_seed(seed)
    transitions = torch.softmax(torch.randn(VOCAB, VOCAB, generator=g) * 3.0, dim=1)
    stream = torch.empty(n_windows * block + 1, dtype=torch.int64)
    stream[0] = 0
    draws = torch.rand(len(stream), generator=g)
    cumulative = transitions.cumsum(dim=1)
    for i in range(1, len(stream)):
        stream[i] = int(torch.searchsorted(cumulative[int(stream[i - 1])], draws[i]).clamp(max=VOCAB - 1))
    starts = torch.arange(n_windows) * block
    windows = torch.stack([stream[s : s + block + 1] for s in starts.tolist()]).to(torch.uint8)
    return TensorDataset(name=f"synthetic-markov-bytes-{seed}", columns={"tokens": windows})


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.dropout(self.proj(attended))
        return x + self.dropout(self.mlp(self.ln2(x)))


class TinyGPT(nn.Module):
    def __init__(self, layers: int, heads: int, width: int, block: int, dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, width)
        self.positions = nn.Embedding(block, width)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tokens(tokens) + self.positions(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        out: torch.Tensor = self.head(self.ln(x))
        return out


TINYLM_DEFAULTS: dict[str, JSONValue] = {
    "seed": 0,
    "data_seed": 1,
    "batch_size": 8,
    "total_steps": 200,
    "checkpoint_interval": 10,
    "windows": 512,
    "block_size": 64,
    "layers": 4,
    "heads": 4,
    "width": 160,
    "dropout": 0.1,
    "lr": 3e-3,
    "warmup_steps": 10,
    "weight_decay": 0.1,
}


@training_spec(defaults=TINYLM_DEFAULTS)
def tinylm(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    block = int(hp["block_size"])  # type: ignore[arg-type]
    model = TinyGPT(int(hp["layers"]), int(hp["heads"]), int(hp["width"]), block, float(hp["dropout"]))  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))  # type: ignore[arg-type]
    total, warmup = int(hp["total_steps"]), int(hp["warmup_steps"])  # type: ignore[arg-type]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    dataset = synthetic_bytes(int(hp["windows"]), block, seed=1234)  # type: ignore[arg-type]

    def step(batch: Batch) -> torch.Tensor:
        model.train()
        tokens = batch["tokens"].long()
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=scheduler, dataset=dataset, step=step)


WIDE_DEFAULTS: dict[str, JSONValue] = {
    "seed": 0,
    "data_seed": 1,
    "batch_size": 16,
    "total_steps": 4,
    "checkpoint_interval": 2,
    "inputs": 1024,
    "width": 4096,
    "depth": 3,
    "lr": 0.01,
}


class WideMLP(nn.Module):
    def __init__(self, inputs: int, width: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(inputs, width), nn.ReLU(), *(m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU()))
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.layers(x))
        return out


@training_spec(defaults=WIDE_DEFAULTS)
def wide_mlp(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    """About 54.6 M parameters at the defaults (plus as much again of SGD momentum)."""
    inputs = int(hp["inputs"])  # type: ignore[arg-type]
    model = WideMLP(inputs, int(hp["width"]), int(hp["depth"]))  # type: ignore[arg-type]
    optimizer = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]), momentum=0.9)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(99)
    dataset = TensorDataset(
        name="synthetic-gaussian-1024",
        columns={"x": torch.randn(256, inputs, generator=g), "y": torch.randint(0, 10, (256,), generator=g)},
    )

    def step(batch: Batch) -> torch.Tensor:
        loss = F.cross_entropy(model(batch["x"]), batch["y"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=None, dataset=dataset, step=step)
