"""A symbol of a panel with a hole in its rows (a three-month halt in daily bars, a ten-day outage of
hourly crypto bars): its windows read the bars before and after the hole as consecutive and the return
over it as one bar's. Training and ``data check`` name the hole in a warning and keep it in the report
(``long_gaps``) unless ``data.max_gap`` keeps windows out of it, and so does a forecast whose latest window
reads across one; weekends, holidays, an exchange's week-long closure and overnight gaps of intraday
sessions are no hole. Rows appended to hourly bars since training are dated by the hour they follow, and a
folder's files that look like prices but are not read (``.csv.zip``, ``.csv.xz``) are named."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.data.pipeline import latest_windows, prepare
from hftraining.data.provenance import check_source_rows, data_changes, source_rows
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_ohlcv

FEATURES = ["log_return_1", "rsi_14"]


def _config(**kw) -> DataConfig:
    return DataConfig(sequence_length=20, prediction_horizon=2, features=FEATURES, cache_dir=None, **kw)


def _without(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    t = pd.DatetimeIndex(frame["timestamp"])
    return frame[~((t >= pd.Timestamp(start, tz="UTC")) & (t < pd.Timestamp(end, tz="UTC")))].reset_index(drop=True)


@pytest.fixture(scope="module")
def daily() -> dict[str, pd.DataFrame]:
    """Four business-day symbols 2020–2023; HALT has no row from March to May 2021 (in the training period)."""
    frames = {s: synth_ohlcv(1000, seed=k, start="2020-01-02") for k, s in enumerate(["AAA", "BBB", "CCC", "HALT"])}
    frames["HALT"] = _without(frames["HALT"], "2021-03-01", "2021-06-01")
    return frames


def _gap_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "gaps inside" in r.getMessage()]


def test_training_names_a_three_month_hole_that_windows_read_across(daily, caplog):
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(), daily)
    assert p.report["long_gaps"]["symbols"] == {"HALT": [["2021-02-26T00:00:00+00:00", "2021-06-01T00:00:00+00:00"]]}
    (line,) = _gap_warnings(caplog)
    assert "HALT: no row from 2021-02-26 to 2021-06-01 (95 days)" in line
    assert "data.max_gap" in line and "data_report.json: long_gaps" in line
    # windows do read across it: a training window's rows hold both sides of the hole
    t = p.train.row_times
    assert ((t[p.train.ends] >= pd.Timestamp("2021-06-01", tz="UTC").value)
            & (t[p.train.ends - 10] <= pd.Timestamp("2021-02-26", tz="UTC").value)).any()


def test_max_gap_shorter_than_the_hole_keeps_windows_out_and_says_nothing(daily, caplog):
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(max_gap="7D"), daily)
    assert "long_gaps" not in p.report and not _gap_warnings(caplog)
    with caplog.at_level(logging.WARNING):  # a max_gap longer than the hole keeps windows across it: still said
        p = prepare(_config(max_gap="120D"), daily)
    assert list(p.report["long_gaps"]["symbols"]) == ["HALT"]
    assert "data.max_gap 120D is longer than these gaps" in _gap_warnings(caplog)[-1]


def test_weekends_holidays_and_sessions_are_no_hole(caplog):
    """Business days with a week-long closure (Lunar New Year: 9 days without a row), daily crypto every day,
    New York's hourly sessions (overnight and weekend gaps) and hourly crypto around the clock."""
    closure = _without(synth_ohlcv(600, seed=1, start="2022-01-03"), "2023-01-21", "2023-01-30")
    frames = {"CLOSED": closure, "BTC": synth_ohlcv(800, seed=2, start="2022-01-03", freq="D"),
              "CCC": synth_ohlcv(600, seed=3, start="2022-01-03")}
    hourly = {"SPY": synth_ohlcv(7 * 120, seed=4, start="2024-01-02", freq="1h"),
              "ETH": synth_ohlcv(24 * 40, seed=5, start="2024-01-02", freq="1h", session="24h"),
              "SOL": synth_ohlcv(24 * 40, seed=6, start="2024-01-02", freq="1h", session="24h")}
    with caplog.at_level(logging.WARNING):
        assert "long_gaps" not in prepare(_config(), frames).report
        assert "long_gaps" not in prepare(_config(), hourly).report
    assert not _gap_warnings(caplog)
    hourly["SOL"] = _without(hourly["SOL"], "2024-01-20", "2024-01-30 12:00")  # an exchange's ten-day outage
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(), hourly)
    assert p.report["long_gaps"]["symbols"] == {"SOL": [["2024-01-19T23:00:00+00:00", "2024-01-30T12:00:00+00:00"]]}
    assert "SOL: no row from 2024-01-19 23:00 UTC to 2024-01-30 12:00 UTC (10.5 days)" in _gap_warnings(caplog)[-1]


