"""Figures for docs/LM.md: the text workload's size, corpus, step time per thread count and loss curve.

Runs the training step without recording (the prover's overhead is measured elsewhere), in this
process, for ``lm`` and ``lm_fast`` at 1 and 2 threads. Usage:

    PYTHONPATH=src python benchmarks/lm_workload.py [--steps 20] [--full-run]

``--full-run`` also trains ``lm`` for its full default length at 2 threads and prints the losses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from machine_info import describe, machine

from trainwitness.data.datasets import sample_digest
from trainwitness.run.loop import TrainingRun
from trainwitness.run.spec import SpecFunction, resolve_hyperparameters
from trainwitness.workloads.lm import CORPUS_FILES, lm, lm_fast, read_corpus


def _sample_digests(dataset) -> list[str]:  # type: ignore[no-untyped-def]
    """What the manifest commits to for a dataset built in code: each sample's content digest."""
    return [sample_digest(dataset, i) for i in range(len(dataset))]


def _step_times(function: SpecFunction, threads: int, steps: int) -> list[float]:
    torch.set_num_threads(threads)
    run = TrainingRun.start(function, resolve_hyperparameters(function.defaults, {}))
    times = []
    for step in range(steps):
        batch = run.spec.dataset.batch(run.sampler.batch_ids(step))
        start = time.perf_counter()
        run.spec.step(batch)
        times.append(time.perf_counter() - start)
    return times[3:]  # the first steps allocate and warm caches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--full-run", action="store_true")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {describe(machine())}")

    corpus = read_corpus(CORPUS_FILES)
    print(f"corpus: {len(corpus)} files, {sum(len(f.content) for f in corpus)} bytes")
    for function in (lm, lm_fast):
        name = function.__name__
        start = time.perf_counter()
        run = TrainingRun.start(function, resolve_hyperparameters(function.defaults, {}))
        built = time.perf_counter() - start
        start = time.perf_counter()
        _sample_digests(run.spec.dataset)
        digested = time.perf_counter() - start
        params = sum(p.numel() for p in run.spec.model.parameters())
        hp = function.defaults
        print(
            f"{name}: {params} parameters, {len(run.spec.dataset)} samples of {hp['block_size']}+1 bytes,"
            f" batch {hp['batch_size']}; build {built:.2f} s, dataset digest {digested:.2f} s"
        )
        for threads in (1, 2):
            times = _step_times(function, threads, args.steps)
            print(
                f"  {threads} thread(s): step median {1000 * statistics.median(times):.1f} ms, min {1000 * min(times):.1f} ms"
            )

    if args.full_run:
        torch.set_num_threads(2)
        hp = resolve_hyperparameters(lm.defaults, {})
        run = TrainingRun.start(lm, hp)
        losses = [
            float(run.spec.step(run.spec.dataset.batch(run.sampler.batch_ids(s))))
            for s in range(int(hp["total_steps"]))
        ]  # type: ignore[arg-type]
        print(f"lm full run, {len(losses)} steps: first loss {losses[0]:.3f}, last {losses[-1]:.3f}")
        print(
            "  mean loss per tenth:",
            " ".join(
                f"{statistics.fmean(losses[i : i + len(losses) // 10]):.2f}"
                for i in range(0, len(losses), len(losses) // 10)
            ),
        )


if __name__ == "__main__":
    main()
