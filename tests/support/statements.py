"""A valid statement built by hand, every field filled: for parser, fuzz and binding-table tests."""

from __future__ import annotations

from trainwitness.commit.distributed import DataParallelRun
from trainwitness.commit.hashing import format_digest
from trainwitness.commit.hints import DEFAULT_EXACT
from trainwitness.commit.statement import FrozenInput, ParentLink, Statement, TrainingClaim, TreeCommitment

DIGEST = format_digest(bytes(range(32)))

ENVIRONMENT = {
    "python": "3.11.7", "implementation": "cpython", "torch": "2.13.0+cpu", "numpy": "2.4.6", "trainwitness": "0.1.0",
    "platform": "Linux", "machine": "x86_64", "device": "cpu", "torch_threads": 1, "deterministic_algorithms": True,
    "cudnn_benchmark": False, "matmul_allow_tf32": False,
}


def statement(*, exact: bool = False, packages: bool = False, distributed: bool = False, lineage: bool = False) -> Statement:
    """8 steps at interval 4 over a 16-sample one-source manifest; optionally in exact mode, with a sibling
    package, as a 2-rank data-parallel run, or fine-tuned from a parent with a frozen input (and a declared training time)."""
    trees = {"checkpoints": TreeCommitment(DIGEST, 3), "batches": TreeCommitment(DIGEST, 8), "rng": TreeCommitment(DIGEST, 8)}
    if exact:
        trees["hints"] = TreeCommitment(DIGEST, 8)
    claim = TrainingClaim(
        code={
            "entry_point": "pkg.mod:spec", "source_root": "pkg", "tree_digest": DIGEST, "file_count": 2,
            "git_commit": "ab" * 20 if packages else None, "source_uri": "https://example.org/pkg.git" if packages else None,
            "packages": [{"name": "models", "tree_digest": DIGEST, "file_count": 1}] if packages else [],
            "distributions": [{"name": "numpy", "version": "2.4.6"}] if packages else [],
        },
        environment=dict(ENVIRONMENT),
        hyperparameters={"seed": 0, "data_seed": 1, "batch_size": 4, "total_steps": 8, "checkpoint_interval": 4, "lr": 0.1},
        data={
            "dataset": "fuzz",
            "manifest": {
                "format": "trainwitness-manifest/v1", "num_samples": 16, "root": DIGEST, "total_bytes": 64,
                "sources": [{
                    "archive_sha256": DIGEST if packages else None, "compression": None, "description": "fuzz", "format": "lines",
                    "license": "CC0-1.0", "name": "fuzz", "num_samples": 16, "total_bytes": 64, "uri": "fuzz.txt",
                }],
            },
            "num_samples": 16,
            "sampler": {"batch_size": 4, "name": "shuffled-epochs/v1", "num_samples": 16, "seed": 1},
        },
        commitments=trees,
        final_state_digest=DIGEST,
        final_weights_digest=DIGEST,
        weights_license="MIT" if packages else None,
        exact=DEFAULT_EXACT if exact else None,
        distributed=DataParallelRun(world_size=2, backend="gloo") if distributed else None,
        parent=ParentLink("finetune", DIGEST, DIGEST, None, ("head.weight",), ()) if lineage else None,
        inputs={"teacher": FrozenInput(DIGEST, DIGEST)} if lineage else {},
        declared_training_seconds=12.5 if lineage else None,
    )
    return Statement("model.safetensors", "ab" * 32, claim)
