"""Forgers: each builds a complete, well-formed, signed proof of something false with the prover's key.

A forger here is as strong as the threat model allows: it holds the prover's private key, the
honest run's store and the code, and may write any store it likes before signing with
``attest_store``. What it cannot do is learn which segments the verifier will draw. Each forgery
records which segments it forged, so a measurement can compare the verifier's verdict for a seed
with the exact prediction "the sample hits a forged segment".

Shared by tests/adversarial/ (small runs, CI) and benchmarks/attacks.py (larger runs, the table).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainwitness.commit.canonical import canonical_json, parse_json
from trainwitness.commit.hashing import format_digest
from trainwitness.commit.merkle import merkle_root
from trainwitness.commit.store import (
    IMPORTS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    RUN_FILE,
    CheckpointRecord,
    atomic_write,
    checkpoint_steps,
    find_checkpoint,
    read_index,
    read_store_file,
)
from trainwitness.data.datasets import Batch
from trainwitness.errors import TrainwitnessError
from trainwitness.identity.signing import (
    generate_keypair,
    load_private_key,
    load_public_key,
    open_envelope,
    seal_envelope,
)
from trainwitness.prover import attest_store, record_run
from trainwitness.prover.recorder import Recorder
from trainwitness.run.loop import TrainingRun, weights_of
from trainwitness.run.rng import capture_rng
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint import MAX_CHECKPOINT_BYTES, decode_checkpoint, encode_checkpoint, encode_weights
from trainwitness.tensors.state import FlatState, state_digests
from trainwitness.verifier import VerifyOptions, verify_run
from trainwitness.verifier.draw import choose_segments

from .runs import RecordedRun

DIGITS = "trainwitness.workloads.digits:digits"


@dataclass(frozen=True)
class Run(RecordedRun):
    """A signed run on disk: the honest one, or a forgery of it."""

    forged: frozenset[int] = frozenset()  # segment indices whose replay cannot land (empty: forged outside replay)

    def segment_count(self) -> int:
        return len(read_index(self.store).checkpoints) - 1


def _paths(root: Path, keys_from: Run | None = None) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    return Run.at(root, keys=keys_from.private_key.parent if keys_from is not None else None)


def honest_run(root: Path, overrides: dict[str, object]) -> Run:
    run = _paths(root)
    generate_keypair(run.private_key, run.public_key)
    record_run(DIGITS, overrides, run.store, run.weights, torch_threads=1)  # type: ignore[arg-type]
    sign(run)
    return run


def sign(run: Run) -> None:
    """What every forger finishes with: the prover's own signature over the edited store (no pre-signing replay: a forger skips it)."""
    run.attestation.write_bytes(attest_store(run.store, run.weights, load_private_key(run.private_key), replay_check=False))


# -- forging the training itself ------------------------------------------------------------------

@dataclass
class Tamper:
    """How a forger deviates inside a forged segment (every hook is optional)."""

    before: Callable[[TrainingRun, int], None] | None = None  # after checkpoint i is taken
    ids: Callable[[TrainingRun, int, list[int]], list[int]] | None = None  # the sample ids trained on
    batch: Callable[[TrainingRun, Batch], Batch] | None = None  # the batch contents trained on
    skip: Callable[[int, int, int], bool] | None = None  # (step, first, last) -> skip this step's update
    after: Callable[[TrainingRun, int], None] | None = None  # before checkpoint i+1 is taken


