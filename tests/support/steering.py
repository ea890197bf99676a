"""A steering forger: re-trains a recorded run segment by segment, nudging every checkpoint.

The forger holds the prover's key. From its (already forged) checkpoint i it replays the segment
honestly, then moves the result by ``fraction_of_bound`` x the bounded-mode bound x the segment's
update, in a fixed random direction, and commits that as checkpoint i + 1 (re-rounded to the
grid, with freshly recorded hints, when the run is in exact mode). It rewrites the index and the
final weights, and re-signs. Bounded mode must let this through (the slack is real); exact mode
must not.
"""

from __future__ import annotations

import json

import torch

from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.hints import HINTS_FILE, ExactMode, StepHints, hints_record
from trainwitness.commit.store import INDEX_FILE, RUN_FILE, CheckpointRecord, find_checkpoint, read_index
from trainwitness.identity.signing import load_private_key
from trainwitness.prover import attest_store
from trainwitness.run.environment import apply_execution_settings
from trainwitness.run.exact import round_step, rounding_targets
from trainwitness.run.loop import ExactHooks, TrainingRun, snapshot, weights_of
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint, encode_weights
from trainwitness.tensors.state import FlatState, state_digests
from trainwitness.verifier.bounded import BOUND

from .runs import RecordedRun


def _nudge(start: FlatState, honest: FlatState, fraction: float, generator: torch.Generator) -> None:
    names = [n for n, t in honest.tensors.items() if (n.startswith("model/") or n.startswith("optimizer/")) and t.is_floating_point()]
    def before(n: str) -> torch.Tensor:  # checkpoint 0 has no momentum yet: it starts from zero
        return start.tensors[n].double() if n in start.tensors else torch.zeros(honest.tensors[n].shape, dtype=torch.float64)

    update = sum(float(torch.sum((honest.tensors[n].double() - before(n)) ** 2)) for n in names) ** 0.5
    directions = {n: torch.randn(honest.tensors[n].shape, generator=generator, dtype=torch.float64) for n in names}
    norm = sum(float(torch.sum(d**2)) for d in directions.values()) ** 0.5
    for n in names:
        t = honest.tensors[n]
        t.copy_((t.double() + directions[n] * (fraction * BOUND * update / norm)).to(t.dtype))


def steer_every_checkpoint(run: RecordedRun, fraction_of_bound: float, exact: ExactMode | None, threads: int = 1) -> None:
    apply_execution_settings(threads)
    index = read_index(run.store)
    total = len(index.steps)
    hp_overrides = {"total_steps": total, "checkpoint_interval": index.checkpoints[1].step}
    declared = json.loads((run.store / RUN_FILE).read_bytes())
    function = load_entry_point(declared["code"]["entry_point"])  # the recorded run's own spec
    training = TrainingRun.start(function, resolve_hyperparameters(function.defaults, hp_overrides))
    generator = torch.Generator().manual_seed(1234)
    hints: list[StepHints] = []
    records = list(index.checkpoints)
    current = decode_checkpoint((run.store / find_checkpoint(run.store, 0)).read_bytes(), "checkpoint 0")
    for i in range(1, len(records)):
        start = snapshot(current)
        training.restore(current)
        hooks = None if exact is None else ExactHooks(exact, lambda s: None, lambda s, h: hints.append(h))
        training.run(records[i - 1].step, records[i].step, lambda *a: None, hooks)
        forged = snapshot(training.capture())
        _nudge(start, forged, fraction_of_bound, generator)
        if exact is not None:  # a careful forger puts its checkpoint back on the grid
            round_step(exact.state, rounding_targets(forged.tensors))
        relpath = find_checkpoint(run.store, records[i].step)
        (run.store / relpath).write_bytes(encode_checkpoint(forged, 3 if relpath.endswith(".zst") else None))
        digests = state_digests(forged)
        records[i] = CheckpointRecord(i, records[i].step, digests.weights, digests.rest)
        current = snapshot(forged)
    lines = []
    for line in (run.store / INDEX_FILE).read_bytes().splitlines():
        record = json.loads(line)
        if record["kind"] == "checkpoint":
            line = canonical_json(records[record["index"]].to_json())
        lines.append(line + b"\n")
    (run.store / INDEX_FILE).write_bytes(b"".join(lines))
    if exact is not None:
        (run.store / HINTS_FILE).write_bytes(b"".join(hints_record(s, h) + b"\n" for s, h in enumerate(hints)))
    run.weights.write_bytes(encode_weights(weights_of(current)))
    run.attestation.write_bytes(attest_store(run.store, run.weights, load_private_key(run.private_key), replay_check=False))
