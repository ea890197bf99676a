"""Exact mode's costs on a workload: hints per step, hint bytes, loss-curve change, step-time overhead,
and whether a replay with another thread count lands bitwise (docs/EXACT.md has the table).

    PYTHONPATH=src python benchmarks/exact_mode.py [--spec module:function] [--steps N] [--grid m,k,floor ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from trainwitness.environment import apply_execution_settings
from trainwitness.exact import DEFAULT_GRID, Grid
from trainwitness.executor import ExactHooks, TrainingRun
from trainwitness.spec import load_entry_point, resolve_hyperparameters
from trainwitness.state import state_digest


def train(spec: str, steps: int, threads: int, grid: Grid | None, committed: list[bytes] | None = None) -> dict:
    apply_execution_settings(threads)
    function = load_entry_point(spec)
    hp = resolve_hyperparameters(function.defaults, {"total_steps": steps})
    run = TrainingRun.start(function, hp)
    losses: list[float] = []
    hints: list[bytes] = []
    seconds: list[float] = []
    step_fn = run.spec.step

    def timed(batch):  # the loss, and the step's time including exact mode's rounding (measured next)
        loss = step_fn(batch)
        losses.append(float(loss))
        return loss

    object.__setattr__(run.spec, "step", timed)
    hooks = None
    if grid is not None:
        hooks = ExactHooks(grid, (lambda s: committed[s]) if committed is not None else (lambda s: None), lambda s, h: hints.append(h))
    for step in range(steps):
        started = time.perf_counter()
        run.run(step, step + 1, lambda *a: None, hooks)
        seconds.append(time.perf_counter() - started)
    values = sum(t.numel() for n, t in run.trainable().tensors.items() if t.is_floating_point() and t.ndim > 0)
    return {"losses": losses, "hints": hints, "seconds": seconds, "state": state_digest(run.capture()), "values": values}


def interleaved_overhead(spec: str, grid: Grid, steps: int = 200) -> dict:
    """Median step time, plain and exact, alternating steps in one 1-thread process (fair under load)."""
    apply_execution_settings(1)
    function = load_entry_point(spec)
    run = TrainingRun.start(function, resolve_hyperparameters(function.defaults, {}))
    hooks = ExactHooks(grid, lambda s: None, lambda s, h: None)
    plain, exact = [], []
    for step in range(0, steps, 2):
        started = time.perf_counter()
        run.run(step, step + 1, lambda *a: None)
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        run.run(step + 1, step + 2, lambda *a: None, hooks)
        exact.append(time.perf_counter() - started)
    return {"step_ms_plain_interleaved": 1e3 * statistics.median(plain), "step_ms_exact_interleaved": 1e3 * statistics.median(exact)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="trainwitness.workloads.digits:digits")
    parser.add_argument("--steps", type=int, default=560)
    parser.add_argument("--grid", action="append", default=[], help="mantissa_bits,margin_log2,floor_exponent")
    args = parser.parse_args()
    grids = [Grid(*map(int, g.split(","))) for g in args.grid] or [DEFAULT_GRID]
    torch.set_num_threads(2)
    plain = train(args.spec, args.steps, 2, None)
    plain1 = train(args.spec, args.steps, 1, None)
    rows = []
    for grid in grids:
        recorded = train(args.spec, args.steps, 2, grid)
        try:
            replay = train(args.spec, args.steps, 1, grid, recorded["hints"])
            cross = "bitwise" if replay["state"] == recorded["state"] else "DIFFERS"
        except Exception as e:  # a hint the 1-thread values do not support, reported not raised
            cross = f"FAILED: {e}"
        counts = [len(h) // 8 for h in recorded["hints"]]
        diffs = [abs(a - b) for a, b in zip(recorded["losses"], plain["losses"], strict=True)]
        tail = slice(-max(1, args.steps // 10), None)
        rows.append({
            "grid": grid.to_json(),
            "values": recorded["values"],
            "hints_per_step_mean": statistics.mean(counts),
            "hints_per_step_max": max(counts),
            "hint_fraction_mean": statistics.mean(counts) / recorded["values"],
            "hint_bytes_per_step_mean": 8 * statistics.mean(counts),
            "loss_final_plain": statistics.mean(plain["losses"][tail]),
            "loss_final_exact": statistics.mean(recorded["losses"][tail]),
            "loss_abs_diff_max": max(diffs),
            "loss_abs_diff_mean": statistics.mean(diffs),
            "step_ms_plain_median": 1e3 * statistics.median(plain["seconds"]),
            "step_ms_exact_median": 1e3 * statistics.median(recorded["seconds"]),
            "cross_thread_replay_2_to_1": cross,
            "plain_2_vs_1_threads": "bitwise" if plain["state"] == plain1["state"] else "differ",
            **interleaved_overhead(args.spec, grid),
        })
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
