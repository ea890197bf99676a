"""Replaying untrusted training code in a separate, confined process.

Steps (6)-(8) of ``verify_run`` import and run the upstream's training code on the auditor's machine.
With the sandbox, the parent process checks signature, commitments and final weights itself and
never imports that code; a worker process (``python -m trainwitness.verifier.sandbox``) re-runs the
verification with the sandbox off and reports its checks back. The pipe carries JSON only: a request
on the worker's stdin, the report on a private copy of its stdout (the code's own prints go to
stderr). No pickle crosses it.

Isolation, strongest available first, each checked at run time (nothing needs root):

* ``unshare -rnm`` (user, network and mount namespaces): no network (only a down loopback), and every
  mount re-mounted read-only except a fresh scratch directory, which is the worker's cwd and TMPDIR;
  the code itself then runs in a nested user namespace without capabilities, unable to undo that;
* resource limits (``setrlimit``): address space, CPU seconds, size of any file written, open files;
* a wall-clock timeout, after which the worker's whole process group is killed.

``--sandbox auto`` uses what is available and says what was in force; ``required`` refuses to run the
code without network and filesystem isolation; ``off`` replays in-process (the original behaviour).
The sandbox protects the machine, not the verdict: code that is malicious can still make its own
replay lie (see SECURITY.md). The code that runs is the attested code, checked by digest first.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, MalformedInputError, VerificationError
from .bounded import SegmentDistance
from .replay import SegmentResult
from .report import Check, Report

if TYPE_CHECKING:
    from .verify import VerifyOptions

__all__ = [
    "SANDBOX_MODES",
    "SandboxLimits",
    "Isolation",
    "SandboxError",
    "choose_isolation",
    "sandbox_request",
    "replay_in_sandbox",
    "merge_worker_report",
]

SANDBOX_MODES = ("auto", "off", "required")


class SandboxError(VerificationError):
    """The training code could not be replayed inside the sandbox (it broke a confinement or a limit)."""

    check = "sandbox"


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int = 32 * 1024**3
    cpu_seconds: int = 3600
    wall_seconds: int = 3600
    file_bytes: int = 4 * 1024**3
    open_files: int = 1024


@dataclass(frozen=True)
class Isolation:
    mode: str
    process: bool  # a separate worker process at all
    namespaces: bool  # no network, read-only filesystem except the scratch directory
    limits: SandboxLimits

    def describe(self) -> str:
        if not self.process:
            return "sandbox off: the training code ran in the verifier's own process, with its network and files"
        confinement = (
            "no network (own network namespace), filesystem read-only except a scratch directory (own mount namespace)"
            if self.namespaces
            else "NO network or filesystem isolation (unshare -rnm is not available here)"
        )
        lim = self.limits
        return (
            f"sandbox: training code replayed in a separate process; {confinement}; limits: "
            f"{lim.memory_bytes >> 30} GiB address space, {lim.cpu_seconds} s CPU, {lim.wall_seconds} s wall, "
            f"{lim.file_bytes >> 20} MiB per written file"
        )


# Run by ``sh`` as root of a new user+net+mount namespace: keep the scratch directory ($1) writable,
# make every other mount read-only, then drop that root by entering a nested user and mount namespace
# without a uid mapping. There the code has no capabilities, so it cannot remount anything writable,
# and the read-only flags are locked (they were set by a more privileged namespace).
_CONFINE = """
scratch="$1"; shift
mount --bind "$scratch" "$scratch" || exit 97
for point in $(awk '{print $2}' /proc/self/mounts | tac); do
  [ "$point" = "$scratch" ] || mount -o remount,bind,ro "$point" 2>/dev/null
