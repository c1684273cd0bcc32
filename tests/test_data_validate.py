"""Readers and validation rules: every row accounted for, no fill from the future, one-line errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data import io
from hftraining.data.synth import synth_ohlcv
from hftraining.data.pipeline import read_frames
from hftraining.data.sources import load_and_validate
from hftraining.data.validate import validate_frame
from hftraining.core.errors import DataError


def raw(n: int = 200, seed: int = 0) -> pd.DataFrame:
    f = synth_ohlcv(n, seed=seed)
    return f.assign(timestamp=f["timestamp"].dt.strftime("%Y-%m-%d"))


def test_ffill_takes_the_previous_row_and_never_a_later_one():
    df = raw(10)
    df["close"] = df["close"].astype(object)
    df.loc[0, "close"] = "oops"  # nothing before it: dropped, not back-filled
    df.loc[4, "close"] = np.nan
    df.loc[5, "close"] = np.inf
    out, rep = validate_frame(df, DataConfig(invalid_values="ffill", ohlc_violations="clip"), "f.csv")
    assert len(out) == 9
    want = out["close"].iloc[2]  # input row 3 as read (pandas < 3.1 may read a 17-digit decimal 1 ulp off)
    assert want == pytest.approx(float(df.loc[3, "close"]), rel=1e-15)
    assert out["close"].iloc[3] == want and out["close"].iloc[4] == want  # rows 4 and 5 of the input
    assert rep.rules["non_numeric"]["dropped"] == 1 and rep.rules["non_numeric"]["rows"] == [2]
    assert rep.rules["nan_or_inf"]["repaired"] == 2 and rep.rules["nan_or_inf"]["rows"] == [6, 7]


def test_drop_and_error_policies():
    df = raw(30)
    df.loc[7, "volume"] = -1.0
    out, rep = validate_frame(df, DataConfig(), "f.csv")
    assert len(out) == 29 and rep.rules["negative_volume"]["rows"] == [9]
    with pytest.raises(DataError, match=r"^f\.csv: line 9: negative volume -1\.0 in column 'volume'"):
        validate_frame(df, DataConfig(invalid_values="error"), "f.csv")


def test_duplicates_keep_first_or_last():
    df = raw(20)
    df = pd.concat([df.iloc[:5], df.iloc[[4]].assign(close=123.0, high=200.0), df.iloc[5:]], ignore_index=True)
    first, rep1 = validate_frame(df, DataConfig(), "f")
    last, rep2 = validate_frame(df, DataConfig(duplicate_timestamps="last"), "f")
    assert first["close"].iloc[4] != 123.0 and last["close"].iloc[4] == 123.0
    assert rep1.rules["duplicate_timestamp"]["rows"] == [7] and rep2.rules["duplicate_timestamp"]["rows"] == [6]
    with pytest.raises(DataError, match="line 7: duplicate timestamp"):
        validate_frame(df, DataConfig(duplicate_timestamps="error"), "f")


def test_unsorted_sort_or_drop():
    # line 5 (row 5) before rows 3, 4: that one row is out of place
    df = raw(20).iloc[[0, 1, 2, 5, 3, 4, 6, 7]].reset_index(drop=True)
    sorted_, rep = validate_frame(df, DataConfig(), "f")
    assert sorted_["timestamp"].is_monotonic_increasing and len(sorted_) == 8
    assert rep.rules["unsorted_timestamp"] == {"dropped": 0, "repaired": 1, "flagged": 0, "rows": [5]}
    dropped, rep = validate_frame(df, DataConfig(unsorted_timestamps="drop"), "f")
    assert len(dropped) == 7 and dropped["timestamp"].is_monotonic_increasing


def test_rows_in_equals_kept_plus_dropped_under_random_damage():
    rng = np.random.default_rng(5)
    for trial in range(20):
        df = raw(150, seed=trial).astype({c: object for c in ("open", "high", "low", "close", "volume")})
        for _ in range(25):
            r, c = rng.integers(0, len(df)), rng.choice(["timestamp", "open", "high", "low", "close", "volume"])
            df.loc[r, c] = rng.choice(["x", "", np.nan, np.inf, -3.0, 0.0, 1e9, "2020-13-45"])
        dup = df.sample(5, random_state=trial)
        df = pd.concat([df, dup]).sample(frac=1, random_state=trial).reset_index(drop=True)
        cfg = DataConfig(invalid_values=rng.choice(["drop", "ffill"]), ohlc_violations=rng.choice(["clip", "drop"]),
                         jumps=rng.choice(["flag", "drop"]), unsorted_timestamps=rng.choice(["sort", "drop"]))
        out, rep = validate_frame(df, cfg, "f")
        d = rep.to_dict()
        assert d["rows_in"] == len(df) == d["rows_kept"] + d["rows_dropped"]
        assert len(out) == d["rows_kept"]
        assert out["timestamp"].is_monotonic_increasing and out["timestamp"].is_unique
        v = out[["open", "high", "low", "close", "volume"]].to_numpy()
        assert np.isfinite(v).all() and (v[:, :4] > 0).all() and (v[:, 4] >= 0).all()
        assert (out["high"] >= out[["open", "close"]].max(axis=1)).all()
        assert (out["low"] <= out[["open", "close"]].min(axis=1)).all()
        json.dumps(d)


def test_readers_long_file_folder_glob_parquet_and_aliases(tmp_path):
    a, b = raw(120, 1), raw(130, 2)
    long = pd.concat([a.assign(Ticker="AAA"), b.assign(Ticker="BBB")])
    long = long.rename(columns={"timestamp": "Datetime", "close": "CLOSE", "volume": "Vol"})
    long.to_csv(tmp_path / "long.csv", index=False)
    (tmp_path / "pq").mkdir()
    c = synth_ohlcv(140, seed=3)
    c["timestamp"] = c["timestamp"].dt.tz_convert("Asia/Tokyo")
    c.set_index("timestamp").to_parquet(tmp_path / "pq" / "CCC.parquet")
    cfg = DataConfig(data_dir=str(tmp_path / "long.csv"), sequence_length=20)
    frames, report = load_and_validate(cfg)
    assert sorted(frames) == ["AAA", "BBB"] and len(frames["BBB"]) == 130
    assert report["rows_in"] == 250 and report["files"][0]["symbols"] == {"AAA": 120, "BBB": 130}
    frames, _ = load_and_validate(dataclasses.replace(cfg, data_dir=str(tmp_path / "pq")))
    ts = frames["CCC"]["timestamp"]
    assert str(ts.dt.tz) == "UTC" and ts.iloc[0] == c["timestamp"].iloc[0]  # same instant, now in UTC
    frames, _ = load_and_validate(dataclasses.replace(cfg, data_dir=str(tmp_path / "*" / "*.parquet"), symbols=["CCC"]))
    assert list(frames) == ["CCC"]
    with pytest.raises(DataError, match="data.symbols: 'ZZZ' not found"):
        load_and_validate(dataclasses.replace(cfg, symbols=["ZZZ"]))


def test_adj_close_rule_and_utc_offsets_convert(tmp_path):
    """Close and Adj Close: adjusted by default (open/high/low scaled by the row's ratio), Close
    with data.price_adjustment=raw; the report says which."""
    df = raw(120).rename(columns={"close": "Close"})
    df["Adj Close"] = df["Close"] / np.linspace(1, 2, len(df))
    df["timestamp"] = [f"{d} 09:30:00-05:00" for d in df["timestamp"]]
    df.to_csv(tmp_path / "X.csv", index=False)
    cfg = DataConfig(data_dir=str(tmp_path / "X.csv"))
    frames, report = load_and_validate(cfg)
    frame = frames["X"]
    ratio = df["Adj Close"] / df["Close"]
    assert np.allclose(frame["close"], df["Adj Close"]) and np.allclose(frame["open"], df["open"] * ratio)
    assert np.allclose(frame["low"], df["low"] * ratio) and np.allclose(frame["volume"], df["volume"])
    assert report["files"][0]["close_column"]["used"] == "Adj Close"
    rawf, report = load_and_validate(dataclasses.replace(cfg, price_adjustment="raw"))
    assert np.allclose(rawf["X"]["close"], df["Close"]) and np.allclose(rawf["X"]["open"], df["open"])
    assert "data.price_adjustment=raw" in report["files"][0]["close_column"]["why"]
    frame = rawf["X"]
    assert (frame["timestamp"].dt.hour == 14).all() and (frame["timestamp"].dt.minute == 30).all()


def test_short_symbols_are_skipped_and_reported(tmp_path):
    raw(200, 1).to_csv(tmp_path / "LONG.csv", index=False)
    raw(40, 2).to_csv(tmp_path / "SHORT.csv", index=False)
    frames, report = read_frames(DataConfig(data_dir=str(tmp_path)))
    assert list(frames) == ["LONG"]
    assert "SHORT" in report["too_few_rows"] and "40 rows kept, 98 needed" in report["too_few_rows"]["SHORT"]
    with pytest.raises(DataError, match="no symbol has enough rows"):
        read_frames(DataConfig(data_dir=str(tmp_path / "SHORT.csv")))


def test_validated_frames_keep_their_contract():
    frames, _ = load_and_validate(DataConfig())
    assert len(frames) == 10
    for f in frames.values():
        assert list(f.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
        assert str(f["timestamp"].dtype) == "datetime64[ns, UTC]" and f["timestamp"].is_monotonic_increasing


def test_integer_yyyymmdd_dates_are_dates_and_epochs_stay_epochs(tmp_path):
    df = raw(120)
    days = pd.to_datetime(df["timestamp"])
    df["timestamp"] = days.dt.strftime("%Y%m%d").astype(int)  # e.g. 20200102, as some exports write
    df.to_csv(tmp_path / "Y.csv", index=False)
    frame = load_and_validate(DataConfig(data_dir=str(tmp_path / "Y.csv")))[0]["Y"]
    assert list(frame["timestamp"].dt.strftime("%Y%m%d").astype(int)) == list(df["timestamp"])
    # a date that does not exist is NaT (then reported by the validator), not a 1970 epoch
    assert io.parse_timestamps(pd.Series([20240102, 20240230])).isna().tolist() == [False, True]
    # epoch seconds and milliseconds are unchanged
    assert io.parse_timestamps(pd.Series([1704153600])).iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert io.parse_timestamps(pd.Series([1704153600000])).iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")


def test_a_timestamp_outside_the_nanosecond_range_is_a_bad_timestamp_row(tmp_path, capsys):
    from hftraining.cli import main

    df = raw(150)
    df.loc[3, "timestamp"] = "9999-01-01"
    df.loc[8, "timestamp"] = "2300-06-01"
    df.to_csv(tmp_path / "X.csv", index=False)
    frames, report = load_and_validate(DataConfig(data_dir=str(tmp_path)))
    rule = report["files"][0]["rules"]["bad_timestamp"]
    assert rule["dropped"] == 2 and rule["rows"] == [5, 10]  # file lines (the header is line 1)
    assert len(frames["X"]) == 148
    assert main(["data", "check", str(tmp_path / "X.csv")]) == 0
    assert "bad_timestamp: 2 dropped (lines 5, 10)" in capsys.readouterr().out


def test_one_malformed_yyyymmdd_cell_is_one_bad_timestamp_not_a_file_of_1970_epochs(tmp_path):
    df = raw(120)
    df["timestamp"] = pd.to_datetime(df["timestamp"]).dt.strftime("%Y%m%d").astype(int)
    want = pd.to_datetime(df["timestamp"].astype(str), utc=True)
    df.loc[30, "timestamp"] = 2020061  # a digit short (line 32); a fraction is no date either (line 52)
    df = df.astype({"timestamp": float})
    df.loc[50, "timestamp"] = df.loc[50, "timestamp"] + 0.5
    df.to_csv(tmp_path / "Y.csv", index=False)
    frames, report = load_and_validate(DataConfig(data_dir=str(tmp_path / "Y.csv")))
    frame = frames["Y"]
    assert list(frame["timestamp"]) == list(want.drop(index=[30, 50]))  # every other row keeps its date
    assert report["files"][0]["rules"] == {"bad_timestamp": {"dropped": 2, "repaired": 0, "flagged": 0, "rows": [32, 52]}}
    # the bulk of the column decides: mostly epoch seconds stays epoch seconds
    got = io.parse_timestamps(pd.Series([1704153600, 1704240000, 20240103]))
    assert got.iloc[0] == pd.Timestamp("2024-01-02", tz="UTC") and got.iloc[2].year == 1970
