"""A Hugging Face Trainer script, recorded by trainwitness and run as ``python train.py --out DIR``.

A tiny GPT-2 built from a ``GPT2Config`` in code (nothing is downloaded) learns next-byte prediction
on Python standard-library source with the Trainer's AdamW, cosine schedule with warmup, gradient
clipping, dropout and gradient accumulation over 2 micro-batches. What changes for trainwitness: the
model, ``TrainingArguments`` and ``Trainer`` are built in a ``@training_spec`` function and wrapped by
``hf_spec`` (replay runs the Trainer's own training step), and ``recording_trainer(run).train()``
trains in the declared data order with a recording callback.

    python examples/hf_trainer/train.py --out /tmp/run
    trainwitness verify /tmp/run/attestation.json --store /tmp/run/store --weights /tmp/run/model.safetensors \\
        --key /tmp/run/trainwitness.pub --code examples/hf_trainer --all
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path

import transformers

import trainwitness as tw
from trainwitness.integrations.hf import hf_spec, recording_trainer
from trainwitness.workloads.lm import CORPUS_FILES, load_stdlib_corpus

DEFAULTS = {
    "seed": 0,
    "data_seed": 1,
    "batch_size": 8,  # per optimizer update: 2 micro-batches of 4
    "total_steps": 60,
    "checkpoint_interval": 10,
    "micro_batches": 2,
    "block_size": 64,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 64,
    "dropout": 0.1,
    "lr": 2e-3,
    "warmup_steps": 6,
    "weight_decay": 0.1,
    "max_grad_norm": 1.0,
}


def byte_dataset(block_size: int) -> tw.TensorDataset:
    """Inputs and labels (the model shifts them) of ``block_size`` byte tokens from the lm workload's corpus."""
    windows = load_stdlib_corpus(CORPUS_FILES[:4], block_size).columns["tokens"][:, :block_size].long()
    return tw.TensorDataset(
        name="stdlib-bytes-hf", columns={"input_ids": windows, "labels": windows}, license="PSF-2.0",
        description=f"byte windows of {block_size} tokens of 4 CPython standard-library modules",
    )


@tw.training_spec(defaults=DEFAULTS)
def build(hp: Mapping[str, object]) -> tw.TrainingSpec:
    config = transformers.GPT2Config(
        vocab_size=256, n_positions=int(hp["block_size"]), n_embd=int(hp["n_embd"]), n_layer=int(hp["n_layer"]),
        n_head=int(hp["n_head"]), resid_pdrop=float(hp["dropout"]), embd_pdrop=float(hp["dropout"]),
        attn_pdrop=float(hp["dropout"]), bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=False,  # tied weights share storage, which a weights file refuses
    )
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-trainer-"), use_cpu=True, seed=int(hp["seed"]),
        per_device_train_batch_size=int(hp["batch_size"]) // int(hp["micro_batches"]),
        gradient_accumulation_steps=int(hp["micro_batches"]), max_steps=int(hp["total_steps"]),
        learning_rate=float(hp["lr"]), lr_scheduler_type="cosine", warmup_steps=int(hp["warmup_steps"]),
        weight_decay=float(hp["weight_decay"]), max_grad_norm=float(hp["max_grad_norm"]),
        save_strategy="no", report_to="none", logging_steps=1000, disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=byte_dataset(int(hp["block_size"])))
    return hf_spec(trainer, trainer.train_dataset, hp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tw.record(build, out=args.out) as run:
        recording_trainer(run, num_workers=args.workers).train()
    print(f"signed {run.attestation}")


if __name__ == "__main__":
    main()
