"""What a reader of the model card alone learns, and of the report's data part: the data's warnings (every
warning key of data_report.json, in both, with one wording), each split's period (first and last date, as the
report's data table gives them), figures equal to eval.json and data_report.json, the metrics of a split other
than test named as in-sample, and a data report of an older version read without a traceback."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hftraining.core.config import DataConfig, load_config
from hftraining.core.fmt import fmt
from hftraining.data.pipeline import prepare
from hftraining.data.synth import bar_times, synth_ohlcv
from hftraining.eval.forecasts import label
from hftraining.eval.model_card import headline_metrics, model_card
from hftraining.eval.report import md_text, p_text, write_report
from hftraining.inference.forecaster import Forecaster
from hftraining.models import ForecastModel, build_model
from hftraining.workflows.evaluate_run import evaluate_model_dir
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402
from test_eval_report_consistency import tables  # noqa: E402
from test_report_round15 import warned_folder  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "hftraining" / "sample_data"
QUICK = ("training.max_steps=4", "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.baseline_max_windows=200")


def _front_and_body(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n"), card[:80]
    front, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def _card(run: Path) -> str:
    return (run / "final" / "README.md").read_text(encoding="utf-8")


def _part(md: str, heading: str) -> str:
    """The text of the Markdown part ``## heading`` of ``md`` up to the next ``## `` heading ('' when absent)."""
    if f"\n## {heading}\n" not in md:
        return ""
    return md.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _row(md: str, first_header: str, key: str) -> str:
    found = [rows for header, rows in tables(md) if header[0] == first_header and any(r[0] == key for r in rows)]
    assert len(found) == 1, [h for h, _ in tables(md)]
    return next(r[1] for r in found[0] if r[0] == key)


def _when(iso: str) -> str:
    """A timestamp of data_report.json as a reader reads it: the date, with the time of day (UTC) when not midnight."""
    t = pd.Timestamp(iso).tz_convert("UTC")
    return f"{t:%Y-%m-%d}" if t == t.normalize() else f"{t:%Y-%m-%d %H:%M} UTC"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run on the bundled data, with its report."""
    out = tmp_path_factory.mktemp("plain") / "run"
    train(load_config(None, tiny(out, *QUICK)))
    return out


@pytest.fixture(scope="module")
def warned_run(tmp_path_factory):
    """A tiny run on a folder whose data draw warnings of data_report.json: a file the readers do not take
    (unread_files), daily bars stamped at 05:00 UTC beside others at 00:00 (mixed_stamps), a symbol with a
    three-month hole (long_gaps) and a file of 30 rows, fewer than one window needs (too_few_rows)."""
    root = tmp_path_factory.mktemp("warned")
    d = warned_folder(root / "data")
    pd.read_csv(SAMPLE / "PDD.csv").head(30).to_csv(d / "SHORT_1.csv", index=False)
    out = root / "run"
    train(load_config(None, tiny(out, "data.symbols=null", f"data.data_dir={d}", *QUICK)))
    return out


def test_the_card_states_every_data_warning_its_data_report_holds_as_the_report_does(warned_run):
    """The card, what travels with a model, said nothing of the data's warnings (a halt read across, a file not
    read, days stamped at two times, a symbol left out for too few rows): only the log and data_report.json did.
    It states each now, in the words of the report's "Data warnings", and too_few_rows is in both."""
    rep = json.loads((warned_run / "data_report.json").read_text(encoding="utf-8"))
    assert {"long_gaps", "unread_files", "mixed_stamps"} <= set(rep) and list(rep["too_few_rows"]) == ["SHORT_1"]
    meta, body = _front_and_body(_card(warned_run))
    assert meta["data_warnings"] == ["long_gaps", "unread_files", "mixed_stamps", "too_few_rows"]  # for a script
    part = _part(body, "Data warnings")
    assert body.count("\n## Data warnings\n") == 1 and part
    for key in ("long_gaps", "unread_files", "mixed_stamps"):
        assert f"- `{key}`: {md_text(rep[key]['why'])}" in part.splitlines(), key
    said = next(line for line in part.splitlines() if line.startswith("- `too_few_rows`: "))
    assert "1 symbol left out" in said and md_text(rep["too_few_rows"]["SHORT_1"]) in said
    report = _part((warned_run / "report.md").read_text(encoding="utf-8"), "Data warnings")
    shown = [line for line in report.splitlines() if line]
    assert len(shown) == 4 and md_text(rep["too_few_rows"]["SHORT_1"]) in shown[-1]
    # one wording in both: the card's "- `key`: line" is the report's "key: line"
    card_lines = [line for line in part.splitlines() if line.startswith("- `")]
    assert [line[3:].replace("`: ", ": ", 1) for line in card_lines] == shown


