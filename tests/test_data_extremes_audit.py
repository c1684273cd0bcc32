"""Features of extreme but valid bars: a penny stock with huge volumes, a price constant for 500 rows
and no volume at all give finite features; prices near float64's limits, and any value the model
cannot read (not finite, or beyond float32 once cast), are a one-line error naming the symbol, the
feature, the bar's timestamp and its close and volume, never "too few rows", never more rows taken
for warm-up, never an inf in the training rows."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data import pipeline
from hftraining.data.features import FEATURES, build_features, compute_features, feature_warmup, parse_spec
from hftraining.data.synth import synth_ohlcv, write_synth

PRICES = ["open", "high", "low", "close"]
# one spec of every registered feature (tests/test_data_features_audit.py checks each family's causality)
EVERY = ["log_return_1", "return_3", "rsi_14", "macd_12_26_9", "bbands_20_2", "volume_ratio_20", "atr_14",
         "stoch_14_3_3", "obv_20", "volatility_20", "dist_high_20", "dist_low_20", "calendar", "hour", "alpha158",
         "market"]


def test_the_specs_cover_the_registry():
    assert sorted({parse_spec(s)[0] for s in EVERY}) == FEATURES.names()


def _times(frame: pd.DataFrame, k: float) -> pd.DataFrame:
    return frame.assign(**{c: frame[c] * k for c in PRICES})


@pytest.mark.parametrize("k", [1e-302, 1e-200, 1e298, 1e305])
def test_prices_near_float64_s_limits_are_an_error_naming_the_feature_and_the_close_not_too_few_rows(k):
    """Prices of 1e-300 or 1e307 (the bars of a price near 100 times k): Bollinger's variance underflows
    (bb_pos was a constant 0.5 and bb_width 0, silently) or overflows, and Alpha158's and MACD's sums
    overflow, which read as "too few rows (300) to compute the features"."""
    frame = _times(synth_ohlcv(300, seed=4), k)
    with pytest.raises(DataError) as e:
        with np.errstate(all="ignore"):
            build_features(frame, EVERY, "EXT")
    msg = str(e.value)
    warm = feature_warmup(EVERY)
    assert msg.startswith("EXT: feature ") and "is not finite at " + frame["timestamp"].iloc[warm].isoformat() in msg, msg
    assert f"close {frame['close'].iloc[warm]:.6g}" in msg and "too extreme" in msg, msg
    assert "too few rows" not in msg and "\n" not in msg


def test_bollinger_keeps_its_values_where_tiny_closes_share_a_window_with_ordinary_ones():
    """Only windows whose closes are all tiny lose the variance: a window with ordinary closes too
    keeps TA-Lib's values."""
    frame = synth_ohlcv(300, seed=4)
    frame.loc[150, PRICES] = 1e-300
    got = compute_features(frame, ["bbands_20_2"]).to_numpy()
    assert np.isfinite(got[19:]).all() and got[150, 1] > 0


@pytest.mark.parametrize("case", ["penny_stock_huge_volume", "constant_price_500_rows", "volume_always_0"])
def test_plausible_extremes_give_finite_features_after_the_warm_up(case):
    frame = synth_ohlcv(600, seed=5)
    if case == "penny_stock_huge_volume":
        frame = _times(frame, 1e-4 / 100).assign(volume=frame["volume"] * 1e6)  # 0.0001 a share, 1e12 shares
    elif case == "constant_price_500_rows":
        frame.loc[50:549, PRICES] = 50.0
    else:
        frame["volume"] = 0.0
    block, first = build_features(frame, EVERY, "EXT")
    values = block.iloc[:, 2:].to_numpy()
    assert first == feature_warmup(EVERY) and np.isfinite(values).all()
    assert np.isfinite(values.astype(np.float32)).all()  # as the rows the model reads hold them


