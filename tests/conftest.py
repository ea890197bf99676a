"""Shared fixtures: one short honest digits run, recorded and signed once per session, copied per test.

The helpers behind them (``RecordedRun``, ``record_and_sign``, ``DIGITS``) live in ``tests/support/runs.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .support.runs import RecordedRun, record_and_sign


@pytest.fixture(scope="session")
def _recorded_digits(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    return record_and_sign(tmp_path_factory.mktemp("digits-run"))


@pytest.fixture
def digits_run(_recorded_digits: RecordedRun, tmp_path: Path) -> RecordedRun:
    """A private copy of an honest, signed short digits run: tests may tamper with it freely."""
    return _recorded_digits.copied_to(tmp_path / "run")
