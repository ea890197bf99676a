"""Audit cost: verify's time and peak memory against the fraction of training it re-executes,
and what the Proof-of-Learning way (re-execute the top-Q largest updates per epoch) costs for the
same guarantee.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.store import read_index
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.prover import attest_store, record_run
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.verifier.draw import detection_probability

HERE = Path(__file__).resolve().parent


def record_signed(root: Path, entry_point: str, overrides: Mapping[str, JSONValue], delta_every: int | None = None) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = {"root": root, "store": root / "store", "weights": root / "model.safetensors",
             "attestation": root / "attestation.json", "key": root / "k.key", "pub": root / "k.pub"}
    generate_keypair(paths["key"], paths["pub"])
    record_run(entry_point, overrides, paths["store"], paths["weights"], torch_threads=1, delta_every=delta_every)
    paths["attestation"].write_bytes(attest_store(paths["store"], paths["weights"], load_private_key(paths["key"])))
    return paths


def verify_in_child(run: Mapping[str, Path], segments: int | str, seed: int = 1, workers: int = 1) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), str(HERE), env.get("PYTHONPATH", "")])
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(HERE / "_verify_child.py"), str(run["attestation"]), str(run["store"]), str(run["weights"]),
         str(run["pub"]), str(segments), str(seed), str(workers)],
        capture_output=True, text=True, env=env, check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - began
    return result


def segments_for(probability: float, segment_count: int, forged_fraction: float) -> int:
    """The fewest uniformly drawn segments that catch a forged fraction with at least ``probability``
    (besides the last segment, which every audit replays: the forger is assumed to leave it honest)."""
    for n in range(1, segment_count + 1):
        if detection_probability(segment_count, n, forged_fraction) >= probability:
            return n
    return segment_count


def update_norm_ranking(store: Path) -> tuple[list[float], float, int]:
    """PoL's selection input: ||W_{i+1} - W_i|| for every segment, which needs every checkpoint read."""
    began = time.perf_counter()
    index = read_index(store)
    steps = [c.step for c in index.checkpoints]
    norms: list[float] = []
    previous = None
    read_total = 0
    for i in range(len(steps)):
        flat, read = read_checkpoint(store, steps, i)
        read_total += read
        model = {k: v for k, v in flat.tensors.items() if k.startswith("model/") and v.is_floating_point()}
        if previous is not None:
            norms.append(math.sqrt(sum(float(torch.sum((model[k] - previous[k]) ** 2)) for k in model)))
        previous = model
    return norms, time.perf_counter() - began, read_total


def pol_comparison(segment_count: int, epochs: int, segment_seconds: float, probability: float = 0.95) -> list[dict[str, Any]]:
    """Segments re-executed for the same guarantee: P(catch) >= probability whichever segments were forged.

    Random sampling: the verifier draws after the prover commits, so the forger cannot dodge; N
    follows from the hypergeometric bound. Top-Q per epoch: the choice is a function of the
    committed updates, which the forger controls; a forger who keeps each forged update below the
    epoch's Q-th largest is never checked, so the only Q that guarantees catching F forged segments
    whatever they look like is one that leaves fewer than F unchecked: Q = ceil((M - F + 1) / E).
    """
    rows = []
    for f in (0.01, 0.05, 0.10):
        forged = max(1, math.ceil(f * segment_count - 1e-12))
        n = segments_for(probability, segment_count, f)
        q = math.ceil((segment_count - forged + 1) / epochs)
        rows.append({
            "forged_fraction": f, "forged_segments": forged, "segments": segment_count, "epochs": epochs,
            "random_segments": n, "random_fraction": n / segment_count, "random_seconds": n * segment_seconds,
            "pol_top_q_per_epoch": q, "pol_segments": min(segment_count, q * epochs),
            "pol_seconds": min(segment_count, q * epochs) * segment_seconds,
        })
    return rows