def test_bollinger_s_underflow_check_never_uses_later_rows():
    """Which rows lose Bollinger's variance is decided from each row's own window: changing or cutting
    the rows after t leaves every value up to t as it was (NaN or not)."""
    spec = "bbands_20_2"
    frame = _times(synth_ohlcv(200, seed=6), 1e-250)
    frame.loc[100:, PRICES] *= 1e250  # an ordinary level from row 100 on
    base = compute_features(frame, [spec]).to_numpy()
    assert np.isnan(base[60:100]).all() and np.isfinite(base[119:]).all()
    rng = np.random.default_rng(0)
    for t in (0, 1, 70, 99, 110, 150):
        later = frame.copy()
        later.loc[t + 1 :, PRICES] *= rng.uniform(1e-260, 1e10)  # later bars at another level
        np.testing.assert_array_equal(compute_features(later, [spec]).to_numpy()[: t + 1], base[: t + 1])
        cut = compute_features(frame.iloc[: t + 1].reset_index(drop=True), [spec]).to_numpy()
        np.testing.assert_array_equal(cut, base[: t + 1])


def _tiny_volume(frame: pd.DataFrame, row: int) -> pd.DataFrame:
    """Volumes near 1e27 and one bar of 1e-35: VMA5 there is about 1e39, finite in float64."""
    out = frame.assign(volume=frame["volume"] * 1e21)
    out.loc[row, "volume"] = 1e-35
    return out


def test_a_feature_beyond_float32_is_an_error_naming_the_symbol_feature_and_date_not_an_inf_in_training():
    """The rows the model trains on are float32: a value finite in float64 but beyond float32's range
    was an inf there (every scaled value of that feature NaN once in the training split)."""
    frames = {"A": _tiny_volume(synth_ohlcv(400, seed=1), 300), "B": synth_ohlcv(400, seed=2)}
    when = frames["A"]["timestamp"].iloc[300].isoformat()
    d = DataConfig(sequence_length=10, prediction_horizon=2, features=["log_return_1", "alpha158"])
    with pytest.raises(DataError) as e:
        pipeline.prepare(d, frames=frames)
    msg = str(e.value)
    assert msg.startswith("A: feature VMA") and when in msg and "float32" in msg and "volume 1e-35" in msg, msg
    assert "\n" not in msg


def test_a_feature_that_overflows_float64_is_named_with_its_cause_not_too_few_rows():
    frame = synth_ohlcv(300, seed=7)
    frame["volume"] *= 1e294  # volumes near 1e300: their squares overflow
    with pytest.raises(DataError) as e:
        with np.errstate(all="ignore"):
            build_features(frame, EVERY, "BIG")
    msg = str(e.value)
    warm = feature_warmup(EVERY)
    assert msg.startswith("BIG: feature VSTD") and frame["timestamp"].iloc[warm].isoformat() in msg, msg
    assert "too extreme" in msg and "too few rows" not in msg and "\n" not in msg


def test_rows_after_the_warm_up_that_cannot_be_computed_are_never_taken_for_more_warm_up():
    """Huge volumes on the first 100 bars made VSTD60 inf up to row 159: those rows were dropped as
    if they were warm-up, silently; they are an error naming the first of them."""
    frame = synth_ohlcv(400, seed=8)
    frame.loc[:99, "volume"] *= 1e294
    when = re.escape(frame["timestamp"].iloc[feature_warmup(["rsi_14", "alpha158"])].isoformat())
    with pytest.raises(DataError, match=r"^FIRST: feature VSTD\d+ is not finite at " + when):
        with np.errstate(all="ignore"):
            build_features(frame, ["rsi_14", "alpha158"], "FIRST")


def test_too_few_rows_says_so_with_the_warm_up():
    frame = synth_ohlcv(50, seed=9)
    with pytest.raises(DataError, match=r"^SHORT: too few rows \(50\) .* warm-up takes 60 rows"):
        build_features(frame, ["alpha158"], "SHORT")


def test_the_command_line_says_it_in_one_line_with_exit_2(tmp_path, capsys):
    write_synth(tmp_path / "d", 2, 300)
    path = tmp_path / "d" / "SYN001.csv"
    _tiny_volume(pd.read_csv(path), 250).to_csv(path, index=False)
    code = cli.main(["data", "features", str(tmp_path / "d"), "--out", str(tmp_path / "f.csv"),
                     "--set", "features=[alpha158]", "--set", "cache_dir=null"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "SYN001: feature VMA" in err and "float32" in err, err
    assert not (tmp_path / "f.csv").exists()
