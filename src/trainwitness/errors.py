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
    "LineageError",
    "FrozenInputError",
    "InputError",
    "MissingInputError",
    "MalformedInputError",
    "ParentMismatchError",
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


class LineageError(VerificationError):
    """A link does not connect: the parent's files or attested digests are not what the child declares."""

    check = "lineage"


class FrozenInputError(LineageError):
    """A frozen input's file is not the weights the run declares (or its own attestation does not verify)."""

    check = "inputs"


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
