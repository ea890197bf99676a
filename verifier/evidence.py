"""The committed evidence, read from an untrusted store and checked against the signed roots.

Every leaf handed out by ``Evidence`` has had its inclusion proof verified against the attested
root; every checkpoint file handed out has had its state digest checked against its leaf.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from trainwitness.commit.hashing import format_digest, parse_digest
from trainwitness.commit.hints import StepHints, hints_leaf, hints_leaves, read_hints
from trainwitness.commit.merkle import MerkleTree, verify_inclusion
from trainwitness.commit.statement import TrainingClaim
from trainwitness.commit.store import AnyStepRecord, CheckpointRecord, RunIndex, find_checkpoint, read_index
from trainwitness.errors import CommitmentError, MissingInputError, ReplayMismatchError
from trainwitness.tensors.checkpoint import CheckpointLayout
from trainwitness.tensors.checkpoint_reader import read_checkpoint
from trainwitness.tensors.state import FlatState, state_digest

__all__ = ["Evidence"]


@dataclass
class Evidence:
    store: Path
    claim: TrainingClaim
    index: RunIndex
    checkpoint_bytes_read: int = 0
    layout: CheckpointLayout | None = None  # what every checkpoint file must declare (``expect_layout``)

    @classmethod
    def open(cls, store: Path, claim: TrainingClaim) -> Evidence:
        """Read the index and recompute every signed root (hints too in exact mode; no checkpoint file is read).

        An index that is a proper prefix of the attested run (fewer steps, its checkpoints where the
        run's first ones are) is a store still being written, or copied before training finished:
        ``MissingInputError``, since nothing can be decided from it.
        """
        evidence = cls(store=store, claim=claim, index=read_index(store))
        evidence._check_complete()
        for name, tree in evidence._trees.items():
            committed = claim.commitments[name]
            if tree.size != committed.size:
                raise CommitmentError(f"store index has {tree.size} {name} leaves, the attestation commits to {committed.size}")
            if format_digest(tree.root) != committed.root:
                raise CommitmentError(f"store index does not match the attested {name} root")
        steps = [c.step for c in evidence.index.checkpoints]
        expected = claim.checkpoint_steps
        if steps != expected:  # equal in number (the tree sizes matched): name the first one out of place
            j = next(j for j, (found, wanted) in enumerate(zip(steps, expected, strict=True)) if found != wanted)
            raise CommitmentError(
                f"checkpoint {j} is at step {steps[j]}; {claim.total_steps} steps at interval {claim.checkpoint_interval} put it at step {expected[j]}"
            )
        return evidence

    def _check_complete(self) -> None:
        claim, index = self.claim, self.index
        if len(index.steps) >= claim.total_steps:
            return
        interval = claim.checkpoint_interval
        if [c.step for c in index.checkpoints] == [min(j * interval, claim.total_steps) for j in range(len(index.checkpoints))]:
            checkpoints = -(-claim.total_steps // interval) + 1
            raise MissingInputError(
                f"store {self.store} is incomplete: its index holds {len(index.steps)} of the {claim.total_steps} attested steps "
                f"and {len(index.checkpoints)} of {checkpoints} checkpoints (training still running, or the store was copied "
                "before it finished): give the complete store (--store)"
            )

    def expect_layout(self, rebuilt: FlatState, optimizer: torch.optim.Optimizer) -> None:
        """From now on, refuse any checkpoint file whose header disagrees with the run's layout (before allocation).

        ``rebuilt``: the state built from the signed seed (checkpoint 0's, recomputed); ``optimizer``:
        the run's, whose parameters bound the optimizer state a later checkpoint may hold.
        """
        sizes = [p.numel() for group in optimizer.param_groups for p in group["params"]]
        self.layout = CheckpointLayout.of(rebuilt.tensors, sizes)

    @cached_property
    def _trees(self) -> dict[str, MerkleTree]:
        trees = {
            "checkpoints": MerkleTree(self.index.checkpoint_leaves()),
            "batches": MerkleTree(self.index.batch_leaves()),
            "rng": MerkleTree(self.index.rng_leaves()),
        }
        if self.claim.exact is not None:  # exact mode: the hints tree, one leaf per step
            trees["hints"] = MerkleTree(hints_leaves(self._hints))
        return trees

    @cached_property
    def _hints(self) -> list[StepHints]:
        return read_hints(self.store, self.claim.total_steps) if self.claim.exact is not None else []

    def hints(self, s: int) -> StepHints:
        """Exact mode: step s's hints, proven against the signed hints root."""
        hints = self._hints[s]
        self._proven("hints", hints_leaf(s, hints), s)
        return hints

    def _proven(self, tree: str, leaf: bytes, position: int) -> None:
        """Verify the leaf's inclusion proof standalone against the signed root."""
        root = parse_digest(self.claim.commitments[tree].root, f"{tree} root")
        verify_inclusion(root, leaf, self._trees[tree].proof(position))

    def checkpoint(self, i: int) -> CheckpointRecord:
        record = self.index.checkpoints[i]
        self._proven("checkpoints", record.leaf(), i)
        return record

    def step(self, s: int) -> AnyStepRecord:
        record = self.index.steps[s]
        self._proven("batches", record.batch_leaf(), s)
        self._proven("rng", record.rng_leaf(), s)
        return record

    def load_checkpoint(self, i: int) -> FlatState:
        """Checkpoint i, accepted only if its (reconstructed) contents hash to the committed leaf.

        A delta checkpoint is rebuilt from its keyframe; every state along the chain is checked
        against its own committed digest, so a corrupt link is caught and named.
        """

        def check(j: int, flat: FlatState) -> None:
            if state_digest(flat) != self.checkpoint(j).state_digest:
                relpath = find_checkpoint(self.store, self.index.checkpoints[j].step)
                raise ReplayMismatchError(f"checkpoint file {relpath} does not hash to its committed state digest (tampered)")

        steps = [c.step for c in self.index.checkpoints]
        flat, read = read_checkpoint(self.store, steps, i, check, layout=self.layout)
        self.checkpoint_bytes_read += read
        return flat
