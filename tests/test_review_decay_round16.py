"""The weight-decay check steps each optimizer on a probe; a run seeded before its trainer's check must draw
from NumPy's and Python's generators what it drew without it (Kron draws its rebalancing from NumPy's)."""

import random

import numpy as np
import pytest

from hftraining import optim
from hftraining.core.config import TrainingConfig

pytest.importorskip("pytorch_optimizer")


def test_decay_check_leaves_numpy_and_python_random_streams_alone():
    t = TrainingConfig(optimizer="kron", learning_rate=1e-3, weight_decay=0.05)
    np.random.seed(7)
    random.seed(7)
    expected_np, expected_py = np.random.random(4), [random.random() for _ in range(4)]
    np.random.seed(7)
    random.seed(7)
    optim.check_compatibility(t)  # the trainer's check, after the run's seed
    assert np.random.random(4).tolist() == expected_np.tolist()
    assert [random.random() for _ in range(4)] == expected_py


def test_decay_factor_does_not_depend_on_the_numpy_stream():
    t = TrainingConfig(optimizer="kron", learning_rate=1e-2, weight_decay=0.2)
    factors = set()
    for seed in range(20):
        np.random.seed(seed)
        factors.add(optim.decay_factor(t))
    assert len(factors) == 1
    assert abs(factors.pop() - (1 - 1e-2 * 0.2)) < 1e-5
