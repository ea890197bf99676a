"""The attestation: an in-toto Statement v1 about the final weights file, with a training predicate.

Built by the prover through ``TrainingClaim(...)`` and ``Statement(...)``; read by the verifier only
through ``Statement.from_payload``, which accepts exactly the known fields of every object (an
unknown field would be signed but checked by nothing: refused), checks every field's type and
every cross-field invariant before anything else looks at it. What binds each field once it is
read is ``commit/bindings.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.distributed import DataParallelRun
from trainwitness.commit.hashing import domain_hash, format_digest, parse_digest
from trainwitness.commit.hints import ExactMode
from trainwitness.commit.json_fields import get_field, is_int, only_fields
from trainwitness.commit.store import MAX_BATCH_IDS, checkpoint_steps
from trainwitness.data.manifest import ManifestSummary
from trainwitness.errors import MalformedInputError

__all__ = [
    "REQUIRED_HYPERPARAMETERS",
    "HYPERPARAMETER_RANGES",
    "check_core_hyperparameters",
    "STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "ENVIRONMENT_FIELDS",
    "CODE_FIELDS",
    "START_MODES",
    "TreeCommitment",
    "ParentLink",
    "FrozenInput",
    "TrainingClaim",
    "Statement",
    "statement_digest",
    "is_input_name",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://trainwitness.dev/training-run/v2"  # docs/FORMAT.md, version 2
# The hyperparameters the core itself reads (sampler, loop, checkpoint schedule); every spec declares them.
REQUIRED_HYPERPARAMETERS = ("seed", "data_seed", "batch_size", "total_steps", "checkpoint_interval")
MAX_TOTAL_STEPS = 10**9
# Each one's range [low, high), checked before anything is built from it (docs/FORMAT.md section 4):
# ``seed`` seeds numpy's legacy generator, which takes [0, 2**32) (torch and ``random`` take more);
# ``data_seed`` keys the sampler's stream as a u64, kept below 2**63 so that any JSON reader with
# signed 64-bit integers holds it; a batch's sample ids are at most the index's ``MAX_BATCH_IDS``.
HYPERPARAMETER_RANGES: dict[str, tuple[int, int]] = {
    "seed": (0, 2**32),
    "data_seed": (0, 2**63),
    "batch_size": (1, MAX_BATCH_IDS + 1),
    "total_steps": (1, MAX_TOTAL_STEPS + 1),
    "checkpoint_interval": (1, MAX_TOTAL_STEPS + 1),
}


def _range_text(low: int, high: int) -> str:
    """``[0, 2**32)`` or ``[1, 2**20]``: powers of two written as such."""

    def power_of_two(n: int) -> bool:
        return n >= 1024 and n & (n - 1) == 0

    if power_of_two(high):
        return f"[{low}, 2**{high.bit_length() - 1})"
    top = high - 1
    return f"[{low}, {f'2**{top.bit_length() - 1}' if power_of_two(top) else top}]"


def check_core_hyperparameters(hp: Any, where: str, num_samples: int | None = None) -> None:
    """Refuse a required hyperparameter that is missing, not an integer, or outside its range.

    ``num_samples``: the dataset's size, when known: a batch cannot be larger (the sampler draws a
    batch from one epoch). Raises ``MalformedInputError`` naming the hyperparameter, its value and
    its range, for the prover (before the store is created) and the verifier (before replay) alike.
    """
    if not isinstance(hp, dict):
        raise MalformedInputError(f"{where}: the hyperparameters are not a JSON object")
    for key in REQUIRED_HYPERPARAMETERS:
        low, high = HYPERPARAMETER_RANGES[key]
        value = hp.get(key)
        if not is_int(value):
            raise MalformedInputError(f"{where}: hyperparameter {key!r} must be an integer in {_range_text(low, high)}, not {value!r}"[:400])
        if not low <= value < high:
            shown = str(value) if value.bit_length() < 256 else f"a {value.bit_length()}-bit integer"
            raise MalformedInputError(f"{where}: hyperparameter {key!r} is {shown}, outside {_range_text(low, high)}")
    if num_samples is not None and hp["batch_size"] > num_samples:
        raise MalformedInputError(
            f"{where}: hyperparameter 'batch_size' is {hp['batch_size']}, larger than the dataset ({num_samples} samples)"
        )


TREES = ("checkpoints", "batches", "rng")
EXACT_TREES = (*TREES, "hints")  # exact mode (docs/EXACT.md) commits each step's hints too
# How a run with a parent forms checkpoint 0 from it (docs/FORMAT.md section 7, "Lineage").
START_MODES = ("finetune", "continue")
_MAX_NAMES = 1 << 16  # tensor names a parent link may list (re-initialised, dropped)
_MAX_INPUTS = 64
_INPUT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    return get_field(obj, key, kind, f"attestation: {where}")


def _fields(obj: Any, where: str, required: set[str] | tuple[str, ...], optional: set[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """``obj`` as an object holding every ``required`` field, and nothing beyond ``optional`` ones.

    A field the verifier does not know would be signed but checked by nothing, and shown as if it
    were attested: refused (exit 2), like a missing one (``json_fields.only_fields``).
    """
    return only_fields(obj, f"attestation: {where}", required, optional)


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    return None if obj[key] is None else _get(obj, key, str, where)  # type: ignore[no-any-return]


def _digest(obj: Any, key: str, where: str) -> str:
    value = _get(obj, key, str, where)
    parse_digest(value, f"attestation: {where}.{key}")
    return value  # type: ignore[no-any-return]


_GIT_COMMIT_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256 object names
# The environment the prover recorded (run/environment.py): every field, with its type.
ENVIRONMENT_FIELDS: dict[str, type] = {
    "python": str, "implementation": str, "torch": str, "numpy": str, "trainwitness": str, "platform": str,
    "machine": str, "device": str, "torch_threads": int, "deterministic_algorithms": bool, "cudnn_benchmark": bool,
    "matmul_allow_tf32": bool,
}
CODE_FIELDS = ("entry_point", "source_root", "tree_digest", "file_count", "git_commit", "source_uri", "packages", "distributions")
MAX_PACKAGES = 1000
MAX_DISTRIBUTIONS = 10000


def _check_code(code: Any) -> dict[str, Any]:
    where = "predicate.code"
    _fields(code, where, CODE_FIELDS)
    entry_point = _get(code, "entry_point", str, where)
    source_root = _get(code, "source_root", str, where)
    if not _is_plain_file_name(source_root):
        raise MalformedInputError(f"attestation: {where}.source_root {source_root[:80]!r} is not a plain file or directory name")
    _digest(code, "tree_digest", where)
    if _get(code, "file_count", int, where) < 1:
        raise MalformedInputError(f"attestation: {where}.file_count must be at least 1")
    commit = _optional_str(code, "git_commit", where)
    if commit is not None and not _GIT_COMMIT_RE.match(commit):
        raise MalformedInputError(f"attestation: {where}.git_commit {commit[:80]!r} is not a 40- or 64-digit lowercase hex object name")
    _optional_str(code, "source_uri", where)
    packages = _get(code, "packages", list, where)
    if len(packages) > MAX_PACKAGES:
        raise MalformedInputError(f"attestation: {where}.packages lists more than {MAX_PACKAGES} packages")
    names = []
    for i, package in enumerate(packages):
        item = f"{where}.packages[{i}]"
        _fields(package, item, ("name", "tree_digest", "file_count"))
        name = _get(package, "name", str, item)
        if not name.isidentifier() or not name.isascii():
            raise MalformedInputError(f"attestation: {item}.name {name[:80]!r} is not a top-level module name")
        _digest(package, "tree_digest", item)
        if _get(package, "file_count", int, item) < 1:
            raise MalformedInputError(f"attestation: {item}.file_count must be at least 1")
        names.append(name)
    if names != sorted(set(names)) or entry_point.split(".")[0] in names:
        raise MalformedInputError(f"attestation: {where}.packages must be sorted by name, each once, without the entry point's own")
    distributions = _get(code, "distributions", list, where)
    if len(distributions) > MAX_DISTRIBUTIONS:
        raise MalformedInputError(f"attestation: {where}.distributions lists more than {MAX_DISTRIBUTIONS}")
    names = []
    for i, distribution in enumerate(distributions):
        item = f"{where}.distributions[{i}]"
        _fields(distribution, item, ("name", "version"))
        names.append(_get(distribution, "name", str, item))
        if not names[-1] or not _get(distribution, "version", str, item):
            raise MalformedInputError(f"attestation: {item} has an empty name or version")
    if names != sorted(set(names)):
        raise MalformedInputError(f"attestation: {where}.distributions must be sorted by name, each once")
    return code  # type: ignore[no-any-return]


def _check_environment(environment: Any) -> dict[str, Any]:
    where = "predicate.environment"
    _fields(environment, where, tuple(ENVIRONMENT_FIELDS))
    for key, kind in ENVIRONMENT_FIELDS.items():
        _get(environment, key, kind, where)
    if not 1 <= environment["torch_threads"] <= 1024:
        raise MalformedInputError("attestation: predicate.environment.torch_threads out of range")
    return environment  # type: ignore[no-any-return]


def _is_plain_file_name(name: str) -> bool:
    """A subject name a tool may safely write under: no directories, traversal or control characters."""
    return (
        0 < len(name) <= 255
        and name not in (".", "..")
        and not any(c in name for c in "/\\:")
        and all(c.isprintable() for c in name)
    )


def statement_digest(payload: bytes) -> str:
    """The digest that names an attestation: ``domain_hash("statement", payload)``.

    Over the statement payload (the bytes the signature covers), not the DSSE envelope: the same
    claim re-signed by another key, or with a second signature, keeps its name; who signed is
    checked where the link is verified, against the auditor's keyring.
    """
    return format_digest(domain_hash("statement", payload))


def _names(obj: Any, key: str, where: str) -> tuple[str, ...]:
    """A sorted list of distinct, non-empty tensor names (strictly: sorted order is part of the format)."""
    names = _get(obj, key, list, where)
    if len(names) > _MAX_NAMES or not all(isinstance(n, str) and 0 < len(n) <= 1024 for n in names):
        raise MalformedInputError(f"attestation: {where}.{key} must list at most {_MAX_NAMES} non-empty tensor names")
    if names != sorted(set(names)):
        raise MalformedInputError(f"attestation: {where}.{key} must be sorted and without repeats")
    return tuple(names)


@dataclass(frozen=True)
class ParentLink:
    """The predicate's ``parent``: the attested run whose final weights (or whole state) this run starts from.

    ``finetune``: checkpoint 0 is the spec built from the seed, then the parent's final weights loaded
    into the model, except ``reinitialised`` (model tensors kept as the seed built them); ``dropped``
    are the parent's tensors the model does not have. The optimizer and scheduler are fresh.
    ``continue``: checkpoint 0 is the parent's final state (model, optimizer, scheduler, RNG) exactly.
    ``attestation`` is the parent statement's ``statement_digest``; the weights and state digests
    repeat the parent's signed final digests so that a reader of this statement alone sees them.
    """

    mode: str
    attestation: str
    weights_digest: str
    state_digest: str | None = None  # continue only: the parent's final state digest
    reinitialised: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "attestation": self.attestation,
            "dropped": list(self.dropped),
            "mode": self.mode,
            "reinitialised": list(self.reinitialised),
            "state_digest": self.state_digest,
            "weights_digest": self.weights_digest,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str = "predicate.parent") -> ParentLink:
        if not isinstance(obj, dict) or set(obj) != {"attestation", "dropped", "mode", "reinitialised", "state_digest", "weights_digest"}:
            raise MalformedInputError(
                f"attestation: {where} must hold exactly attestation, dropped, mode, reinitialised, state_digest, weights_digest"
            )
        mode = _get(obj, "mode", str, where)
        if mode not in START_MODES:
            raise MalformedInputError(f"attestation: {where}.mode must be one of {', '.join(START_MODES)}, not {mode[:40]!r}")
        link = cls(
            mode=mode,
            attestation=_digest(obj, "attestation", where),
            weights_digest=_digest(obj, "weights_digest", where),
            state_digest=None if obj["state_digest"] is None else _digest(obj, "state_digest", where),
            reinitialised=_names(obj, "reinitialised", where),
            dropped=_names(obj, "dropped", where),
        )
        if mode == "continue" and (link.state_digest is None or link.reinitialised or link.dropped):
            raise MalformedInputError(f"attestation: {where}: continued training names the parent's state digest and re-initialises and drops nothing")
        if mode == "finetune" and link.state_digest is not None:
            raise MalformedInputError(f"attestation: {where}: a fine-tune takes the parent's weights only (state_digest must be null)")
        if set(link.reinitialised) & set(link.dropped):
            raise MalformedInputError(f"attestation: {where}: a tensor cannot be both re-initialised and dropped")
        return link


@dataclass(frozen=True)
class FrozenInput:
    """One of the predicate's ``inputs``: weights the run reads but does not train (a teacher, a frozen encoder).

    Bound by ``weights_digest`` (the domain ``weights`` digest of its tensors); ``attestation`` is the
    ``statement_digest`` of the input's own attestation when the prover declared one, else None.
    """

    weights_digest: str
    attestation: str | None = None

    def to_json(self) -> dict[str, JSONValue]:
        return {"attestation": self.attestation, "weights_digest": self.weights_digest}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> FrozenInput:
        if not isinstance(obj, dict) or set(obj) != {"attestation", "weights_digest"}:
            raise MalformedInputError(f"attestation: {where} must hold exactly attestation and weights_digest")
        return cls(
            weights_digest=_digest(obj, "weights_digest", where),
            attestation=None if obj["attestation"] is None else _digest(obj, "attestation", where),
        )


def is_input_name(name: object) -> bool:
    """A frozen input's name: 1 to 64 of ``[A-Za-z0-9_.-]``, not starting with ``.`` or ``-``."""
    return isinstance(name, str) and 0 < len(name) <= 64 and set(name) <= _INPUT_NAME_CHARS and name[0] not in ".-"


