"""``trainwitness verify``: the verifier, in the order its checks depend on each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..attestation import Statement
from ..checkpoint import decode_weights
from ..code_identity import locate_source_root, source_files, tree_digest
from ..data import dataset_digest
from ..environment import apply_execution_settings, environment_differences
from ..errors import (
    CodeMismatchError,
    DataMismatchError,
    MissingInputError,
    ReplayMismatchError,
    VerificationError,
    WeightsMismatchError,
)
from ..executor import TrainingRun
from ..hashing import file_sha256
from ..signing import load_public_key, open_envelope
from ..spec import load_entry_point, resolve_hyperparameters
from ..state import state_digest, weights_digest
from .evidence import Evidence
from .replay import replay_segment
from .report import Report
from .sampling import choose_segments

__all__ = ["VerifyOptions", "verify_run"]

MAX_WEIGHTS_BYTES = 64 * 1024**3

# (segments done, segments to do) -> None
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class VerifyOptions:
    segments: int | None = 10  # None: replay every segment
    seed: int | None = None  # None: draw from the operating system's randomness


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise MissingInputError(f"{what} {path} does not exist") from e
    except OSError as e:
        raise MissingInputError(f"{what} {path} cannot be read ({e.strerror})") from e


def verify_run(
    attestation: Path,
    store: Path,
    weights: Path,
    public_key: Path,
    options: VerifyOptions = VerifyOptions(),
    progress: Progress | None = None,
) -> Report:
    """Verify a training run's attestation against its store and final weights.

    Plan: (1) signature, (2) statement, (3) code identity, (4) store index against the three roots,
    (5) final weights, (6) seeded start and dataset, (7) draw segments, (8) replay each bitwise.
    A failed check ends the run of checks that depend on it and is recorded in the report;
    unreadable input raises ``InputError`` (nothing was decided).
    """
    report = Report(attestation=str(attestation))
    envelope = _read(attestation, "attestation")
    key = load_public_key(public_key)
    try:
        # (1): the signature, before any field of the payload is believed.
        payload = open_envelope(envelope, key)
        report.passed("signature", "DSSE envelope signed by the given Ed25519 key")

        # (2): the statement, parsed and invariant-checked.
        statement = Statement.from_payload(payload)
        claim = statement.claim
        report.subject = f"{statement.subject_name} sha256:{statement.subject_sha256}"
        report.entry_point = claim.entry_point

        # (3): the code we are about to run is the code that was attested, checked before importing it.
        root = locate_source_root(claim.entry_point)
        local = tree_digest(source_files(root))
        if local != claim.code["tree_digest"]:
            raise CodeMismatchError(f"source tree {root} has digest {local}, the attestation names {claim.code['tree_digest']}")
        report.passed("code", f"source tree {root.name} matches {local}")

        # (4): the store's index against the signed roots; no checkpoint is read for this.
        evidence = Evidence.open(store, claim)
        report.passed("commitments", f"{claim.total_steps} steps and {len(claim.checkpoint_steps)} checkpoints match the three roots")

        # (5): the final weights file is the subject, and is the last committed checkpoint's weights.
        weights_bytes = _read(weights, "weights file")
        if file_sha256(str(weights), MAX_WEIGHTS_BYTES).hex() != statement.subject_sha256:
            raise WeightsMismatchError(f"{weights} is not the attested subject (sha256 differs)")
        last = evidence.checkpoint(len(claim.checkpoint_steps) - 1)
        if weights_digest(decode_weights(weights_bytes, str(weights))) != last.weights_digest:
            raise WeightsMismatchError(f"{weights} does not hold the last checkpoint's weights")
        if (last.weights_digest, last.state_digest) != (claim.final_weights_digest, claim.final_state_digest):
            raise WeightsMismatchError("the attested final digests are not the last checkpoint's")
        report.passed("final-weights", f"{weights.name} is the subject and the weights of checkpoint at step {last.step}")

        # (6): rebuild the run from its declared seed: the start is recomputed, never trusted.
        apply_execution_settings(claim.torch_threads)
        for name, (recorded, here) in environment_differences(claim.environment).items():
            report.notes.append(f"environment differs: {name} recorded {recorded!r}, here {here!r}")
        function = load_entry_point(claim.entry_point)
        hp = resolve_hyperparameters(function.defaults, claim.hyperparameters)
        run = TrainingRun.start(function, hp)
        if dataset_digest(run.spec.dataset) != claim.data["dataset_digest"]:
            raise DataMismatchError(
                f"dataset {run.spec.dataset.name} here differs from the attested dataset digest"
                f" (attested dataset: {claim.data.get('dataset')!r})"
            )
        report.passed("dataset", f"{run.spec.dataset.name}: {len(run.spec.dataset)} samples match the attested digest")
        if state_digest(run.capture()) != evidence.checkpoint(0).state_digest:
            raise ReplayMismatchError("the state built from the declared seed is not checkpoint 0")
        report.passed("initial-state", f"checkpoint 0 is the state seeded from seed {hp['seed']}")

        # (7): the verifier alone chooses which segments to replay.
        report.segment_count = len(claim.checkpoint_steps) - 1
        report.sample_seed = options.seed
        report.sampled = choose_segments(report.segment_count, options.segments, options.seed)

        # (8): replay each sampled segment and compare bitwise.
        for done, i in enumerate(report.sampled):
            report.segments.append(replay_segment(run, evidence, i))
            if progress is not None:
                progress(done + 1, len(report.sampled))
        report.checkpoint_bytes_read = evidence.checkpoint_bytes_read
        report.passed("replay", f"{len(report.segments)} sampled segments replay bitwise onto their next checkpoint")
    except VerificationError as e:
        report.failed(e.check, str(e))
    return report
