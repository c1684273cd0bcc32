"""A walk-forward whose folder another process holds stops every torchrun rank in one line; integer symbol codes
that pandas read as floats (7203.0) name the same symbols as the codes read as integers; ``evaluate --data``
names the rows the jump rule flagged and kept that its scored windows read; and the warning of a backtest book
that lost all its capital says what took it, and of its last period no "0 later periods"."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_backtest_round13 import _ev, _forecasts  # noqa: E402
from test_ddp_round17 import torchrun_into_held  # noqa: E402

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402
from hftraining.data.io import sample_data_dir, split_symbols  # noqa: E402
from hftraining.eval.backtest import backtest_forecasts  # noqa: E402
from hftraining.inference.forecaster import Forecaster  # noqa: E402
from hftraining.workflows.train_run import train  # noqa: E402

CODES = {"AEM": "7203", "WPM": "6758"}
"""The bundled sample symbols, saved under integer codes (Tokyo's style of ticker)."""


# --------------------------------------------------------------------------------------------
# walkforward under torchrun, its folder held by another process


@pytest.mark.slow
def test_walkforward_whose_folder_is_held_stops_every_rank_in_one_line(tmp_path):
    """Another walk-forward writes ``<run>/walkforward``: the main rank is refused its lock. It took the lock before
    any process group was formed, so it stopped without one, and rank 1, gone on to form the config's check group,
    waited for it until training.ddp_timeout (or until torchrun's look at its workers killed it)."""
    run = tmp_path / "run"
    (run / "walkforward").mkdir(parents=True)  # a walk-forward already running into this folder holds it
    proc, took = torchrun_into_held(run, run / "walkforward", 60, "walkforward", "--folds", "2")
    err = proc.stderr
    lines = [l for l in err.splitlines() if l.startswith("hftraining: error:")]
    assert proc.returncode != 0
    assert [l for l in lines if "another hftraining process is training into this run folder" in l], err[-3000:]
    assert [l for l in lines if "rank 1: the main rank stopped before it formed the next process group" in l], err[-3000:]
    assert "SIGTERM" not in err, err[-3000:]  # not ended by torchrun's look at its workers
    assert not [l for l in err.splitlines() if l.startswith("[rank")], err[-3000:]
    assert took < 120


# --------------------------------------------------------------------------------------------
# one run of integer-coded symbols, with jumps in the data it is evaluated on


@pytest.fixture(scope="module")
def coded_run(tmp_path_factory):
    """A ridge run trained on the sample data saved as ``7203.csv`` and ``6758.csv`` (symbols named by file stem)."""
    tmp = tmp_path_factory.mktemp("coded")
    (tmp / "data").mkdir()
    for name, code in CODES.items():
        shutil.copy(sample_data_dir() / f"{name}.csv", tmp / "data" / f"{code}.csv")
    train(load_config(None, tiny(tmp / "run", "model.type=ridge", "training.max_steps=5", "evaluation.report=false",
                                 f"data.data_dir={tmp / 'data'}", "data.symbols=['7203','6758']",
                                 f"data.cache_dir={tmp / 'cache'}")))
    return tmp


def _long_csv(tmp: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(tmp / "data" / f"{code}.csv").assign(symbol=code) for code in CODES.values()],
                     ignore_index=True)


def test_float_symbol_codes_name_the_symbols_the_model_was_trained_on(coded_run, tmp_path):
    """A long CSV of the codes with an empty symbol cell, read with pandas, holds them as floats: predict named the
    symbols '7203.0' and '6758.0', which the model (trained on the files 7203.csv, 6758.csv) never saw, and its
    table did not join with one made from the same rows read as integers."""
    long = _long_csv(coded_run)
    path = tmp_path / "long.csv"
    long.to_csv(path, index=False)
    with_blank = pd.read_csv(path)
    with_blank.loc[5, "symbol"] = np.nan  # a cell left empty: pandas reads the column as floats
    assert with_blank["symbol"].dtype == np.float64
    assert sorted(split_symbols(with_blank, path)) == ["", "6758", "7203"]
    as_floats = with_blank.dropna(subset=["symbol"]).reset_index(drop=True)
    as_ints = pd.read_csv(path).drop(index=5).reset_index(drop=True)
    assert as_ints["symbol"].dtype == np.int64 and as_floats["symbol"].dtype == np.float64

    f = Forecaster.from_pretrained(coded_run / "run")
    assert sorted(f.preprocessing.source_rows) == ["6758", "7203"]  # the file stems
    got, ref = f.predict(as_floats), f.predict(as_ints)
    assert sorted(set(got["symbol"])) == ["6758", "7203"]
    pd.testing.assert_frame_equal(got, ref)
    # the {symbol: frame} form names them as the files and the long frames do
    by_dict = f.predict({int(c): as_ints[as_ints["symbol"] == int(c)].drop(columns="symbol") for c in CODES.values()})
    pd.testing.assert_frame_equal(by_dict.sort_values(["symbol", "step"]).reset_index(drop=True),
                                  ref.sort_values(["symbol", "step"]).reset_index(drop=True))
    # only a column of whole numbers holds integer codes: beside 1.5, 2.0 stays '2.0'
    odd = pd.DataFrame({"close": [1.0, 2.0, 3.0], "symbol": [1.5, 2.0, np.nan]})
    assert sorted(split_symbols(odd, tmp_path / "x.parquet")) == ["", "1.5", "2.0"]


