"""The one error root and its two families.

``VerificationError``: the evidence contradicts the claim (exit status 1).
``InputError``: the evidence could not be read, so nothing was decided (exit status 2).
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
    "FetchError",
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


class FetchError(InputError):
    """A remote input (an ``http(s)://`` or ``s3://`` URL) could not be fetched whole: nothing was decided.

    Raised after bounded retries for a timeout, a truncated body, a server error or a missing file;
    the message names the URL. A body that arrives whole but holds the wrong bytes is not a fetch
    failure: it is checked like a local file, and rejected where a byte should match a leaf.
    """
