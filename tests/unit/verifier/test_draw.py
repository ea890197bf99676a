"""The segment draw: the last segment on every draw, the others uniform; the detection figure it supports."""

from __future__ import annotations

import itertools
import math

import pytest

from trainwitness.verifier.draw import choose_segments, detection_probability


@pytest.mark.parametrize("seed", range(50))
def test_the_last_segment_is_in_every_draw(seed: int) -> None:
    drawn = choose_segments(40, 5, seed)
    assert drawn[-1] == 39 and len(drawn) == 6 and drawn == sorted(set(drawn))
    assert all(0 <= i < 39 for i in drawn[:-1])


def test_a_draw_of_all_the_others_is_every_segment() -> None:
    assert choose_segments(6, 5, 0) == list(range(6)) == choose_segments(6, None) == choose_segments(6, 99, 1)
    assert choose_segments(1, 1, 0) == [0]


def test_the_others_are_drawn_uniformly() -> None:
    counts = [0] * 9
    trials = 4000
    for seed in range(trials):
        for i in choose_segments(10, 3, seed)[:-1]:
            counts[i] += 1
    expected = trials * 3 / 9
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts)


def test_the_draw_is_repeatable_from_a_seed_and_refuses_nonsense() -> None:
    assert choose_segments(40, 5, 7) == choose_segments(40, 5, 7)
    with pytest.raises(ValueError):
        choose_segments(0, 1, 0)
    with pytest.raises(ValueError):
        choose_segments(10, 0, 0)


def test_detection_probability_is_for_a_forger_who_leaves_the_last_segment_honest() -> None:
    # M = 40, f = 10%: F = 4 forged among the 39 segments before the last, N = 5 drawn among those.
    assert detection_probability(40, 5, 0.1) == pytest.approx(1 - math.comb(35, 5) / math.comb(39, 5))
    assert detection_probability(40, 5, 0.1) >= 1 - (1 - 4 / 39) ** 5
    assert detection_probability(40, 39, 0.01) == 1.0  # every segment replayed
    assert detection_probability(4, 1, 1.0) == 1.0  # the last one is forged too: always caught
    assert detection_probability(1, 1, 0.5) == 1.0


def test_detection_probability_matches_an_exhaustive_count() -> None:
    # Every draw of N among the M - 1 others, forged = the first F of them (placement does not matter).
    m, n, f = 9, 3, 0.25
    forged = math.ceil(f * m)
    draws = list(itertools.combinations(range(m - 1), n))
    caught = sum(any(i < forged for i in d) for d in draws)
    assert detection_probability(m, n, f) == pytest.approx(caught / len(draws))