def test_evaluate_names_the_flagged_rows_its_windows_read(coded_run, tmp_path, capsys, caplog, monkeypatch):
    """Two one-bar spikes (an unadjusted print ×3) in 7203's rows given to ``evaluate --data``: one early in the
    file (in the train period, which no test window reads) and one inside the test split. The jump rule flags
    and keeps them (data.jumps=flag); evaluate said nothing of them (only dropped rows were named), while the
    test windows read the second as it is, in their inputs and targets."""
    data = tmp_path / "data"
    data.mkdir()
    frame = pd.read_csv(coded_run / "data" / "7203.csv")
    n = len(frame)
    late = n - 40  # inside the test split (its last 15%)
    for row in (50, late):
        frame.loc[row, ["open", "high", "low", "close"]] *= 3.0
    frame.to_csv(data / "7203.csv", index=False)
    shutil.copy(coded_run / "data" / "6758.csv", data / "6758.csv")

    log = logging.getLogger("hftraining")  # no console logging left on by training: warnings reach caplog
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(coded_run / "run"), "--data", str(data), "--json", "--no-report"]) == 0
    res = json.loads(capsys.readouterr().out)  # stdout: the JSON alone
    flagged = res.get("flagged_rows")
    assert flagged and len(flagged) == 1, flagged
    line = flagged[0]
    assert line.startswith(f"{data / '7203.csv'}: 2 row(s) flagged by the validation rules"), line
    assert "of which the scored windows read 1" in line, line
    stamp = pd.Timestamp(frame.loc[late, "Date"], tz="UTC").isoformat()
    early = pd.Timestamp(frame.loc[50, "Date"], tz="UTC").isoformat()
    assert f"7203 {stamp}" in line and early not in line, line
    assert "data.jumps=flag" in line
    assert [r for r in caplog.records if line in r.getMessage()]  # the warning on stderr, as the dropped rows' is
    assert "dropped_rows" not in res


# --------------------------------------------------------------------------------------------
# the warning of a book that lost all its capital


def _panel(T: int = 30, crash_at: int = 10, move: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    dates = pd.date_range("2024-01-01", periods=T, freq="B", tz="UTC").as_unit("ns").asi8
    R = np.random.default_rng(0).normal(0.0, 0.01, (T, 1))
    R[crash_at, 0] = np.log(move)
    return dates, R


def test_a_book_ruined_in_its_last_period_has_no_later_periods_to_read_0():
    """A 2.5× long book through a fall of 45% on the last date: "its 0 later periods read 0"."""
    dates, R = _panel(crash_at=29)
    res = backtest_forecasts(_forecasts(dates, R, np.ones((30, 1, 1))),
                             _ev("backtest_max_gross=2.5", "backtest_cost_bps=0", "backtest_slippage_bps=0"))
    w = res["strategies"]["model"]["warning"]
    assert "lost all its capital in its last period, from 2024-02-08" in w, w
    assert "later period" not in w, w
    assert "evaluation.backtest_max_gross=2.5" in w and "40%" in w, w  # 1/g of the book's gross, named


def test_an_unlevered_short_ruined_by_a_rise_is_not_blamed_on_leverage():
    """Short the whole capital (max_gross 1, the forecast always down) through a rise of 150%: the warning said a
    gross exposure g, evaluation.backtest_max_gross, loses it all in a move of 1/g, which with g = 1 is a move of
    100%: the book was not levered; its short lost it."""
    dates, R = _panel(move=2.5)
    res = backtest_forecasts(_forecasts(dates, R, -np.ones((30, 1, 1))),
                             _ev("backtest_max_gross=1", "backtest_cost_bps=0", "backtest_slippage_bps=0"))
    w = res["strategies"]["model"]["warning"]
    assert "lost all its capital in the period from 2024-01-12" in w and "19 later periods read 0" in w, w
    assert "a return of -150.0%" in w and "unlevered" in w and "short" in w, w
    assert "move of 1/g" not in w, w


def test_a_book_ruined_by_its_costs_names_the_costs():
    """A book that flips from long to short every date (turnover 2) at 6000 bps loses 120% a period to costs while
    its positions earn ~0: the warning blamed evaluation.backtest_max_gross, which the book never exceeded."""
    T = 30
    dates = pd.date_range("2024-01-01", periods=T, freq="B", tz="UTC").as_unit("ns").asi8
    R = np.zeros((T, 1))
    sig = np.where(np.arange(T) % 2 == 0, 1.0, -1.0)[:, None, None]
    res = backtest_forecasts(_forecasts(dates, R, sig), _ev("backtest_max_gross=1", "backtest_cost_bps=5000",
                                                            "backtest_slippage_bps=1000"))
    w = res["strategies"]["model"]["warning"]
    assert "lost all its capital in the period from" in w, w
    assert "trading costs of 120.0% of the capital" in w and "6000 bps" in w and "backtest_cost_bps" in w, w
    assert "backtest_max_gross" not in w and "1/g" not in w, w
