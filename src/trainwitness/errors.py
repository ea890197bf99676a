"""The one error root and its two families.

``VerificationError``: the evidence contradicts the claim (exit status 1).
``InputError``: the evidence could not be read, so nothing was decided (exit status 2).
``OutputError``: a file could not be written (disk full, I/O error); nothing half-written is left (exit 2).
Misuse of the API stays ``ValueError``/``TypeError``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "CheckName",
    "TrainwitnessError",
    "VerificationError",
    "SignatureError",
    "CommitmentError",
    "WeightsMismatchError",
    "ReplayMismatchError",
    "InitialStateError",
    "DataMismatchError",
    "CodeMismatchError",
    "PolicyError",
    "TrainingCodeError",
    "LineageError",
    "FrozenInputError",
    "ReplicaDivergenceError",
    "Rejected",
    "InputError",
    "MissingInputError",
    "MalformedInputError",
    "ParentMismatchError",
    "IncompleteAuditError",
    "OutputError",
    "StoreLockedError",


    "NotReplayableError",
]


class CheckName(StrEnum):
    """Every check the verifier reports, passing or failing, under one name (docs/FORMAT.md section 8)."""

    SIGNATURE = "signature"
    POLICY = "policy"
    CODE = "code"
    COMMITMENTS = "commitments"
    FINAL_WEIGHTS = "final-weights"
    MANIFEST = "manifest"
    BATCHES = "batches"
    INITIAL_STATE = "initial-state"
    DATA = "data"
    REPLAY = "replay"
    LINEAGE = "lineage"  # a declared parent that does not connect (docs/FORMAT.md section 7, lineage fields)
    INPUTS = "inputs"  # declared frozen inputs
    SANDBOX = "sandbox"  # a replay worker died, timed out or answered out of protocol
    TRAINING_CODE = "training-code"  # the training code raised, replayed in the verifier's own process
    VERIFICATION = "verification"  # a failure no more specific check names


class TrainwitnessError(Exception):
    """Root of every error this package raises on purpose."""

    exit_status = 2


class VerificationError(TrainwitnessError):
    """A check failed: the evidence contradicts what the attestation claims."""

    exit_status = 1
    check: CheckName = CheckName.VERIFICATION


class SignatureError(VerificationError):
    check: CheckName = CheckName.SIGNATURE


class CommitmentError(VerificationError):
    """A leaf, root, tree size or inclusion proof does not match what was signed."""

    check: CheckName = CheckName.COMMITMENTS


class WeightsMismatchError(VerificationError):
    check: CheckName = CheckName.FINAL_WEIGHTS


class ReplayMismatchError(VerificationError):
    check: CheckName = CheckName.REPLAY


class InitialStateError(ReplayMismatchError):
    """Checkpoint 0 is not the state the declared seed builds: the run started from somewhere else."""

    check: CheckName = CheckName.INITIAL_STATE


class DataMismatchError(VerificationError):
    check: CheckName = CheckName.DATA


class CodeMismatchError(VerificationError):
    check: CheckName = CheckName.CODE


class PolicyError(VerificationError):
    check: CheckName = CheckName.POLICY


class Rejected(VerificationError):
    """``trainwitness.verify`` found evidence that contradicts the claim; ``report`` holds every check.

    ``check`` names the first failed check, and the message is its detail.
    """

    def __init__(self, report: Any) -> None:
        failed = [c for c in report.checks if not c.passed]
        self.check = failed[0].name if failed else CheckName.VERIFICATION
        super().__init__(f"{self.check}: {failed[0].detail}" if failed else "no check ran")
        self.report = report


class ReplicaDivergenceError(TrainwitnessError):
    """Recording a data-parallel run: the ranks' states differ at a checkpoint, so no checkpoint is the run's.

    Raised on every rank (each has every rank's digest); nothing of the segment is recorded.
    """


class TrainingCodeError(VerificationError):
    """The attested training code raised while it was replayed in the verifier's own process
    (``--sandbox off``); in a worker the same failure is the ``sandbox`` check's."""

    check: CheckName = CheckName.TRAINING_CODE


class LineageError(VerificationError):
    """A link does not connect: the parent's files or attested digests are not what the child declares."""

    check: CheckName = CheckName.LINEAGE


class FrozenInputError(LineageError):
    """A frozen input's file is not the weights the run declares (or its own attestation does not verify)."""

    check: CheckName = CheckName.INPUTS


class InputError(TrainwitnessError):
    """Evidence that could not be read: nothing was verified."""

    exit_status = 2


class MissingInputError(InputError):
    pass


class MalformedInputError(InputError):
    pass


class ParentMismatchError(MalformedInputError):
    """A parent's weights or state do not fit the spec (a missing tensor, another shape or dtype).

    Malformed input when recording; the verifier, for which the statement claims that the start
    was formed so, reports it as a failed ``initial-state`` check instead.
    """


class IncompleteAuditError(InputError):
    """Part of the drawn replay never answered (a cluster task or a shard answer was lost): nothing was accepted."""


class OutputError(TrainwitnessError):
    """A file could not be written (disk full, quota, I/O error): the message names it and the OS error.

    Raised only after the partial file is removed; a store left this way resumes once the cause is gone.
    """

    exit_status = 2


class StoreLockedError(TrainwitnessError):
    """Another ``train`` holds the store's lock; the message names its process and host."""

    exit_status = 2


class NotReplayableError(InputError):
    """The training program's step is not a pure function of (state, batch, committed RNG): nothing is signed.

    Raised by the prover while recording (a per-step check) or before signing (the replay of
    recorded segments); the message names the step, the likely cause and what differs.
    """