def forge_training(honest: Run, root: Path, forged: Iterable[int], tamper: Tamper) -> Run:
    """Re-train the honest run's declaration, deviating in the ``forged`` segments and honest elsewhere.

    Every record tells the truth about what this forger did (the committed batch is the one trained
    on, the RNG digest is the state the step began from): the lie is that this is the declared run.
    """
    run = _paths(root, keys_from=honest)
    forged = frozenset(forged)
    run.store.mkdir(parents=True)
    declared = parse_json(read_store_file(honest.store, RUN_FILE, 1 << 26), RUN_FILE)
    shutil.copyfile(honest.store / RUN_FILE, run.store / RUN_FILE)
    shutil.copyfile(honest.store / MANIFEST_FILE, run.store / MANIFEST_FILE)
    shutil.copyfile(honest.store / IMPORTS_FILE, run.store / IMPORTS_FILE)
    (run.store / INDEX_FILE).touch()
    hp = resolve_hyperparameters(load_entry_point(declared["code"]["entry_point"]).defaults, declared["hyperparameters"])
    training = TrainingRun.start(load_entry_point(declared["code"]["entry_point"]), hp)
    steps = checkpoint_steps(int(hp["total_steps"]), int(hp["checkpoint_interval"]))
    recorder = Recorder(run.store, compress_level=declared["compression"])
    try:
        recorder.record_checkpoint(0, 0, training.capture())
        for index in range(1, len(steps)):
            segment, first, last = index - 1, steps[index - 1], steps[index]
            lie = segment in forged
            if lie and tamper.before:
                tamper.before(training, segment)
            for step in range(first, last):
                ids = training.sampler.batch_ids(step)
                if lie and tamper.ids:
                    ids = tamper.ids(training, step, ids)
                batch = training.spec.dataset.batch(ids)
                if lie and tamper.batch:
                    batch = tamper.batch(training, batch)
                recorder.record_step(step, ids, batch, capture_rng())
                if not (lie and tamper.skip and tamper.skip(step, first, last)):
                    recorder.record_loss(step, training.spec.step(batch))  # the loss this forger's step returned
            if lie and tamper.after:
                tamper.after(training, segment)
            recorder.record_checkpoint(index, last, training.capture())
        final = training.capture()
        recorder.wait()
    finally:
        recorder.close()
    atomic_write(run.weights, encode_weights(weights_of(final)))
    sign(run)
    return Run(**{**run.__dict__, "forged": forged})


# -- forging the store after the fact -------------------------------------------------------------

def load_checkpoint(run: Run, index: int) -> FlatState:
    record = read_index(run.store).checkpoints[index]
    data = read_store_file(run.store, find_checkpoint(run.store, record.step), MAX_CHECKPOINT_BYTES)
    return decode_checkpoint(data, f"checkpoint {index}")


def copy_run(honest: Run, root: Path) -> Run:
    shutil.copytree(honest.store, root / "store")
    shutil.copyfile(honest.weights, root / "model.safetensors")
    shutil.copyfile(honest.attestation, root / "attestation.json")
    return _paths(root, keys_from=honest)


def replace_checkpoints(run: Run, replacements: dict[int, FlatState]) -> None:
    """Overwrite checkpoint files and rewrite their index records to match (then re-sign)."""
    index_path = run.store / INDEX_FILE
    lines = index_path.read_bytes().split(b"\n")
    records = read_index(run.store).checkpoints
    for i, flat in replacements.items():
        old = records[i]
        rel = find_checkpoint(run.store, old.step)
        atomic_write(run.store / rel, encode_checkpoint(flat, 3 if rel.endswith(".zst") else None))
        digests = state_digests(flat)
        new = CheckpointRecord(index=i, step=old.step, weights_digest=digests.weights, rest_digest=digests.rest)
        lines[lines.index(canonical_json(old.to_json()))] = canonical_json(new.to_json())
        if i == len(records) - 1:
            atomic_write(run.weights, encode_weights(weights_of(flat)))
    atomic_write(index_path, b"\n".join(lines))


def _floats(flat: FlatState) -> list[str]:
    return [n for n, t in flat.tensors.items() if t.is_floating_point() and not n.startswith("rng/")]


def interpolate_checkpoints(honest: Run, root: Path, first: int, last: int) -> Run:
    """Skipped training: checkpoints strictly between ``first`` and ``last`` are straight-line blends."""
    run = copy_run(honest, root)
    a, b = load_checkpoint(run, first), load_checkpoint(run, last)
    replacements = {}
    for i in range(first + 1, last):
        t = (i - first) / (last - first)
        honest_i = load_checkpoint(run, i)  # skeleton (scheduler counters) and RNG: cheap to compute honestly
        tensors = dict(honest_i.tensors)
        for name in _floats(a):
            tensors[name] = torch.lerp(a.tensors[name], b.tensors[name], t).contiguous()
        replacements[i] = FlatState(tensors, honest_i.skeleton)
    replace_checkpoints(run, replacements)
    sign(run)
    return Run(**{**run.__dict__, "forged": frozenset(range(first, last))})


