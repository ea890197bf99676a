"""Replaying untrusted training code in separate, confined processes.

Steps (6)-(8) of ``verify_run`` import and run the upstream's training code on the auditor's machine.
With the sandbox, the parent process checks signature, statement, code identity, commitments and
final weights itself, draws the segments to replay, and never imports that code; worker processes
(``--workers W``, default 1) run at once, each given a share of the drawn segments, and replay only
that share through the same path as in-process replay (``verify.replay_drawn``: proven-data reads,
exact-mode hints, bounded mode). The pipes carry JSON only: a request on each worker's stdin, its
answer on a private copy of its stdout (the code's own prints go to stderr). No pickle crosses them.

The request carries the facts the parent verified (the signed statement's payload, byte for byte),
so a worker starts at step (6) and checks no signature and hashes no weights file again. Nothing a
worker answers can turn a failure into a pass: the parent decides the verdict, from its own checks
and every worker's answer. With ``--sandbox off`` and one worker, replay runs in-process; with
several, the workers are separate processes under the same protocol, without confinement or
resource limits. The sandbox protects the machine, not the verdict: code that is malicious can
still make its own replay lie (see SECURITY.md). The code that runs is the attested code, checked
by digest first.

One module per concern:

* ``isolation``: the ``--sandbox`` modes, the namespaces probe, resource limits, the in-process budget;
* ``processes``: the shares of the draw, starting workers and draining their pipes under a bound;
* ``protocol``: the typed request and answer (docs/FORMAT.md, "Replay worker protocol");
* ``merge``: folding the answers into the verifier's report;
* ``worker``: the entry points run inside the worker process (imports ``verify``; not re-exported
  here, so that ``verify`` importing this package is no cycle).
"""

from trainwitness.verifier.sandbox.isolation import (
    SANDBOX_MODES,
    Isolation,
    SandboxLimits,
    address_space_budget,
    choose_isolation,
)
from trainwitness.verifier.sandbox.merge import merge_worker_report, merge_worker_reports
from trainwitness.verifier.sandbox.processes import replay_in_workers, split_shares, worker_threads
from trainwitness.verifier.sandbox.protocol import (
    MAX_ANSWER_BYTES,
    WORKER_CHECKS,
    SandboxError,
    StartFiles,
    WorkerAnswer,
    WorkerReport,
    WorkerRequest,
)

__all__ = [
    "SANDBOX_MODES",
    "WORKER_CHECKS",
    "MAX_ANSWER_BYTES",
    "SandboxLimits",
    "Isolation",
    "SandboxError",
    "StartFiles",
    "WorkerRequest",
    "WorkerReport",
    "WorkerAnswer",
    "choose_isolation",
    "address_space_budget",
    "split_shares",
    "worker_threads",
    "replay_in_workers",
    "merge_worker_report",
    "merge_worker_reports",
]
