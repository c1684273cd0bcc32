"""The report and the model card across outcomes: a report of forecasts whose realised labels are not
finite is still written (its verdict says why there is no strongest baseline); a backtest of one date
says it has no period rather than show an empty table; the card of a cross-sectional label states the
squared-error verdict beside its rank-IC one, as the report and the console do."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from hftraining.core.config import EvaluationConfig, ModelConfig, load_config
from hftraining.core.jsonio import dumps
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import Forecasts, score
from hftraining.eval.model_card import model_card
from hftraining.eval.report import write_report
from hftraining.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_eval_report_consistency import section, tables  # noqa: E402

DAY = 86_400 * 10**9
NAN_WORD = re.compile(r"(?<![±\w])nan\b")


def _panel(S: int = 5, D: int = 40, H: int = 2, target: str = "return", seed: int = 0) -> Forecasts:
    """S symbols × D dates of H-step forecasts, the realised step-1 return of a date being the last
    return of the next (the backtest earns what was forecast): the model is the realisation plus
    noise, ``repeat`` the last return, ``drift`` a small constant."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.01, (D + H, S))
    t, sid = np.repeat(np.arange(D), S), np.tile(np.arange(S), D)
    true = np.stack([r[t + 1 + h, sid] for h in range(H)], axis=1)
    last = r[t, sid]
    pred = {"model": true + rng.normal(0, 0.01, true.shape), "zero": np.zeros_like(true),
            "repeat": np.repeat(last[:, None], H, axis=1), "drift": np.full_like(true, 2e-4)}
    return Forecasts(pred=pred, true=true, dates=(19_000 + t).astype(np.int64) * DAY, symbol_ids=sid,
                     symbols=[f"S{i}" for i in range(S)], last_return=last, past_vol=np.full(len(t), 0.01),
                     last_close=100 * np.exp(np.cumsum(r, axis=0))[t, sid], target=target)


def _report(tmp_path: Path, fc: Forecasts) -> tuple[dict, str]:
    """(eval.json's content, report.md) of ``fc`` scored and backtested as training writes them."""
    with np.errstate(all="ignore"):
        r = score(fc)
        bt = backtest_forecasts(fc, EvaluationConfig())
    result = {"split": "test", **r, "backtest": {"settings": bt["settings"], "strategies": bt["strategies"]}}
    _, md = write_report(tmp_path, result, fc, bt)
    return json.loads(dumps(result)), md.read_text(encoding="utf-8")


@pytest.mark.parametrize("bad", ["every step-1 label NaN", "an inf label among few windows"])
def test_a_report_of_labels_that_are_not_finite_is_written_and_says_why_there_is_no_baseline(bad, tmp_path):
    """Forecasts built by hand through the Python API may carry a realised label that is NaN or ±inf:
    score() says why no baseline has a MSE, but the report's scatter plot took its axis limit from the
    labels' 99th percentile, NaN or inf here, which matplotlib refuses: write_report raised
    "Axis limits cannot be NaN or Inf" and no report was written. It is written now, its verdict saying
    why there is no strongest baseline, and no figure printed as nan."""
    fc = _panel(D=40 if bad.startswith("every") else 2)
    if bad.startswith("every"):
        fc.true[:, 0] = np.nan
    else:
        fc.true[0, 0] = np.inf  # 1 of 10 windows: the 99th percentile of the labels is not finite
    ev, md = _report(tmp_path, fc)
    assert "strongest_baseline" not in ev and "no strongest baseline" in ev["verdict"]
    top = section(md, "Verdict")
    assert ev["verdict"] in top and "realised label that is not finite" in top
    assert (tmp_path / "report_files" / "pred_vs_realised.png").is_file()
    assert not NAN_WORD.search(md)


def test_a_backtest_of_one_date_says_it_has_no_period_instead_of_an_empty_table(tmp_path):
    """A test split of one date has no period to trade (a period runs from one date's close to the
    next): every strategy has 0 periods, and the report's backtest section showed a table header with
    no row beneath it, as if the rows had been lost. It says why there is none; with two dates the
    table is there, one row per strategy that traded."""
    ev, md = _report(tmp_path / "one", _panel(D=1))
    assert all(not m.get("n_periods") for m in ev["backtest"]["strategies"].values())
    bt = section(md, "Backtest")
    assert not any(h[0] == "strategy" for h, _ in tables(bt))
    assert "No strategy has a period to backtest" in bt and "the forecasts have 1 date." in bt
    ev, md = _report(tmp_path / "two", _panel(D=2))
    rows = [rows for h, rows in tables(section(md, "Backtest")) if h[0] == "strategy"]
    assert len(rows) == 1 and [r[0] for r in rows[0]] == [n for n, m in ev["backtest"]["strategies"].items()
                                                          if m.get("n_periods")]
    assert "No strategy has a period" not in md


