"""trainwitness: signed, spot-checkable proofs that weights came from the declared training run.

A short tour (the names below are the public API; everything else is internal)::

    import trainwitness as tw

    # Upstream: a training spec builds model, optimizer, scheduler, dataset and step from its
    # hyperparameters (see trainwitness.workloads.digits for a complete one).
    @tw.training_spec(defaults={"seed": 0, "data_seed": 0, "batch_size": 32,
                                "total_steps": 100, "checkpoint_interval": 10, "lr": 0.05})
    def my_run(hp): ...

    # A script that keeps its own loop and runs as `python train.py` (README, "Bring your own
    # training"): recorded, replayed twice and signed when the block ends.
    with tw.record(my_run, out="run/", device="cpu") as run:
        for batch in run.data_loader(num_workers=2):   # the declared sample order
            run.step(batch)                            # the spec's step, committed

    # Or record a spec by entry point (`trainwitness train`), then sign (docs/FORMAT.md sections 4-7).
    tw.generate_keypair(Path("keys/trainwitness.key"), Path("keys/trainwitness.pub"))
    run = tw.record_run("mypkg.train:my_run", {"lr": 0.1}, Path("run/"), Path("model.safetensors"))
    envelope = tw.attest_store(Path("run/"), Path("model.safetensors"), tw.load_private_key(Path("keys/trainwitness.key")))

    # Auditor: verify() raises tw.Rejected (a VerificationError) when the evidence contradicts the
    # claim, and tw.InputError when it could not be read; it returns the report only on ACCEPT.
    report = tw.verify(Path("attestation.json"), Path("run/"), Path("model.safetensors"),
                       Path("keys/trainwitness.pub"), tw.VerifyOptions(segments=10))

    # Lineage: a fine-tune of an attested run (record_run(..., parent=Path("upstream/"))), verified
    # as a chain with every link's signer trusted by name (README, "Lineage").
    chain = tw.verify_chain(tw.LinkFiles.at(Path("child/")), tw.Keyring.from_sources(keyring=Path("keys.toml")),
                            tw.VerifyOptions(segments=10), parents=[Path("upstream/")])

Where each byte is hashed, signed, stored and replayed: ``trainwitness.commit`` (formats, torch-free),
``trainwitness.identity`` (keys, DSSE, code identity), ``trainwitness.tensors`` (state digests,
checkpoints), ``trainwitness.run`` (the step loop both sides run), ``trainwitness.data``,
``trainwitness.prover`` and ``trainwitness.verifier``.

Names are imported on first use (PEP 562), so ``import trainwitness.commit.statement`` alone never
imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # writing a training program
    "training_spec": "trainwitness.run.spec",
    "TrainingSpec": "trainwitness.run.spec",
    "current_device": "trainwitness.run.device",
    "EMA": "trainwitness.run.ema",
    "DataSource": "trainwitness.data.datasets",
    "SourceDataset": "trainwitness.data.datasets",
    "TensorDataset": "trainwitness.data.datasets",
    "DeclaredBatchSampler": "trainwitness.data.loading",
    "BatchDataset": "trainwitness.data.loading",
    "frozen_input": "trainwitness.run.inputs",
    # recording and signing
    "record": "trainwitness.prover.session",
    "Recording": "trainwitness.prover.session",
    "record_run": "trainwitness.prover",
    "attest_store": "trainwitness.prover",
    "Declarations": "trainwitness.prover",
    "RecordedRun": "trainwitness.prover",
    "generate_keypair": "trainwitness.identity.signing",
    "load_private_key": "trainwitness.identity.signing",
    "load_public_key": "trainwitness.identity.signing",
    "Keyring": "trainwitness.identity.keyring",
    "LinkFiles": "trainwitness.commit.link",
    # verifying
    "verify": "trainwitness.verifier.verify",
    "verify_run": "trainwitness.verifier",
    "VerifyOptions": "trainwitness.verifier",
    "Report": "trainwitness.verifier",
    "verify_chain": "trainwitness.verifier.chain",
    "ChainReport": "trainwitness.verifier.chain",
    "Statement": "trainwitness.commit.statement",
    # errors
    "TrainwitnessError": "trainwitness.errors",
    "VerificationError": "trainwitness.errors",
    "Rejected": "trainwitness.errors",
    "InputError": "trainwitness.errors",
    "NotReplayableError": "trainwitness.errors",
}

__all__ = [
    "__version__",
    "training_spec",
    "TrainingSpec",
    "current_device",
    "EMA",
    "DataSource",
    "SourceDataset",
    "TensorDataset",
    "DeclaredBatchSampler",
    "BatchDataset",
    "record",
    "Recording",
    "frozen_input",
    "record_run",
    "attest_store",
    "Declarations",
    "RecordedRun",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "Keyring",
    "LinkFiles",
    "verify",
    "verify_run",
    "VerifyOptions",
    "Report",
    "verify_chain",
    "ChainReport",
    "Statement",
    "TrainwitnessError",
    "VerificationError",
    "Rejected",
    "InputError",
    "NotReplayableError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainwitness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily above
    from trainwitness.commit.link import LinkFiles
    from trainwitness.commit.statement import Statement
    from trainwitness.data.datasets import DataSource, SourceDataset, TensorDataset
    from trainwitness.data.loading import BatchDataset, DeclaredBatchSampler
    from trainwitness.errors import InputError, NotReplayableError, Rejected, TrainwitnessError, VerificationError
    from trainwitness.identity.keyring import Keyring
    from trainwitness.identity.signing import generate_keypair, load_private_key, load_public_key
    from trainwitness.prover import Declarations, RecordedRun, attest_store, record_run
    from trainwitness.prover.session import Recording, record
    from trainwitness.run.device import current_device
    from trainwitness.run.ema import EMA
    from trainwitness.run.inputs import frozen_input
    from trainwitness.run.spec import TrainingSpec, training_spec
    from trainwitness.verifier import Report, VerifyOptions, verify_run
    from trainwitness.verifier.chain import ChainReport, verify_chain
    from trainwitness.verifier.verify import verify
