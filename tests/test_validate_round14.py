"""The misnamed-columns check's share of rows breaking the OHLC rule under the best order of the price
columns: equal to trying all 24 orders, ties included."""

import itertools

import numpy as np
import pytest

from hftraining.data.validate import least_broken


def _by_orders(p: np.ndarray) -> float:
    return min(float(((q[:, 1] < np.maximum(q[:, 0], q[:, 3])) | (q[:, 2] > np.minimum(q[:, 0], q[:, 3]))).mean())
               for q in (p[:, list(o)] for o in itertools.permutations(range(4))))


@pytest.mark.parametrize("seed", range(8))
def test_least_broken_equals_every_order_tried(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    p = rng.integers(1, 5, size=(n, 4)).astype(float)  # few values: ties within rows are common
    if seed % 2:  # mostly bars in one order (high, low, open, close), some broken
        lo, hi = p.min(axis=1), p.max(axis=1)
        mid = rng.uniform(lo, hi, size=(2, n))
        p = np.stack([hi, lo, mid[0], mid[1]], axis=1)
        flip = rng.random(n) < 0.2
        p[flip] = p[flip][:, ::-1]
    assert least_broken(p) == pytest.approx(_by_orders(p), abs=1e-12)

