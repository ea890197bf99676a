"""The one error root and its two families.

``VerificationError``: the evidence contradicts the claim (exit status 1).
``InputError``: the evidence could not be read, so nothing was decided (exit status 2).
``OutputError``: a file could not be written (disk full, I/O error); nothing half-written is left (exit 2).
Misuse of the API stays ``ValueError``/``TypeError``.
"""

from __future__ import annotations

__all__ = [
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
    "InputError",
    "MissingInputError",
    "MalformedInputError",
    "OutputError",
    "StoreLockedError",
]


class TrainwitnessError(Exception):
    """Root of every error this package raises on purpose."""

    exit_status = 2


class VerificationError(TrainwitnessError):
    """A check failed: the evidence contradicts what the attestation claims."""

    exit_status = 1
    check = "verification"


class SignatureError(VerificationError):
    check = "signature"


class CommitmentError(VerificationError):
    """A leaf, root, tree size or inclusion proof does not match what was signed."""

    check = "commitment"


class WeightsMismatchError(VerificationError):
    check = "final-weights"


class ReplayMismatchError(VerificationError):
    check = "replay"


class InitialStateError(ReplayMismatchError):
    """Checkpoint 0 is not the state the declared seed builds: the run started from somewhere else."""

    check = "initial-state"


class DataMismatchError(VerificationError):
    check = "data"


class CodeMismatchError(VerificationError):
    check = "code"


class PolicyError(VerificationError):
    check = "policy"


class InputError(TrainwitnessError):
    """Evidence that could not be read: nothing was verified."""

    exit_status = 2


class MissingInputError(InputError):
    pass


class MalformedInputError(InputError):
    pass


class OutputError(TrainwitnessError):
    """A file could not be written (disk full, quota, I/O error): the message names it and the OS error.

    Raised only after the partial file is removed; a store left this way resumes once the cause is gone.
    """

    exit_status = 2


class StoreLockedError(TrainwitnessError):
    """Another ``train`` holds the store's lock; the message names its process and host."""

    exit_status = 2
