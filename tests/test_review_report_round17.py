"""The report's configuration table and the model card's key config state the settings the run read, with the
values it read them at: the batch size of the batching chosen, the loss and the heads a model was trained
with, and the backtest settings the report's own backtest ran with."""

import json

import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.eval.model_card import model_card
from hftraining.eval.report import write_report
from hftraining.models import build_model
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402
from test_eval_report_consistency import tables  # noqa: E402


def _rows(md: str) -> dict[str, str]:
    """The one key | value table of the Markdown ``md`` as {key: value}."""
    found = [rows for header, rows in tables(md) if header == ["key", "value"]]
    assert len(found) == 1
    return {r[0].strip("`"): r[1] for r in found[0]}


def _report_rows(tmp_path, *overrides: str, backtest=None) -> dict[str, str]:
    cfg = load_config(None, tiny(None, *overrides))
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    _, md_path = write_report(tmp_path, backtest=backtest, run_dir=tmp_path)
    return _rows(md_path.read_text(encoding="utf-8"))


def _card_rows(tmp_path, *overrides: str) -> dict[str, str]:
    cfg = load_config(None, tiny(None, *overrides))
    card = model_card(tmp_path / "final", cfg, {"symbols": ["AEM"]},
                      {"horizon": 3, "seq_len": 20, "feature_columns": ["a"]}, build_model(cfg.model, 1, 3, 20), 7)
    return _rows(card)


DATES = ("data.batching=dates", "data.dates_per_batch=8", "model.loss=ic")


def test_a_dates_batched_runs_tables_give_the_dates_per_batch_it_read(tmp_path):
    """Under data.batching=dates the micro-batch is data.dates_per_batch dates and data.batch_size is ignored
    (a batch_size set beside it is refused as such); the report's table and the card listed the batch_size
    and not the dates_per_batch, and the report left out the IC loss the model was trained with."""
    report = _report_rows(tmp_path, *DATES)
    card = _card_rows(tmp_path, *DATES)
    for rows in (report, card):
        assert rows["data.batching"] == "dates" and rows["data.dates_per_batch"] == "8", rows
        assert "data.batch_size" not in rows
        assert rows["model.loss"] == "ic"
    windows = _report_rows(tmp_path, "data.batch_size=16")
    assert windows["data.batch_size"] == "16" and "data.dates_per_batch" not in windows


def test_the_heads_a_model_was_trained_with_are_in_the_report_and_the_card(tmp_path):
    """A transformer with a buy/hold/sell head (model.classification_threshold) and a quantile head: the
    report listed its quantiles but not the threshold that defines its classes, and the card neither. A model
    type without heads lists neither key."""
    heads = ("model.classification_threshold=0.002", "model.quantiles=[0.1, 0.5, 0.9]")
    for rows in (_report_rows(tmp_path, *heads), _card_rows(tmp_path, *heads)):
        assert rows["model.classification_threshold"] == "0.002", rows
        assert rows["model.quantiles"] == "0.1, 0.5, 0.9"
    dlinear = ("model.type=dlinear", "model.moving_avg=5")
    for rows in (_report_rows(tmp_path, *dlinear), _card_rows(tmp_path, *dlinear)):
        assert "model.quantiles" not in rows and "model.classification_threshold" not in rows
        assert rows["model.loss"] == "mse"


def test_the_reports_backtest_settings_are_those_its_backtest_ran_with(tmp_path):
    """``hftraining evaluate RUN --set evaluation.backtest_cost_bps=50 --set evaluation.backtest_signal=mean``:
    the report's backtest ran at 50 bps on the mean signal, and its configuration table said the run's
    config.json, 5 bps and step1, beside it. The run's own report gives config.json's, which its backtest read."""
    run = tmp_path / "run"
    train(load_config(None, tiny(run, "model.type=zero", "evaluation.baseline_max_windows=100",
                                 "evaluation.max_test_windows=100")))
    own = _rows((run / "report.md").read_text(encoding="utf-8"))
    assert own["evaluation.backtest_cost_bps"] == "5.0" and own["evaluation.backtest_signal"] == "step1"
    assert main(["evaluate", str(run), "--set", "evaluation.backtest_cost_bps=50",
                 "--set", "evaluation.backtest_signal=mean"]) == 0
    [md] = (run / "evaluations").glob("*/report.md")
    text = md.read_text(encoding="utf-8")
    assert "costs 50 bps" in text and "signal mean" in text  # what its backtest part says it ran with
    rows = _rows(text)
    assert rows["evaluation.backtest_cost_bps"] == "50.0" and rows["evaluation.backtest_signal"] == "mean", rows
