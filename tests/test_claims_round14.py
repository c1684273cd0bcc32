"""README sentences a user relies on that no other test pins exactly: a symbol listed twice, a key given
twice in YAML, the bar-spacing warning's bounds, the calibration windows a conformal level needs, the
settings a stored study holds its trials to, and the server's default limits."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.core.config import Config, ServeConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.data.synth import synth_ohlcv
from hftraining.inference.forecaster import Forecaster
from hftraining.models.intervals import Calibration
from test_inference_serve import make_model

README = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())


# ------------------------------------------------------------------------------------------- config

def test_a_symbol_listed_twice_in_data_symbols_is_a_one_line_error(tmp_path, capsys):
    """README: "a symbol listed twice in `data.symbols`, once read and scored twice, is a one-line error"
    (not a panel quietly read once): named at load, and `train` exits 2 before any folder is made."""
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.symbols=[AEM, AEM, WPM]"])
    assert str(e.value) == "data.symbols: 'AEM' is listed twice"
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "data.symbols=[AEM, WPM, AEM]", f"output.output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.symbols: 'AEM' is listed twice" in err, err
    assert not run.exists()


def test_a_yaml_key_given_twice_names_both_its_lines(tmp_path):
    """README: "A key or section written twice in a file is an error naming both lines"."""
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 1e-3\n  max_steps: 5\n  learning_rate: 1e-4\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "training.learning_rate is given twice (lines 2 and 4)" in str(e.value) and str(path) in str(e.value)
    path.write_text("training:\n  max_steps: 5\ndata:\n  embargo: 2\ntraining:\n  max_steps: 7\n")
    with pytest.raises(ConfigError, match=r"training is given twice \(lines 1 and 5\)"):
        load_config(path)


def test_a_symbol_yaml_reads_as_a_boolean_must_be_quoted(tmp_path):
    """README: "`on`/`off`/`yes`/`no` are booleans, so a symbol such as `ON` must be quoted"."""
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  symbols: [ON, AEM]\n")
    with pytest.raises(ConfigError, match=r"data\.symbols\[0\]: expected a string, got True"):
        load_config(path)
    path.write_text("data:\n  symbols: ['ON', AEM]\n")
    assert load_config(path).data.symbols == ["AEM", "ON"]


# ------------------------------------------------------------------------------------- bar spacing

@pytest.fixture(scope="module")
def daily_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m") / "model")


@pytest.mark.parametrize("freq, warned", [("2D", False), ("3D", True), ("12h", False), ("8h", True)])
def test_the_bar_spacing_warning_starts_beyond_twice_and_below_half_the_training_spacing(daily_model, caplog,
                                                                                         freq, warned):
    """README: bars "spaced more than twice as far or less than half as far apart" as the training bars say
    so in one warning line; bars exactly twice or half as far apart say nothing."""
    f = Forecaster.from_pretrained(daily_model)
    assert f.preprocessing.bar_seconds == pytest.approx(86_400)
    bars = synth_ohlcv(300, freq=freq, session="24h" if freq.endswith("h") else None)
    caplog.set_level(logging.WARNING, logger="hftraining")
    f.predict({"AEM": bars})  # a caller without a list: the log says it
    said = [r.getMessage() for r in caplog.records if "bars are" in r.getMessage()]
    assert len(said) == int(warned), said
    warnings: list[str] = []
    f.predict({"AEM": bars}, warnings=warnings)  # the server's way: its answer says it
    assert sum("bars are" in w for w in warnings) == int(warned), warnings


# ----------------------------------------------------------------------------------------- intervals

@pytest.mark.parametrize("level, needed", [(0.9, 9), (0.8, 4)])
def test_a_level_is_unbounded_with_fewer_calibration_windows_than_it_needs(level, needed):
    """README: "A level left unbounded (fewer calibration windows than it needs: 9 for 90%)": the split
    radius is the ⌈(n+1)·level⌉-th smallest residual, which exists from n = 9 at 90% (4 at 80%)."""
    rng = np.random.default_rng(0)
    for n in (needed - 1, needed):
        true = rng.normal(size=(n, 2))
        cal = Calibration.fit(np.zeros((n, 2)), true, [level])
        if n < needed:
            assert np.isinf(cal.radius).all()
        else:
            np.testing.assert_array_equal(cal.radius[0], np.abs(true).max(axis=0))  # the n-th of n


# -------------------------------------------------------------------------------------------- tune

def test_a_stored_study_holds_its_trials_to_every_setting_the_readme_lists():
    """README: a study records "`evaluation.metric`, `max_eval_batches`, `max_val_windows`, `data.target`,
    `data.prediction_horizon`, `tune.folds`, `tune.fold_scheme`" when its first tune starts, and a tune of it
    with another value of any of them is a one-line error naming the key."""
    optuna = pytest.importorskip("optuna")
    from hftraining.workflows.tune import check_objective_unchanged

    listed = re.search(r"A study records what its trials' scores measure \(([^)]*)\)", README).group(1)
    keys = [k.strip("` ") for k in listed.split(",")]
    keys = [k if "." in k else f"evaluation.{k}" for k in keys]
    changed = {"evaluation.metric": "mae", "evaluation.max_eval_batches": 3, "evaluation.max_val_windows": 7,
               "data.target": "cs_rank", "data.prediction_horizon": 2, "tune.folds": 2,
               "tune.fold_scheme": "rolling"}
    assert sorted(keys) == sorted(changed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for key in keys:
        study = optuna.create_study()
        check_objective_unchanged(study, load_config(None, []))  # the first tune records its settings
        study.add_trial(optuna.trial.create_trial(value=1.0))
        with pytest.raises(ConfigError) as e:
            check_objective_unchanged(study, load_config(None, [f"{key}={changed[key]}"]))
        assert str(e.value).startswith(f"{key}: study ") and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------- serve

def test_the_server_limits_the_readme_gives_are_the_defaults():
    """README, *Limits* and *Timeouts*: max_body_bytes 8 MiB, max_symbols 1000, max_rows 200,000,
    request_timeout_s 30 s, keep_alive_timeout_s 5 s, max_predictions 40, header_timeout_s 10."""
    s = ServeConfig()
    said = {
        "max_body_bytes": r"`max_body_bytes` \((\d+) MiB, `--max-body-bytes`\)",
        "max_symbols": r"`max_symbols` \((\d+), `--max-symbols`\)",
        "max_rows": r"`max_rows` \(([\d,]+) rows per request",
        "request_timeout_s": r"`request_timeout_s` \((\d+) s, `--request-timeout`\)",
        "keep_alive_timeout_s": r"`keep_alive_timeout_s` \((\d+) s, `--keep-alive-timeout`\)",
        "max_predictions": r"`max_predictions` \((\d+), `--max-predictions`\)",
        "header_timeout_s": r"`header_timeout_s` \((\d+):",
    }
    for key, pattern in said.items():
        found = re.findall(pattern, README)
        assert len(found) == 1, (key, found)
        value = int(found[0].replace(",", "")) * (1024 * 1024 if key == "max_body_bytes" else 1)
        assert getattr(s, key) == value, (key, value)
    assert Config().serve == s


# ------------------------------------------------------------------------------------------- seeds

def test_seeds_json_holds_each_figure_the_readme_lists_read_from_each_seed_s_eval_json():
    """README: seeds.json holds each seed's "MSE ratio to its strongest baseline and that DM p, MSE vs zero,
    directional accuracy, rank IC, backtest Sharpe, read from its `eval.json`", their mean, standard deviation,
    min and max."""
    from hftraining.workflows.seeds import seed_summary

    def ev(k: int) -> dict:
        return {"target": "return", "mse_vs_zero": 1.0 + k / 10,
                "strongest_baseline": {"name": "ridge", "mse_ratio": 0.9 + k / 100,
                                       "dm": {"p_value": 0.01 * (k + 1), "statistic": -2.0 - k}},
                "model": {"mse": 1e-3 * (k + 1), "directional_accuracy": 0.5 + k / 100,
                          "cross_section": {"rank_ic": {"mean": 0.02 * k}}},
                "backtest": {"strategies": {"model": {"sharpe": 0.5 * k}}}}

    evals = [ev(k) for k in range(3)]
    s = seed_summary(evals)
    want = {"mse_vs_strongest": [e["strongest_baseline"]["mse_ratio"] for e in evals],
            "dm_p_vs_strongest": [e["strongest_baseline"]["dm"]["p_value"] for e in evals],
            "mse_vs_zero": [e["mse_vs_zero"] for e in evals],
            "directional_accuracy": [e["model"]["directional_accuracy"] for e in evals],
            "rank_ic": [e["model"]["cross_section"]["rank_ic"]["mean"] for e in evals],
            "sharpe": [e["backtest"]["strategies"]["model"]["sharpe"] for e in evals]}
    for name, values in want.items():
        assert [seed[name] for seed in s["seeds"]] == values, name
        spread = s["spread"][name]
        assert spread["mean"] == pytest.approx(np.mean(values)) and spread["std"] == pytest.approx(np.std(values, ddof=1))
        assert (spread["min"], spread["max"]) == (min(values), max(values))
    assert s["significantly_better"] == [0, 1, 2] and s["strongest_baseline"] == ["ridge"] * 3


# ---------------------------------------------------------------------------------------- ensemble

@pytest.mark.parametrize("copies", [2, 5])
def test_an_ensemble_of_one_model_s_copies_forecasts_its_quantiles_bit_for_bit_and_its_classes_closely(tmp_path, copies):
    """README: "an ensemble of one run's copies forecasts exactly what that run does (its forecasts and
    quantiles bit for bit, however many copies; buy/hold/sell probabilities to float32 rounding, about 6e-8)"."""
    import shutil

    import pandas as pd

    from hftraining.data.io import sample_data_dir
    from hftraining.inference.ensemble import build_ensemble
    from test_prod_round7 import make_model_dir

    one = make_model_dir(tmp_path / "m", model=dict(hidden_size=8, num_heads=2, num_layers=1, quantiles=[0.1, 0.5, 0.9],
                                                    classification_threshold=0.01))
    members = [one]
    for k in range(1, copies):
        members.append(tmp_path / f"copy-{k}")
        shutil.copytree(one, members[-1])
    data = {s: pd.read_csv(sample_data_dir() / f"{s}.csv") for s in ("AEM", "WPM")}
    alone = Forecaster.from_pretrained(one).predict(data, warnings=[])
    got = Forecaster.from_pretrained(build_ensemble(members, tmp_path / "ens")).predict(data, warnings=[])
    assert list(got.columns) == list(alone.columns)
    quantiles = [c for c in alone.columns if c.startswith("return_q")]
    probs = [c for c in alone.columns if c.startswith("p_")]
    assert len(quantiles) == 3 and len(probs) == 3, list(alone.columns)
    for col in ("forecast_return", "forecast_price", *quantiles):
        np.testing.assert_array_equal(got[col], alone[col], err_msg=col)
    for col in probs:
        np.testing.assert_allclose(got[col], alone[col], rtol=0, atol=1.2e-7, err_msg=col)