def test_the_reports_skipped_symbols_names_a_symbol_validation_left_out(warned_run):
    """The report's data table said "skipped symbols: none" of a run that left SHORT_1 out (a file of 30 rows,
    56 needed): it read data_report.json's skipped_symbols (too few rows after the features' warm-up) and not
    too_few_rows (too few rows kept by validation)."""
    assert _row((warned_run / "report.md").read_text(encoding="utf-8"), "item", "skipped symbols") == "SHORT_1"


def test_a_run_without_data_warnings_has_no_such_part_on_its_card(run):
    rep = json.loads((run / "data_report.json").read_text(encoding="utf-8"))
    assert rep["too_few_rows"] == {} and rep["skipped_symbols"] == []
    assert "data_warnings" not in _front_and_body(_card(run))[0]
    assert "Data warnings" not in _card(run) and "Data warnings" not in (run / "report.md").read_text(encoding="utf-8")


def _write(path: Path, stamps: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, len(stamps))))
    pd.DataFrame({"timestamp": pd.to_datetime(stamps, utc=True), "open": close, "high": close * 1.001,
                  "low": close * 0.999, "close": close, "volume": 1000.0}).to_csv(path, index=False)


def test_the_report_and_the_card_state_mixed_spacings_max_gap_and_skipped_symbols(tmp_path):
    """The report's "Data warnings" stated long_gaps, unread_files and the stamps, and left out a panel of daily
    beside hourly bars under a cross-section (mixed_spacings), a symbol data.max_gap leaves without any window
    (max_gap_without_windows) and the symbols left out for too few rows (too_few_rows, skipped_symbols): the
    report of such data read as clean. Each is stated in one line now, by the report and the card."""
    mixed = prepare(DataConfig(features=["log_return_1", "market_5"], sequence_length=10, prediction_horizon=2,
                               cache_dir=None),
                    {"DAY": synth_ohlcv(120, seed=1, start="2024-01-02", freq="B"),
                     "HOUR": synth_ohlcv(120 * 7, seed=2, start="2024-01-02", freq="1h", session="09:30-16:00",
                                         tz="America/New_York")}).report
    bars = bar_times(78 * 40, "5min", "2024-03-04", session="09:30-16:00", tz="America/New_York").asi8
    data = tmp_path / "bars"
    data.mkdir()
    _write(data / "AAA.csv", bars, 0)
    _write(data / "BBB.csv", bars, 1)
    _write(data / "DDD.csv", bars[np.random.default_rng(2).random(len(bars)) < 0.35], 3)
    gapped = prepare(load_config(None, [f"data.data_dir={data}", "data.sequence_length=12", "data.prediction_horizon=3",
                                        "data.max_gap=10min", "data.features=[log_return,hour]",
                                        "data.cache_dir=null"]).data).report
    assert mixed["mixed_spacings"] == {"DAY": 86400.0, "HOUR": 3600.0}
    assert gapped["max_gap_without_windows"] == {"DDD": ["train", "val", "test"]}
    rep = {**gapped, "mixed_spacings": mixed["mixed_spacings"], "skipped_symbols": ["EEE", "FFF"],
           "too_few_rows": {"GGG": "g.csv: too few rows: 20 kept, 56 needed for one window (feature warm-up 1 + ...)"}}
    (tmp_path / "data_report.json").write_text(json.dumps(rep), encoding="utf-8")
    write_report(tmp_path, run_dir=tmp_path)
    report = _part((tmp_path / "report.md").read_text(encoding="utf-8"), "Data warnings")
    cfg = load_config(None, tiny(None))
    card = model_card(tmp_path / "final", cfg, rep, {"horizon": 3, "seq_len": 20, "feature_columns": ["a"]},
                      build_model(cfg.model, 1, 3, 20), 7)
    part = _part(_front_and_body(card)[1], "Data warnings")
    for text in (report, part):
        lines = {line.split(":", 1)[0].strip("-` "): line for line in text.splitlines() if line}
        assert {"mixed_spacings", "max_gap_without_windows", "too_few_rows", "skipped_symbols"} <= set(lines), text
        assert "DAY: 1 day" in lines["mixed_spacings"] and "HOUR: 1 hour" in lines["mixed_spacings"]
        assert "data.max_gap leaves 1 symbol" in lines["max_gap_without_windows"]
        assert "DDD (train, val, test)" in lines["max_gap_without_windows"]
        assert "2 symbols left out" in lines["skipped_symbols"] and "EEE; FFF" in lines["skipped_symbols"]
        assert "g.csv: too few rows: 20 kept" in lines["too_few_rows"]


