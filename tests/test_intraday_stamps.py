"""Intraday stamps that silently split or shift the panel.

- Intraday files stamped at different phases of their bar spacing (hourly bars at :00 in one file and
  :30 in the others) never share a date with the others: a warning names them, in training's report
  and in ``data check``, as daily bars stamped at different times of day are (``mixed_stamps``); bars
  that do share their stamps (missing bars, daylight saving time, 4-hour bars, a 5-minute file among
  1-minute files, 24/7 markets) are not named.
- Intraday stamps written without a zone, read as UTC, under a ``data.timezone`` other than UTC: a
  warning names the files and the zone (``zoneless_stamps``); not for daily dates or stamps with an offset.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging

import pandas as pd

from hftraining.core.config import DataConfig
from hftraining.data.sources import load_and_validate
from hftraining.data.synth import synth_ohlcv

NY = "America/New_York"


def _bars(folder, name: str, stamps: list[pd.Timestamp], seed: int, zone: bool = True) -> None:
    """``stamps`` (tz-aware) written with their offset, or (``zone`` False) as naive local times."""
    f = synth_ohlcv(len(stamps), seed=seed)
    f["timestamp"] = [t.isoformat() if zone else t.strftime("%Y-%m-%d %H:%M:%S") for t in stamps]
    f.to_csv(folder / f"{name}.csv", index=False)


def _session(hours: list[tuple[int, int]], days: int = 150, start: str = "2024-01-02", zone: str = NY) -> list[pd.Timestamp]:
    """Local (hour, minute) stamps of each business day, across the March change of daylight saving time."""
    return [(d + pd.Timedelta(hours=h, minutes=m)).tz_localize(zone)
            for d in pd.bdate_range(start, periods=days) for h, m in hours]


def _report(folder, **kw) -> dict:
    return load_and_validate(DataConfig(data_dir=str(folder), cache_dir=None, **kw))[1]


def _check(caplog, *args) -> tuple[list[str], dict]:
    """(warnings logged, the JSON printed) of ``data check --json ARGS``."""
    from hftraining import cli

    caplog.clear()
    buf = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="hftraining"), contextlib.redirect_stdout(buf):
        assert cli.main(["data", "check", "--json", *map(str, args)]) == 0
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], json.loads(buf.getvalue())


def test_intraday_files_stamped_at_different_phases_are_warned(tmp_path, caplog):
    hourly = [(h, 30) for h in range(9, 16)]
    _bars(tmp_path, "A", [t - pd.Timedelta(minutes=30) for t in _session(hourly)], 0)  # at :00
    _bars(tmp_path, "B", _session(hourly), 1)
    _bars(tmp_path, "C", _session(hourly), 2)
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        report = _report(tmp_path)
    mixed = report["mixed_stamps"]
    assert mixed["phases_utc"] == {"every 1h at +0": ["A.csv"], "every 1h at +30min": ["B.csv", "C.csv"]}
    assert [r.getMessage() for r in caplog.records].count(mixed["why"]) == 1
    logged, js = _check(caplog, tmp_path)  # data check of the folder: training's words, once, and in the JSON
    assert logged.count(mixed["why"]) == 1 and js["mixed_stamps"]["why"] == mixed["why"]
    # 5-minute bars a minute off the others: no shared stamp either
    five = tmp_path / "five"
    five.mkdir()
    _bars(five, "F1", _session([(9, 30 + 5 * m) for m in range(12)], days=20), 3)
    _bars(five, "F2", _session([(9, 31 + 5 * m) for m in range(12)], days=20), 4)
    assert _report(five)["mixed_stamps"]["phases_utc"] == {"every 5min at +0": ["F1.csv"],
                                                           "every 5min at +1min": ["F2.csv"]}


def test_intraday_bars_that_share_their_stamps_are_not_warned(tmp_path):
    cases = {
        # New York hourly bars across daylight saving time, one file missing bars and a half day
        "dst": [("A", _session([(h, 30) for h in range(9, 16)])),
                ("B", [t for i, t in enumerate(_session([(h, 30) for h in range(9, 16)])) if i % 7 != 3 and i > 20])],
        # 4-hour bars at 09:30 and 13:30 New York time (their UTC phase moves with daylight saving time)
        "four": [("A", _session([(9, 30), (13, 30)])), ("B", _session([(9, 30), (13, 30)], days=100))],
        # a 5-minute file among 1-minute files, on the same minutes
        "mixed_spacing": [("M1", _session([(9, 30 + m) for m in range(30)], days=20)),
                          ("N1", _session([(9, 30 + m) for m in range(30)], days=20)),
                          ("M5", _session([(9, 30 + 5 * m) for m in range(6)], days=20))],
        # 24/7 hourly bars
        "crypto": [(s, list(pd.date_range("2024-01-01", periods=2000, freq="h", tz="UTC"))) for s in ("BTC", "ETH")],
    }
    for k, (case, files) in enumerate(cases.items()):
        folder = tmp_path / case
        folder.mkdir()
        for j, (name, stamps) in enumerate(files):
            _bars(folder, name, stamps, 10 * k + j)
        assert "mixed_stamps" not in _report(folder), case


def test_zoneless_intraday_stamps_under_a_local_timezone_are_warned(tmp_path, caplog):
    local = tmp_path / "local"
    local.mkdir()
    for j, name in enumerate(("A", "B")):
        _bars(local, name, _session([(h, 30) for h in range(9, 16)], days=40), j, zone=False)
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        report = _report(local, timezone=NY)
    z = report["zoneless_stamps"]
    assert z["files"] == ["A.csv", "B.csv"] and NY in z["why"]
    assert [r.getMessage() for r in caplog.records].count(z["why"]) == 1
    logged, printed = _check(caplog, local, "--set", f"data.timezone={NY}")
    assert logged.count(z["why"]) == 1
    assert printed["zoneless_stamps"]["files"] == ["A.csv", "B.csv"]  # in --json too, for a script reading it alone
    assert "zoneless_stamps" not in _report(local)  # data.timezone UTC: the stamps are what they say
    # stamps with their offset, and daily dates, are not named
    zoned, daily = tmp_path / "zoned", tmp_path / "daily"
    zoned.mkdir()
    daily.mkdir()
    _bars(zoned, "A", _session([(h, 30) for h in range(9, 16)], days=40), 0)
    _bars(daily, "A", [d.tz_localize(NY) for d in pd.bdate_range("2024-01-02", periods=200)], 0, zone=False)
    for folder in (zoned, daily):
        assert "zoneless_stamps" not in _report(folder, timezone=NY), folder.name


def test_a_forecast_from_a_few_rows_reads_a_midnight_bar_as_training_did(tmp_path):
    """Hourly bars of a Tokyo session stamped 00:00-05:00 UTC: the Monday 00:00 UTC bar is 09:00 in
    Tokyo. Two rows ending at that bar, one after Friday's last bar (67 hours apart, spaced like daily
    bars) and one after an hourly bar, give the same forecast: the bar is read by the spacing the model
    recorded (``bar_seconds``), not by the request's rows (the weekend pair read it as midnight in Tokyo)."""
    from hftraining import cli
    from hftraining.inference.forecaster import Forecaster

    days = pd.bdate_range("2024-01-01", periods=120)
    stamps = [d + pd.Timedelta(hours=h) for d in days for h in range(6)]
    data = tmp_path / "tokyo"
    data.mkdir()
    for k, sym in enumerate("AB"):
        f = synth_ohlcv(len(stamps), seed=k)
        f["timestamp"] = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in stamps]
        f.to_csv(data / f"{sym}.csv", index=False)
    run = tmp_path / "run"
    assert cli.main(["train", "--config", "configs/quickstart.yaml", f"data.data_dir={data}", "data.cache_dir=null",
                     "data.features=[log_return_1,hour,calendar]", "data.timezone=Asia/Tokyo", "data.sequence_length=8",
                     "data.min_history=1", "data.prediction_horizon=2", "model.type=transformer", "model.hidden_size=16",
                     "model.num_heads=2", "model.num_layers=1", "model.dropout=0", "training.max_steps=3",
                     "evaluation.report=false", f"output.output_dir={run}", "output.tensorboard=false",
                     "output.progress_bar=never"]) == 0
    fc = Forecaster.from_pretrained(run)
    monday = pd.Timestamp("2024-06-03T00:00:00Z")
    out = []
    for before in (pd.Timestamp("2024-05-31T05:00:00Z"), pd.Timestamp("2024-06-02T23:00:00Z")):
        f = synth_ohlcv(2, seed=9)
        f["timestamp"] = [before, monday]
        out.append(float(fc.predict({"A": f})["forecast_return"].iloc[0]))
    assert out[0] == out[1]
