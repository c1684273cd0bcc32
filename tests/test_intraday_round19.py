"""An intraday crypto user's journey: hourly and 5-minute bars traded around the clock, written as the
exchanges export them, through walk-forward and what it prints."""

import json

import numpy as np
import pandas as pd

from hftraining.core.config import load_config
from hftraining.workflows.walkforward import format_walkforward, walk_forward


def _bars(n: int, freq: str, seed: int, start: str = "2024-01-01") -> pd.DataFrame:
    """A random walk of ``n`` bars of ``freq`` around the clock from ``start`` (UTC), with volumes."""
    rng = np.random.default_rng(seed)
    t = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    open_ = np.r_[100.0, close[:-1]]
    wick = np.abs(rng.normal(0, 0.002, (2, n)))
    return pd.DataFrame({"timestamp": t, "open": open_, "high": np.maximum(open_, close) * (1 + wick[0]),
                         "low": np.minimum(open_, close) * (1 - wick[1]), "close": close,
                         "volume": rng.lognormal(5, 0.5, n)})


def _write_exports(folder, n: int = 900, freq: str = "1h") -> None:
    """BTCUSDT as Binance writes it (epoch milliseconds in ``open_time``), ETHUSDT with ISO stamps ending
    in 'Z' in a ``time`` column, each missing a few bars."""
    folder.mkdir()
    btc, eth = _bars(n, freq, 1), _bars(n, freq, 2)
    btc, eth = btc.drop(index=[100, 101, 507]), eth.drop(index=[333])
    ms = (btc.pop("timestamp") - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")
    btc.insert(0, "open_time", ms)
    btc.to_csv(folder / "BTCUSDT.csv", index=False)
    eth.insert(0, "time", eth.pop("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    eth.to_csv(folder / "ETHUSDT.csv", index=False)


def test_walk_forward_folds_of_hourly_bars_give_their_test_periods_to_the_hour(tmp_path, capsys):
    """The folds of hourly bars meet inside a day. walkforward.json's test_from / test_to and the printed
    fold table gave dates alone (2024-01-15..2024-01-26, then 2024-01-26..2024-02-06): each fold seemed to
    end on the day the next began, as if their test periods overlapped, and nothing said where a block
    starts. They are the instants of the first and last target scored, as each fold's data_report.json
    states them, and one fold's period ends before the next one's begins."""
    _write_exports(tmp_path / "prices")
    cfg = load_config(None, [
        f"data.data_dir={tmp_path / 'prices'}", "model.type=ridge", "data.sequence_length=24",
        "data.prediction_horizon=3", "data.embargo=3", "evaluation.report=false",
        "output.tensorboard=false", "output.progress_bar=never", f"output.output_dir={tmp_path / 'wf'}",
    ])
    res = walk_forward(cfg, 3)
    capsys.readouterr()
    saved = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text())
    folds = saved["folds"]
    for f in folds:
        report = json.loads((tmp_path / "wf" / "walkforward" / f"fold-{f['fold']}" / "data_report.json").read_text())
        spans = [s["test"] for s in report["split"]["symbols"].values() if s["test"]]
        first, last = min(pd.Timestamp(a) for a, _ in spans), max(pd.Timestamp(b) for _, b in spans)
        assert (pd.Timestamp(f["test_from"]), pd.Timestamp(f["test_to"])) == (first, last), f
    for a, b in zip(folds, folds[1:]):
        assert pd.Timestamp(a["test_to"]) < pd.Timestamp(b["test_from"]), (a["test_to"], b["test_from"])
    # the case at issue: a fold's last target and the next fold's first fall on one day
    assert any(pd.Timestamp(a["test_to"]).date() == pd.Timestamp(b["test_from"]).date() for a, b in zip(folds, folds[1:]))
    table = format_walkforward(res)
    for f in folds:
        assert f"{f['test_from']}..{f['test_to']}" in table
    # the period column holds the instants: every fold's row lines up under the header
    rows = [line for line in table.splitlines() if line[:4].strip() in {str(f["fold"]) for f in folds}][:len(folds)]
    header = next(line for line in table.splitlines() if "test period" in line)
    assert {line.index(str(f["train_windows"]) + " ") + len(str(f["train_windows"])) for line, f in zip(rows, folds)} \
        == {header.index("train") + len("train")}
