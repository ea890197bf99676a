"""trainwitness: signed, spot-checkable proofs that weights came from the declared training run.

The public API, for a training script that keeps its own loop (see README, "Bring your own training")::

    import trainwitness as tw

    @tw.training_spec(defaults={"seed": 0, "data_seed": 1, "batch_size": 32, "total_steps": 500,
                                "checkpoint_interval": 50, "lr": 1e-3})
    def build(hp):
        ...  # model, optimizer, scheduler and dataset from hp; step(batch) -> loss
        return tw.TrainingSpec(model=model, optimizer=optimizer, scheduler=scheduler, dataset=dataset, step=step)

    if __name__ == "__main__":
        with tw.record(build, out="run/") as run:
            for batch in run.data_loader(num_workers=2):
                run.step(batch)

Names are imported on first use (PEP 562), so ``import trainwitness.commit.statement`` needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "training_spec": "trainwitness.run.spec",
    "TrainingSpec": "trainwitness.run.spec",
    "current_device": "trainwitness.run.device",
    "EMA": "trainwitness.run.ema",
    "DataSource": "trainwitness.data.datasets",
    "SourceDataset": "trainwitness.data.datasets",
    "TensorDataset": "trainwitness.data.datasets",
    "DeclaredBatchSampler": "trainwitness.data.loading",
    "BatchDataset": "trainwitness.data.loading",
    "record": "trainwitness.prover.session",
    "Recording": "trainwitness.prover.session",
    "record_run": "trainwitness.prover.train",
    "attest_store": "trainwitness.prover.attest",
    "verify_run": "trainwitness.verifier.verify",
    "VerifyOptions": "trainwitness.verifier.verify",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainwitness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
