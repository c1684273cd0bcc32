"""The time features are causal across a change of bar spacing (``calendar_version`` 3).

Whether a bar stamped at UTC midnight is a date (a daily bar: read as that date in ``data.timezone``) or an
instant is told by the gaps up to it (:func:`hftraining.data.features.date_stamps`), never by later rows:
a daily history joined to recent hourly bars keeps the calendar and hour features of its daily rows. A
forecast's frame is the end of a history: its first rows, with too few bars before them to tell, are read
by the symbol's recorded spacing, so a forecast from 5, 21 or 200 rows reads the rows training read. A
model folder of calendar_version 2 (which read a frame by the spacing of all its bars) loads, and a
request whose rows the two rules read otherwise is refused in one line.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from hftraining.core.errors import DataError
from hftraining.data.features import (
    DAILY_BARS, FEATURES, OWN_SPACING_GAPS, bar_spacing, compute_features, date_stamps,
)
from hftraining.data.pipeline import apply, data_rows
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster
from test_causal_fuzz import ZONES, _bars, _same_bits, _spec, _stamps, check_rows_up_to

NY = "America/New_York"
TOKYO = "Asia/Tokyo"
H = 3600 * 10**9


def _daily_then_hourly() -> tuple[pd.DataFrame, pd.DataFrame]:
    """40 business days stamped with plain dates (UTC midnight), then 200 hourly bars from 3 days later."""
    daily = synth_ohlcv(40, seed=1, freq="B")
    hourly = synth_ohlcv(200, seed=2, start=str(daily.timestamp.iloc[-1].date() + pd.Timedelta(days=3)), freq="1h")
    hourly[["open", "high", "low", "close"]] *= daily.close.iloc[-1] / hourly.close.iloc[0]
    return daily, pd.concat([daily, hourly], ignore_index=True)


@pytest.mark.parametrize("tz", [NY, TOKYO, "UTC"])
def test_daily_rows_keep_their_time_features_when_hourly_bars_follow(tz):
    # the whole frame's spacing is hourly: the 40 daily rows were read as instants once the hourly rows came
    # (under New York: every one of them changed, row 0's dow_sin from 0.0 to -0.78)
    daily, both = _daily_then_hourly()
    specs = ["calendar", "hour", "log_return_1"]
    alone = compute_features(daily, specs, tz=tz).to_numpy()
    joined = compute_features(both, specs, tz=tz).to_numpy()
    assert _same_bits(joined[:40], alone)
    assert date_stamps(pd.DatetimeIndex(both.timestamp).as_unit("ns").asi8)[:40].all()


def test_market_of_a_date_ignores_the_minute_bars_of_its_utc_day_that_follow():
    """A date read as midnight in New York is 04:00 UTC: grouped by that, the minute bars from 00:01 UTC of
    the same day, after it in the frame, sorted before it and entered its market windows."""
    daily = synth_ohlcv(30, seed=4, freq="B")
    minutes = synth_ohlcv(30, seed=5)
    minutes["timestamp"] = daily.timestamp.iloc[-1] + pd.to_timedelta(np.arange(1, 31), unit="min")
    both = pd.concat([daily, minutes], ignore_index=True)
    specs = ["market_3_5", "calendar"]
    assert _same_bits(compute_features(both, specs, tz=NY).to_numpy()[:30], compute_features(daily, specs, tz=NY).to_numpy())


def test_the_rule_of_a_row_is_bar_spacing_of_the_gaps_up_to_it():
    """The vectorised rule equals :func:`bar_spacing` of the last OWN_SPACING_GAPS gaps ending at each row,
    on gaps around its thresholds (18 hours, 20 hours, a third of them short, medians between two gaps)."""
    rng = np.random.default_rng(3)
    pool = np.array([H, 4 * H, 17 * H, 18 * H - 1, 18 * H, 19 * H, 20 * H - 1, 20 * H, 20 * H + 1, 24 * H, 66 * H,
                     400 * 24 * H])
    for _ in range(400):
        n = int(rng.integers(1, 70))
        some = pool[rng.random(len(pool)) < 0.5]
        gaps = rng.choice(some if some.size and rng.random() < 0.7 else pool, max(n - 1, 0))
        ns = 86400 * 10**9 * 10_000 + int(rng.choice([0, 0, H])) + np.r_[0, np.cumsum(gaps)].astype(np.int64)
        want = [ns[i] % (86400 * 10**9) == 0
                and (i == 0 or bar_spacing(np.diff(ns[max(0, i - OWN_SPACING_GAPS): i + 1])) >= DAILY_BARS)
                for i in range(n)]
        assert date_stamps(ns).tolist() == want, np.diff(ns).tolist()
        given = [w if i >= OWN_SPACING_GAPS else ns[i] % (86400 * 10**9) == 0 for i, w in enumerate(want)]
        assert date_stamps(ns, bar_seconds=86400.0).tolist() == given
        hourly = [w if i >= OWN_SPACING_GAPS else False for i, w in enumerate(want)]
        assert date_stamps(ns, bar_seconds=3600.0).tolist() == hourly


def _mixed_stamps(rng: np.random.Generator, n: int, after: pd.Timestamp | None = None) -> pd.DatetimeIndex:
    """``n`` increasing stamps of 1 to 4 runs of daily or intraday bars (a daily run after an intraday one
    starts at a UTC midnight: plain dates)."""
    parts: list[pd.DatetimeIndex] = []
    left, last = n, after
    while left:
        k = left if rng.random() < 0.3 else int(rng.integers(1, left + 1))
        daily = bool(rng.random() < 0.5)
        start = None if last is None else (last.floor("D") if daily else last)
        run = _stamps(rng, k, daily, after=start)
        parts.append(run)
        left, last = left - k, run[-1]
    out = parts[0]
    for p in parts[1:]:
        out = out.append(p)
    return out


@pytest.mark.parametrize("seed", range(10))
def test_no_feature_row_changes_when_later_rows_change_spacing(seed):
    """As tests/test_causal_fuzz.py, on frames whose bars switch between daily and intraday: each row t
    has the same bits on the whole frame, on the frame cut after t and on the frame whose rows after t
    are other bars of any spacing; with no recorded spacing (training) and with one (a forecast)."""
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.choice([rng.integers(2, 30), rng.integers(30, 300)]))
    ts = _mixed_stamps(rng, n)
    frame = pd.DataFrame({"timestamp": ts, **_bars(rng, n)})
    specs = [_spec(name, rng) for name in FEATURES.names()]
    tz = str(rng.choice(ZONES[1:]))
    for spacing in (None, float(rng.choice([60.0, 3600.0, 86400.0]))):
        feats = lambda f: compute_features(f, specs, tz=tz, bar_seconds=spacing).to_numpy()  # noqa: E731
        full = feats(frame)
        for t in sorted(set(rng.integers(0, n, 5).tolist())):
            stamps = lambda t=t: ts[: t + 1].append(_mixed_stamps(rng, n - t - 1, after=ts[t]))  # noqa: E731
            check_rows_up_to(feats, frame, full, t, rng, stamps, f"seed {seed}: row <= {t} of {n} ({spacing})")


# --- a model folder: a forecast from a few rows reads them as training did --------------------------


def _write(data, sym: str, stamps, seed: int) -> None:
    f = synth_ohlcv(len(stamps), seed=seed)
    f["timestamp"] = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in stamps]
    f.to_csv(data / f"{sym}.csv", index=False)


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """(model folder, data folder) of a tiny model, ``data.timezone`` Tokyo, of: D1, daily bars stamped
    with plain dates; T1, Tokyo's hourly bars 09:00-15:00 (00:00-06:00 UTC), its last a Monday's open at
    00:00 UTC after Friday's close; M1, 200 daily bars then 49 hourly bars around the clock, the last at
    00:00 UTC."""
    from hftraining import cli

    tmp = tmp_path_factory.mktemp("calendar_causal")
    data = tmp / "data"
    data.mkdir()
    days = pd.bdate_range("2024-01-01", periods=240, tz="UTC")
    _write(data, "D1", list(days), 1)
    assert days[55].day_of_week == 0  # T1 ends at a Monday's open, M1 at an hourly bar at 00:00 UTC
    _write(data, "T1", [d + pd.Timedelta(hours=h) for d in days[:55] for h in range(7)] + [days[55]], 2)
    hourly = pd.date_range(days[199] + pd.Timedelta(days=1), periods=49, freq="1h")
    _write(data, "M1", list(days[:200]) + list(hourly), 3)
    run = tmp / "run"
    assert cli.main(["train", "--config", "configs/quickstart.yaml", f"data.data_dir={data}", "data.cache_dir=null",
                     "data.features=[log_return_1,calendar,hour]", f"data.timezone={TOKYO}", "data.sequence_length=3",
                     "data.min_history=1", "data.prediction_horizon=1", "data.split=per_symbol",
                     "model.type=transformer", "model.hidden_size=16", "model.num_heads=2", "model.num_layers=1",
                     "model.dropout=0", "training.max_steps=2", "evaluation.report=false",
                     "evaluation.baseline_max_windows=50", f"output.output_dir={run}", "output.tensorboard=false",
                     "output.progress_bar=never"]) == 0
    return run / "final", data


def _frame(data, sym: str) -> pd.DataFrame:
    f = pd.read_csv(data / f"{sym}.csv")
    f["timestamp"] = pd.to_datetime(f["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return f


@pytest.mark.parametrize("sym", ["D1", "T1", "M1"])
def test_a_forecast_from_the_last_rows_reads_them_as_training_did(panel, sym):
    folder, data = panel
    fc = Forecaster.from_pretrained(folder)
    assert fc.preprocessing.calendar_version == 3
    whole = _frame(data, sym)
    features = fc.preprocessing.features
    trained, _ = build_rows({sym: whole}, features, tz=TOKYO)  # as training computed them: no spacing given
    L = fc.preprocessing.seq_len
    expected = fc.predict({sym: whole})
    for n in (5, OWN_SPACING_GAPS + 1, 200):
        part = whole.tail(n).reset_index(drop=True)
        ws = fc.latest_windows({sym: part})
        assert np.array_equal(np.asarray(ws.features)[-L:], trained.features[-L:]), (sym, n)
        pd.testing.assert_frame_equal(fc.predict({sym: part}), expected)


def test_the_last_rows_of_the_symbols_include_a_monday_open_and_a_late_hourly_midnight(panel):
    """The frames hold what the forecast test is about: T1's Monday 00:00 UTC open after a 66-hour gap
    (an instant: 09:00 in Tokyo), M1's hourly bars at 00:00 UTC (instants) after daily ones (dates)."""
    _, data = panel
    t1 = pd.DatetimeIndex(_frame(data, "T1").timestamp).asi8
    mon = np.flatnonzero((np.diff(t1) > 60 * H) & (t1[1:] % (86400 * 10**9) == 0)) + 1
    assert mon.size and not date_stamps(t1)[mon[mon >= OWN_SPACING_GAPS]].any()
    m1 = pd.DatetimeIndex(_frame(data, "M1").timestamp).asi8
    dates = date_stamps(m1)
    assert dates[:200].all() and not dates[200 + OWN_SPACING_GAPS:].any()
    assert (m1[200 + OWN_SPACING_GAPS:] % (86400 * 10**9) == 0).any()


