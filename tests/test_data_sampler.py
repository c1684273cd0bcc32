"""The training sampler: every window once per epoch, the same order at any world size, and a
resumed sampler continues with the batches an uninterrupted one draws — for the materialised
numpy permutation and for the per-batch Feistel permutation of large training splits."""

import numpy as np
import pytest

from hftraining.data import windows
from hftraining.data.windows import EpochSampler, FeistelPermutation


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 4097, 12_345, 1 << 18])
def test_feistel_permutation_is_a_bijection(n):
    out = FeistelPermutation(n, [7, 0])(np.arange(n))
    np.testing.assert_array_equal(np.sort(out), np.arange(n))


def test_feistel_permutation_is_seeded_and_shuffles():
    n = 100_000
    a, b, c = (FeistelPermutation(n, s)(np.arange(n)) for s in ([1, 0], [1, 0], [1, 1]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(np.corrcoef(np.arange(n), a)[0, 1]) < 0.02  # no trace of the original order
    assert abs(a[: n // 10].mean() / n - 0.5) < 0.02  # the first tenth of an epoch samples the whole split


@pytest.fixture(params=["numpy", "feistel"])
def kind(request, monkeypatch):
    if request.param == "feistel":
        monkeypatch.setattr(windows, "MATERIALIZED_MAX", 10)
    return request.param


def _epoch(sampler: EpochSampler) -> list[np.ndarray]:
    out = [sampler.next_batch()]
    while not sampler.at_epoch_end():
        out.append(sampler.next_batch())
    return out


def test_every_window_once_per_epoch_and_ranks_split_the_global_batch(kind):
    n, B = 1003, 16
    one = _epoch(EpochSampler(n, 2 * B, seed=3))
    drawn = np.concatenate(one)
    assert len(drawn) == (n // (2 * B)) * 2 * B and len(np.unique(drawn)) == len(drawn)  # drop_last: no repeats
    ranks = [_epoch(EpochSampler(n, B, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    for k, batch in enumerate(one):  # two ranks with batch B draw exactly the one-process batches of 2B
        np.testing.assert_array_equal(np.concatenate([ranks[0][k], ranks[1][k]]), batch)
    assert sorted(np.concatenate(_epoch(EpochSampler(n, B, seed=3, drop_last=False))).tolist()) == list(range(n))


def test_a_restored_sampler_continues_the_same_batches(kind):
    a = EpochSampler(500, 32, seed=11)
    for _ in range(23):  # into the second epoch
        a.next_batch()
    b = EpochSampler(500, 32, seed=11)
    b.load_state_dict(a.state_dict())
    for _ in range(30):
        np.testing.assert_array_equal(a.next_batch(), b.next_batch())
    assert a.epoch == b.epoch >= 2


def test_fewer_training_windows_than_processes_is_a_one_line_error():
    """Each rank takes its slice of every global batch: with 1 window and 2 ranks the epoch held 0
    windows and every draw came back empty, forever."""
    from hftraining.core.errors import DataError

    with pytest.raises(DataError, match="1 window, fewer than the 2 processes"):
        EpochSampler(1, 8, seed=0, rank=1, world_size=2)
    assert len(EpochSampler(2, 8, seed=0, rank=1, world_size=2).next_batch()) == 1