def nudge(flat: FlatState, toward: FlatState, epsilon: float) -> FlatState:
    """Fang et al. 2023: move every weight a tiny step towards a target (far below any tolerance)."""
    tensors = dict(flat.tensors)
    for name in _floats(flat):
        if name.startswith("model/"):
            tensors[name] = (flat.tensors[name] + epsilon * torch.sign(toward.tensors[name] - flat.tensors[name])).contiguous()
    return FlatState(tensors, flat.skeleton)


def fine_tune_last_checkpoint(honest: Run, root: Path, epsilon: float = 1e-3) -> Run:
    """Final weights edited after training, with the last checkpoint replaced to match them."""
    run = copy_run(honest, root)
    last = run.segment_count()
    flat = load_checkpoint(run, last)
    edited = dict(flat.tensors)
    for name in _floats(flat):
        if name.startswith("model/"):
            edited[name] = (flat.tensors[name] + epsilon).contiguous()
    replace_checkpoints(run, {last: FlatState(edited, flat.skeleton)})
    sign(run)
    return Run(**{**run.__dict__, "forged": frozenset({last - 1})})


# -- forging the attestation ----------------------------------------------------------------------

def _edited_weights(run: Run) -> bytes:
    from trainwitness.tensors.checkpoint import decode_weights

    weights = decode_weights(run.weights.read_bytes(), "weights")
    return encode_weights({k: v + 1e-3 if v.is_floating_point() else v for k, v in weights.items()})


def reuse_attestation_for_other_weights(honest: Run, root: Path) -> Run:
    run = copy_run(honest, root)
    run.weights.write_bytes(_edited_weights(run))
    return run


def sign_statement_for_fine_tuned_weights(honest: Run, root: Path) -> Run:
    """A hand-made statement: the honest claim, but the subject is a fine-tuned weights file."""
    from trainwitness.commit.hashing import file_sha256
    from trainwitness.commit.statement import Statement

    run = copy_run(honest, root)
    run.weights.write_bytes(_edited_weights(run))
    statement = Statement.from_payload(open_envelope(run.attestation.read_bytes(), load_public_key(run.public_key)))
    forged = Statement(run.weights.name, file_sha256(str(run.weights)).hex(), statement.claim)
    run.attestation.write_bytes(seal_envelope(forged.to_payload(), load_private_key(run.private_key)))
    return run


def resign_with_other_key(honest: Run, root: Path) -> Run:
    run = copy_run(honest, root)
    payload = open_envelope(run.attestation.read_bytes(), load_public_key(run.public_key))
    other = root / "other"
    generate_keypair(other / "o.key", other / "o.pub")
    run.attestation.write_bytes(seal_envelope(payload, load_private_key(other / "o.key")))
    return run


def _resign_with_commitment(run: Run, tree: str, root: str, size: int) -> None:
    from trainwitness.commit.statement import Statement, TreeCommitment

    statement = Statement.from_payload(open_envelope(run.attestation.read_bytes(), load_public_key(run.public_key)))
    commitments = dict(statement.claim.commitments)
    commitments[tree] = TreeCommitment(root, size)
    claim = type(statement.claim)(**{**statement.claim.__dict__, "commitments": commitments})
    forged = Statement(statement.subject_name, statement.subject_sha256, claim)
    run.attestation.write_bytes(seal_envelope(forged.to_payload(), load_private_key(run.private_key)))


def duplicated_last_leaf(honest: Run, root: Path) -> Run:
    """CVE-2012-2459: sign the batch root of a tree whose odd last leaf is duplicated (Bitcoin's pairing)."""
    run = copy_run(honest, root)
    leaves = read_index(run.store).batch_leaves()
    _resign_with_commitment(run, "batches", format_digest(merkle_root([*leaves, leaves[-1]])), len(leaves))
    return run


def different_leaf_count(honest: Run, root: Path) -> Run:
    """A root over a tree with one leaf fewer than the declared steps, signed with that smaller size."""
    run = copy_run(honest, root)
    leaves = read_index(run.store).batch_leaves()
    _resign_with_commitment(run, "batches", format_digest(merkle_root(leaves[:-1])), len(leaves) - 1)
    return run


# -- issue 11: the final weights, what a checkpoint commits, the signed claims -----------------------

