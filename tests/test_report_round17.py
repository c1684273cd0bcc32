"""What the model card and the report say a model is and needs, checked against what it does: the rows of
history the card asks a forecast for are the rows ``predict`` needs (and those after which more history no
longer changes the forecast), and the report's configuration table lists the settings its model type reads,
as the card does, not a transformer's architecture and optimizer for a ridge or LightGBM model."""

import json
import re

import pandas as pd
import pytest

from hftraining.core.config import load_config
from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.eval.report import write_report
from hftraining.inference.forecaster import Forecaster
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402
from test_eval_report_consistency import tables  # noqa: E402

HISTORY = re.compile(r"Each symbol needs at least ([\d,]+) rows of history \([^)]*\) for a forecast"
                     r"(?:, and ([\d,]+) \([^)]*\) for one that more history would not change)?")


@pytest.fixture(scope="module")
def ridge_run(tmp_path_factory):
    """A ridge model trained as a user trains one (fitted in closed form: no optimizer step), with its report
    and model card."""
    out = tmp_path_factory.mktemp("ridge") / "run"
    train(load_config(None, tiny(out, "model.type=ridge", "evaluation.baseline_max_windows=200",
                                 "evaluation.max_test_windows=240")))
    return out


def _card(run) -> str:
    return (run / "final" / "README.md").read_text(encoding="utf-8")


def _config_rows(md: str) -> dict[str, str]:
    """The report's configuration table (the one headed key | value) as {key: value}."""
    found = [rows for header, rows in tables(md) if header == ["key", "value"]]
    assert len(found) == 1
    return {r[0].strip("`"): r[1] for r in found[0]}


def _last_rows(path, n: int, into):
    """The last ``n`` rows of the sample file ``path`` written to ``into``."""
    pd.read_csv(path).tail(n).to_csv(into, index=False)
    return into


def test_the_cards_rows_of_history_are_the_rows_a_forecast_needs(ridge_run, tmp_path):
    """The card's "How to use" said "Each symbol needs at least 56 rows of history" for the tiny model: the
    data report's rows_needed, what a symbol needs to join training (the horizon's target rows included).
    predict forecasts from 53, and its features settle only after 172: a user who sent the card's 56 rows
    got a forecast that more history changes, and no word of it. The card gives both, as predict counts them."""
    fc = Forecaster.from_pretrained(ridge_run / "final")
    found = HISTORY.search(_card(ridge_run))
    assert found, _card(ridge_run).split("## How to use", 1)[1]
    need, settled = (int(g.replace(",", "")) for g in found.groups())
    assert (need, settled) == (fc.min_rows(), fc.settled_rows()) and need < settled
    src = sample_data_dir() / "AEM.csv"
    with pytest.raises(DataError, match=f"needs {need}"):  # a row fewer than the card says: no forecast
        fc.predict(_last_rows(src, need - 1, tmp_path / "short.csv"))
    got = fc.predict(_last_rows(src, need, tmp_path / "AEM.csv"))
    assert len(got) == fc.preprocessing.horizon and got["forecast_return"].notna().all()
    frames = {"AEM": pd.read_csv(src).tail(settled)}  # as many rows as the card says settle: no warning
    assert fc.unsettled({"AEM": pd.read_csv(src).tail(settled - 1)}) and not fc.unsettled(frames)


def test_the_reports_configuration_lists_the_settings_the_model_reads(ridge_run):
    """The report's configuration table listed model.hidden_size 512, num_heads 16, num_layers 8, dropout 0.15,
    the AdamW optimizer, its learning rate and 1,000 max steps for a ridge model fitted in closed form: a reader
    took it for a transformer trained for 1,000 steps, and the ridge's own settings were not there. It lists
    the model.* settings its type reads, the model card's, and no setting of the gradient loop."""
    rows = _config_rows((ridge_run / "report.md").read_text(encoding="utf-8"))
    cfg = json.loads((ridge_run / "config.json").read_text(encoding="utf-8"))
    assert rows["model.type"] == "ridge" and rows["model.ridge_lags"] == str(cfg["model"]["ridge_lags"])
    assert rows["model.ridge_lambdas"] == ", ".join(map(str, cfg["model"]["ridge_lambdas"]))
    assert not rows.keys() & {"model.hidden_size", "model.num_heads", "model.num_layers", "model.dropout",
                              "training.optimizer", "training.learning_rate", "training.max_steps",
                              "training.weight_decay", "data.batch_size", "effective batch"}
    assert {"data.sequence_length", "data.features", "training.seed", "evaluation.backtest_cost_bps"} <= rows.keys()
    card_rows = {r[0].strip("`") for h, rs in tables(_card(ridge_run)) if h == ["key", "value"] for r in rs}
    assert {k for k in rows if k.startswith("model.")} - {"model.quantiles"} <= card_rows


@pytest.mark.parametrize("overrides, has, lacks", [
    ((), {"model.hidden_size", "model.num_heads", "model.num_layers", "model.dropout", "training.optimizer",
          "training.learning_rate", "data.batch_size"}, {"model.moving_avg", "model.ridge_lags"}),
    (("model.type=dlinear", "model.moving_avg=5"), {"model.moving_avg", "training.optimizer", "training.max_steps"},
     {"model.hidden_size", "model.num_heads", "model.dropout"}),
    (("model.type=lightgbm",), {"model.lightgbm_num_leaves", "model.ridge_lags"},
     {"model.hidden_size", "training.optimizer", "training.learning_rate", "data.batch_size"}),
])
def test_each_model_types_report_lists_its_own_settings(tmp_path, overrides, has, lacks):
    """The configuration table of a run folder of each model type: a model trained by optimizer steps keeps its
    optimizer and batch; the architecture shown is its own (DLinear's moving average, not a transformer's
    width and heads)."""
    cfg = load_config(None, tiny(None, *overrides))
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    _, md_path = write_report(tmp_path, run_dir=tmp_path)
    rows = _config_rows(md_path.read_text(encoding="utf-8"))
    assert has <= rows.keys() and not rows.keys() & lacks, sorted(rows)