done
exec unshare -U -m "$@"
"""


def _confined(command: list[str], scratch: str) -> list[str]:
    return [shutil.which("unshare") or "unshare", "-rnm", "sh", "-c", _CONFINE, "sh", scratch, *command]


def _namespaces_available() -> bool:
    if not sys.platform.startswith("linux") or not all(shutil.which(t) for t in ("unshare", "mount", "sh", "awk", "tac")):
        return False
    # The probe does what the worker will, then checks from inside that "/" is read-only and scratch is not.
    check = 'touch "$0/w" && ! touch "$1/w" 2>/dev/null && ! mount -o remount,rw,bind / 2>/dev/null'
    try:
        with tempfile.TemporaryDirectory(prefix="trainwitness-probe-") as base:
            scratch, outside = os.path.join(base, "scratch"), os.path.join(base, "outside")
            os.mkdir(scratch)
            os.mkdir(outside)
            command = _confined(["sh", "-c", check, scratch, outside], scratch)
            probe = subprocess.run(command, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def choose_isolation(mode: str, limits: SandboxLimits = SandboxLimits()) -> Isolation:
    if mode not in SANDBOX_MODES:
        raise MalformedInputError(f"--sandbox must be one of {', '.join(SANDBOX_MODES)}, not {mode!r}")
    if mode == "off":
        return Isolation(mode, process=False, namespaces=False, limits=limits)
    namespaces = _namespaces_available()
    if mode == "required" and not namespaces:
        raise MalformedInputError("--sandbox required, but user namespaces (unshare -rnm) are not available here")
    return Isolation(mode, process=True, namespaces=namespaces, limits=limits)


def _apply_limits(limits: SandboxLimits) -> None:
    """In the child, before exec: limits survive exec and bind the worker and everything it starts."""
    os.setsid()  # its own process group, so a timeout kills every descendant
    for kind, value in (
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
    ):
        _, hard = resource.getrlimit(kind)
        resource.setrlimit(kind, (value if hard == resource.RLIM_INFINITY else min(value, hard),) * 2)


def replay_in_sandbox(isolation: Isolation, request: dict[str, Any]) -> dict[str, Any]:
    """Run the worker on ``request`` (paths and options, JSON) and return its report (JSON)."""
    limits = isolation.limits
    with tempfile.TemporaryDirectory(prefix="trainwitness-sandbox-") as scratch:
        command = [sys.executable, "-c", "from trainwitness.verifier.sandbox import _worker; raise SystemExit(_worker())"]
        if isolation.namespaces:
            command = _confined(command, scratch)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in sys.path if p),  # entry points resolve as here
            "TMPDIR": scratch,
            "HOME": scratch,
        }
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch, env=env,
            preexec_fn=lambda: _apply_limits(limits),  # noqa: PLW1509 - no threads are started before this point
        )
        try:
            out, err = child.communicate(json.dumps(request).encode("utf-8"), timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired as e:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise SandboxError(f"the replay ran past the {limits.wall_seconds} s wall-clock limit and was killed") from e
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if child.returncode != 0:
        how = f"signal {-child.returncode}" if child.returncode < 0 else f"status {child.returncode}"
        raise SandboxError(f"the replay worker died ({how}; a limit, or the code crashed): {tail[0][:300]}")
    try:
        result = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SandboxError(f"the replay worker's output is not JSON: {tail[0][:300]}") from e
    if not isinstance(result, dict):
        raise SandboxError("the replay worker's output is not a JSON object")
    return result


def merge_worker_report(report: Report, answer: dict[str, Any]) -> None:
    """Fold the worker's checks (6)-(8) into the parent's report; its failures become ours.

    The worker ran untrusted code, which could have written anything to the result: a malformed
    answer is a failed check, never a traceback.
    """
    try:
        _merge(report, answer)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise SandboxError(f"the replay worker's answer is malformed ({type(e).__name__}: {e})") from e


def _merge(report: Report, answer: dict[str, Any]) -> None:
    if "input_error" in answer:
        raise MalformedInputError(f"in the sandboxed replay: {answer['input_error']}")
    if "code_error" in answer:
        raise SandboxError(f"the training code failed inside the sandbox: {answer['code_error']}")
    worker = answer.get("report")
    if not isinstance(worker, dict):
        raise SandboxError("the replay worker returned no report")
    # Checks the parent already passed itself are not repeated; every failure the worker saw is kept,
    # whatever its name (dropping a failed "code" check because the parent passed one lost a REJECT).
    done = {c.name for c in report.checks if c.passed}
    for check in worker.get("checks", []):
        if not check["passed"] or check["name"] not in done:
            report.checks.append(Check(str(check["name"]), bool(check["passed"]), str(check["detail"])))
    segments = worker.get("segments", {})
    report.segment_count = int(segments.get("total", 0))
    report.sampled = [int(i) for i in segments.get("sampled", [])]
    report.sample_seed = segments.get("sample_seed")
    report.segments = [
        SegmentResult(
            index=int(s["index"]), first_step=int(s["steps"][0]), last_step=int(s["steps"][1]), seconds=float(s["seconds"]),
            distance=None if "distance" not in s else SegmentDistance(
                float(s["distance"]["overall"]), str(s["distance"]["worst_tensor"]), float(s["distance"]["worst"])
            ),
        )
        for s in segments.get("replayed", [])
    ]
    report.exact = worker.get("exact")
    if "bounded" in worker:
        report.bound = float(worker["bounded"]["bound"])
        report.bound_provenance = str(worker["bounded"]["bound_provenance"])
    report.checkpoint_bytes_read = int(worker.get("checkpoint_bytes_read", 0))
    data = worker.get("data", {})
    report.data_bytes_read = int(data.get("bytes_read", 0))
    report.data_samples_read = int(data.get("samples_read", 0))
    report.data_total_bytes = int(data.get("total_bytes", 0))
    report.notes.extend(n for n in worker.get("notes", []) if not str(n).startswith("sandbox off"))


def sandbox_request(attestation: Path, store: Path, weights: Path, public_key: Path, options: VerifyOptions) -> dict[str, Any]:
    """The worker's request: absolute paths (it runs in its scratch directory) and the draw to make.

    With no auditor seed, the parent draws one from the OS: the choice of segments stays the parent's.
    The licence policy was already checked here, so the worker is not given it.
    """
    return {
        "attestation": os.path.abspath(attestation), "store": os.path.abspath(store), "weights": os.path.abspath(weights),
        "public_key": os.path.abspath(public_key), "segments": options.segments,
        "seed": options.seed if options.seed is not None else secrets.randbelow(2**63),
        "data": {name: os.path.abspath(path) for name, path in options.data.items()},
        "code": None if options.code is None else os.path.abspath(options.code),
        "threads": options.threads,
        "bounded": options.bounded,
    }


# -- the worker ---------------------------------------------------------------------------------

def _worker() -> int:
    from .verify import VerifyOptions, verify_run

    result_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the training code prints goes to stderr, never into the result
    request = json.loads(sys.stdin.read())
    options = VerifyOptions(
        segments=request["segments"], seed=request["seed"], sandbox="off",
        data={name: Path(path) for name, path in request["data"].items()},
        code=None if request["code"] is None else Path(request["code"]),
        threads=request["threads"], bounded=request["bounded"],
    )
    try:
        report = verify_run(Path(request["attestation"]), Path(request["store"]), Path(request["weights"]),
                            Path(request["public_key"]), options)
        answer: dict[str, Any] = {"report": report.to_json()}
    except InputError as e:
        answer = {"input_error": str(e)}
    except Exception as e:  # noqa: BLE001 - the training code's own failure, e.g. a refused socket
        answer = {"code_error": f"{type(e).__name__}: {e}"}
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(answer))
    return 0

