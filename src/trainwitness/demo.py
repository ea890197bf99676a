"""``trainwitness demo``: train a built-in model with recording, attest it, verify it, print the verdict."""

from __future__ import annotations

import os
from pathlib import Path

from trainwitness.commit.atomic import atomic_write
from trainwitness.identity.signing import generate_keypair, load_private_key
from trainwitness.progress import progress_line
from trainwitness.prover import attest_store, record_run
from trainwitness.verifier import Report, VerifyOptions, verify_run

__all__ = ["run_demo", "fresh_directory"]

WORKLOADS = {"digits": "trainwitness.workloads.digits:digits", "lm": "trainwitness.workloads.lm:lm"}


def fresh_directory(requested: Path | None) -> Path:
    """``requested`` if given (it must not exist or be empty), else the first free ``trainwitness-demo[-N]``."""
    if requested is not None:
        if requested.exists() and any(requested.iterdir()):
            raise FileExistsError(f"{requested} is not empty; choose a new --out directory")
        return requested
    candidate, n = Path("trainwitness-demo"), 1
    while candidate.exists():
        n += 1
        candidate = Path(f"trainwitness-demo-{n}")
    return candidate


def run_demo(out: Path, workload: str = "digits") -> Report:
    out.mkdir(parents=True, exist_ok=True)
    threads = min(2, os.cpu_count() or 1)
    private, public = out / "trainwitness.key", out / "trainwitness.pub"
    generate_keypair(private, public)
    store, weights, attestation = out / "store", out / "model.safetensors", out / "attestation.json"
    print(f"[1/3] training {workload} with recording ({threads} threads) into {store}")
    record_run(WORKLOADS[workload], {}, store, weights, torch_threads=threads, progress=progress_line("      steps"))
    print(f"[2/3] signing the attestation {attestation}")
    atomic_write(attestation, attest_store(store, weights, load_private_key(private)))
    print("[3/3] verifying: replaying every segment on this machine")
    report = verify_run(attestation, store, weights, public, VerifyOptions(segments=None), progress=progress_line("      segments"))
    print(report.to_text())
    print(
        f"\nTry it by hand:\n  trainwitness verify {attestation} --store {store} --weights {weights} --key {public} --segments 5\n"
        f"  trainwitness inspect {attestation}"
    )
    return report