# ------------------------------------------------------------------------------------ settled rows

def test_the_quickstart_s_min_rows_and_settled_rows_are_the_readme_s():
    """README: "For a quickstart run `GET /model` says `min_rows` 93 and `settled_rows` 212 (152 rows for
    `macd_12_26_9` to settle + the 60-row window)"."""
    from hftraining.data.features import feature_settle
    from hftraining.data.rows import RowsNeeded

    m = re.search(r"`GET /model` says `min_rows` (\d+) and `settled_rows` (\d+) \((\d+) rows for `(\w+)` to settle "
                  r"\+ the (\d+)-row window\)", README)
    assert m, "README: the quickstart's min_rows/settled_rows sentence"
    min_rows, settled, settle, spec, window = int(m[1]), int(m[2]), int(m[3]), m[4], int(m[5])
    d = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml", []).data
    assert RowsNeeded.of(d, targets=False).rows == min_rows
    assert RowsNeeded.settled(d).rows == settled == settle + window and d.sequence_length == window
    assert feature_settle(d.features) == feature_settle([spec]) == settle


# --------------------------------------------------------------------- sentences the code falls short of

def test_a_json_key_given_twice_names_both_its_lines_and_its_section(tmp_path):
    """README: "A key or section written twice in a file is an error naming both lines" — a JSON config
    too (JSON text is YAML 1.2 flow, so its lines can be read as a YAML file's are)."""
    path = tmp_path / "c.json"
    path.write_text('{"training": {"learning_rate": 0.001,\n "max_steps": 5,\n "learning_rate": 0.0001}}\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "training.learning_rate is given twice (lines 1 and 3)" in str(e.value), str(e.value)


def test_synth_of_bars_longer_than_the_default_session_names_that_session(tmp_path, capsys):
    """`data synth --freq 8h` without `--session` is refused (no 8-hour bar fits 09:30-16:00): the one line
    names the session it used, not `--session None`."""
    assert main(["data", "synth", "--symbols", "1", "--rows", "10", "--freq", "8h", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "None" not in err and "09:30-16:00" in err, err
