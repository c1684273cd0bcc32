"""hftraining tune: a 3-trial smoke run, the search space checks, no test-split scoring, the
selection-bias statistics (DSR, PBO) of the trials' out-of-sample series."""

import json
import logging

import numpy as np
import pytest
import yaml

pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402
from hftraining.core.errors import ConfigError  # noqa: E402
from hftraining.data.pipeline import read_frames  # noqa: E402
from hftraining.eval.selection import deflated_sharpe_ratio, pbo_cscv, sharpe_ratio  # noqa: E402
from hftraining.workflows.tune import parse_space  # noqa: E402
from hftraining.eval.selection import selection_stats  # noqa: E402
from hftraining.workflows.walkforward import prepare_fold  # noqa: E402

TINY = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 6, "logging_steps": 3, "save_steps": 0},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1},
    "output": {"experiment_name": "smoke", "tensorboard": False},
    "tune": {"seed": 0, "pruner_startup_trials": 1, "search_space": {
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.pooling": {"choices": ["last", "mean"]},
        "model.num_layers": {"type": "int", "low": 1, "high": 2},
    }},
}


def test_three_trial_smoke(tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    db = f"sqlite:///{tmp_path / 'tune.db'}"
    rc = main(["tune", "--config", str(cfg_file), "--trials", "3", "--storage", db, "--study", "s1",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "study s1: 3 trial(s)" in printed and "best: trial" in printed
    study = optuna.load_study(study_name="s1", storage=db)
    trials = study.get_trials()
    assert len(trials) == 3
    # every trial reported its validation evaluations (what the pruner sees) at steps 2, 4, ...
    for t in trials:
        assert t.intermediate_values and min(t.intermediate_values) == 2
        assert 1e-4 <= t.params["training.learning_rate"] <= 1e-2 and t.params["model.pooling"] in ("last", "mean")
    best = load_config(tmp_path / "out" / "best_config.yaml")
    assert best.training.learning_rate == pytest.approx(study.best_params["training.learning_rate"])
    assert best.model.num_layers == study.best_params["model.num_layers"]
    assert json.loads((tmp_path / "out" / "best.json").read_text())["value"] == pytest.approx(study.best_value)
    assert (tmp_path / "out" / "importance.png").stat().st_size > 1000
    assert (tmp_path / "out" / "trials.csv").read_text().count("\n") == 4
    # the selection-bias statistics are reported, on the completed trials
    sel = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert sel["n_trials"] == sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert json.loads((tmp_path / "out" / "best.json").read_text())["selection"]["dsr"] == sel["dsr"]
    assert "deflated Sharpe ratio of the best trial" in printed and "probability of backtest overfitting" in printed
    # trials never score the test split: no eval.json, no final model
    for k in range(3):
        run = tmp_path / "out" / f"trial-{k:04d}"
        assert (run / "metrics.jsonl").exists() and not (run / "eval.json").exists()


def test_selection_statistics_from_the_trials_oos_series(tmp_path, capsys):
    """Each completed trial writes the backtest returns of its validation blocks (2 folds, in date
    order); selection.json's DSR and PBO are those of eval.selection applied to these files."""
    optuna = pytest.importorskip("optuna")
    # vol-scaled positions: each trial's returns depend on its forecasts' sizes, so the trials differ
    cfg = {**TINY, "evaluation": {**TINY["evaluation"], "backtest_positions": "vol_scaled"},
           "tune": {**TINY["tune"], "folds": 2, "pruner": "none"}}
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    db = f"sqlite:///{tmp_path / 'tune.db'}"
    out = tmp_path / "out"
    assert main(["tune", "--config", str(cfg_file), "--trials", "3", "--storage", db, "--study", "sel", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    study = optuna.load_study(study_name="sel", storage=db)
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3  # no pruner
    sel = json.loads((out / "selection.json").read_text())
    assert sel["n_trials"] == len(done) and sel["chosen"] == study.best_trial.number and sel["left_out"] == []

    # the periods of the backtest of each fold's validation windows (all their dates but the last), both folds
    conf = load_config(cfg_file)
    frames, _ = read_frames(conf.data)
    blocks = [np.unique(prepare_fold(conf, frames, k, 2, "expanding", before_test=True).val.times)[:-1] for k in range(2)]
    assert blocks[0].max() < blocks[1].min()  # two disjoint blocks, so the union is their concatenation
    expected = np.concatenate(blocks).astype("datetime64[ns]")
    cols = []
    for t in sorted(done, key=lambda t: t.number):
        saved = json.loads((out / f"trial-{t.number:04d}" / "oos_returns.json").read_text())
        np.testing.assert_array_equal(np.array(saved["dates"], dtype="datetime64[ns]"), expected)
        cols.append(np.array(saved["returns"], dtype=np.float64))
    m = np.column_stack(cols)
    sharpes = np.array([sharpe_ratio(c) for c in cols])
    assert np.all(np.isfinite(sharpes)) and np.ptp(sharpes) > 0

    ref = deflated_sharpe_ratio(cols[[t.number for t in sorted(done, key=lambda t: t.number)].index(sel["chosen"])], sharpes)
    assert 0 <= sel["dsr"] <= 1 and sel["dsr"] == pytest.approx(ref["dsr"], rel=1e-9, abs=1e-12)
    assert sel["deflated_sharpe"]["sr0"] == pytest.approx(ref["sr0"]) and ref["sr0"] > 0  # deflated: SR0 > 0
    T = len(expected)
    splits = max(s for s in range(2, 17, 2) if T // s >= 4)  # the largest even count ≤ 16 of blocks of ≥ 4 periods
    ref_pbo = pbo_cscv(m, splits)
    assert sel["pbo_cscv"]["n_splits"] == splits and sel["n_periods"] == T
    assert 0 <= sel["pbo"] <= 1 and sel["pbo"] == pytest.approx(ref_pbo["pbo"])
    best = json.loads((out / "best.json").read_text())
    assert best["selection"]["dsr"] == sel["dsr"] and best["selection"]["pbo"] == sel["pbo"]
    assert f"deflated Sharpe ratio of the best trial {sel['chosen']}: {sel['dsr']:.3f}" in printed
    assert f"probability of backtest overfitting (CSCV): {sel['pbo']:.3f}" in printed


def test_selection_skips_pbo_with_a_reason():
    """One trial: the DSR is the PSR against 0 (no search to deflate for), the PBO has nothing to rank."""
    rng = np.random.default_rng(0)
    dates = np.arange(40, dtype=np.int64) * 86_400 * 10**9
    r = rng.normal(0.001, 0.01, 40)
    sel = selection_stats({7: (dates, r)}, 7, "one")
    assert sel["n_trials"] == 1 and sel["pbo"] is None and "at least 2" in sel["pbo_skipped"]
    assert sel["dsr"] == pytest.approx(deflated_sharpe_ratio(r, [sharpe_ratio(r)])["psr_zero"])
    # two trials on 7 common dates: too few for 2 blocks of 4
    sel = selection_stats({0: (dates[:7], r[:7]), 1: (dates[:9], -r[:9])}, 0, "two")
    assert sel["n_periods"] == 7 and sel["pbo"] is None and "8 dates" in sel["pbo_skipped"]


@pytest.mark.parametrize("space, words", [
    ({}, ["tune.search_space", "empty"]),
    ({"model.hiden_size": {"type": "int", "low": 1, "high": 2}}, ["tune.search_space.model.hiden_size", "unknown key"]),
    ({"output.output_dir": {"choices": ["a"]}}, ["tune.search_space.output.output_dir", "cannot be searched"]),
    ({"training.learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, ["learning_rate.low", "log"]),
    ({"model.num_layers": {"type": "float", "low": 1, "high": 2}}, ["model.num_layers.type"]),
    ({"model.pooling": {"choices": ["last", "max"]}}, ["model.pooling.choices[1]"]),
    ({"training.max_steps": {"type": "int", "low": 5, "high": 5}}, ["training.max_steps", "low must be < high"]),
])
def test_bad_search_space_names_the_key(space, words):
    with pytest.raises(ConfigError) as e:
        parse_space(space)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_trial_that_stops_on_a_user_error_is_one_line_without_optunas_traceback(tmp_path, capsys):
    """One worker, a data folder that does not exist: exit 2 and the one-line error only (Optuna logs
    nothing about the failed trial, no traceback); the trial is stored as failed."""
    optuna = pytest.importorskip("optuna")
    cfg = dict(TINY, data={**TINY["data"], "data_dir": str(tmp_path / "no-such-data")})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    db = f"sqlite:///{tmp_path / 't.db'}"
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append
    logging.getLogger("optuna").addHandler(handler)  # whatever Optuna logs, wherever its own handler writes
    try:
        rc = main(["tune", "--config", str(tmp_path / "t.yaml"), "--trials", "1", "--storage", db, "--study", "u",
                   "--out", str(tmp_path / "out")])
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    err = capsys.readouterr().err
    assert rc == 2 and err.splitlines()[-1] == f"hftraining: error: {tmp_path / 'no-such-data'}: no such file or folder"
    assert "Traceback" not in err and "Trial 0" not in err, err
    assert [r.getMessage() for r in seen] == []
    trials = optuna.load_study(study_name="u", storage=db).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]


def test_bad_space_in_the_cli_is_exit_2(tmp_path, capsys):
    cfg = dict(TINY, tune={"search_space": {"model.widthh": {"choices": [1]}}})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(tmp_path / "t.yaml"), "--trials", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tune.search_space.model.widthh" in err and err.count("\n") == 1


@pytest.mark.parametrize("key", ["data.train_ratio", "data.val_ratio", "data.split_dates", "data.split",
                                 "data.start_date", "data.end_date"])
def test_a_key_that_places_the_test_split_cannot_be_searched(key):
    """Searched, such a key gives each trial its own test split: trial A's validation dates would be
    trial B's test dates, and choosing B would depend on its own test data."""
    with pytest.raises(ConfigError) as e:
        parse_space({key: {"choices": [0.6, 0.7]}})
    assert str(e.value).startswith(f"tune.search_space.{key}: moves the test split"), str(e.value)


def _features_study(tmp_path, extra_data=None):
    optuna = pytest.importorskip("optuna")
    cfg = dict(TINY, data={**TINY["data"], **(extra_data or {})},
               tune={**TINY["tune"], "seed": 0, "sampler": "random", "pruner": "none", "search_space": {
                   # volatility_200's 200 warm-up rows move a calendar cut made at ratios by five weeks
                   "data.features": {"choices": [["log_return_1", "rsi_14"], ["log_return_1", "volatility_200"]]}}})
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["tune", "--config", str(tmp_path / "t.yaml"), "--trials", "3", "--out", str(tmp_path / "o"), "--study", "c"])
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "o" / "tune.journal")))
    return rc, optuna.load_study(study_name="c", storage=storage).trials


def test_searched_features_that_move_the_test_cut_stop_the_tune(tmp_path, capsys):
    rc, trials = _features_study(tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(
        "hftraining: error: tune.search_space: data.features=[\"log_return_1\", \"rsi_14\"] moves the shared test cut "
        "from 2025-05-23 (earlier trials) to 2025-04-14"), err
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]  # the second draw changed the features
    # fixed cut dates: every trial keeps one test split, whatever its features
    rc, trials = _features_study(tmp_path / "fixed", {"split_dates": {"val": "2024-05-17", "test": "2025-06-02"}})
    assert rc == 0 and [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert len({t.params["data.features"] for t in trials}) == 2


@pytest.mark.parametrize("override, message", [
    ("tune.folds=1", "tune.folds: 0 (the validation split of one run) or at least 2 folds, got 1"),
    ("tune.folds=-2", "tune.folds: 0 (the validation split of one run) or at least 2 folds, got -2"),
    # was Optuna's ValueError, reported as a fault of --storage
    ("tune.pruner_startup_trials=-1", "tune.pruner_startup_trials: must be >= 0, got -1"),
    ("tune.pruner_warmup_evals=-1", "tune.pruner_warmup_evals: must be >= 0, got -1"),
])
def test_bad_tune_values_are_one_line_errors_naming_the_key(tmp_path, capsys, override, message):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["tune", "--config", str(tmp_path / "t.yaml"), "--trials", "1", "--out", str(tmp_path / "o"), override]) == 2
    assert capsys.readouterr().err == f"hftraining: error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_a_moved_test_cut_names_both_dates_exactly(monkeypatch):
    # sub-second bars: a draw that moves the cut by one 100 ms bar names two different times, not one time twice;
    # a daily cut reads as a date, and a symbol without test rows as none
    import hftraining.workflows.tune as tune

    def ns(text):
        return int(np.datetime64(text, "ns").astype(np.int64))

    class Study:
        def __init__(self, stored):
            self.user_attrs = {tune.TEST_SPLIT_ATTR: stored}

        def get_trials(self, deepcopy=True, states=None):
            return [type("Trial", (), {"number": 0})()]  # a scored trial: the moved cut is refused

    for stored, here, said in (
        ({"*": ns("2025-05-23T09:30:00.100")}, {"*": ns("2025-05-23T09:30:00.200")},
         "moves the shared test cut from 2025-05-23T09:30:00.100 (earlier trials) to 2025-05-23T09:30:00.200,"),
        ({"AEM": ns("2025-05-23")}, {"AEM": None}, "moves symbol AEM's first test date from 2025-05-23 (earlier trials) to none,"),
    ):
        monkeypatch.setattr(tune, "first_test_dates", lambda source, here=here: here)
        with pytest.raises(ConfigError) as e:
            tune.check_test_split(Study(stored), None, {"data.features": ["log_return_1"]})
        assert said in str(e.value), str(e.value)
