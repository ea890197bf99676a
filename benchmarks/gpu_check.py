"""The GPU side of the device story in one command: record on the GPU in exact mode, verify on the CPU.

Prints the device, the step time of the same training without trainwitness, without and with exact
mode's rounding, and recorded (recorder, exact mode, checkpoints copied to the host): the overhead;
the exact-mode hint fraction (hinted values per rounded value, per step); and the verdict of a CPU
replay of two segments in exact mode. Without a GPU it runs the same path on the CPU (the fallback,
which tests/integration/test_benchmarks_quick.py exercises) and says so. Exit status 0 when the CPU verify accepts.

    bash benchmarks/gpu_check.sh [--steps 60] [--spec trainwitness.workloads.lm:lm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from trainwitness.commit.hints import DEFAULT_EXACT, read_hints
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.prover import attest_store
from trainwitness.prover.train import open_recording
from trainwitness.run.environment import apply_execution_settings
from trainwitness.run.exact import rounding_targets
from trainwitness.run.loop import ExactHooks, TrainingRun
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.verifier import VerifyOptions, verify_run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _unrecorded_ms(spec: str, overrides: dict, device: torch.device, steps: int, exact: bool) -> float:
    """Median step time of the spec's own steps on ``device``, nothing recorded (exact mode's rounding or not)."""
    function = load_entry_point(spec)
    run = TrainingRun.start(function, resolve_hyperparameters(function.defaults, overrides), device=device)
    hooks = ExactHooks(DEFAULT_EXACT, lambda s: None) if exact else None
    times = []
    for step in range(steps):
        started = time.perf_counter()
        run.run(step, step + 1, lambda *a: None, hooks)
        _sync(device)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times[max(1, steps // 10):])  # the first steps warm the kernels up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="trainwitness.workloads.lm:lm")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--interval", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    print(f"device: {torch.cuda.get_device_name(0) if gpu else 'cpu (no GPU here: this is the CPU fallback path)'}", flush=True)
    apply_execution_settings(1)
    # No dropout: random numbers drawn on a GPU come from its own generator, which a CPU cannot reproduce.
    overrides = {"total_steps": args.steps, "checkpoint_interval": args.interval, "dropout": 0.0}
    function = load_entry_point(args.spec)
    if "dropout" not in function.defaults:
        del overrides["dropout"]
    if "warmup_steps" in function.defaults:
        overrides["warmup_steps"] = max(1, args.steps // 10)

    plain_ms = _unrecorded_ms(args.spec, overrides, device, args.steps, exact=False)
    exact_ms = _unrecorded_ms(args.spec, overrides, device, args.steps, exact=True)
    with tempfile.TemporaryDirectory(prefix="trainwitness-gpu-check-") as tmp:
        root = Path(tmp)
        generate_keypair(root / "k.key", root / "k.pub")
        session = open_recording(
            function, args.spec, overrides, root / "store", root / "model.safetensors", device=str(device), exact=DEFAULT_EXACT,
        )
        times = []
        dataset, sampler = session.run.spec.dataset, session.run.sampler
        for step in range(args.steps):
            started = time.perf_counter()
            session.step(dataset.batch(sampler.batch_ids(step)))
            _sync(device)
            times.append(time.perf_counter() - started)
        values = sum(t.tensor.numel() for t in rounding_targets(session.run.trainable().tensors))
        values += sum(p.numel() for p in session.run.spec.model.parameters())
        session.finish()
        recorded_ms = 1e3 * statistics.median(times[max(1, args.steps // 10):])
        started = time.perf_counter()
        (root / "attestation.json").write_bytes(attest_store(root / "store", root / "model.safetensors", load_private_key(root / "k.key")))
        check_s = time.perf_counter() - started
        hints = read_hints(root / "store", args.steps)
        fraction = statistics.mean((len(h.gradient_hints) + len(h.state_hints)) // 8 for h in hints) / values
        started = time.perf_counter()
        report = verify_run(
            root / "attestation.json", root / "store", root / "model.safetensors", root / "k.pub",
            VerifyOptions(segments=2, device="cpu", sandbox="off"),
        )
        verify_s = time.perf_counter() - started
    numbers = {
        "device": str(device), "gpu": gpu, "spec": args.spec, "steps": args.steps,
        "step_ms_plain": plain_ms, "step_ms_exact_unrecorded": exact_ms, "step_ms_recorded_exact": recorded_ms,
        "overhead_recorded_exact": recorded_ms / plain_ms, "hint_fraction": fraction, "values_rounded_per_step": values,
        "pre_signing_replay_s": check_s, "cpu_verify_accepted": report.accepted, "cpu_verify_s": verify_s,
    }
    print(f"step time on {device}: {plain_ms:.2f} ms plain, {exact_ms:.2f} ms with exact mode's rounding, "
          f"{recorded_ms:.2f} ms recorded in exact mode: overhead x{recorded_ms / plain_ms:.3f}")
    print(f"exact-mode hint fraction: {fraction:.2e} of {values} rounded values per step")
    print(f"pre-signing replay (2 segments on {device}): {check_s:.1f} s")
    print(f"verify on the CPU in exact mode (2 segments): {'ACCEPT' if report.accepted else 'REJECT'} in {verify_s:.1f} s")
    if not report.accepted:
        print(report.to_text())
    if args.json is not None:
        args.json.write_text(json.dumps(numbers, indent=1) + "\n")
    return 0 if report.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
