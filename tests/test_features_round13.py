"""Feature specs whose windows are not whole numbers of rows, and every feature family on a bundled
file with days without trades, cut at the edges of its windows.

A spec's windows and periods count rows: ``rsi_14.5`` has no meaning. TA-Lib truncated the fraction
without a word, so ``rsi_14.5`` trained on RSI(14) under the name ``rsi_14.5`` and ``market_2.5`` wrote
MKT_RET2; ``stoch_14.5_3_3`` passed the config check and then failed with a TypeError on the first
window of one price. Each is a one-line error naming the spec (exit 2), as a lag below 1 is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.errors import ConfigError
from hftraining.data.features import (FEATURES, build_features, check_specs, compute_features, feature_columns,
                                      market_columns, parse_spec)
from hftraining.data.io import sample_data_dir
from hftraining.data.synth import synth_ohlcv, write_synth

FRACTIONAL = ["rsi_14.5", "macd_12.5_26_9", "macd_12_26_9.5", "bbands_20.5_2", "volume_ratio_20.5", "atr_14.5",
              "stoch_14.5_3_3", "stoch_14_3.5_3", "obv_20.5", "volatility_20.5", "dist_high_20.5", "dist_low_20.5",
              "market_2.5", "market_5_10.5", "return_1.5", "log_return_2.5"]


@pytest.mark.parametrize("spec", FRACTIONAL)
def test_a_window_that_is_not_a_whole_number_of_rows_is_a_config_error_naming_the_spec(spec):
    with pytest.raises(ConfigError) as e:
        check_specs([spec])
    msg = str(e.value)
    assert msg.startswith("data.features: ") and spec in msg and "whole number" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("spec", ["rsi_14.5", "market_2.5"])
def test_the_command_line_refuses_a_fractional_window_in_one_line_with_exit_2(tmp_path, capsys, spec):
    """Accepted before: ``rsi_14.5`` wrote RSI(14) under its name, ``market_2.5`` the columns of ``market_2``."""
    write_synth(tmp_path / "d", 1, 120)
    code = cli.main(["data", "features", str(tmp_path / "d"), "--out", str(tmp_path / "f.csv"),
                     "--set", f"features=[{spec}]", "--set", "cache_dir=null"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and spec in err and "whole number" in err, err
    assert not (tmp_path / "f.csv").exists()


def test_a_fractional_stochastic_window_on_bars_of_one_price_is_the_config_error_not_a_type_error():
    """The flat-window branch of ``stoch`` sliced by the window: a TypeError on the first suspension,
    after the spec had passed the config check on bars that move."""
    frame = synth_ohlcv(200, seed=2)
    frame.loc[80:120, ["open", "high", "low", "close"]] = frame.loc[79, "close"]
    with pytest.raises(ConfigError, match=r"stoch_14\.5_3_3: .*whole number"):
        build_features(frame, ["stoch_14.5_3_3"], "HALT")


def test_the_market_columns_refuse_a_fractional_window_when_the_panel_fills_them():
    returns = np.log(np.linspace(1.0, 1.1, 10))
    with pytest.raises(ConfigError, match="whole numbers"):
        market_columns(returns, np.arange(10), [2.5])


def test_whole_windows_written_as_decimals_and_fractional_band_widths_are_kept():
    """``rsi_14.0`` is RSI(14) (the spec parser reads it as 14); a band width is a number of standard
    deviations and may be a fraction (``bbands_10_1.5``)."""
    frame = synth_ohlcv(150, seed=4)
    check_specs(["rsi_14.0", "bbands_10_1.5", "market_5.0"])
    got = compute_features(frame, ["rsi_14.0", "bbands_10_1.5"])
    np.testing.assert_array_equal(got["rsi_14"], compute_features(frame, ["rsi_14"])["rsi_14"])
    assert feature_columns(["bbands_10_1.5"]) == ["bb_pos_10_1.5", "bb_width_10_1.5"]
    assert np.isfinite(got.to_numpy()[20:]).all()


# --- every family on a bundled file: windows at their edges, days without trades ------------------

EDGE_SPECS = {"log_return": ["log_return_1"], "return": ["return_1", "return_60"], "rsi": ["rsi_2", "rsi_60"],
              "macd": ["macd_2_3_2"], "bbands": ["bbands_2_1", "bbands_60_2"], "volume_ratio": ["volume_ratio_1",
              "volume_ratio_2"], "atr": ["atr_1"], "stoch": ["stoch_1_1_1", "stoch_2_1_1"], "obv": ["obv_2"],
              "volatility": ["volatility_2"], "dist_high": ["dist_high_2"], "dist_low": ["dist_low_2"],
              "calendar": ["calendar"], "hour": ["hour"], "alpha158": ["alpha158"], "market": ["market_1_2"]}


def _nio() -> pd.DataFrame:
    """The first 140 rows of the bundled NIO file, with 4 days without trades (halts, as HIMS has)."""
    f = pd.read_csv(sample_data_dir() / "NIO.csv").iloc[:140].rename(columns={"Date": "timestamp"})
    f["timestamp"] = pd.to_datetime(f["timestamp"], utc=True)
    f["volume"] = f["volume"].astype(np.float64)
    f.loc[[58, 59, 60, 95], "volume"] = 0.0
    return f.reset_index(drop=True)


def test_the_edge_specs_cover_the_registry():
    assert sorted(EDGE_SPECS) == FEATURES.names()
    assert all(parse_spec(s)[0] == k for k, specs in EDGE_SPECS.items() for s in specs)


@pytest.mark.parametrize("family", sorted(EDGE_SPECS))
def test_no_row_moves_when_the_bundled_file_is_cut_at_the_edges_of_its_windows(family):
    """Cut after the first row, where the shortest windows fill, on the days without trades and around
    the 60-row windows' first full row: every kept row has the same bits as on the whole file."""
    specs = EDGE_SPECS[family]
    f = _nio()
    full = compute_features(f, specs, tz="America/New_York").to_numpy()
    for t in (0, 1, 2, 3, 58, 59, 60, 61, 95, 96):
        cut = compute_features(f.iloc[: t + 1].reset_index(drop=True), specs, tz="America/New_York").to_numpy()
        assert np.array_equal(cut, full[: t + 1], equal_nan=True), f"{specs}: rows up to {t}"
