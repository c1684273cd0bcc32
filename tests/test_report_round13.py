"""The report and the model card as a reader sees them: a walk-forward fold's report and card state the
dates it was trained and tested on (a fold has no shared cut date), an intraday cut its time of day, a
cut test split how many of its windows were scored; a setting left unset shows a dash as every missing
figure; the card's words render as written in any Markdown viewer; and the card of a model fitted
without optimizer steps (ridge, LightGBM, a naive rule) says how it was fitted and lists the settings
it reads."""

import html
import json
import re

import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.eval.model_card import model_card
from hftraining.models import build_model
from hftraining.workflows.train_run import train
from hftraining.workflows.walkforward import walk_forward
from conftest import tiny  # noqa: E402
from test_eval_report_consistency import tables  # noqa: E402

markdown = pytest.importorskip("markdown")  # a renderer to read the Markdown as a reader sees it


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """A 2-fold walk-forward of the tiny model on the bundled data (data.data_dir and model.quantiles
    unset), each fold with its report and model card; returns (walkforward.json's folds, their run folders)."""
    out = tmp_path_factory.mktemp("wf") / "run"
    walk_forward(load_config(None, tiny(out, "training.max_steps=4", "training.save_steps=0", "evaluation.eval_steps=0",
                                        "evaluation.baseline_max_windows=200")), 2)
    root = out / "walkforward"
    results = json.loads((root / "walkforward.json").read_text())["folds"]
    return results, [root / f"fold-{f['fold']}" for f in results]


