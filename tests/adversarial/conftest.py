"""One short honest run per session (10 segments of 4 steps, a small MLP) for the forgers to corrupt."""

from __future__ import annotations

import pytest

from ..support.forgers import Run, honest_run

SMALL = {"total_steps": 40, "checkpoint_interval": 4, "hidden": 32}


@pytest.fixture(scope="session")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return honest_run(tmp_path_factory.mktemp("attacks-honest"), SMALL)
