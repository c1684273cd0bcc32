"""``hftraining evaluate`` and ``predict`` as a user relies on them, recomputed from the raw closes by
plain numpy/pandas: every test window scored once (none of another split, none missing at the split's
end), the pooled, per-step and per-symbol errors, the MSE against the zero forecast, the strongest
baseline and the step-1 rank IC per date; ``predict`` on the data up to a test date forecasts what
``evaluate`` scored for that date; rows of ``--data`` that the training's validation rules drop are
said on stderr and in the JSON, never scored silently; a key that acts in training is a one-line error."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import EvaluationConfig, at_evaluation, load_config
from hftraining.core.errors import ConfigError
from hftraining.data.io import sample_data_dir
from hftraining.inference.forecaster import Forecaster
from hftraining.train.logging import log
from hftraining.workflows.evaluate_run import evaluate_and_backtest, evaluation_config
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

SYMBOLS = ("AEM", "WPM", "XPO")  # three: a cross-section on every date


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run on three sample symbols (no report: nothing here reads it), and its data."""
    root = tmp_path_factory.mktemp("evaluate8")
    (root / "data").mkdir()
    for sym in SYMBOLS:
        shutil.copy(sample_data_dir() / f"{sym}.csv", root / "data" / f"{sym}.csv")
    train(load_config(None, tiny(root / "run", "training.max_steps=6", "evaluation.eval_steps=0",
                                 "evaluation.report=false", f"data.data_dir={root / 'data'}",
                                 f"data.symbols=[{', '.join(SYMBOLS)}]", f"data.cache_dir={root / 'cache'}")))
    return root


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """No console logging left on by training: warnings reach caplog, stdout holds only what a command prints."""
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])


def _closes(folder) -> dict[str, pd.Series]:
    out = {}
    for sym in SYMBOLS:
        df = pd.read_csv(folder / f"{sym}.csv")
        out[sym] = pd.Series(df["close"].to_numpy(np.float64), index=pd.to_datetime(df["Date"], utc=True))
    return out


def _forecasts(trained):
    result, fc, _ = evaluate_and_backtest(trained / "run")
    syms = np.asarray(fc.symbols)[fc.symbol_ids]
    return result, fc, syms, pd.to_datetime(fc.dates, utc=True)


def test_every_test_window_once_and_scores_recomputed_from_closes(trained):
    result, fc, syms, dates = _forecasts(trained)
    H = fc.true.shape[1]
    closes = _closes(trained / "data")
    test_from = pd.Timestamp(json.loads((trained / "run" / "data_report.json").read_text())["split"]["test_from"])
    assert not pd.DataFrame({"s": syms, "d": dates}).duplicated().any()  # no window twice
    true = np.empty_like(fc.true)
    for sym in SYMBOLS:
        c = closes[sym]
        k = c.index.get_indexer(dates[syms == sym])
        assert (k >= 0).all() and (np.diff(k) == 1).all()  # one window per row of a run of rows, no hole
        assert (c.index[k] >= test_from).all()  # no origin (nor so any target) before the test cut
        assert k[-1] == len(c) - 1 - H  # the last row whose H returns are all known is scored
        steps = k[:, None] + np.arange(1, H + 1)
        true[syms == sym] = np.log(c.to_numpy()[steps] / c.to_numpy()[steps - 1])
    np.testing.assert_allclose(fc.true, true, rtol=0, atol=1e-7)  # float32 labels, in log returns

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    mse = {name: float(np.mean((p - true) ** 2)) for name, p in fc.pred.items()}
    for name, p in fc.pred.items():
        got = result["model"] if name == "model" else result["baselines"][name]
        close(got["mse"], mse[name])
        close(got["mae"], np.mean(np.abs(p - true)))
        for h in range(H):
            close(result["per_step"][name][h]["mse"], np.mean((p[:, h] - true[:, h]) ** 2))
        for sym in SYMBOLS:
            one = result["per_symbol"][name][sym]
            assert one["n_windows"] == int((syms == sym).sum())
            close(one["mse"], np.mean((p[syms == sym] - true[syms == sym]) ** 2))
    close(result["mse_vs_zero"], mse["model"] / np.mean(true ** 2))
    best = min((k for k in mse if k != "model"), key=mse.get)
    assert result["strongest_baseline"]["name"] == best
    close(result["strongest_baseline"]["mse_ratio"], mse["model"] / mse[best])
    # step-1 directional accuracy (a zero forecast: half a hit; a zero return: left out)
    keep = true[:, 0] != 0
    sign = np.sign(fc.pred["model"][keep, 0])
    hits = np.where(sign == 0, 0.5, sign == np.sign(true[keep, 0]))
    close(result["per_step"]["model"][0]["directional_accuracy"], hits.mean())
    # step-1 rank IC per date across the symbols
    frame = pd.DataFrame({"d": dates, "p": fc.pred["model"][:, 0], "t": true[:, 0]})
    ric = frame.groupby("d").apply(lambda g: g["p"].rank().corr(g["t"].rank()), include_groups=False).dropna()
    cs = result["model"]["cross_section"]["rank_ic"]
    assert cs["n_dates"] == len(ric)
    np.testing.assert_allclose(cs["mean"], ric.mean(), atol=1e-6)