def swap_published_weights(honest: Run, root: Path, older: bool = False) -> Run:
    """Issue 11, item 1: other weights W published; only the last checkpoint record's weights digest
    changed to W's; re-signed. W is the honest weights + 0.01 (or, ``older``, an earlier checkpoint's)."""
    from trainwitness.tensors.checkpoint import decode_weights
    from trainwitness.tensors.state import weights_digest

    run = copy_run(honest, root)
    if older:
        weights = weights_of(load_checkpoint(run, run.segment_count() - 1))
    else:
        weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in decode_weights(run.weights.read_bytes(), "w").items()}
    atomic_write(run.weights, encode_weights(weights))
    records = read_index(run.store).checkpoints
    last = records[-1]
    lines = (run.store / INDEX_FILE).read_bytes().split(b"\n")
    forged = CheckpointRecord(last.index, last.step, weights_digest(weights), last.rest_digest)
    lines[lines.index(canonical_json(last.to_json()))] = canonical_json(forged.to_json())
    atomic_write(run.store / INDEX_FILE, b"\n".join(lines))
    sign(run)
    return Run(**{**run.__dict__, "forged": frozenset({run.segment_count() - 1})})


def float64_momentum(honest: Run, root: Path, index: int | None = None) -> Run:
    """Issue 11, item 3: checkpoint ``index`` (default: the start of the last segment) stores its momentum
    buffers as float64, digest re-committed, re-signed. It restores to the same live float32 state."""
    run = copy_run(honest, root)
    i = run.segment_count() - 1 if index is None else index
    flat = load_checkpoint(run, i)
    tensors = {n: t.double() if "momentum_buffer" in n else t for n, t in flat.tensors.items()}
    assert any(t.dtype == torch.float64 for t in tensors.values())
    replace_checkpoints(run, {i: FlatState(tensors, flat.skeleton)})
    sign(run)
    return Run(**{**run.__dict__, "forged": frozenset({i - 1, i})})


def resign_claim(honest: Run, root: Path, edit: Callable[[dict[str, object]], None]) -> Run:
    """Issue 11, item 2: the honest statement with ``edit`` applied to its JSON, sealed with the prover's key."""
    import json

    run = copy_run(honest, root)
    statement = json.loads(open_envelope(run.attestation.read_bytes(), load_public_key(run.public_key)))
    edit(statement)
    run.attestation.write_bytes(seal_envelope(canonical_json(statement), load_private_key(run.private_key)))
    return run


def _code_forgery(name: str, honest: Run, root: Path) -> Run:
    from . import code_forgers  # it builds on this module's Run and sign

    return getattr(code_forgers, name)(honest, root)  # type: ignore[no-any-return]


def _set(*path_and_value: object) -> Callable[[dict[str, object]], None]:
    *path, value = path_and_value

    def edit(statement: dict[str, object]) -> None:
        node: object = statement
        for key in path[:-1]:
            node = node[key]  # type: ignore[index]
        node[path[-1]] = value  # type: ignore[index]

    return edit


# -- measuring ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    accepted: bool
    check: str  # the failed check, "input" for an InputError, "" when accepted
    expected_reject: bool  # the exact prediction: the draw includes a forged segment


@dataclass
class Measurement:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(not o.accepted for o in self.outcomes) / len(self.outcomes)

    @property
    def disagreements(self) -> int:
        return sum((not o.accepted) != o.expected_reject for o in self.outcomes)

    @property
    def checks(self) -> set[str]:
        return {o.check for o in self.outcomes if not o.accepted}


def verdict(run: Run, segments: int | None, seed: int | None) -> tuple[bool, str]:
    try:
        report = verify_run(run.attestation, run.store, run.weights, run.public_key, VerifyOptions(segments=segments, seed=seed, sandbox="off"))
    except TrainwitnessError as e:
        return False, "input" if e.exit_status == 2 else getattr(e, "check", "?")
    failed = [c.name for c in report.checks if not c.passed]
    return report.accepted, (failed[0] if failed else "")


