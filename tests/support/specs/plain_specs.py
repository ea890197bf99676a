"""A spec for tests of the Python API (``trainwitness.record``): the digits workload, importable by its module name."""

from __future__ import annotations

from collections.abc import Mapping

from trainwitness.commit.canonical import JSONValue
from trainwitness.run.spec import TrainingSpec, training_spec
from trainwitness.workloads.digits import DEFAULTS, digits


@training_spec(defaults=DEFAULTS)
def plain_digits(hp: Mapping[str, JSONValue]) -> TrainingSpec:
    return digits(hp)
