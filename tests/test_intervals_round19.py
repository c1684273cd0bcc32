"""Conformal calibration given a realised label that is not finite: a missing label is no calibration
score. Taken as one, it ranked above every bound (as a NaN forecast does) and widened the step's
radius without a word, a 90% level unbounded though 17 of its 20 windows were known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hftraining.models.intervals import Calibration


@pytest.mark.parametrize("method", ["split", "aci"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_calibration_label_that_is_not_finite_is_refused_naming_the_window_and_step(method, bad):
    rng = np.random.default_rng(0)
    true = rng.standard_normal((20, 2))
    pred = np.zeros_like(true)
    true[[3, 5, 7], 1] = bad
    with pytest.raises(ValueError, match=r"calibration window 3 .* not finite at step 2 .*3 of the 20 windows"):
        Calibration.fit(pred, true, [0.8, 0.9], method, gamma=0.05)


def test_a_calibration_label_that_is_not_finite_is_refused_by_cqr():
    rng = np.random.default_rng(1)
    true = rng.standard_normal((30, 1))
    q = np.stack([np.full_like(true, -1.0), np.zeros_like(true), np.full_like(true, 1.0)], axis=-1)
    true[0, 0] = math.nan
    with pytest.raises(ValueError, match="calibration window 0 "):
        Calibration.fit(q[..., 1], true, [0.9], "cqr", quantiles=q, q_levels=[0.05, 0.5, 0.95])


def test_finite_labels_calibrate_as_before_on_the_known_windows():
    """The windows a user keeps (those with a known label) give the split radius of those windows alone:
    the ⌈(n + 1)·level⌉-th smallest absolute residual, finite at 90% with 17 windows."""
    rng = np.random.default_rng(2)
    true = rng.standard_normal((17, 1))
    cal = Calibration.fit(np.zeros_like(true), true, [0.9])
    s = np.sort(np.abs(true[:, 0]))
    assert cal.radius[0, 0] == s[math.ceil(18 * 0.9) - 1] and math.isfinite(cal.radius[0, 0])