def measure(run: Run, segment_count: int, sample: int, seeds: Iterable[int], caught_on_every_draw: bool = False) -> Measurement:
    """The verifier's verdict for each seed, next to the exact prediction for that seed's draw.

    ``caught_on_every_draw``: the attack is detectable without replaying a forged segment (Attack.sampled False).
    """
    result = Measurement()
    outcomes = [(seed, *verdict(run, sample, seed)) for seed in seeds]
    for seed, accepted, check in outcomes:
        drawn = set(choose_segments(segment_count, sample, seed))
        always = caught_on_every_draw or not run.forged  # a forgery outside the replayed segments must fail every time
        result.outcomes.append(Outcome(accepted, check, always or bool(drawn & run.forged)))
    return result


# -- the catalogue --------------------------------------------------------------------------------

TARGET_LABEL = 7


def _crafted_ids(training: TrainingRun, step: int, ids: list[int]) -> list[int]:
    """Zhang et al. 2022, by selection: batches chosen from the dataset to pull towards a target class."""
    dataset = training.spec.dataset
    pool = [i for i in range(len(dataset)) if int(dataset.sample(i)["label"]) == TARGET_LABEL]
    return [pool[(step * len(ids) + j) % len(pool)] for j in range(len(ids))]


def _crafted_contents(training: TrainingRun, batch: Batch) -> Batch:
    """Zhang et al. 2022, by optimisation: inputs moved by gradient steps so the update heads for the target."""
    images = batch["image"].clone().requires_grad_(True)
    target = torch.full_like(batch["label"], TARGET_LABEL)
    with torch.enable_grad():
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(training.spec.model(images), target)
            (grad,) = torch.autograd.grad(loss, images)
            images = (images - 0.05 * grad.sign()).detach().requires_grad_(True)
    return {"image": images.detach(), "label": batch["label"]}


def _steer(epsilon: float) -> Callable[[TrainingRun, int], None]:
    """Fang et al. 2023: nudge the segment's end state by epsilon towards a target (here: all zeros)."""

    def after(training: TrainingRun, segment: int) -> None:
        with torch.no_grad():
            for p in training.spec.model.parameters():
                p.add_(-epsilon * torch.sign(p))

    return after


def _scale_lr(factor: float) -> Callable[[TrainingRun, int], None]:
    def change(training: TrainingRun, segment: int) -> None:
        for group in training.spec.optimizer.param_groups:
            group["lr"] *= factor

    return change


def _reseed(training: TrainingRun, segment: int) -> None:
    torch.manual_seed(10_000 + segment)


Builder = Callable[[Run, Path, frozenset[int]], Run]


def _training(tamper: Tamper) -> Builder:
    return lambda honest, root, forged: forge_training(honest, root, forged, tamper)


@dataclass(frozen=True)
class Attack:
    name: str
    what: str
    build: Builder
    sampled: bool = True  # caught only when a forged segment is drawn (else: caught on every run)
    # Committed sample ids that are not the sampler's are caught on every run, whatever the draw: the
    # verifier checks every step's ids against the sampler (a function of the signed seed, no data read).
    contiguous: bool = False  # the forged segments must form one block
    last_only: bool = False  # only the last segment can be forged
    fraction: float | None = None  # a fixed forged fraction, overriding the measurement's


