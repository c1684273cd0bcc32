"""Features: TA-Lib agrees with textbook formulas, prices enter as ratios, nothing uses the future."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data import pipeline
from hftraining.data.features import FEATURES, build_features, check_specs, compute_features, feature_columns, feature_warmup, parse_spec
from hftraining.data.synth import synth_ohlcv
from hftraining.core.errors import ConfigError

ALL_SPECS = [
    "log_return_1", "log_return_5", "return_1", "return_10", "rsi_14", "macd_12_26_9", "bbands_20_2",
    "volume_ratio_20", "atr_14", "stoch_14_3_3", "obv_20", "volatility_20", "dist_high_20", "dist_low_50",
    "calendar", "hour", "alpha158", "market",
]
WARM = 300  # rows skipped before comparing with the reference (seeds of the recursive averages differ)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synth_ohlcv(1500, seed=3)


def test_every_registered_feature_is_covered():
    assert sorted({parse_spec(s)[0] for s in ALL_SPECS}) == FEATURES.names()


def test_column_names_state_parameters():
    cols = feature_columns(["rsi_7", "macd_5_35_5", "bbands_10_1.5", "stoch_9_2_4", "dist_high_30"])
    assert cols == ["rsi_7", "macd_5_35_5", "macd_signal_5_35_5", "macd_hist_5_35_5", "bb_pos_10_1.5",
                    "bb_width_10_1.5", "stoch_k_9_2_4", "stoch_d_9_2_4", "dist_high_30"]


def test_bad_specs_are_config_errors():
    with pytest.raises(ConfigError, match="unknown feature 'nope_3'"):
        check_specs(["nope_3"])
    with pytest.raises(ConfigError, match="non-numeric parameter"):
        check_specs(["rsi_x"])
    with pytest.raises(ConfigError, match="bad parameters"):
        check_specs(["rsi_14_3_3_3"])


# --- reference implementations: the textbook formulas in plain pandas ---------------------------


def ref_rsi(close: pd.Series, n: int) -> pd.Series:
    d = close.diff()
    gain = d.clip(lower=0).ewm(alpha=1 / n, adjust=False).mean()
    loss = (-d.clip(upper=0)).ewm(alpha=1 / n, adjust=False).mean()
    return 100 - 100 / (1 + gain / loss)


def ref_macd(close: pd.Series, fast: int, slow: int, signal: int):
    line = close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean()
    sig = line.ewm(span=signal, adjust=False).mean()
    return line, sig, line - sig


def ref_bbands(close: pd.Series, n: int, k: float):
    mid = close.rolling(n).mean()
    sd = close.rolling(n).std(ddof=0)
    upper, lower = mid + k * sd, mid - k * sd
    return (close - lower) / (upper - lower), (upper - lower) / mid


def test_rsi_macd_bbands_match_textbook_formulas(frame):
    feats = compute_features(frame, ["rsi_14", "macd_12_26_9", "bbands_20_2"])
    close = frame["close"]
    line, sig, hist = ref_macd(close, 12, 26, 9)
    pos, width = ref_bbands(close, 20, 2)
    ref = {
        "rsi_14": ref_rsi(close, 14),
        "macd_12_26_9": line / close, "macd_signal_12_26_9": sig / close, "macd_hist_12_26_9": hist / close,
        "bb_pos_20_2": pos, "bb_width_20_2": width,
    }
    for col, want in ref.items():
        got = feats[col].to_numpy()[WARM:]
        np.testing.assert_allclose(got, want.to_numpy()[WARM:], rtol=0, atol=1e-6, err_msg=col)
    # the comparison has teeth: a different period is far off
    assert np.abs(feats["rsi_14"].to_numpy()[WARM:] - ref_rsi(close, 15).to_numpy()[WARM:]).max() > 1e-2


def test_other_indicators_match_their_definitions(frame):
    f = compute_features(frame, ["atr_14", "volatility_20", "dist_high_20", "dist_low_20", "return_5", "obv_20"])
    h, l, c, v = (frame[k] for k in ("high", "low", "close", "volume"))
    tr = pd.concat([h - l, (h - c.shift()).abs(), (l - c.shift()).abs()], axis=1).max(axis=1)
    atr = tr.ewm(alpha=1 / 14, adjust=False).mean() / c
    vol = np.log(c).diff().rolling(20).std(ddof=0)
    obv = (np.sign(c.diff()).fillna(0) * v).cumsum()
    ref = {
        "atr_14": atr, "volatility_20": vol, "dist_high_20": c / h.rolling(20).max() - 1,
        "dist_low_20": c / l.rolling(20).min() - 1, "return_5": c / c.shift(5) - 1,
        "obv_20": (obv - obv.shift(20)) / v.rolling(20).sum(),
    }
    for col, want in ref.items():
        np.testing.assert_allclose(f[col].to_numpy()[WARM:], want.to_numpy()[WARM:], rtol=1e-6, atol=1e-9, err_msg=col)


def test_prices_enter_as_ratios_never_levels(frame):
    """Scaling every price by 1000 (or volume by 7) leaves every feature unchanged."""
    base = compute_features(frame, ALL_SPECS)
    scaled = frame.copy()
    scaled[["open", "high", "low", "close"]] *= 1000.0
    scaled["volume"] *= 7.0
    other = compute_features(scaled, ALL_SPECS)
    w = feature_warmup(ALL_SPECS)
    alpha = [c for c in base.columns if c in feature_columns(["alpha158"])]
    rest = [c for c in base.columns if c not in alpha]
    np.testing.assert_allclose(other[rest].to_numpy()[w:], base[rest].to_numpy()[w:], rtol=1e-6, atol=1e-7)
    # Qlib's formulas take log(volume + 1) and add 1e-12 to denominators: scale-free to about 1e-5
    np.testing.assert_allclose(other[alpha].to_numpy()[w:], base[alpha].to_numpy()[w:], rtol=1e-4, atol=1e-6)


def test_features_are_finite_after_warmup_and_warmup_is_dropped(frame):
    feats, first = build_features(frame, ALL_SPECS, "SYN")
    assert first == feature_warmup(ALL_SPECS) == 60  # alpha158's 60-row windows of 1-row changes: the longest look-back
    assert np.isfinite(feats[feature_columns(ALL_SPECS)].to_numpy()).all()
    assert len(feats) == len(frame) - first
    assert (feats["timestamp"].to_numpy() == frame["timestamp"].to_numpy()[first:]).all()


def test_calendar_features_use_the_utc_timestamp():
    f = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-01 23:30:00-05:00"], utc=True)})  # Tue 04:30 UTC
    cal = compute_features(f, ["calendar", "hour"]).iloc[0]
    assert cal["dow_sin"] == pytest.approx(np.sin(2 * np.pi * 1 / 7))
    assert cal["hour_cos"] == pytest.approx(np.cos(2 * np.pi * 270 / 1440))


# --- causality ---------------------------------------------------------------------------------


def _perturb_after(frame: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    """Random but valid new bars for every row after t (prices and volume)."""
    out = frame.copy()
    n = len(frame) - t - 1
    factor = np.exp(rng.normal(0, 0.2, n))
    for col in ("open", "high", "low", "close"):
        out.loc[t + 1 :, col] = out.loc[t + 1 :, col].to_numpy() * factor
    out.loc[t + 1 :, "high"] *= 1.05
    out.loc[t + 1 :, "volume"] = rng.uniform(0, 1e7, n)
    return out


def test_features_never_use_later_rows(frame):
    rng = np.random.default_rng(0)
    base = compute_features(frame, ALL_SPECS).to_numpy()
    for t in rng.integers(60, len(frame) - 2, 8):
        other = compute_features(_perturb_after(frame, int(t), rng), ALL_SPECS).to_numpy()
        np.testing.assert_array_equal(other[: t + 1], base[: t + 1], err_msg=f"t={t}")
        assert not np.allclose(other[t + 1 :], base[t + 1 :], equal_nan=True)  # the change did reach later rows


def test_pipeline_scaled_inputs_never_use_later_rows():
    """Past the end of the training split, changing rows after t changes no scaled feature or window
    input at or before t (the scaler is fit on the training split only)."""
    d = DataConfig(sequence_length=20, prediction_horizon=5, features=["log_return_1", "rsi_14", "macd_12_26_9"])
    frames = {"A": synth_ohlcv(600, seed=1), "B": synth_ohlcv(500, seed=2)}
    base = pipeline.prepare(d, frames=frames)
    rng = np.random.default_rng(1)
    for t in (480, 520, 560):
        changed = dict(frames, A=_perturb_after(frames["A"], t, rng))
        other = pipeline.prepare(d, frames=changed)
        cutoff = frames["A"]["timestamp"].iloc[t].value
        for split in ("train", "val", "test"):
            a, b = base.split(split), other.split(split)
            assert np.array_equal(a.ends, b.ends)
            sym_a = np.array(a.symbols)[a.symbol_ids]
            keep = (a.times <= cutoff) | (sym_a != "A")  # windows whose last input row is at or before t
            idx = np.flatnonzero(keep)
            if len(idx):
                np.testing.assert_array_equal(a.batch(idx)["x"].numpy(), b.batch(idx)["x"].numpy())
                np.testing.assert_array_equal(a.batch(idx)["past"].numpy(), b.batch(idx)["past"].numpy())
        assert not np.array_equal(base.test.features, other.test.features)
