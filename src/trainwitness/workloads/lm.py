"""A small decoder-only transformer language model trained on the Python standard library's source.

Corpus: the 40 stdlib modules named in ``CORPUS_FILES`` (about 0.9 MB on CPython 3.11), read as
bytes from ``sysconfig.get_paths()["stdlib"]`` in the declared order and concatenated; they are
under the PSF licence and present wherever Python is, so nothing is downloaded. The file list is a
hyperparameter (signed with the others) and the dataset's name carries the Python version that
supplied it, so a different stdlib shows as a data mismatch naming both versions, never as drift.

Tokenisation is byte-level (vocabulary 256, no learned merges): sample ``i`` is the
``block_size + 1`` bytes starting at offset ``i * block_size``, inputs its first ``block_size``
bytes and next-byte targets its last ``block_size``. Samples are rows of one uint8 tensor, so the
dataset digest commits to every token the model can see.

Model: token and position embeddings, ``n_layer`` pre-norm blocks of causal self-attention
(``F.scaled_dot_product_attention``) and a GELU MLP, a final norm and an untied head (tied weights
would share storage, which the weights file refuses), with dropout drawing from the global
generator so replay exercises the committed RNG state. AdamW with linear warmup then cosine decay
(``SequentialLR`` of ``LinearLR`` and ``CosineAnnealingLR``: plain state dicts, no lambdas).

Two entry points share the code: ``lm`` (the demo: batches of 12 x 128 tokens) and ``lm_fast``
(the same model on batches of 2 x 64 tokens, steps of tens of milliseconds, for measuring the
prover's overhead against short steps).
"""

from __future__ import annotations

import math
import platform
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch, TensorDataset
from trainwitness.errors import MalformedInputError, MissingInputError
from trainwitness.run.spec import TrainingSpec, training_spec

__all__ = [
    "CORPUS_FILES",
    "CORPUS_LICENSE",
    "VOCAB_SIZE",
    "CorpusFile",
    "stdlib_directory",
    "read_corpus",
    "byte_windows",
    "load_stdlib_corpus",
    "GPTConfig",
    "GPT",
    "lm",
    "lm_fast",
]

# Chosen by name: modules present in CPython 3.9 to 3.13 with the same path (no packages that
# were split or merged, such as pathlib or zipfile). Order is the concatenation order.
CORPUS_FILES: tuple[str, ...] = (
    "abc.py", "ast.py", "base64.py", "bisect.py", "calendar.py", "collections/__init__.py",
    "configparser.py", "contextlib.py", "copy.py", "csv.py", "dataclasses.py", "difflib.py",
    "enum.py", "fnmatch.py", "fractions.py", "functools.py", "getopt.py", "gettext.py", "glob.py",
    "gzip.py", "heapq.py", "hmac.py", "json/__init__.py", "json/decoder.py", "json/encoder.py",
    "keyword.py", "linecache.py", "numbers.py", "operator.py", "pprint.py", "queue.py",
    "random.py", "sched.py", "shlex.py", "stat.py", "string.py", "textwrap.py", "tokenize.py",
    "uuid.py", "weakref.py",
)  # fmt: skip
CORPUS_LICENSE = "PSF-2.0"
VOCAB_SIZE = 256  # one token per byte value
_MAX_CORPUS_BYTES = 64 * 1024 * 1024  # refuse to tokenise a file list that would not fit a quick demo


@dataclass(frozen=True)
class CorpusFile:
    path: str  # relative to the stdlib directory, '/'-separated
    content: bytes


def stdlib_directory() -> Path:
    path = Path(sysconfig.get_paths()["stdlib"])
    if not path.is_dir():
        raise MissingInputError(
            f"the lm corpus is read from the Python standard library, but {path} is not a directory"
        )
    return path


def _python_version() -> str:
    return f"{platform.python_implementation().lower()}-{platform.python_version()}"


def read_corpus(files: Sequence[str], root: Path | None = None) -> list[CorpusFile]:
    """The declared files' bytes, in the declared order; a missing or escaping path is refused."""
    base = stdlib_directory() if root is None else root
    corpus, total = [], 0
    for name in files:
        if not name or name.startswith("/") or "\\" in name or ".." in name.split("/"):
            raise MalformedInputError(f"lm corpus file {name!r} is not a plain path inside the stdlib directory")
        path = base / name
        try:
            content = path.read_bytes()
        except OSError as e:
            raise MissingInputError(
                f"lm corpus file {name} cannot be read from {base} ({_python_version()}): {e.strerror}"
            ) from e
        total += len(content)
        if total > _MAX_CORPUS_BYTES:
            raise MalformedInputError(f"lm corpus exceeds {_MAX_CORPUS_BYTES} bytes at {name}")
        corpus.append(CorpusFile(name, content))
    return corpus


