"""A spec whose dataset is built when the module is imported, before the verifier can hand it its proven records."""

from __future__ import annotations

from collections.abc import Mapping

from trainwitness.commit.canonical import JSONValue
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import DEFAULTS, digits, load_digits

DATASET = load_digits()  # built at import: it captured no record access


@training_spec(defaults=DEFAULTS)
def early_digits(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    base = digits(hp)
    return TrainingSpec(model=base.model, optimizer=base.optimizer, scheduler=base.scheduler, dataset=DATASET, step=base.step)
