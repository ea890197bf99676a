"""Every forger in the catalogue produces a signed, well-formed proof, and the verifier rejects it.

Sampled forgeries are rejected exactly when the verifier's draw includes a forged segment (checked
seed by seed) and always with ``--all``; forgeries outside replay are rejected on every draw.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.verifier.draw import choose_segments, detection_probability

from ..support.forgers import ATTACKS, Attack, Run, forged_segments, honest_run, measure, verdict
from .conftest import SMALL

SAMPLE = 3
FRACTION = 0.2
# The check each forgery must be caught by: the verifier must name the right cause, not just fail.
EXPECTED_CHECK = {
    "skipped-steps": "replay",
    "interpolated-checkpoints": "replay",
    "crafted-batch-ids": "data",
    "crafted-batch-contents": "data",
    "steering-updates": "replay",
    "reordered-batches": "data",
    "substituted-samples": "data",
    "rng-swapped": "replay",
    "undeclared-lr-change": "replay",
    "undeclared-batch-size": "data",
    "mostly-forged": "replay",
    "fine-tuned-last-checkpoint": "replay",
    "fine-tuned-weights-signed": "final-weights",
    "attestation-reused": "final-weights",
    "re-signed-other-key": "signature",
    "merkle-duplicated-last-leaf": "commitments",
    "merkle-different-leaf-count": "input",
    "published-weights-swapped": "replay",
    "float64-momentum-start": "replay",
    "false-file-count": "code",
    "false-dataset-name": "data",
    "unknown-signed-field": "input",
    "bytecode-planted": "replay",
    "sibling-package-swapped": "code",
}


def _seed_where(segment_count: int, forged: frozenset[int], hit: bool) -> int:
    return next(s for s in range(10_000) if bool(set(choose_segments(segment_count, SAMPLE, s)) & forged) == hit)


def test_catalogue_names_its_expected_checks() -> None:
    assert set(EXPECTED_CHECK) == {a.name for a in ATTACKS}


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_verify_all_rejects_forgery(attack: Attack, honest: Run, tmp_path: Path) -> None:
    forgery = attack.build(honest, tmp_path, forged_segments(attack, honest.segment_count(), FRACTION))
    assert forgery.attestation.read_bytes() != honest.attestation.read_bytes() or forgery.weights.read_bytes() != honest.weights.read_bytes()
    accepted, check = verdict(forgery, None, None)
    assert not accepted
    assert check == EXPECTED_CHECK[attack.name]


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a.sampled], ids=lambda a: a.name)
def test_sampled_forgery_is_caught_exactly_when_a_forged_segment_is_drawn(attack: Attack, honest: Run, tmp_path: Path) -> None:
    m = honest.segment_count()
    forgery = attack.build(honest, tmp_path, forged_segments(attack, m, FRACTION))
    assert forgery.forged
    assert verdict(forgery, SAMPLE, _seed_where(m, forgery.forged, hit=True)) == (False, EXPECTED_CHECK[attack.name])
    if len(forgery.forged) <= m - SAMPLE:
        # The honest limit of sampling: a draw that misses every forged segment accepts.
        assert verdict(forgery, SAMPLE, _seed_where(m, forgery.forged, hit=False)) == (True, "")


@pytest.mark.parametrize("name", ["steering-updates", "crafted-batch-contents"])
def test_detection_rate_matches_prediction(name: str, honest: Run, tmp_path: Path) -> None:
    attack = next(a for a in ATTACKS if a.name == name)
    m = honest.segment_count()
    forgery = attack.build(honest, tmp_path, forged_segments(attack, m, FRACTION))
    seeds = range(40)
    result = measure(forgery, m, SAMPLE, seeds)
    assert result.disagreements == 0  # every seed's verdict is the exact prediction for its draw
    predicted = detection_probability(m, SAMPLE, len(forgery.forged) / m)
    sigma = math.sqrt(predicted * (1 - predicted) / len(seeds))
    assert abs(result.rate - predicted) <= 4 * sigma + 1e-9


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_honest_runs_over_training_seeds_are_never_rejected(seed: int, tmp_path: Path) -> None:
    run = honest_run(tmp_path, {**SMALL, "seed": seed, "data_seed": seed + 100})
    assert verdict(run, None, None) == (True, "")
    assert measure(run, run.segment_count(), SAMPLE, range(5)).rate == 0.0


def test_cli_rejects_forgery_with_exit_1_and_names_the_check(honest: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    attack = next(a for a in ATTACKS if a.name == "steering-updates")
    forgery = attack.build(honest, tmp_path, forged_segments(attack, honest.segment_count(), FRACTION))
    args = ["verify", str(forgery.attestation), "--store", str(forgery.store), "--weights", str(forgery.weights),
            "--key", str(forgery.public_key), "--all", "--sandbox", "off"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "REJECT" in out and "[FAIL] replay" in out