def test_the_card_and_the_report_give_each_splits_first_and_last_date(run):
    """The card's data table gave the whole span ("dates") and the cut dates ("validation from ..., test from
    ..."): not the period the model was trained on, whose first date is the data's after the features' warm-up,
    nor the test's last date. Both tables give each split's first and last date, in one wording."""
    rep = json.loads((run / "data_report.json").read_text(encoding="utf-8"))
    per = rep["split"]["symbols"]
    card_split = _row(_front_and_body(_card(run))[1], "", "split")
    report_split = _row((run / "report.md").read_text(encoding="utf-8"), "item", "split")
    assert card_split == report_split
    for name, shown in (("train", "train"), ("val", "validation"), ("test", "test")):
        first = _when(min(p[name][0] for p in per.values()))
        last = _when(max(p[name][1] for p in per.values()))
        assert f"{shown} {first} → {last}" in card_split, (name, card_split)
    assert f"validation from {rep['split']['val_from'][:10]}" in card_split  # the cut dates stay


def test_every_figure_the_card_states_is_eval_json_or_data_report_json(run):
    """The card of a tiny run, parsed: its front matter, data table, test-split line, metrics table and
    Diebold–Mariano line hold eval.json's and data_report.json's figures."""
    ev = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    rep = json.loads((run / "data_report.json").read_text(encoding="utf-8"))
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    meta, body = _front_and_body(_card(run))
    numbers = {k: v for k, v in meta["test_metrics"].items() if v is not None}  # eval.json writes NaN as null
    assert numbers == headline_metrics(ev) and meta["symbols"] == rep["symbols"]
    assert meta["horizon"] == cfg["data"]["prediction_horizon"] and meta["sequence_length"] == cfg["data"]["sequence_length"]
    assert meta["verdict"] == ev["verdict"] and ev["verdict"] in body
    assert _row(body, "", "symbols") == f"{len(rep['symbols'])}: {', '.join(rep['symbols'])}"
    assert _row(body, "", "rows") == f"{rep['rows_kept']:,} kept of {rep['rows_in']:,} read"
    assert _row(body, "", "windows") == ", ".join(f"{k} {v:,}" for k, v in rep["windows"].items())
    spans = [s for p in rep["split"]["symbols"].values() for s in p.values() if s]
    assert _row(body, "", "dates") == f"{min(s[0] for s in spans)[:10]} → {max(s[1] for s in spans)[:10]}"
    assert (f"Test split: {ev['n_windows']} windows × {ev['horizon']} steps, {ev['n_symbols']} symbols, "
            f"{ev['n_dates']} dates; {ev['units']}") in body
    rows = {r[0]: r for h, rs in tables(body) if h[0] == "forecast" for r in rs}
    sb = ev["strongest_baseline"]["name"]
    zero = ev["baselines"]["zero"]["mse"]
    for shown, m in (("model", ev["model"]), (label("zero"), ev["baselines"]["zero"]),
                     (f"{label(sb)} (strongest baseline)", ev["baselines"][sb])):
        assert rows[shown][1:5] == [fmt(m["mse"], ".6g"), fmt(m["mae"], ".6g"), fmt(m["directional_accuracy"], ".4f"),
                                    rows[shown][4]]
        assert rows[shown][6] == fmt(m["mse"] / zero, ".4f")
    for name in ("zero", sb):
        dm = ev["dm"][name]
        assert f"{label(name)}: statistic {fmt(dm['statistic'], '.3f')}, p = {p_text(dm['p_value'])}" in body
    need = Forecaster.from_pretrained(run / "final").min_rows()  # a forecast's rows, not training's rows_needed
    assert f"Each symbol needs at least {need:,} rows of history (" in body and need < rep["rows_needed"]


