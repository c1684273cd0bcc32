"""The model zoo and its intervals at their edges: LightGBM on fewer training windows than its bagging fraction
draws one from; an interval level printed as itself (99.5%, not 100%)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hftraining.core.config import ModelConfig
from hftraining.data.windows import WindowSet
from hftraining.models import build_model


def _windows(features: np.ndarray, returns: np.ndarray, seq_len: int, horizon: int) -> WindowSet:
    """Every whole window of one symbol's rows ``features`` (N, F) and ``returns`` (N,)."""
    n = len(returns)
    ends = np.arange(seq_len - 1, n - horizon, dtype=np.int64)
    return WindowSet(features=features.astype(np.float32), returns=returns.astype(np.float32), ends=ends,
                     symbol_ids=np.zeros(len(ends), np.int32), segment_first=np.zeros(1, np.int64),
                     row_times=np.arange(n, dtype=np.int64) * 86_400 * 10**9, row_close=np.exp(np.cumsum(returns)),
                     symbols=["A"], seq_len=seq_len, horizon=horizon)


def lightgbm_windows(windows: int) -> tuple[WindowSet, WindowSet, int, int]:
    """``windows`` training windows and 34 validation windows of 2 random features, 5 rows long, 2 steps ahead."""
    rng = np.random.default_rng(0)
    seq_len, horizon = 5, 2
    n = seq_len + horizon + windows - 1
    train = _windows(rng.normal(size=(n, 2)), rng.normal(size=n), seq_len, horizon)
    val = _windows(rng.normal(size=(40, 2)), rng.normal(size=40), seq_len, horizon)
    return train, val, seq_len, horizon


@pytest.mark.parametrize("windows, fraction", [(1, 0.8), (150, 0.005)])
def test_lightgbm_fits_on_fewer_windows_than_its_bagging_fraction_draws_one_from(windows, fraction):
    # LightGBM bags int(fraction × windows) windows a round: none, and the fit (a run's own model, or the fitted
    # baseline beside every run, after the model had trained) ended in "LightGBMError: Check failed: (num_data) > (0)"
    pytest.importorskip("lightgbm")
    train, val, seq_len, horizon = lightgbm_windows(windows)
    assert len(train) == windows
    m = build_model(ModelConfig(type="lightgbm", ridge_lags=5, lightgbm_bagging_fraction=fraction), 2, horizon, seq_len)
    fit = m.fit_windows(train, val)
    assert fit["splits"] == 0  # one window a round: no split has min_data_in_leaf windows on each side
    b = val.batch(np.arange(len(val)))
    with torch.no_grad():
        pred = m(b["x"], None, b["past"]).prediction
    assert pred.shape == (len(val), horizon) and torch.isfinite(pred).all()
    if windows == 1:  # the one window's own targets, whatever the inputs
        torch.testing.assert_close(pred, train.batch(np.arange(1))["y"].expand(len(val), -1))


def test_an_interval_level_is_labelled_as_itself_not_rounded_to_another():
    # percent labels had no digit after the point unless two levels printed alike: a 99.5% interval was reported
    # as "100%" (an interval that always covers) and 97.5% as "98%", in the log line, the table, the report and
    # the model card; eval.json's keys kept six significant digits, and 0.9999999 was keyed "1"
    from hftraining.eval.intervals import format_intervals, interval_report, level_labels

    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 1))
    dates, sid = np.repeat(np.arange(100), 2), np.tile(np.arange(2), 100)
    bounds = {0.995: (np.full_like(y, -2.81), np.full_like(y, 2.81)), 0.975: (np.full_like(y, -2.24), np.full_like(y, 2.24))}
    rep = interval_report(bounds, y, dates, sid, "split")
    assert "99.5%: " in rep["sentence"] and "97.5%: " in rep["sentence"] and "100%" not in rep["sentence"]
    lines = format_intervals(rep)
    assert lines[1].startswith("  99.5%  coverage") and lines[2].startswith("  97.5%  coverage")
    # a level too few calibration windows bound says which level, and how many windows it needs
    rep = interval_report({0.995: (np.full_like(y, -np.inf), np.full_like(y, np.inf))}, y, dates, sid, "split")
    assert "fewer than the 199 windows a 99.5% interval needs" in rep["sentence"]
    assert level_labels([0.8, 0.9], percent=True) == ["80%", "90%"]  # whole percents stay as they were
    assert level_labels([0.001], percent=True) == ["0.1%"]
    for levels in ([0.9999999], [0.123456789, 0.5]):
        assert [float(k) for k in level_labels(levels)] == levels  # eval.json's keys read back as the levels