ATTACKS: tuple[Attack, ...] = (
    Attack("skipped-steps", "half the steps of each forged segment never trained, all step records written",
           _training(Tamper(skip=lambda step, first, last: step >= (first + last) // 2))),
    Attack("interpolated-checkpoints", "checkpoints between two real ones are linear blends of them (training skipped)",
           lambda honest, root, forged: interpolate_checkpoints(honest, root, min(forged), max(forged) + 1), contiguous=True),
    Attack("crafted-batch-ids", "Zhang et al. 2022: batches chosen (all label 7) instead of the sampler's",
           _training(Tamper(ids=_crafted_ids)), sampled=False),
    Attack("crafted-batch-contents", "Zhang et al. 2022: sampler's ids, inputs optimised towards a target class",
           _training(Tamper(batch=_crafted_contents))),
    Attack("steering-updates", "Fang et al. 2023: each forged segment's end state nudged by 1e-6 towards a target",
           _training(Tamper(after=_steer(1e-6)))),
    Attack("reordered-batches", "each pair of steps in a forged segment trains on the other's batch",
           _training(Tamper(ids=lambda training, step, ids: training.sampler.batch_ids(step ^ 1))), sampled=False),
    Attack("substituted-samples", "every sample id in a forged segment replaced by the next sample",
           _training(Tamper(ids=lambda training, step, ids: [(i + 1) % len(training.spec.dataset) for i in ids])), sampled=False),
    Attack("rng-swapped", "the RNG reseeded at the start of each forged segment (different dropout masks)",
           _training(Tamper(before=_reseed))),
    Attack("undeclared-lr-change", "learning rate doubled for each forged segment, then restored",
           _training(Tamper(before=_scale_lr(2.0), after=_scale_lr(0.5)))),
    Attack("undeclared-batch-size", "forged segments train on half-size batches (committed as such)",
           _training(Tamper(ids=lambda training, step, ids: ids[: len(ids) // 2])), sampled=False),
    Attack("mostly-forged", "a few honest segments among many steered ones (90% forged)",
           _training(Tamper(after=_steer(1e-6))), fraction=0.9),
    Attack("fine-tuned-last-checkpoint", "final weights fine-tuned after training; last checkpoint replaced to match",
           lambda honest, root, forged: fine_tune_last_checkpoint(honest, root), last_only=True, sampled=False),
    Attack("fine-tuned-weights-signed", "statement re-made for fine-tuned weights, honest commitments kept",
           lambda honest, root, forged: sign_statement_for_fine_tuned_weights(honest, root), sampled=False),
    Attack("attestation-reused", "a valid attestation presented with other weights",
           lambda honest, root, forged: reuse_attestation_for_other_weights(honest, root), sampled=False),
    Attack("re-signed-other-key", "a valid statement re-signed with a key that is not the prover's",
           lambda honest, root, forged: resign_with_other_key(honest, root), sampled=False),
    Attack("merkle-duplicated-last-leaf", "CVE-2012-2459: batch root over the leaves with the last one duplicated",
           lambda honest, root, forged: duplicated_last_leaf(honest, root), sampled=False),
    Attack("merkle-different-leaf-count", "batch root of a tree one leaf short, signed with that size",
           lambda honest, root, forged: different_leaf_count(honest, root), sampled=False),
    # Issue 11: each caught on every draw, whatever the sample (the last segment is always replayed).
    Attack("published-weights-swapped", "item 1: other weights published, the last checkpoint record's weights digest edited to match, re-signed",
           lambda honest, root, forged: swap_published_weights(honest, root), sampled=False),
    Attack("float64-momentum-start", "item 3: the last segment's start checkpoint stores momentum as float64 (same live state), re-committed",
           lambda honest, root, forged: float64_momentum(honest, root), sampled=False),
    Attack("false-file-count", "item 2: statement re-signed claiming another code.file_count",
           lambda honest, root, forged: resign_claim(honest, root, _set("predicate", "code", "file_count", 99)), sampled=False),
    Attack("false-dataset-name", "item 2: statement re-signed naming another data.dataset",
           lambda honest, root, forged: resign_claim(honest, root, _set("predicate", "data", "dataset", "imagenet")), sampled=False),
    Attack("unknown-signed-field", "item 2: statement re-signed with a field no verifier checks (predicate.audited_by)",
           lambda honest, root, forged: resign_claim(honest, root, _set("predicate", "audited_by", "an independent lab")), sampled=False),
    Attack("bytecode-planted", "item 4a: trained with a __pycache__ .pyc (unchecked-hash) of other code; the innocent source is attested",
           lambda honest, root, forged: _code_forgery("planted_bytecode", honest, root), sampled=False),
    Attack("sibling-package-swapped", "item 4b: trained with a sibling package on PYTHONPATH other than the one published",
           lambda honest, root, forged: _code_forgery("swapped_sibling_package", honest, root), sampled=False),
)


def forged_segments(attack: Attack, segment_count: int, fraction: float) -> frozenset[int]:
    """Which segments the forger forges: spread evenly (the forger cannot know the draw anyway)."""
    if attack.last_only:
        return frozenset({segment_count - 1})
    count = max(1, round((attack.fraction or fraction) * segment_count))
    if attack.contiguous:
        start = (segment_count - count) // 2
        return frozenset(range(start, start + count))
    return frozenset(round(k * segment_count / count) for k in range(count))