def _card_body(folder) -> str:
    return (folder / "final" / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[1]


def _shown(md: str) -> str:
    """The text a reader sees of the Markdown ``md`` (Python-Markdown, tables and fenced code)."""
    return html.unescape(re.sub(r"<[^>]+>", "", markdown.markdown(md, extensions=["tables", "fenced_code"])))


def _row(md: str, first_header: str, key: str) -> str:
    """The value of the row ``key`` in the one table of ``md`` whose first header cell is ``first_header``."""
    found = [rows for header, rows in tables(md) if header[0] == first_header and any(r[0] == key for r in rows)]
    assert len(found) == 1, [h for h, _ in tables(md)]
    return next(r[1] for r in found[0] if r[0] == key)


def test_each_folds_report_and_card_state_the_dates_it_was_tested_on(folds):
    """A walk-forward fold's data report has no shared cut date (its blocks are the fold's own), and the
    card's split row read only "calendar; embargo 0 rows", the report's data table no split at all: the
    two folds' reports and cards told nothing of which year each verdict was scored on. Each names its
    test period now, the dates walkforward.json gives the fold, and its training and validation periods."""
    results, runs = folds
    assert results[0]["test_from"] != results[1]["test_from"]
    for f, run in zip(results, runs):
        test = f"test {f['test_from']} → {f['test_to']}"
        card_split = _row(_card_body(run), "", "split")
        report_split = _row((run / "report.md").read_text(encoding="utf-8"), "item", "split")
        for text in (card_split, report_split):
            assert test in text and "train 20" in text and "validation 20" in text, text
            assert text.index("train") < text.index("validation") < text.index("test")
        assert card_split == report_split  # one wording in both


def test_the_reports_configuration_table_shows_a_dash_for_a_setting_left_unset(folds):
    """The report's configuration table printed data.data_dir of the bundled data as "None" and an empty
    model.quantiles as an empty cell, where every other missing figure of the report (and the card's key
    config) shows a dash."""
    _, runs = folds
    cfg = json.loads((runs[0] / "config.json").read_text())
    assert cfg["data"]["data_dir"] is None and cfg["model"]["quantiles"] == []
    md = (runs[0] / "report.md").read_text(encoding="utf-8")
    config = next(rows for header, rows in tables(md) if header == ["key", "value"])
    values = dict(config)
    assert values["data.data_dir"] == "—" and values["model.quantiles"] == "off"
    assert values["data.prediction_horizon"] == str(cfg["data"]["prediction_horizon"])
    assert not [r for r in config if r[1] in ("None", "", "[]", "nan")]


def test_the_cards_interval_columns_are_shown_as_written(folds):
    """The card named predict's interval columns as lower_<level>/upper_<level> in plain Markdown text,
    where ``<level>`` is an HTML tag to every Markdown renderer: a reader saw "lower_/upper_"."""
    _, runs = folds
    body = _card_body(runs[0])
    assert "Forecast intervals" in body
    assert "returned by predict as lower_<level>/upper_<level>)" in _shown(body)


@pytest.fixture(scope="module")
def ridge_run(tmp_path_factory):
    """A ridge model trained as a user trains one (fitted in closed form: no optimizer step, no checkpoint),
    scored on the test split's last 240 windows (evaluation.max_test_windows)."""
    out = tmp_path_factory.mktemp("ridge") / "run"
    train(load_config(None, tiny(out, "model.type=ridge", "evaluation.baseline_max_windows=200",
                                 "evaluation.max_test_windows=240")))
    return out


def test_the_card_of_a_model_fitted_without_optimizer_steps_says_how_it_was_fitted(ridge_run):
    """A ridge model's card read "A `ridge` model (0 parameters) ..., trained for 0 optimizer steps" and
    said its run folder holds the checkpoints, which a model fitted in closed form has none of. It says how
    the model was fitted, as the training log does, and names only what the run folder holds."""
    body = _card_body(ridge_run)
    opening = _shown(body).split("\n")[1]
    assert not (ridge_run / "checkpoints").exists()
    assert "0 parameters" not in opening and "optimizer steps" not in opening and "checkpoints" not in opening
    assert "fitted in closed form" in opening and "fitted in closed form" in (ridge_run / "train.log").read_text()
    assert "the data report, eval.json and the report" in opening


def test_the_cards_key_config_lists_the_settings_the_model_reads(ridge_run, tmp_path):
    """The card's key config listed model.hidden_size, num_layers, num_heads and dropout for every model type,
    and the optimizer, learning rate and batch for a model with no optimizer step: a ridge or DLinear card
    showed a transformer's architecture (that training says has no effect) and not its own settings."""
    rows = dict(next(rows for header, rows in tables(_card_body(ridge_run)) if header == ["key", "value"]))
    keys = {k.strip("`") for k in rows}
    assert {"model.type", "model.ridge_lags", "model.ridge_lambdas", "data.sequence_length", "training.seed"} <= keys
    assert not keys & {"model.hidden_size", "model.num_heads", "model.dropout", "training.optimizer",
                       "training.learning_rate", "data.batch_size", "training.max_steps"}
    cfg = load_config(None, tiny(None, "model.type=dlinear", "model.moving_avg=5"))
    card = model_card(tmp_path / "final", cfg, {"symbols": ["AEM"]}, {"horizon": 3, "seq_len": 20, "feature_columns": ["a"]},
                      build_model(cfg.model, 1, 3, 20), 7)
    rows = dict(next(rows for header, rows in tables(card) if header == ["key", "value"]))
    assert rows["`model.moving_avg`"] == "5" and rows["`training.optimizer`"] == "adamw"
    assert "`model.hidden_size`" not in rows and "`model.num_heads`" not in rows
    assert "A `dlinear` model (" in card and "trained for 7 optimizer steps" in card


def test_the_card_of_a_cut_test_split_says_how_many_of_its_windows_were_scored(ridge_run):
    """With evaluation.max_test_windows, the card read "Test split: 240 windows" beside its data table's
    test windows (the split's whole count): two counts of one split, without a word on why. It
    says what eval.json and the report say: the last dates' 240 of the split's windows were scored."""
    ev = json.loads((ridge_run / "eval.json").read_text())
    assert ev["windows_scored"] == ev["n_windows"] == 240 < ev["windows_in_split"]
    body = _card_body(ridge_run)
    said = f"the last dates' 240 of the split's {ev['windows_in_split']} windows: evaluation.max_test_windows"
    assert f"Test split: 240 windows ({said})" in body
    assert said in (ridge_run / "report.md").read_text(encoding="utf-8")
    assert f"test {ev['windows_in_split']:,}" in _row(body, "", "windows")


def test_a_cut_inside_a_day_of_intraday_bars_is_given_with_its_time(tmp_path):
    """A calendar split of 5-minute bars cuts inside a day; the card said "validation from 2000-02-09",
    the date alone, while that day's bars before the cut are training rows. It gives the cut's time of day."""
    assert main(["data", "synth", "--symbols", "3", "--rows", "1500", "--freq", "5min", "--out", str(tmp_path / "bars")]) == 0
    run = tmp_path / "run"
    train(load_config(None, tiny(run, f"data.data_dir={tmp_path / 'bars'}", "data.symbols=null", "model.type=zero",
                                 "evaluation.report=false", "evaluation.baseline_max_windows=200")))
    split = json.loads((run / "data_report.json").read_text())["split"]
    cuts = [pd.Timestamp(split[k]) for k in ("val_from", "test_from")]
    assert all(c != c.normalize() for c in cuts)  # inside a day
    said = _row(_card_body(run), "", "split")
    assert [f"{c:%Y-%m-%d %H:%M} UTC" in said for c in cuts] == [True, True], said
