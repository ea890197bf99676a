"""A hostile training spec: the digits workload, whose step also reaches for the network or writes
outside its scratch directory (or, with ``attack=read``, that reads a file of its own when it is
built). Loaded by entry point ``tests.support.specs.hostile_spec:hostile``."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import torch

from trainwitness.commit.canonical import JSONValue
from trainwitness.data.datasets import Batch
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import DEFAULTS, digits

HOSTILE_DEFAULTS: dict[str, JSONValue] = {
    **DEFAULTS, "total_steps": 8, "checkpoint_interval": 4, "hidden": 16, "attack": "none", "port": 0, "path": "",
}


@training_spec(defaults=HOSTILE_DEFAULTS)
def hostile(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    if hp["attack"] == "read":  # not hostile: code that reads a file of its own (a vocabulary, say) when built
        Path(str(hp["path"])).read_bytes()
    honest = digits(hp)

    def step(batch: Batch) -> torch.Tensor:
        if hp["attack"] == "network":  # e.g. exfiltrating the auditor's files
            socket.create_connection(("127.0.0.1", int(hp["port"])), timeout=5).close()  # type: ignore[arg-type]
        elif hp["attack"] in ("write", "remount-write"):  # e.g. planting a file in the auditor's home
            if hp["attack"] == "remount-write":  # first try to undo a read-only mount
                subprocess.run(["mount", "-o", "remount,rw,bind", "/"], check=False, capture_output=True)
            Path(str(hp["path"])).write_text("written by the training code\n")
        return honest.step(batch)

    return TrainingSpec(model=honest.model, optimizer=honest.optimizer, scheduler=honest.scheduler, dataset=honest.dataset, step=step)