def byte_windows(text: bytes, block_size: int) -> torch.Tensor:
    """Rows of ``block_size + 1`` byte tokens at offsets 0, block_size, 2 * block_size, ... (uint8)."""
    if block_size < 1:
        raise MalformedInputError(f"block_size must be at least 1, not {block_size}")
    count = (len(text) - 1) // block_size
    if count < 1:
        raise MalformedInputError(f"lm corpus of {len(text)} bytes is shorter than one block of {block_size + 1}")
    tokens = torch.frombuffer(bytearray(text), dtype=torch.uint8)  # a private copy of the bytes
    return tokens.unfold(0, block_size + 1, block_size)[:count].contiguous()


def load_stdlib_corpus(files: Sequence[str], block_size: int, root: Path | None = None) -> TensorDataset:
    corpus = read_corpus(files, root)
    windows = byte_windows(b"".join(f.content for f in corpus), block_size)
    return TensorDataset(
        name=f"{_python_version()}-stdlib-bytes", columns={"tokens": windows}, license=CORPUS_LICENSE,
        description=f"byte windows of {len(files)} CPython standard-library modules ({_python_version()}), in declared order",
    )


@dataclass(frozen=True)
class GPTConfig:
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float

    @classmethod
    def from_hyperparameters(cls, hp: Mapping[str, JSONValue]) -> GPTConfig:
        config = cls(
            block_size=int(hp["block_size"]),
            n_layer=int(hp["n_layer"]),
            n_head=int(hp["n_head"]),
            n_embd=int(hp["n_embd"]),
            dropout=float(hp["dropout"]),
        )
        if min(config.block_size, config.n_layer, config.n_head, config.n_embd) < 1 or config.n_embd % config.n_head:
            raise MalformedInputError(f"lm: n_embd must be a positive multiple of n_head, and sizes positive: {config}")
        if not 0.0 <= config.dropout < 1.0:
            raise MalformedInputError(f"lm: dropout must lie in [0, 1), not {config.dropout}")
        return config


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)
        # (batch, time, channels) -> (batch, heads, time, head size)
        q, k, v = (t.view(batch, time, self.n_head, channels // self.n_head).transpose(1, 2) for t in (q, k, v))
        attention_dropout = self.dropout if self.training else 0.0  # draws from the global generator
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=attention_dropout, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(batch, time, channels)
        out: torch.Tensor = self.resid_dropout(self.proj(y))
        return out


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attention = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(VOCAB_SIZE, config.n_embd)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, VOCAB_SIZE, bias=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections (nanoGPT): keeps the residual stream's scale.
        for name, parameter in self.named_parameters():
            if name.endswith("attention.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, time, VOCAB_SIZE) for int64 tokens (batch, time)."""
        positions = torch.arange(tokens.shape[1], dtype=torch.int64)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.ln_f(x))
        return logits


def _build(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    files = hp["corpus_files"]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise MalformedInputError("lm: hyperparameter 'corpus_files' must be a list of stdlib-relative paths")
    config = GPTConfig.from_hyperparameters(hp)
    dataset = load_stdlib_corpus([str(f) for f in files], config.block_size)
    model = GPT(config)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(hp["lr"]),
        betas=(float(hp["beta1"]), float(hp["beta2"])),
        weight_decay=float(hp["weight_decay"]),
    )
    total, warmup = int(hp["total_steps"]), int(hp["warmup_steps"])
    if not 1 <= warmup < total:
        raise MalformedInputError(f"lm: warmup_steps must lie in [1, total_steps), not {warmup}")
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        schedulers=[
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=float(hp["min_lr"])),
        ],
        milestones=[warmup],
    )
    grad_clip = float(hp["grad_clip"])

    def step(batch: Batch) -> torch.Tensor:
        model.train()
        # bytes -> int64 token ids (a copy); inputs are each window's first block_size bytes, targets the next byte each
        tokens = batch["tokens"].long()
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        return loss.detach()

    return TrainingSpec(model=model, optimizer=optimizer, scheduler=scheduler, dataset=dataset, step=step)


DEFAULTS: dict[str, JSONValue] = {
    "seed": 0,
    "data_seed": 1,
    "batch_size": 12,
    "total_steps": 150,
    "checkpoint_interval": 15,
    "corpus_files": list(CORPUS_FILES),
    "block_size": 128,
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 160,
    "dropout": 0.1,
    "lr": 3e-3,
    "min_lr": 3e-4,
    "warmup_steps": 15,
    "beta1": 0.9,
    "beta2": 0.99,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
}

# The same model on much smaller batches: tens of milliseconds a step, for overhead benchmarks.
FAST_DEFAULTS: dict[str, JSONValue] = {
    **DEFAULTS,
    "batch_size": 2,
    "block_size": 64,
    "total_steps": 1000,
    "checkpoint_interval": 100,
}


@training_spec(defaults=DEFAULTS)
def lm(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    return _build(hp)


@training_spec(defaults=FAST_DEFAULTS)
def lm_fast(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    return _build(hp)