def test_a_folder_of_calendar_version_2_loads_and_refuses_a_request_its_rule_read_otherwise(panel, tmp_path):
    folder, data = panel
    old = tmp_path / "v2"
    shutil.copytree(folder, old)
    pre = json.loads((old / "preprocessing.json").read_text(encoding="utf-8"))
    pre["calendar_version"] = 2
    m1 = _frame(data, "M1")  # version 2 kept the spacing of all of a symbol's bars (daily, for M1)
    pre["symbol_bar_seconds"]["M1"] = bar_spacing(np.diff(pd.DatetimeIndex(m1.timestamp).asi8)) / 1e9
    (old / "preprocessing.json").write_text(json.dumps(pre), encoding="utf-8")
    fc = Forecaster.from_pretrained(old)
    assert fc.preprocessing.calendar_version == 2 and fc.preprocessing.to_dict()["calendar_version"] == 2
    for sym in ("D1", "T1"):  # one spacing: both rules read the same rows
        fc.predict({sym: _frame(data, sym)})
    fc.predict({"M1": m1.tail(OWN_SPACING_GAPS).reset_index(drop=True)})  # by the recorded spacing under both
    with pytest.raises(DataError) as e:  # version 2 read the hourly midnights of the whole file as dates
        fc.predict({"M1": m1})
    msg = str(e.value)
    late = 200 + OWN_SPACING_GAPS  # the first hourly bar with 20 hourly gaps before it
    first = late + int(np.flatnonzero(pd.DatetimeIndex(m1.timestamp[late:]).hour == 0)[0])
    assert "\n" not in msg and "M1" in msg and f"row {first} " in msg and "retrain" in msg, msg
    with pytest.raises(DataError, match="M1.*calendar_version 2.*retrain"):
        apply(fc.preprocessing, None, "test")  # evaluate on the data it was trained on


