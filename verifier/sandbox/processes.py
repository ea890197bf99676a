"""Running replay workers: the shares of the draw, the worker processes, and their pipes, drained safely.

Each worker is a fresh interpreter (``python -c`` running ``worker.main``) in its own scratch
directory and process group, under the isolation chosen (``isolation.py``). The request is written
on its stdin and its answer read from its stdout (``protocol.py``), with a bounded amount kept of
anything it writes, and the whole group killed past the wall-clock limit: a worker runs the
upstream's code and is treated as hostile. One worker's failure stops no other.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import IO

from trainwitness.commit.canonical import parse_json
from trainwitness.errors import MalformedInputError
from trainwitness.verifier.sandbox import protocol
from trainwitness.verifier.sandbox.isolation import Isolation, apply_limits, confined
from trainwitness.verifier.sandbox.protocol import SandboxError, WorkerAnswer, WorkerRequest

__all__ = ["WORKER_CODE", "split_shares", "worker_threads", "start_worker", "kill_worker", "answer_of", "replay_in_workers"]


def split_shares(drawn: Sequence[int], workers: int) -> list[list[int]]:
    """The drawn segments in ``workers`` contiguous shares, in order, as equal as can be; no share is empty."""
    if workers < 1:
        raise ValueError("at least one worker")
    count = min(workers, len(drawn))
    size, extra = divmod(len(drawn), count)
    shares, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        shares.append([int(i) for i in drawn[start:end]])
        start = end
    return shares


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_threads(recorded: int, exact: bool, chosen: int | None, workers: int) -> int | None:
    """Torch threads for each of ``workers`` workers running at once; None: the recorded count.

    The auditor's ``--threads`` wins, and one worker keeps what in-process replay uses. Several
    workers replaying an exact-mode run share the cores (exact mode replays bitwise on any thread
    count); without exact mode each keeps the recorded count, which bitwise replay needs, even where
    that oversubscribes the cores.
    """
    if chosen is not None or workers == 1 or not exact:
        return chosen
    return max(1, _cpus() // workers)


# Run by the worker's interpreter; a module attribute so that a test can stand in a misbehaving worker.
WORKER_CODE = "from trainwitness.verifier.sandbox.worker import main; raise SystemExit(main())"


def start_worker(isolation: Isolation, scratch: str, code: str | None = None) -> subprocess.Popen[bytes]:
    """A worker interpreter running ``code`` (default ``WORKER_CODE``) in ``scratch``, in its own process
    group, confined and limited as ``isolation`` says; its three pipes open."""
    command = [sys.executable, "-c", WORKER_CODE if code is None else code]
    if isolation.namespaces:
        command = confined(command, scratch, isolation.loopback)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in sys.path if p),  # entry points resolve as here
        "TMPDIR": scratch,
        "HOME": scratch,
    }
    limits = isolation.limits
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch, env=env,
        start_new_session=True,  # its own process group, so a timeout kills every descendant
        preexec_fn=None if isolation.mode == "off" else lambda: apply_limits(limits),  # noqa: PLW1509 - see replay_in_workers
    )


def kill_worker(child: subprocess.Popen[bytes]) -> None:
    """Kill the worker's whole process group (whatever it started inside it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


_STDERR_TAIL_BYTES = 64 * 1024  # what is kept of the training code's own output, for the failure message
_PIPE_GRACE_SECONDS = 5.0  # how long the pipes may outlive the worker


def _drain(stream: IO[bytes], keep: bytearray, limit: int, on_overflow: Callable[[], None] | None) -> None:
    """Read a pipe to its end keeping at most ``limit`` bytes: the last ones, or (with ``on_overflow``,
    called when there are more) the first ones."""
    while piece := os.read(stream.fileno(), 1 << 16):
        keep += piece
        if len(keep) > limit:
            if on_overflow is not None:
                on_overflow()
                return
            del keep[: len(keep) - limit]


def _send(stdin: IO[bytes], request: bytes) -> None:
    with contextlib.suppress(OSError):  # a worker that exits without reading its request
        stdin.write(request)
        stdin.close()


