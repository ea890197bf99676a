"""The attestation: an in-toto Statement v1 about the final weights file, with a training predicate.

Built by the prover through ``TrainingClaim(...)`` and ``Statement(...)``; read by the verifier only
through ``Statement.from_payload``, which checks every field's type and every cross-field invariant
before anything else looks at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.distributed import DataParallelRun
from trainwitness.commit.hashing import parse_digest
from trainwitness.commit.hints import ExactMode
from trainwitness.commit.store import checkpoint_steps
from trainwitness.data.manifest import ManifestSummary
from trainwitness.errors import MalformedInputError

__all__ = ["REQUIRED_HYPERPARAMETERS", "STATEMENT_TYPE", "PREDICATE_TYPE", "TreeCommitment", "TrainingClaim", "Statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://trainwitness.dev/training-run/v1"
# The hyperparameters the core itself reads (sampler, loop, checkpoint schedule); every spec declares them.
REQUIRED_HYPERPARAMETERS = ("seed", "data_seed", "batch_size", "total_steps", "checkpoint_interval")
TREES = ("checkpoints", "batches", "rng")
EXACT_TREES = (*TREES, "hints")  # exact mode (docs/EXACT.md) commits each step's hints too


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise MalformedInputError(f"attestation: {where}.{key} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedInputError(f"attestation: {where}.{key} has the wrong type")
    return value


def _digest(obj: Any, key: str, where: str) -> str:
    value = _get(obj, key, str, where)
    parse_digest(value, f"attestation: {where}.{key}")
    return value  # type: ignore[no-any-return]


def _is_plain_file_name(name: str) -> bool:
    """A subject name a tool may safely write under: no directories, traversal or control characters."""
    return (
        0 < len(name) <= 255
        and name not in (".", "..")
        and not any(c in name for c in "/\\:")
        and all(c.isprintable() for c in name)
    )


@dataclass(frozen=True)
class TreeCommitment:
    root: str
    size: int

    def to_json(self) -> dict[str, JSONValue]:
        return {"root": self.root, "size": self.size}


@dataclass(frozen=True)
class TrainingClaim:
    """The predicate: everything that determines the weights, and the commitments to the run."""

    code: dict[str, JSONValue]
    environment: dict[str, JSONValue]
    hyperparameters: dict[str, JSONValue]
    data: dict[str, JSONValue]
    commitments: dict[str, TreeCommitment]
    final_state_digest: str
    final_weights_digest: str
    weights_license: str | None = None  # SPDX expression the prover declares for the weights

    @property
    def manifest(self) -> ManifestSummary:
        """The signed data summary (validated in ``from_json``)."""
        return ManifestSummary.from_json(self.data["manifest"], "attestation: predicate.data.manifest")
    exact: ExactMode | None = None  # exact mode's grids; absent from the statement when off
    # What the prover says training took (wall-clock seconds, all sessions of a resumed run): declared,
    # never verified (the verifier shows it beside its own replay-time estimate). Absent when not recorded.
    declared_training_seconds: float | None = None
    distributed: DataParallelRun | None = None  # a W-rank data-parallel run (docs/DISTRIBUTED.md); absent for one process

    @property
    def world_size(self) -> int:
        return 1 if self.distributed is None else self.distributed.world_size

    @property
    def trees(self) -> tuple[str, ...]:
        return TREES if self.exact is None else EXACT_TREES

    @property
    def total_steps(self) -> int:
        return int(self.hyperparameters["total_steps"])

    @property
    def checkpoint_interval(self) -> int:
        return int(self.hyperparameters["checkpoint_interval"])

    @property
    def checkpoint_steps(self) -> list[int]:
        return checkpoint_steps(self.total_steps, self.checkpoint_interval)

    @property
    def entry_point(self) -> str:
        return str(self.code["entry_point"])

    @property
    def torch_threads(self) -> int:
        return int(self.environment["torch_threads"])

    def to_json(self) -> dict[str, JSONValue]:
        exact: dict[str, JSONValue] = {} if self.exact is None else {"exact": self.exact.to_json()}
        declared: dict[str, JSONValue] = (
            {} if self.declared_training_seconds is None else {"declared": {"training_wall_seconds": self.declared_training_seconds}}
        )
        distributed: dict[str, JSONValue] = {} if self.distributed is None else {"distributed": self.distributed.to_json()}
        return {
            **exact,
            **distributed,
            **declared,
            "code": self.code,
            "environment": self.environment,
            "hyperparameters": self.hyperparameters,
            "data": self.data,
            "commitments": {name: c.to_json() for name, c in self.commitments.items()},
            "final": {"state_digest": self.final_state_digest, "weights_digest": self.final_weights_digest},
            "weights_license": self.weights_license,
        }

    @classmethod
    def from_json(cls, obj: Any) -> TrainingClaim:
        code = _get(obj, "code", dict, "predicate")
        _get(code, "entry_point", str, "predicate.code")
        _digest(code, "tree_digest", "predicate.code")
        if code.get("source_uri") is not None:
            _get(code, "source_uri", str, "predicate.code")
        environment = _get(obj, "environment", dict, "predicate")
        threads = _get(environment, "torch_threads", int, "predicate.environment")
        if not 1 <= threads <= 1024:
            raise MalformedInputError("attestation: predicate.environment.torch_threads out of range")
        hp = _get(obj, "hyperparameters", dict, "predicate")
        for key in REQUIRED_HYPERPARAMETERS:
            value = _get(hp, key, int, "predicate.hyperparameters")
            if value < (0 if key in ("seed", "data_seed") else 1):
                raise MalformedInputError(f"attestation: predicate.hyperparameters.{key} out of range")
        data = _get(obj, "data", dict, "predicate")
        manifest = ManifestSummary.from_json(_get(data, "manifest", dict, "predicate.data"), "attestation: predicate.data.manifest")
        if _get(data, "num_samples", int, "predicate.data") != manifest.num_samples:
            raise MalformedInputError("attestation: predicate.data.num_samples is not the manifest's sample count")
        sampler = _get(data, "sampler", dict, "predicate.data")
        for key in ("seed", "batch_size"):
            if _get(sampler, key, int, "predicate.data.sampler") != hp["batch_size" if key == "batch_size" else "data_seed"]:
                raise MalformedInputError(f"attestation: predicate.data.sampler.{key} contradicts the hyperparameters")
        if _get(sampler, "num_samples", int, "predicate.data.sampler") != manifest.num_samples:
            raise MalformedInputError("attestation: predicate.data.sampler.num_samples is not the manifest's sample count")
        weights_license = _get(obj, "weights_license", str, "predicate") if obj.get("weights_license") is not None else None
        exact = ExactMode.from_json(obj["exact"], "attestation: predicate.exact") if "exact" in obj else None
        seconds = None
        if "declared" in obj:
            seconds = _get(_get(obj, "declared", dict, "predicate"), "training_wall_seconds", (int, float), "predicate.declared")
            if isinstance(seconds, bool) or not 0 <= seconds < 1e12:
                raise MalformedInputError("attestation: predicate.declared.training_wall_seconds out of range")
            seconds = float(seconds)
        distributed = None
        if "distributed" in obj:
            distributed = DataParallelRun.from_json(obj["distributed"], "attestation: predicate.distributed")
            if hp["batch_size"] % distributed.world_size:
                raise MalformedInputError(
                    f"attestation: batch size {hp['batch_size']} does not split over {distributed.world_size} ranks"
                )
        trees = TREES if exact is None else EXACT_TREES
        raw_commitments = _get(obj, "commitments", dict, "predicate")
        if set(raw_commitments) != set(trees):
            raise MalformedInputError(f"attestation: predicate.commitments must name exactly {trees}")
        commitments = {
            name: TreeCommitment(
                root=_digest(raw_commitments[name], "root", f"predicate.commitments.{name}"),
                size=_get(raw_commitments[name], "size", int, f"predicate.commitments.{name}"),
            )
            for name in trees
        }
        final = _get(obj, "final", dict, "predicate")
        claim = cls(
            code=code,
            environment=environment,
            hyperparameters=hp,
            data=data,
            commitments=commitments,
            final_state_digest=_digest(final, "state_digest", "predicate.final"),
            final_weights_digest=_digest(final, "weights_digest", "predicate.final"),
            weights_license=weights_license,
            exact=exact,
            declared_training_seconds=seconds,
            distributed=distributed,
        )
        claim._check_tree_sizes()
        return claim

    def _check_tree_sizes(self) -> None:
        if self.total_steps > 10**9:
            raise MalformedInputError("attestation: total_steps is implausibly large")
        # Counted, not listed: a signed (or, for `inspect`, unsigned) claim of 10**9 steps at interval 1
        # would otherwise build a billion-element list here (tens of GB) before any check could fail.
        checkpoints = -(-self.total_steps // self.checkpoint_interval) + 1  # == len(self.checkpoint_steps)
        expected = {"batches": self.total_steps, "rng": self.total_steps, "checkpoints": checkpoints}
        if self.exact is not None:
            expected["hints"] = self.total_steps
        for name, size in expected.items():
            if self.commitments[name].size != size:
                raise MalformedInputError(
                    f"attestation: the {name} tree has {self.commitments[name].size} leaves, "
                    f"but {self.total_steps} steps at interval {self.checkpoint_interval} need {size}"
                )


@dataclass(frozen=True)
class Statement:
    subject_name: str
    subject_sha256: str  # hex, as in-toto writes it
    claim: TrainingClaim

    def to_payload(self) -> bytes:
        return canonical_json(
            {
                "_type": STATEMENT_TYPE,
                "subject": [{"name": self.subject_name, "digest": {"sha256": self.subject_sha256}}],
                "predicateType": PREDICATE_TYPE,
                "predicate": self.claim.to_json(),
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Statement:
        obj = parse_json(payload, "attestation statement")
        if _get(obj, "_type", str, "statement") != STATEMENT_TYPE:
            raise MalformedInputError(f"attestation: statement _type is not {STATEMENT_TYPE}")
        if _get(obj, "predicateType", str, "statement") != PREDICATE_TYPE:
            raise MalformedInputError(f"attestation: predicateType is not {PREDICATE_TYPE}")
        subjects = _get(obj, "subject", list, "statement")
        if len(subjects) != 1:
            raise MalformedInputError("attestation: exactly one subject (the final weights file) is expected")
        name = _get(subjects[0], "name", str, "statement.subject[0]")
        if not _is_plain_file_name(name):
            raise MalformedInputError(f"attestation: subject name {name[:80]!r} is not a plain file name")
        digest = _get(_get(subjects[0], "digest", dict, "statement.subject[0]"), "sha256", str, "statement.subject[0].digest")
        parse_digest("sha256:" + digest, "attestation: subject digest")
        return cls(subject_name=name, subject_sha256=digest, claim=TrainingClaim.from_json(_get(obj, "predicate", dict, "statement")))
