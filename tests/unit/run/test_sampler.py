"""The shuffled-epochs/v1 sampler: pinned permutations, a pure function of (seed, step)."""

from __future__ import annotations

import pytest

from trainwitness.run.sampler import ShuffledEpochSampler, epoch_permutation


def test_first_permutation_for_a_fixed_seed_is_pinned() -> None:
    assert epoch_permutation(42, 0, 10) == [2, 6, 8, 3, 7, 5, 0, 4, 9, 1]
    assert epoch_permutation(0, 0, 20) == [17, 9, 16, 2, 4, 15, 11, 5, 6, 12, 13, 1, 18, 19, 14, 0, 7, 8, 3, 10]


def test_first_batch_is_the_start_of_the_first_permutation() -> None:
    assert ShuffledEpochSampler(num_samples=10, batch_size=3, seed=42).batch_ids(0) == [2, 6, 8]


def test_each_epoch_is_a_permutation_and_epochs_differ() -> None:
    epochs = [epoch_permutation(7, e, 50) for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(50))
    assert epochs[0] != epochs[1] != epochs[2]
    assert epoch_permutation(8, 0, 50) != epochs[0]


def test_batches_walk_the_epoch_and_drop_the_partial_last_batch() -> None:
    sampler = ShuffledEpochSampler(num_samples=10, batch_size=3, seed=42)
    assert sampler.batches_per_epoch == 3
    first_epoch = [sampler.batch_ids(s) for s in range(3)]
    assert sum(first_epoch, []) == epoch_permutation(42, 0, 10)[:9]
    assert sampler.batch_ids(3) == epoch_permutation(42, 1, 10)[:3]


def test_batch_ids_do_not_depend_on_the_order_of_queries() -> None:
    forwards = ShuffledEpochSampler(num_samples=17, batch_size=4, seed=3)
    backwards = ShuffledEpochSampler(num_samples=17, batch_size=4, seed=3)
    expected = [forwards.batch_ids(s) for s in range(20)]
    assert [backwards.batch_ids(s) for s in reversed(range(20))][::-1] == expected


@pytest.mark.parametrize(("batch_size", "seed"), [(0, 1), (11, 1), (3, -1), (3, 2**63)])
def test_invalid_sampler_parameters_are_refused(batch_size: int, seed: int) -> None:
    with pytest.raises(ValueError):
        ShuffledEpochSampler(num_samples=10, batch_size=batch_size, seed=seed)