def test_the_card_of_a_cross_sectional_label_says_the_squared_error_verdict_too(tmp_path):
    """A cs_rank model that ranks worse than naive:repeat but has a far lower MSE than every baseline:
    its verdict is the rank IC's ("not worth its cost"), and the console and the report add what the
    Diebold–Mariano tests say ("On squared error: ... beats ..."). The card listed those tests' p-values
    under the verdict without a word on them; its verdict section now carries the same sentence,
    word for word as eval.json's ``mse_verdict``."""
    fc = _panel(S=8, D=60, target="cs_rank")
    rng = np.random.default_rng(1)
    fc.true *= 100  # ranks of about unit scale
    fc.pred["repeat"] = 10 * (fc.true + rng.normal(0, 0.3, fc.true.shape))  # ranks well, a huge MSE
    fc.pred["drift"] = np.full_like(fc.true, 0.02)
    fc.pred["model"] = 0.2 * fc.true + rng.normal(0, 0.3, fc.true.shape)
    ev, md = _report(tmp_path, fc)
    assert ev["cross_section_strongest"]["name"] == "repeat" and "not worth its cost" in ev["verdict"]
    assert "the model beats the strongest baseline" in ev["mse_verdict"]
    assert f"On squared error: {ev['mse_verdict']}." in section(md, "Verdict")
    H = fc.true.shape[1]
    card = model_card(tmp_path / "final", load_config(None, tiny(None, "data.target=cs_rank")), {"symbols": fc.symbols},
                      {"horizon": H, "seq_len": 20, "feature_columns": ["a"]},
                      build_model(ModelConfig(type="ridge"), 1, H, 20), 5, ev)
    verdict = section("\n## " + card.split("\n---\n", 1)[1], "Verdict")
    assert ev["verdict"] in verdict and f"On squared error: {ev['mse_verdict']}." in verdict
    # a return label's verdict is the squared error's itself: not said twice
    ev, _ = _report(tmp_path / "ret", _panel())
    card = model_card(tmp_path / "final", load_config(None, tiny(None)), {"symbols": ["S0"]},
                      {"horizon": 2, "seq_len": 20, "feature_columns": ["a"]},
                      build_model(ModelConfig(type="ridge"), 1, 2, 20), 5, ev)
    assert "On squared error" not in card and f"## Verdict\n\n{ev['verdict']}\n\n## Test metrics" in card


@pytest.mark.parametrize("target", ["return", "cs_rank"])
def test_the_console_verdict_of_a_split_in_sample_says_it_is_not_out_of_sample(target, tmp_path, capsys):
    """``evaluate --split train`` adds to the verdict that the split is the one the model and the fitted
    baselines were fitted on (eval.json's ``verdict``, the report, ``--json``). The console printed the
    squared-error verdict as score() wrote it, without that sentence: a return label's "significant" read
    as an out-of-sample result. Each verdict is printed once, the caveat with it."""
    from hftraining.cli import main
    from hftraining.workflows.evaluate_run import IN_SAMPLE

    run = tmp_path / "run"
    extra = ["data.target=cs_rank", "data.symbols=[AEM, WPM, NIO]", "data.batching=dates"] if target == "cs_rank" else []
    assert main(["train", *tiny(run, "training.max_steps=2", "evaluation.report=false", "evaluation.intervals=[]",
                                "evaluation.baseline_max_windows=200", *extra)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "train", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert main(["evaluate", str(run), "--split", "train", "--no-report", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["verdict"].endswith(IN_SAMPLE["train"])
    lines = out.splitlines()
    assert ev["verdict"] in lines
    assert sum(ev["mse_verdict"] in line for line in lines) == 1


def test_intervals_with_no_miss_on_few_dates_are_not_said_calibrated():
    # no miss: Christoffersen cannot be computed, and on 8 windows Kupiec cannot reject 0 misses of 0.8
    # nominal: the sentence said "calibrated (Kupiec and Christoffersen do not reject)" of a test never run
    from hftraining.eval.intervals import interval_report
    n = 8
    true = np.zeros((n, 1))
    lo, hi = true - 1.0, true + 1.0
    rep = interval_report({0.8: (lo, hi)}, true, np.arange(n), np.zeros(n, dtype=int), "split")
    assert rep["calibrated"] is None
    assert "not shown calibrated" in rep["sentence"] and "80% Christoffersen could not be computed" in rep["sentence"]
    assert "calibrated (Kupiec and Christoffersen" not in rep["sentence"]