def test_training_reads_each_symbol_by_its_own_gaps_given_no_spacing(panel):
    """The rows training reads (the feature store's, here in memory) are those of no recorded spacing: the
    first rows of each symbol by the gaps they have, the later ones by their last 20."""
    folder, data = panel
    pre = Forecaster.from_pretrained(folder).preprocessing
    rows, _ = data_rows(pre.data_config())
    for sym in ("D1", "T1", "M1"):
        k = rows.symbols.index(sym)
        got = rows.features[int(rows.starts[k]): int(rows.starts[k] + rows.lengths[k])]
        own, _ = build_rows({sym: _frame(data, sym)}, pre.features, tz=TOKYO)
        assert np.array_equal(got, own.features), sym
        other = 3600.0 if sym == "D1" else 86400.0
        given, _ = build_rows({sym: _frame(data, sym)}, pre.features, tz=TOKYO, bar_seconds=other)
        assert not np.array_equal(got, given), sym  # a spacing given would read some first rows otherwise


def test_a_run_of_calendar_version_2_is_not_resumed_where_the_rules_differ(panel, tmp_path, capsys):
    """A run started under calendar_version 2 whose data holds a file the two rules read otherwise (M1: daily
    bars, then hourly bars at 00:00 UTC) is refused on resume: its weights were trained on other inputs."""
    from hftraining import cli

    _, data = panel
    run = tmp_path / "run"
    args = ["train", "--config", "configs/quickstart.yaml", f"data.data_dir={data}", "data.cache_dir=null",
            "data.features=[log_return_1,calendar,hour]", f"data.timezone={TOKYO}", "data.sequence_length=3",
            "data.min_history=1", "data.prediction_horizon=1", "data.split=per_symbol", "model.type=transformer",
            "model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0",
            "training.max_steps=4", "training.save_steps=2", "evaluation.eval_steps=2", "evaluation.report=false",
            "evaluation.baseline_max_windows=50", f"output.output_dir={run}", "output.tensorboard=false",
            "output.progress_bar=never"]
    assert cli.main(args) == 0
    report = json.loads((run / "data_report.json").read_text(encoding="utf-8"))
    report["calendar_version"] = 2  # as the version before it wrote the report
    (run / "data_report.json").write_text(json.dumps(report), encoding="utf-8")
    capsys.readouterr()
    code = cli.main(args + [f"training.resume_from_checkpoint={run / 'checkpoints' / 'step-00000002'}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot resume" in err and "M1" in err and "calendar_version 2" in err, err


def test_a_folder_of_calendar_version_1_refuses_a_request_read_as_dates(panel, tmp_path):
    """Version 1 read every stamp as an instant; an intraday model of it loads, and a request whose last
    bars are daily stamps at 00:00 UTC (after hourly ones: no spacing warning) reads them as dates now."""
    folder, _ = panel
    old = tmp_path / "v1"
    shutil.copytree(folder, old)
    pre = json.loads((old / "preprocessing.json").read_text(encoding="utf-8"))
    del pre["calendar_version"]  # written before the key: version 1
    (old / "preprocessing.json").write_text(json.dumps(pre), encoding="utf-8")
    fc = Forecaster.from_pretrained(old)
    hourly = pd.date_range("2024-01-01", periods=24 * 60, freq="h", tz="UTC")
    daily = pd.date_range(hourly[-1].normalize() + pd.Timedelta(days=1), periods=25, freq="D", tz="UTC")
    f = synth_ohlcv(len(hourly) + len(daily), seed=9)
    f["timestamp"] = hourly.append(daily).astype("datetime64[ns, UTC]")
    fc.predict({"X": f.head(24 * 60)})  # hourly bars: both rules read instants
    with pytest.raises(DataError, match="X: row .*calendar_version 1.*retrain"):
        fc.predict({"X": f})


def test_predicting_a_training_file_warns_of_no_other_spacing(panel, caplog):
    """M1 (daily bars, then hourly) trained on its own file: its recorded spacing is that of its last bars."""
    folder, data = panel
    fc = Forecaster.from_pretrained(folder)
    caplog.set_level(logging.WARNING, logger="hftraining")
    fc.predict({"M1": _frame(data, "M1")})
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "apart" in r.getMessage()]
    assert said == [], said


def test_an_ensemble_refuses_members_of_another_calendar_version(panel, tmp_path):
    """The ensemble reads a request by its first member's rule: a member of version 2 would be fed inputs
    its rule read otherwise (alone, it refuses M1's file)."""
    from hftraining.inference.ensemble import build_ensemble

    folder, data = panel
    new, old = tmp_path / "v3", tmp_path / "v2"
    shutil.copytree(folder, new)
    shutil.copytree(folder, old)
    pre = json.loads((old / "preprocessing.json").read_text(encoding="utf-8"))
    pre["calendar_version"] = 2
    (old / "preprocessing.json").write_text(json.dumps(pre), encoding="utf-8")
    with pytest.raises(DataError):
        Forecaster.from_pretrained(old).predict({"M1": _frame(data, "M1")})
    with pytest.raises(DataError, match="calendar_version"):
        build_ensemble([new, old], tmp_path / "ens")
