"""The committed evidence, read from an untrusted store and checked against the signed roots.

Every leaf handed out by ``Evidence`` has had its inclusion proof verified against the attested
root; every checkpoint file handed out has had its state digest checked against its leaf.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from trainwitness.commit.hashing import format_digest, parse_digest
from trainwitness.commit.hints import StepHints, hints_leaf, hints_leaves, read_hints
from trainwitness.commit.merkle import MerkleTree, verify_inclusion
from trainwitness.commit.statement import TrainingClaim
from trainwitness.commit.store import AnyStepRecord, CheckpointRecord, RunIndex, find_checkpoint, read_index
from trainwitness.errors import CommitmentError, ReplayMismatchError
from trainwitness.tensors.delta import read_checkpoint
from trainwitness.tensors.state import FlatState, state_digest

__all__ = ["Evidence"]


@dataclass
class Evidence:
    store: Path
    claim: TrainingClaim
    index: RunIndex
    checkpoint_bytes_read: int = 0

    @classmethod
    def open(cls, store: Path, claim: TrainingClaim) -> Evidence:
        """Read the index and recompute every signed root (hints too in exact mode; no checkpoint file is read)."""
        evidence = cls(store=store, claim=claim, index=read_index(store))
        for name, tree in evidence._trees.items():
            committed = claim.commitments[name]
            if tree.size != committed.size:
                raise CommitmentError(f"store index has {tree.size} {name} leaves, the attestation commits to {committed.size}")
            if format_digest(tree.root) != committed.root:
                raise CommitmentError(f"store index does not match the attested {name} root")
        steps = [c.step for c in evidence.index.checkpoints]
        if steps != claim.checkpoint_steps:
            raise CommitmentError(f"checkpoints are at steps {steps[:5]}..., not every {claim.checkpoint_interval} steps")
        return evidence

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
        flat, read = read_checkpoint(self.store, steps, i, check)
        self.checkpoint_bytes_read += read
        return flat