def test_predict_on_the_data_up_to_a_test_date_forecasts_what_evaluate_scored(trained, tmp_path):
    _, fc, syms, dates = _forecasts(trained)
    fcast = Forecaster.from_pretrained(trained / "run")
    for day in (dates.min(), dates.max()):  # the split's first and last scored origins
        cut = tmp_path / day.strftime("%Y%m%d")
        cut.mkdir()
        for sym in SYMBOLS:
            df = pd.read_csv(trained / "data" / f"{sym}.csv")
            df[pd.to_datetime(df["Date"], utc=True) <= day].to_csv(cut / f"{sym}.csv", index=False)
        table = fcast.predict(str(cut))
        for sym in SYMBOLS:
            rows = table[table["symbol"] == sym].sort_values("step")
            assert (pd.to_datetime(rows["as_of"], utc=True) == day).all()
            (i,) = np.flatnonzero((syms == sym) & (dates == day))
            np.testing.assert_allclose(rows["forecast_return"].to_numpy(), fc.pred["model"][i], rtol=1e-6, atol=1e-9)


def test_evaluate_data_says_which_rows_the_training_rules_dropped(trained, tmp_path, capsys, caplog):
    """A duplicated row in ``--data`` is dropped as training drops it: said on stderr (one line per file,
    naming it and the rule) and in the JSON, and the scores are those of the clean data."""
    dup = tmp_path / "dup"
    dup.mkdir()
    for sym in SYMBOLS:
        lines = (trained / "data" / f"{sym}.csv").read_text().splitlines(keepends=True)
        (dup / f"{sym}.csv").write_text("".join(lines[:-5] + [lines[-10]] + lines[-5:]))  # a second row of a date
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(trained / "run"), "--data", str(dup), "--json", "--no-report"]) == 0
    out = json.loads(capsys.readouterr().out)  # stdout: the JSON alone
    said = [r.getMessage() for r in caplog.records if "duplicate_timestamp" in r.getMessage()]
    for sym in SYMBOLS:
        assert sum(f"{sym}.csv" in line and "1 row(s) dropped" in line for line in said) == 1, said
        assert sum(f"{sym}.csv" in line for line in out["dropped_rows"]) == 1
    clean, _ = evaluate_and_backtest(trained / "run", str(trained / "data"))[:2]
    assert "dropped_rows" not in clean
    assert out["n_windows"] == clean["n_windows"] and out["model"]["mse"] == clean["model"]["mse"]


def test_set_of_a_training_key_is_refused_naming_it(trained):
    run = trained / "run"
    for f in fields(EvaluationConfig):
        if not at_evaluation(f.name):
            with pytest.raises(ConfigError, match=f"evaluation.{f.name}: acts during training"):
                evaluation_config(run, [f"evaluation.{f.name}=1"])
    assert evaluation_config(run, ["evaluation.max_test_windows=30"]).max_test_windows == 30
