"""A model folder written before ``grouping_version`` (labels across symbols and market features of a panel of
dates beside instants grouped by their stamps alone) on data that this version groups otherwise.

Since 2026-12-07 a date (a daily bar stamped at UTC midnight) and an instant at one stamp are two cross-sections of
the ``excess_return``/``cs_*`` labels, and beside instants a date enters the ``market`` features at the end of its
UTC day. A model trained before read its past labels and market features grouped the older way: fed the new ones it
forecast from inputs it never saw, silently. It is refused in one line where what it reads comes out otherwise, and
loads as before everywhere else (a panel of dates alone, the common case)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.cli import main
from hftraining.core.config import DataConfig, ModelConfig
from hftraining.core.errors import DataError
from hftraining.data.labels import GROUPING_VERSION
from hftraining.data.pipeline import Preprocessing, prepare
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model

DAYS = 50


def _daily(sym_seeds, hour: int = 0, days: int = DAYS) -> dict[str, pd.DataFrame]:
    out = {}
    for s, seed in sym_seeds:
        f = synth_ohlcv(days, seed=seed, start="2024-01-01", freq="D")
        f["timestamp"] = pd.date_range("2024-01-01", periods=days, freq="D", tz="UTC") + pd.Timedelta(hours=hour)
        out[s] = f
    return out


def _hourly(sym_seeds, days: int = DAYS) -> dict[str, pd.DataFrame]:
    out = {}
    for s, seed in sym_seeds:
        f = synth_ohlcv(24 * days, seed=seed, start="2024-01-01", freq="1h")
        f["timestamp"] = pd.date_range("2024-01-01", periods=24 * days, freq="h", tz="UTC")
        out[s] = f
    return out


PANELS = {
    # coins: hourly bars around the clock beside daily candles stamped with their dates (00:00 UTC shared)
    "coins": lambda: {**_hourly([("H1", 10), ("H2", 11)]), **_daily([("D1", 20), ("D2", 21)])},
    # dates alone
    "dates": lambda: _daily([("A", 30), ("B", 31), ("C", 32)], days=150),
    # New York dates beside Tokyo closes stamped at 06:00 UTC: dates beside instants, never at one stamp
    "tokyo": lambda: {**_daily([("NY1", 40), ("NY2", 41)], days=120), **_daily([("TK1", 42), ("TK2", 43)], 6, 120)},
}


def _write(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for s, f in frames.items():
        f.to_parquet(folder / f"{s}.parquet")


def _model(root, panel: str, target: str, features: list[str]):
    """A model folder trained (weights seeded, no steps needed) on ``panel`` as this version writes it, and a copy
    without ``grouping_version``, as a version before it wrote the folder."""
    data = root / f"data_{panel}"
    if not data.exists():
        _write(data, PANELS[panel]())
    d = DataConfig(data_dir=str(data), features=features, sequence_length=8, prediction_horizon=1, target=target)
    pre = prepare(d).preprocessing
    new = root / f"{panel}_{target}_{'_'.join(features)}"
    torch.manual_seed(0)
    build_model(ModelConfig(type="dlinear", moving_avg=3), len(pre.feature_columns), pre.horizon,
                pre.seq_len).save_pretrained(new, preprocessing=pre.to_dict())
    old = new.with_name(new.name + "_old")
    shutil.copytree(new, old)
    saved = json.loads((old / "preprocessing.json").read_text())
    saved.pop("grouping_version", None)
    (old / "preprocessing.json").write_text(json.dumps(saved))
    return new, old


def _frames(root, panel: str) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((root / f"data_{panel}").glob("*.parquet"))}


def _one_line_retrain(e, *names):
    msg = str(e.value)
    assert "\n" not in msg and "retrain the model" in msg and "grouping_version 1" in msg, msg
    for name in names:
        assert name in msg, msg


def test_a_new_folder_records_the_grouping_rule_and_reads_a_mixed_panel(tmp_path):
    new, _ = _model(tmp_path, "coins", "cs_rank", ["log_return_1", "market_5"])
    saved = json.loads((new / "preprocessing.json").read_text())
    assert saved["grouping_version"] == GROUPING_VERSION == 2
    assert Preprocessing.from_dict(saved).grouping_version == GROUPING_VERSION
    fc = Forecaster.from_pretrained(new)
    assert len(fc.predict(_frames(tmp_path, "coins"))) == 4
    assert len(fc.windows(None, "test")) > 0


@pytest.mark.parametrize("target", ["excess_return", "cs_zscore", "cs_rank"])
def test_an_older_folder_of_a_label_across_symbols_is_refused_where_a_date_meets_an_instant(tmp_path, target):
    """Predict (and serve) and evaluate: the daily candle of 00:00 and the hourly bar of 00:00 were one
    cross-section for the model, two now."""
    _, old = _model(tmp_path, "coins", target, ["log_return_1"])
    fc = Forecaster.from_pretrained(old)  # loads: what it reads is decided by the data it is given
    with pytest.raises(DataError) as e:
        fc.predict(_frames(tmp_path, "coins"))
    _one_line_retrain(e, f"data.target={target}", "T00:00:00", "a date", "instant")
    with pytest.raises(DataError) as e:
        fc.windows(None, "test")
    _one_line_retrain(e, f"data.target={target}")


def test_an_older_folder_of_market_features_is_refused_beside_instants(tmp_path):
    """A Tokyo close at 06:00 UTC read the New York date of its day under the older rule: no stamp is shared,
    the market features still differ."""
    _, old = _model(tmp_path, "tokyo", "return", ["log_return_1", "market_5"])
    fc = Forecaster.from_pretrained(old)
    with pytest.raises(DataError) as e:
        fc.predict(_frames(tmp_path, "tokyo"))
    _one_line_retrain(e, "MKT_", "market features")
    with pytest.raises(DataError) as e:
        fc.windows(None, "test")
    _one_line_retrain(e, "MKT_")


def test_the_cli_says_it_in_one_line_with_exit_code_2(tmp_path, capsys):
    _, old = _model(tmp_path, "coins", "cs_rank", ["log_return_1"])
    capsys.readouterr()
    assert main(["predict", str(old), "--data", str(tmp_path / "data_coins")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "retrain the model" in err and "grouping_version 1" in err, err


@pytest.mark.parametrize("panel,target,features", [
    ("dates", "cs_rank", ["log_return_1", "market_5"]),  # dates alone: grouped alike by both rules
    ("dates", "excess_return", ["log_return_1"]),
    ("coins", "return", ["log_return_1"]),  # a mixed panel, but nothing read across symbols
    ("tokyo", "cs_zscore", ["log_return_1"]),  # dates beside instants, never at one stamp: the labels alike
])
def test_every_other_older_folder_forecasts_as_before(tmp_path, panel, target, features):
    new, old = _model(tmp_path, panel, target, features)
    frames = _frames(tmp_path, panel)
    want = Forecaster.from_pretrained(new).predict(frames)
    fc = Forecaster.from_pretrained(old)
    assert fc.preprocessing.grouping_version == 1
    pd.testing.assert_frame_equal(fc.predict(frames), want)
    a, b = fc.windows(None, "test"), Forecaster.from_pretrained(new).windows(None, "test")
    np.testing.assert_array_equal(fc.predict_windows(a), Forecaster.from_pretrained(new).predict_windows(b))


def test_an_older_label_model_reads_only_its_latest_windows(tmp_path):
    """A request whose dates met instants only in rows before the latest windows: no input the model reads differs."""
    _, old = _model(tmp_path, "coins", "cs_rank", ["log_return_1"])
    frames = _frames(tmp_path, "coins")
    cut = pd.Timestamp("2024-02-10", tz="UTC")
    early = {s: (f[f["timestamp"] < cut - pd.Timedelta(hours=1)].reset_index(drop=True) if s.startswith("H") else f)
             for s, f in frames.items()}  # hourly rows end at 22:00 the day before; the latest daily 8 are later
    out = Forecaster.from_pretrained(old).predict(early)
    assert sorted(out["symbol"]) == ["D1", "D2", "H1", "H2"]
    with pytest.raises(DataError):  # the same request up to the last daily row: a date meets an instant
        Forecaster.from_pretrained(old).predict(frames)


@pytest.mark.parametrize("bad,said", [(3, "newer hftraining"), ("2", "positive integer"), (0, "positive integer"),
                                      (True, "positive integer")])
def test_a_grouping_version_that_is_not_one_of_this_version_is_named(tmp_path, bad, said):
    new, _ = _model(tmp_path, "dates", "return", ["log_return_1"])
    saved = json.loads((new / "preprocessing.json").read_text())
    saved["grouping_version"] = bad
    (new / "preprocessing.json").write_text(json.dumps(saved))
    with pytest.raises(DataError) as e:
        Forecaster.from_pretrained(new)
    msg = str(e.value)
    assert "grouping_version" in msg and said in msg and "\n" not in msg, msg


def test_an_ensemble_with_a_member_of_the_older_grouping_reads_requests_by_it(tmp_path):
    """The ensemble forecasts from its first member's windows: a member of grouping_version 1 after one of 2 was fed
    the new grouping; whichever member comes first, the ensemble is refused where that member would be."""
    from hftraining.data.pipeline import latest_windows
    from hftraining.inference.ensemble import check_shared_preprocessing

    new, old = _model(tmp_path, "coins", "cs_rank", ["log_return_1"])
    frames = _frames(tmp_path, "coins")
    for members in ([new, old], [old, new]):
        pre = Preprocessing.from_dict(check_shared_preprocessing(members))
        with pytest.raises(DataError) as e:
            latest_windows(pre, frames)
        _one_line_retrain(e, "data.target=cs_rank")
        assert pre.grouping_version == 1
    assert Preprocessing.from_dict(check_shared_preprocessing([new, new])).grouping_version == GROUPING_VERSION
    dates_new, dates_old = _model(tmp_path, "dates", "cs_rank", ["log_return_1"])
    pre = Preprocessing.from_dict(check_shared_preprocessing([dates_new, dates_old]))
    assert len(latest_windows(pre, _frames(tmp_path, "dates"))) == 3  # dates alone: as before


def test_a_run_of_the_older_grouping_is_not_resumed_on_a_panel_it_groups_otherwise(tmp_path, capsys):
    _write(tmp_path / "data", PANELS["coins"]())
    run = tmp_path / "run"
    args = ["train", "model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "data.sequence_length=8",
            "data.prediction_horizon=1", f"data.data_dir={tmp_path / 'data'}", "data.cache_dir=null",
            "data.target=cs_rank", "data.features=[log_return_1]", "training.max_steps=4",
            "training.save_steps=2", "evaluation.eval_steps=2", "output.tensorboard=false", "output.progress_bar=never",
            f"output.output_dir={run}"]
    assert main(args) == 0
    report = json.loads((run / "data_report.json").read_text())
    written = (report.pop("grouping_version", None),  # as the version before it wrote the report
               json.loads((run / "final" / "preprocessing.json").read_text()).get("grouping_version"))
    (run / "data_report.json").write_text(json.dumps(report))
    capsys.readouterr()
    code = main(args + [f"training.resume_from_checkpoint={run / 'checkpoints' / 'step-00000002'}"])
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("hftraining: error:")]
    assert code == 2 and len(said) == 1, err
    assert "cannot resume" in said[0] and "grouping_version 1" in said[0] and "D1" in said[0], err
    assert written == (GROUPING_VERSION, GROUPING_VERSION)