def test_a_card_of_metrics_on_another_split_says_they_are_in_sample(run):
    """Given the metrics of ``evaluate --split val`` (the split that chose the checkpoint and the baselines'
    settings), the card headed them "Test metrics", "Test split: ..." and test_metrics in its front matter: an
    in-sample score read as an out-of-sample one. It names the split and says it is in-sample."""
    before = _card(run)
    result, _ = evaluate_model_dir(run, split="val")
    assert _card(run) == before  # evaluating another split leaves the training's card alone
    cfg = load_config(str(run / "config.json"))
    card = model_card(run / "final", cfg, json.loads((run / "data_report.json").read_text(encoding="utf-8")),
                      json.loads((run / "final" / "preprocessing.json").read_text(encoding="utf-8")),
                      ForecastModel.from_pretrained(run / "final"), 4, result)
    meta, body = _front_and_body(card)
    assert "## Test metrics" not in body and "Test split:" not in body and "test_metrics" not in meta
    assert "\n## Metrics on the val split: in-sample, not an out-of-sample test\n" in body
    assert f"Val split: {result['n_windows']} windows" in body
    assert meta["metrics_split"] == "val" and {k: v for k, v in meta["val_metrics"].items() if v is not None} == {
        k: v for k, v in headline_metrics(result).items() if np.isfinite(v)}


def test_the_card_of_a_walk_forward_fold_says_which_fold_it_is(tmp_path):
    """A fold's card read "split: calendar: train ... test ..." as if data.split had cut the data: only the folder
    name (fold-1) hinted that the model is one fold of a walk-forward, tested on the fold's own block. Its data
    table names the fold, of how many, and the scheme, from data_report.json's fold, folds and scheme."""
    cfg = load_config(None, tiny(None))
    rep = {"symbols": ["AEM"], "fold": 2, "folds": 3, "scheme": "purged_kfold",
           "split": {"mode": "calendar", "embargo_rows": 0, "symbols": {"AEM": {
               "train": ["2020-01-02T00:00:00+00:00", "2021-12-31T00:00:00+00:00"], "val": None,
               "test": ["2022-01-03T00:00:00+00:00", "2022-12-30T00:00:00+00:00"]}}}}
    card = model_card(tmp_path / "final", cfg, rep, {"horizon": 3, "seq_len": 20, "feature_columns": ["a"]},
                      build_model(cfg.model, 1, 3, 20), 7)
    body = _front_and_body(card)[1]
    assert _row(body, "", "walk-forward") == "fold 2 of 3, scheme purged_kfold"
    assert "test 2022-01-03 → 2022-12-30" in _row(body, "", "split")
    plain = model_card(tmp_path / "final", cfg, {k: v for k, v in rep.items() if k not in ("fold", "folds", "scheme")},
                       {"horizon": 3, "seq_len": 20, "feature_columns": ["a"]}, build_model(cfg.model, 1, 3, 20), 7)
    assert "| walk-forward |" not in plain and "| walk-forward |" in body


@pytest.mark.parametrize("rep", [
    {},
    {"symbols": ["AEM"], "rows_kept": 100},  # before rows_in, split, windows
    {"symbols": ["AEM"], "split": {"mode": "calendar", "val_from": "2024-05-17T00:00:00+00:00"}},  # no split.symbols
    {"symbols": ["AEM", "WPM"], "split": {"mode": "calendar", "symbols": {"AEM": None, "WPM": {"train": None}}},
     "windows": {"train": None}, "long_gaps": ["AEM"]},
])
def test_a_data_report_of_an_older_version_gives_a_card_and_a_report(tmp_path, rep):
    """A data_report.json written by an older version lacks keys, or holds them in another shape: the card
    and the report leave out what is not there (a warning of an unknown shape is named), never a traceback."""
    cfg = load_config(None, tiny(None))
    card = model_card(tmp_path / "final", cfg, rep, {"horizon": 3, "seq_len": 20, "feature_columns": ["a"]},
                      build_model(cfg.model, 1, 3, 20), 7)
    (tmp_path / "data_report.json").write_text(json.dumps(rep), encoding="utf-8")
    _, md = write_report(tmp_path, run_dir=tmp_path)
    assert "## Data" in card and ("long_gaps" in rep) == ("`long_gaps`: see data_report.json" in card)
    if rep.get("split", {}).get("val_from"):
        assert "validation from 2024-05-17" in _row(_front_and_body(card)[1], "", "split")
    assert md.read_text(encoding="utf-8")