def _exchange(child: subprocess.Popen[bytes], request: bytes, wall: float) -> tuple[bytes, bytes, str | None]:
    """(stdout, stderr tail, why it failed) of a worker, holding a bounded amount of what it writes.

    ``communicate`` would keep everything a hostile worker prints, and could wait forever on a pipe a
    descendant that left the process group keeps open: the readers here are daemons, given up on
    shortly after the worker ends.
    """
    stdin, stdout, stderr = child.stdin, child.stdout, child.stderr
    if stdin is None or stdout is None or stderr is None:  # start_worker always opens all three
        return b"", b"", "the replay worker was started without its pipes"
    out, err, overflow = bytearray(), bytearray(), threading.Event()

    def answer_too_long() -> None:
        overflow.set()
        kill_worker(child)  # it would block writing the rest, and its other pipe would never end

    readers = [
        threading.Thread(target=_drain, args=(stdout, out, protocol.MAX_ANSWER_BYTES, answer_too_long), daemon=True),
        threading.Thread(target=_drain, args=(stderr, err, _STDERR_TAIL_BYTES, None), daemon=True),
    ]
    for reader in readers:
        reader.start()
    # The request is written from a thread too: a worker that never reads it must not block the parent.
    threading.Thread(target=_send, args=(stdin, request), daemon=True).start()
    why = None
    try:
        child.wait(timeout=wall)
    except subprocess.TimeoutExpired:
        kill_worker(child)
        child.wait()
        why = f"the replay ran past the {wall} s wall-clock limit and was killed"
    grace = time.monotonic() + _PIPE_GRACE_SECONDS  # the pipes end with the worker, unless something it started holds them
    for reader in readers:
        reader.join(max(0.0, grace - time.monotonic()))
    if overflow.is_set():
        why = f"the replay worker wrote more than {protocol.MAX_ANSWER_BYTES} bytes of answer and was killed"
    elif why is None and any(reader.is_alive() for reader in readers):
        why = "the replay worker exited, but a process it started outside its group kept its output open"
    return bytes(out), bytes(err), why


def answer_of(isolation: Isolation, child: subprocess.Popen[bytes], request: WorkerRequest) -> WorkerAnswer | SandboxError:
    """The worker's answer, or the reason there is none (returned: one worker's failure stops no other)."""
    out, err, why = _exchange(child, json.dumps(request.to_json()).encode("utf-8"), isolation.limits.wall_seconds)
    if why is not None:
        return SandboxError(why)
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if child.returncode != 0:
        how = f"signal {-child.returncode}" if child.returncode < 0 else f"status {child.returncode}"
        return SandboxError(f"the replay worker died ({how}; a limit, or the code crashed): {tail[0][:300]}")
    try:
        result = parse_json(out, "answer", protocol.MAX_ANSWER_BYTES)  # the one strict JSON reader: untrusted bytes
    except MalformedInputError as e:
        return SandboxError(f"the replay worker's output is not JSON ({e}): {tail[0][:300]}")
    try:
        return WorkerAnswer.from_json(result)
    except SandboxError as e:
        return e


def replay_in_workers(
    isolation: Isolation, requests: Sequence[WorkerRequest],
    finished: Callable[[int, WorkerAnswer | SandboxError], None] | None = None,
) -> list[WorkerAnswer | SandboxError]:
    """Run one worker per request, all at once; each outcome is its answer or why it gave none.

    ``finished(k, outcome)`` is called as worker k is done. Every worker is started before any thread: a
    ``preexec_fn`` (the limits) is not safe to run in a child forked while other threads run.
    """
    outcomes: list[WorkerAnswer | SandboxError] = [SandboxError("the replay worker was not run")] * len(requests)
    with contextlib.ExitStack() as scratches:
        children: list[subprocess.Popen[bytes]] = []
        try:
            for _ in requests:
                children.append(start_worker(isolation, scratches.enter_context(tempfile.TemporaryDirectory(prefix="trainwitness-sandbox-"))))
            with ThreadPoolExecutor(len(children)) as pool:
                running = {pool.submit(answer_of, isolation, child, request): k for k, (child, request) in enumerate(zip(children, requests, strict=True))}
                for future in as_completed(running):
                    outcomes[running[future]] = future.result()
                    if finished is not None:
                        finished(running[future], outcomes[running[future]])
        except BaseException:  # e.g. Ctrl-C: no worker outlives the verifier
            for child in children:
                kill_worker(child)
            raise
    return outcomes
