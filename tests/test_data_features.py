"""Features: TA-Lib agrees with textbook formulas, prices enter as ratios, nothing uses the future."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig, load_config
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


NY = "America/New_York"


def _bars(*utc: str) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.to_datetime(list(utc), utc=True)})


def test_hour_and_calendar_features_read_the_exchange_clock_in_data_timezone():
    """A New York 09:30 bar is 14:30 UTC in January and 13:30 UTC in July (daylight saving): with
    data.timezone America/New_York its hour feature is one value all year, under UTC it moves."""
    jan, jul = "2026-01-06 14:30", "2026-07-07 13:30"  # both 09:30 in New York
    local = compute_features(_bars(jan, jul), ["hour"], tz=NY)
    np.testing.assert_array_equal(local.iloc[0], local.iloc[1])
    assert local["hour_cos"].iloc[0] == pytest.approx(np.cos(2 * np.pi * (9 * 60 + 30) / 1440))
    for utc in (compute_features(_bars(jan, jul), ["hour"], tz="UTC"), compute_features(_bars(jan, jul), ["hour"])):
        assert not np.allclose(utc.iloc[0], utc.iloc[1])
    # Friday 21:00 in New York is Saturday 01:00 UTC: the local weekday is Friday
    fri = compute_features(_bars("2026-07-11 01:00"), ["calendar"], tz=NY).iloc[0]
    assert fri["dow_sin"] == pytest.approx(np.sin(2 * np.pi * 4 / 7))
    sat = compute_features(_bars("2026-07-11 01:00"), ["calendar"], tz="UTC").iloc[0]
    assert sat["dow_sin"] == pytest.approx(np.sin(2 * np.pi * 5 / 7))
    # every other feature, and the timestamps kept beside the features, are the same instants in UTC
    f = synth_ohlcv(400, seed=4, start="2026-03-02", freq="30min")
    other = [s for s in ALL_SPECS if s not in ("calendar", "hour")]
    np.testing.assert_array_equal(compute_features(f, other, tz=NY).to_numpy(), compute_features(f, other).to_numpy())
    feats, _ = build_features(f, ["log_return_1", "hour"], "SYN", tz=NY)
    assert str(feats["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_data_timezone_defaults_to_utc_and_an_unknown_zone_is_one_line_naming_the_key():
    assert DataConfig().timezone == "UTC" and load_config(None, [f"data.timezone={NY}"]).data.timezone == NY
    for bad in ("Mars/Base", "utc", "America", '""', "/etc/localtime", "../x"):
        with pytest.raises(ConfigError) as e:
            load_config(None, [f"data.timezone={bad}"])
        # an empty value is said to be empty (an unset variable?), any other unknown zone to be no IANA name
        assert str(e.value).startswith("data.timezone:") and ("IANA" in str(e.value) or "empty" in str(e.value))
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="^data.timezone: 'Mars/Base'"):  # a hand-edited model folder's value
        compute_features(_bars("2026-01-06 14:30"), ["hour"], tz="Mars/Base")


def test_a_model_folder_written_without_data_timezone_means_utc():
    pre = pipeline.prepare(DataConfig(sequence_length=20, prediction_horizon=3, features=["log_return_1", "hour"]),
                           frames={"A": synth_ohlcv(300, seed=1, freq="30min")}).preprocessing
    saved = pre.to_dict()
    assert saved["data"]["timezone"] == "UTC"  # recorded in preprocessing.json
    del saved["data"]["timezone"]  # as an older version wrote it
    assert pipeline.Preprocessing.from_dict(saved).data_config().timezone == "UTC"


def test_the_feature_store_key_holds_data_timezone(tmp_path):
    from hftraining.data.rows import RowsNeeded
    from hftraining.data.sources import units
    from hftraining.data.store import store_key

    synth_ohlcv(300, seed=1, freq="30min").to_csv(tmp_path / "A.csv", index=False)
    d = DataConfig(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), features=["log_return_1", "hour"])
    keys = {tz: store_key(units(d), dataclasses.replace(d, timezone=tz), RowsNeeded.of(d)) for tz in ("UTC", NY, "Europe/London")}
    assert len(set(keys.values())) == 3


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


@pytest.mark.parametrize("tz", [None, "America/New_York"])
def test_features_never_use_later_rows(frame, tz):
    rng = np.random.default_rng(0)
    base = compute_features(frame, ALL_SPECS, tz=tz).to_numpy()
    for t in rng.integers(60, len(frame) - 2, 8):
        other = compute_features(_perturb_after(frame, int(t), rng), ALL_SPECS, tz=tz).to_numpy()
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