def _inputs(obj: Any, where: str) -> dict[str, FrozenInput]:
    raw = _get(obj, "inputs", dict, where)
    if not 1 <= len(raw) <= _MAX_INPUTS:
        raise MalformedInputError(f"attestation: {where}.inputs must name 1 to {_MAX_INPUTS} inputs (absent when none)")
    for name in raw:
        if not is_input_name(name):
            raise MalformedInputError(f"attestation: {where}.inputs: {str(name)[:80]!r} is not a valid input name")
    return {name: FrozenInput.from_json(raw[name], f"{where}.inputs.{name}") for name in sorted(raw)}


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
    parent: ParentLink | None = None  # absent from the statement for a seeded start
    inputs: dict[str, FrozenInput] = field(default_factory=dict)  # frozen inputs; absent when none

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
        lineage: dict[str, JSONValue] = {}
        if self.parent is not None:
            lineage["parent"] = self.parent.to_json()
        if self.inputs:
            lineage["inputs"] = {name: frozen.to_json() for name, frozen in sorted(self.inputs.items())}
        return {
            **exact,
            **distributed,
            **declared,
            **lineage,
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
        """The predicate from untrusted JSON: exactly the known fields, each of its type, every invariant.

        Raises MalformedInputError naming the field.
        """
        _fields(obj, "predicate", ("code", "environment", "hyperparameters", "data", "commitments", "final", "weights_license"), ("exact", "distributed", "parent", "inputs", "declared"))
        code = _check_code(obj["code"])
        environment = _check_environment(obj["environment"])
        hp = _get(obj, "hyperparameters", dict, "predicate")
        for key in REQUIRED_HYPERPARAMETERS:
            _get(hp, key, int, "predicate.hyperparameters")
        check_core_hyperparameters(hp, "attestation: predicate.hyperparameters")
        data = _fields(obj["data"], "predicate.data", ("dataset", "manifest", "num_samples", "sampler"))
        _get(data, "dataset", str, "predicate.data")
        manifest = ManifestSummary.from_json(_get(data, "manifest", dict, "predicate.data"), "attestation: predicate.data.manifest")
        if _get(data, "num_samples", int, "predicate.data") != manifest.num_samples:
            raise MalformedInputError("attestation: predicate.data.num_samples is not the manifest's sample count")
        sampler = _fields(data["sampler"], "predicate.data.sampler", ("name", "batch_size", "seed", "num_samples"))
        _get(sampler, "name", str, "predicate.data.sampler")
        for key in ("seed", "batch_size"):
            if _get(sampler, key, int, "predicate.data.sampler") != hp["batch_size" if key == "batch_size" else "data_seed"]:
                raise MalformedInputError(f"attestation: predicate.data.sampler.{key} contradicts the hyperparameters")
        if _get(sampler, "num_samples", int, "predicate.data.sampler") != manifest.num_samples:
            raise MalformedInputError("attestation: predicate.data.sampler.num_samples is not the manifest's sample count")
        check_core_hyperparameters(hp, "attestation: predicate.hyperparameters", num_samples=manifest.num_samples)
        weights_license = _optional_str(obj, "weights_license", "predicate")
        exact = ExactMode.from_json(obj["exact"], "attestation: predicate.exact") if "exact" in obj else None
        seconds = None
        if "declared" in obj:
            seconds = _get(_fields(obj["declared"], "predicate.declared", ("training_wall_seconds",)), "training_wall_seconds", (int, float), "predicate.declared")
            if isinstance(seconds, bool) or not 0 <= seconds < 1e12:
                raise MalformedInputError("attestation: predicate.declared.training_wall_seconds out of range")
            seconds = float(seconds)
        parent = ParentLink.from_json(obj["parent"]) if "parent" in obj else None
        inputs = _inputs(obj, "predicate") if "inputs" in obj else {}
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
                root=_digest(_fields(raw_commitments[name], f"predicate.commitments.{name}", ("root", "size")), "root", f"predicate.commitments.{name}"),
                size=_get(raw_commitments[name], "size", int, f"predicate.commitments.{name}"),
            )
            for name in trees
        }
        final = _fields(obj["final"], "predicate.final", ("state_digest", "weights_digest"))
        claim = cls(
            code=code,
            environment=environment,
            hyperparameters=hp,
            data=data,
            commitments=commitments,
            final_state_digest=_digest(final, "state_digest", "predicate.final"),
            final_weights_digest=_digest(final, "weights_digest", "predicate.final"),
            weights_license=weights_license,
            parent=parent,
            inputs=inputs,
            exact=exact,
            declared_training_seconds=seconds,
            distributed=distributed,
        )
        claim._check_tree_sizes()
        return claim

    def _check_tree_sizes(self) -> None:
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
        """The statement from its untrusted payload: exactly the known fields at every level (MalformedInputError)."""
        obj = _fields(parse_json(payload, "attestation statement"), "statement", ("_type", "subject", "predicateType", "predicate"))
        if _get(obj, "_type", str, "statement") != STATEMENT_TYPE:
            raise MalformedInputError(f"attestation: statement _type is not {STATEMENT_TYPE}")
        predicate_type = _get(obj, "predicateType", str, "statement")
        if predicate_type != PREDICATE_TYPE:
            older = predicate_type.startswith(PREDICATE_TYPE.rsplit("/", 1)[0] + "/")
            hint = " (made by an older trainwitness: record the run again with this one)" if older else ""
            raise MalformedInputError(f"attestation: predicateType is not {PREDICATE_TYPE}{hint}")
        subjects = _get(obj, "subject", list, "statement")
        if len(subjects) != 1:
            raise MalformedInputError("attestation: exactly one subject (the final weights file) is expected")
        subject = _fields(subjects[0], "statement.subject[0]", ("name", "digest"))
        name = _get(subject, "name", str, "statement.subject[0]")
        if not _is_plain_file_name(name):
            raise MalformedInputError(f"attestation: subject name {name[:80]!r} is not a plain file name")
        digests = _fields(_get(subject, "digest", dict, "statement.subject[0]"), "statement.subject[0].digest", ("sha256",))
        digest = _get(digests, "sha256", str, "statement.subject[0].digest")
        parse_digest("sha256:" + digest, "attestation: subject digest")
        return cls(subject_name=name, subject_sha256=digest, claim=TrainingClaim.from_json(obj["predicate"]))
