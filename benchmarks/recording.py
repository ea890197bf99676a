"""Recording overhead: step time with the Recorder beside training, as a ratio to the bare loop.

The bare loop is what training costs without trainwitness: sampler, batch, step. The recorded
loop is the prover's: the same plus ``record_step`` every step and ``record_checkpoint`` every k
steps. Both run on the same ``TrainingRun`` alternately (bare, recorded, bare, ...) so that noise
from other processes lands on both; each figure is the median over repetitions.

Beside wall time, which other processes on a shared machine disturb, two CPU figures that they
do not: the training thread's own CPU time per step (``time.thread_time``: what recording adds to
the thread that trains) and the CPU time of the recorder's threads per step (process CPU time of
the recorded loop and its final drain minus the training thread's: the work that competes with
training for the cores).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from trainwitness.commit.canonical import JSONValue
from trainwitness.prover.recorder import Recorder
from trainwitness.run.environment import apply_execution_settings
from trainwitness.run.loop import TrainingRun, snapshot, weights_of
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint import checkpoint_parts
from trainwitness.tensors.state import FlatState, digest_tensor_sets
from trainwitness.tensors.tensorfile import write_parts


def start_run(entry_point: str, overrides: Mapping[str, JSONValue]) -> TrainingRun:
    apply_execution_settings(1)
    function = load_entry_point(entry_point)
    return TrainingRun.start(function, resolve_hyperparameters(function.defaults, overrides))


def bare_steps(run: TrainingRun, start: int, count: int) -> tuple[float, float]:
    """(wall seconds, training-thread CPU seconds) for ``count`` plain steps (no capture, no commitment)."""
    began, began_cpu = time.perf_counter(), time.thread_time()
    for step in range(start, start + count):
        run.spec.step(run.spec.dataset.batch(run.sampler.batch_ids(step)))
    return time.perf_counter() - began, time.thread_time() - began_cpu


def recorded_steps(
    run: TrainingRun, start: int, count: int, k: int, store: Path, recorder_options: Mapping[str, Any]
) -> tuple[float, float, float, float]:
    """For ``count`` recorded steps, checkpoint every k: (wall seconds of the loop, seconds the final
    drain took, training-thread CPU seconds of the loop, CPU seconds of the recorder's threads)."""
    store.mkdir(parents=True)
    recorder = Recorder(store, **recorder_options)
    try:
        began, began_cpu, began_process = time.perf_counter(), time.thread_time(), time.process_time()
        for first in range(start, start + count, k):
            stop = min(first + k, start + count)
            run.run(first, stop, recorder.record_step)
            recorder.record_checkpoint(first // k, stop, run.capture())
        loop, loop_cpu = time.perf_counter() - began, time.thread_time() - began_cpu
        recorder.wait()
        drain = time.perf_counter() - began - loop
        writer_cpu = time.process_time() - began_process - (time.thread_time() - began_cpu)
    finally:
        recorder.close()
    return loop, drain, loop_cpu, writer_cpu


def measure_overhead(
    entry_point: str,
    overrides: Mapping[str, JSONValue],
    k: int,
    steps: int,
    repeats: int,
    recorder_options: Mapping[str, Any] | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """Median bare and recorded step time over ``repeats`` alternating repetitions of ``steps`` steps."""
    options = dict(recorder_options or {})
    run = start_run(entry_point, overrides)
    bare_steps(run, 0, min(3, steps))  # warm up allocator and kernels before timing anything
    position = min(3, steps)
    bare: list[float] = []
    recorded: list[float] = []
    drains: list[float] = []
    bare_cpu: list[float] = []
    recorded_cpu: list[float] = []
    writer_cpu: list[float] = []
    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory(prefix="tw-bench-rec-") as tmp:
        for r in range(repeats):
            wall, cpu = bare_steps(run, position, steps)
            bare.append(wall / steps)
            bare_cpu.append(cpu / steps)
            position += steps
            if profiler is not None:
                profiler.enable()
            loop, drain, loop_cpu, writer = recorded_steps(run, position, steps, k, Path(tmp) / f"store-{r}", options)
            if profiler is not None:
                profiler.disable()
            recorded.append(loop / steps)
            drains.append(drain)
            recorded_cpu.append(loop_cpu / steps)
            writer_cpu.append(writer / steps)
            position += steps
    result: dict[str, Any] = {
        "entry_point": entry_point,
        "k": k,
        "steps": steps,
        "repeats": repeats,
        "bare_step_s": statistics.median(bare),
        "recorded_step_s": statistics.median(recorded),
        "final_drain_s": statistics.median(drains),
        "ratios": [b / a for a, b in zip(bare, recorded, strict=True)],  # each repetition's, for the spread
        "bare_cpu_step_s": statistics.median(bare_cpu),
        "recorded_cpu_step_s": statistics.median(recorded_cpu),
        "writer_cpu_step_s": statistics.median(writer_cpu),
    }
    result["ratio"] = result["recorded_step_s"] / result["bare_step_s"]
    result["cpu_ratio"] = result["recorded_cpu_step_s"] / result["bare_cpu_step_s"]
    if profiler is not None:
        result["profile"] = profile_text(profiler) + writer_stalls(snapshot(run.capture()))
    return result


def _gil_stall(job: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(seconds of ``job``, seconds another thread waited for the GIL meanwhile), per run of ``job``.

    The other thread does what the training thread does between torch calls: takes the GIL for a
    moment and lets it go. Gaps over 1 ms between its turns are counted as stalls.
    """
    done = threading.Event()
    took = [0.0]

    def work() -> None:
        began = time.perf_counter()
        for _ in range(repeats):
            job()
        took[0] = time.perf_counter() - began
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    stalled, last = 0.0, time.perf_counter()
    while not done.is_set():
        time.sleep(0)
        now = time.perf_counter()
        if now - last > 1e-3:
            stalled += now - last
        last = now
    worker.join()
    return took[0] / repeats, stalled / repeats


def writer_stalls(state: FlatState) -> str:
    """The writer's per-checkpoint work on ``state``, part by part, and the GIL stall each causes."""
    lines = ["\nThe writer's work per checkpoint (run on another thread, as the recorder does), and how long a thread "
             "that only wants the GIL for moments (as the training thread does between torch calls) waited meanwhile "
             "(on a loaded machine, time the probing thread is descheduled counts too):\n"]
    with tempfile.TemporaryDirectory(prefix="tw-bench-stall-") as tmp, ThreadPoolExecutor(2) as pool:
        jobs: dict[str, Callable[[], object]] = {
            "state + weights digests (2 hash threads)": lambda: digest_tensor_sets(
                [("state", state.tensors, state.skeleton), ("weights", weights_of(state), None)], pool),
            "checkpoint file: safetensors views -> zstd 3 -> write + fsync": lambda: write_parts(
                Path(tmp) / "c.zst", checkpoint_parts(state), 3),
        }
        for name, job in jobs.items():
            seconds, stalled = _gil_stall(job)
            lines.append(f"  {name}: {seconds * 1e3:.1f} ms, GIL stall {stalled * 1e3:.1f} ms")
    return "\n".join(lines) + "\n"


# What the recorder itself costs the training thread (cumulative time of these calls).
_RECORDER_CALLS = ("record_step", "record_checkpoint", "capture_rng", "capture")


def profile_text(profiler: cProfile.Profile, lines: int = 25) -> str:
    """The training thread's profile: a summary of recorder costs, the top calls, the recorder's calls."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    total = max((entry[3] for entry in stats.stats.values()), default=0.0)  # type: ignore[attr-defined]
    direct = sum(
        entry[3]
        for (path, _, name), entry in stats.stats.items()  # type: ignore[attr-defined]
        if name in _RECORDER_CALLS and "trainwitness" in path
    )
    out.write(
        f"training thread: {total:.2f} s profiled, {direct:.3f} s ({direct / max(total, 1e-9):.2%}) inside the recorder's "
        f"calls on it ({', '.join(_RECORDER_CALLS)}). The rest of any overhead is the writer thread competing for the "
        "cores and the GIL (its hashing, compression and writes), which this per-thread profile does not show.\n\n"
    )
    stats.sort_stats("cumulative").print_stats(lines)
    stats.print_stats("trainwitness|queue.py|threading.py")
    return out.getvalue()