def _write(folder, frames: dict[str, pd.DataFrame]) -> None:
    folder.mkdir()
    for sym, f in frames.items():
        out = f.assign(timestamp=pd.DatetimeIndex(f["timestamp"]).strftime("%Y-%m-%d"))
        out.to_csv(folder / f"{sym}.csv", index=False)


def test_data_check_names_the_file_with_a_hole(daily, tmp_path, capsys, caplog):
    _write(tmp_path / "prices", daily)
    folder = tmp_path / "prices"
    with caplog.at_level(logging.WARNING):
        assert cli.main(["data", "check", str(folder), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["long_gaps"]
    assert found["symbols"] == {str(folder / "HALT.csv"): [["2021-02-26T00:00:00+00:00", "2021-06-01T00:00:00+00:00"]]}
    (line,) = _gap_warnings(caplog)
    assert f"{folder / 'HALT.csv'}: no row from 2021-02-26 to 2021-06-01 (95 days)" in line
    assert found["why"] == line and "data check --json: long_gaps" in line
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cli.main(["data", "check", str(folder), "--json", "--set", "data.max_gap=7D"]) == 0
    assert "long_gaps" not in json.loads(capsys.readouterr().out) and not _gap_warnings(caplog)


def test_a_forecast_whose_window_reads_across_a_hole_says_so(daily, caplog):
    """A symbol back from a halt: its latest window holds the bars before and after the hole; 20 rows after the
    hole (one window, as data.max_gap would start one) it reads none."""
    pre = prepare(_config(), {s: f for s, f in daily.items() if s != "HALT"}).preprocessing
    back = _without(daily["AAA"], "2023-06-01", "2023-09-01")
    back = back[pd.DatetimeIndex(back["timestamp"]) < pd.Timestamp("2023-09-08", tz="UTC")]  # 5 rows after the hole
    with caplog.at_level(logging.WARNING):
        latest_windows(pre, {"AAA": back, "BBB": daily["BBB"]})
    (line,) = [r.getMessage() for r in caplog.records if "reads across a gap" in r.getMessage()]
    assert "latest window of AAA reads across a gap in its rows (AAA: no row from 2023-05-31 to 2023-09-01 (93 days))" in line
    caplog.clear()
    after = _without(daily["AAA"], "2023-06-01", "2023-09-01")
    after = after.iloc[:pd.DatetimeIndex(after["timestamp"]).searchsorted(pd.Timestamp("2023-09-01", tz="UTC")) + 20]
    with caplog.at_level(logging.WARNING):
        ws = latest_windows(pre, {"AAA": after})
    assert ws.row_times[ws.ends[0] - 19] == pd.Timestamp("2023-09-01", tz="UTC").value
    assert not [r for r in caplog.records if "reads across a gap" in r.getMessage()]


def test_rows_appended_to_hourly_bars_are_dated_by_the_hour():
    """A model of hourly crypto bars whose last training bar is 00:00 UTC: the rows appended since are said to
    come after that hour, not after the whole day (daily bars keep their date)."""
    hourly = synth_ohlcv(24 * 30 + 6, seed=1, start="2024-01-01", freq="1h", session="24h")
    daily_bars = synth_ohlcv(300, seed=2, start="2024-01-01", freq="D")
    trained, _ = build_rows({"BTC": hourly.iloc[:24 * 30 + 1], "DAY": daily_bars.iloc[:295]}, FEATURES, tz="UTC")
    now, _ = build_rows({"BTC": hourly, "DAY": daily_bars}, FEATURES, tz="UTC")
    changes, same = data_changes(check_source_rows(source_rows(trained), "preprocessing.json"), now)
    assert changes == ["BTC: 5 rows after 2024-01-31T00:00:00+00:00", "DAY: 5 rows after 2024-10-21"]
    edited = hourly.copy()
    edited.loc[24 * 30, "close"] *= 1.01  # the last training bar corrected since
    now, _ = build_rows({"BTC": edited.iloc[:24 * 30 + 1]}, FEATURES, tz="UTC")
    changes, _ = data_changes(check_source_rows(source_rows(trained), "preprocessing.json"), now)
    assert changes[0] == "BTC: its rows up to 2024-01-31T00:00:00+00:00 differ from training's (707 rows then, 707 now)"


def test_a_folder_mixing_formats_names_the_files_it_does_not_read(daily, tmp_path, capsys, caplog):
    """A folder of .csv, .csv.gz and .parquet files is read whole; a symbol zipped or xz-compressed beside them
    (Binance's monthly files are .zip) or saved as Excel/TSV is named, by data check and by training, where it
    was left out of the panel without a word. A README beside the files is not."""
    folder = tmp_path / "prices"
    folder.mkdir()
    daily["AAA"].to_csv(folder / "AAA.csv", index=False)
    daily["BBB"].to_csv(folder / "BBB.csv.gz", index=False)
    daily["CCC"].to_parquet(folder / "CCC.parquet", index=False)
    daily["HALT"].to_csv(folder / "HALT.csv.zip", index=False)
    daily["HALT"].to_csv(folder / "XZ.csv.xz", index=False)
    (folder / "README.md").write_text("vendor notes\n")
    with caplog.at_level(logging.WARNING):
        assert cli.main(["data", "check", str(folder), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in got["files"]] == [str(folder / f) for f in ("AAA.csv", "BBB.csv.gz", "CCC.parquet")]
    assert got["unread_files"]["files"] == [str(folder / "HALT.csv.zip"), str(folder / "XZ.csv.xz")]
    assert [r.getMessage() for r in caplog.records if "not read" in r.getMessage()] == [got["unread_files"]["why"]]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(data_dir=str(folder)))
    assert p.report["symbols"] == ["AAA", "BBB", "CCC"]
    assert p.report["unread_files"]["files"] == [str(folder / "HALT.csv.zip"), str(folder / "XZ.csv.xz")]
    (line,) = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
    assert line.startswith(f"data: {folder / 'HALT.csv.zip'}, {folder / 'XZ.csv.xz'}: not read")
    (folder / "HALT.csv.zip").unlink()
    (folder / "XZ.csv.xz").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert "unread_files" not in prepare(_config(data_dir=str(folder))).report
        assert cli.main(["data", "check", str(folder), "--json"]) == 0
    assert "unread_files" not in json.loads(capsys.readouterr().out)
    assert not [r for r in caplog.records if "not read" in r.getMessage()]


def test_a_folder_s_metadata_json_is_not_named_as_an_unread_price_file(tmp_path):
    """A dataset's folder often holds its metadata as JSON (``dataset-metadata.json``): not a price file, so not a
    warning on every run."""
    from hftraining.data.sources import unread_files

    (tmp_path / "AEM.csv").write_text("Date,Close,Volume\n2024-01-02,1,1\n")
    (tmp_path / "dataset-metadata.json").write_text("{}")
    assert unread_files(str(tmp_path)) is None
    (tmp_path / "WPM.txt").write_text("Date,Close,Volume\n2024-01-02,1,1\n")  # Stooq's daily files are .txt
    assert unread_files(str(tmp_path))["files"] == [str(tmp_path / "WPM.txt")]
