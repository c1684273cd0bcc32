"""hftraining tune, what a user relies on when reading its result: the Deflated Sharpe Ratio and the
PBO against independent implementations of their formulas, N of the DSR counting every trial
judged on the validation data, a trial whose drawn values fail (a diverging loss, out of memory)
recorded and the search going on, a re-run and a resumed study repeating the same trials, and a
search space that Optuna cannot draw from refused up front."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

optuna = pytest.importorskip("optuna")

from hftraining.cli import main  # noqa: E402
from hftraining.core.errors import ConfigError, UserError  # noqa: E402
from hftraining.train.trainer import OutOfMemory  # noqa: E402
from hftraining.eval.selection import deflated_sharpe_ratio, format_selection, pbo_cscv  # noqa: E402
from hftraining.workflows import tune  # noqa: E402

TINY = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 6, "logging_steps": 3, "save_steps": 0},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1},
    "output": {"experiment_name": "audit", "tensorboard": False},
    "tune": {"seed": 0, "sampler": "random", "pruner": "none", "search_space": {
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
}


def reference_dsr(r: np.ndarray, trial_sharpes: np.ndarray, n: float) -> tuple[float, float]:
    """(DSR, SR0) written out from Bailey & López de Prado (2014), eqs. for SR0 and the PSR."""
    sr = r.mean() / r.std(ddof=1)
    v = np.var(trial_sharpes, ddof=1) if len(trial_sharpes) > 1 else 0.0
    g = np.euler_gamma
    sr0 = 0.0 if n == 1 or v == 0 else math.sqrt(v) * ((1 - g) * stats.norm.ppf(1 - 1 / n) + g * stats.norm.ppf(1 - 1 / (n * math.e)))
    c = r - r.mean()
    s = math.sqrt(np.mean(c**2))
    g3, g4 = np.mean(c**3) / s**3, np.mean(c**4) / s**4
    z = (sr - sr0) * math.sqrt(len(r) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return float(stats.norm.cdf(z)), sr0


def test_dsr_is_the_published_formula_on_random_inputs():
    rng = np.random.default_rng(7)
    for _ in range(200):
        T, N = int(rng.integers(5, 400)), int(rng.integers(2, 80))
        r = rng.standard_t(rng.uniform(2.5, 12), T) * 0.01 + rng.normal(0, 0.003)
        if rng.random() < 0.4:
            r = np.expm1(5 * r)  # skewed
        sharpes = rng.normal(0, rng.uniform(0.01, 0.3), N)
        n = None if rng.random() < 0.5 else int(rng.integers(N, 5 * N))
        ref, sr0 = reference_dsr(r, sharpes, N if n is None else n)
        got = deflated_sharpe_ratio(r, sharpes, n)
        assert got["sr0"] == pytest.approx(sr0, rel=1e-12, abs=1e-15)
        assert got["dsr"] == pytest.approx(ref, rel=1e-9, abs=1e-12)
        assert got["n_trials"] == (N if n is None else n)


def test_pbo_is_cscv_by_brute_force():
    """Every split into halves of S blocks: the in-sample best's out-of-sample rank, logit ≤ 0 counted."""
    rng = np.random.default_rng(3)
    for S in (2, 4, 6, 8):
        T, N = int(rng.integers(4 * S, 120)), int(rng.integers(2, 9))
        x = rng.normal(0.0004, 0.01, (T, N)) + rng.normal(0, 0.01, (T, 1))
        blocks = np.array_split(np.arange(T), S)
        logits = []
        for ins in itertools.combinations(range(S), S // 2):
            a = np.concatenate([blocks[j] for j in ins])
            b = np.concatenate([blocks[j] for j in range(S) if j not in ins])
            best = np.argmax(x[a].mean(0) / x[a].std(0, ddof=1))
            w = stats.rankdata(x[b].mean(0) / x[b].std(0, ddof=1))[best] / (N + 1)
            logits.append(math.log(w / (1 - w)))
        got = pbo_cscv(x, S)
        np.testing.assert_allclose(got["logits"], logits, rtol=1e-9, atol=1e-12)
        assert got["pbo"] == np.mean(np.array(logits) <= 0)


def test_n_of_the_dsr_counts_every_trial_judged_on_the_validation_data(tmp_path):
    """3 completed trials with a series, 2 pruned, 1 failed after an evaluation: N = 6 (the pruned and
    failed ones were judged on the same data and dropped); a trial that failed before any
    evaluation and one still running are not counted; the output says so."""
    rng = np.random.default_rng(0)
    dates = (np.arange(60, dtype=np.int64) + 20_000) * 86_400 * 10**9
    study = optuna.create_study()
    cols = {}
    for k, mu in enumerate((0.002, 0.0005, -0.001)):
        cols[k] = rng.normal(mu, 0.01, 60)
        tune.write_oos(tmp_path / f"trial-{k:04d}" / tune.OOS_FILE, k, dates, cols[k], "validation")
        study.add_trial(optuna.trial.create_trial(value=1.0 - k, intermediate_values={2: 1.0}))
    for state, reports in ((optuna.trial.TrialState.PRUNED, {2: 2.0}), (optuna.trial.TrialState.PRUNED, {2: 3.0}),
                           (optuna.trial.TrialState.FAIL, {2: float("nan")}), (optuna.trial.TrialState.FAIL, {}),
                           (optuna.trial.TrialState.RUNNING, {})):
        study.add_trial(optuna.trial.create_trial(state=state, intermediate_values=reports))
    trials = study.get_trials()
    sel = tune.study_selection(trials, 2, tmp_path)
    sharpes = np.array([c.mean() / c.std(ddof=1) for c in cols.values()])
    ref, sr0 = reference_dsr(cols[2], sharpes, 6)
    assert sel["n_trials"] == 3 and sel["n_tried"] == 6
    assert sel["deflated_sharpe"]["n_trials"] == 6 and sel["deflated_sharpe"]["sr0"] == pytest.approx(sr0)
    assert sel["dsr"] == pytest.approx(ref, rel=1e-9)
    assert sel["dsr"] < deflated_sharpe_ratio(cols[2], sharpes)["dsr"]  # N = 3 would deflate less
    assert sel["left_out"] == [
        "2 pruned trial(s): stopped before the end, no out-of-sample series; counted in N",
        "failed trial(s) 5: failed after a validation evaluation, no out-of-sample series; counted in N",
        "failed trial(s) 6: failed before any validation evaluation; not counted",
        "trial(s) 7: still running; not counted",
    ]
    text = format_selection(sel, "the best trial 2")
    assert "selection bias over 6 trial(s), 3 with an out-of-sample series" in text
    assert "expected of the best of 6 null trials" in text


def _run(tmp_path, cfg, trials, out="o", study="s"):
    path = tmp_path / f"{study}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["tune", "--config", str(path), "--trials", str(trials), "--out", str(tmp_path / out), "--study", study])
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / out / "tune.journal")))
    return rc, optuna.load_study(study_name=study, storage=storage).get_trials()


def test_a_diverging_trial_is_recorded_and_the_search_goes_on(tmp_path, capsys):
    """A learning rate whose loss turns non-finite is a result of the search, like a NaN validation
    metric: its trial fails with the reason, the other trials run and the report is written."""
    cfg = dict(TINY, training={**TINY["training"], "max_consecutive_nonfinite": 1, "weight_decay": 0.0},
               tune={**TINY["tune"], "search_space": {"training.learning_rate": {"choices": [1e-3, 1e30]}}})
    rc, trials = _run(tmp_path, cfg, 4)
    printed = capsys.readouterr().out
    states = [t.state.name for t in trials]
    assert rc == 0 and len(trials) == 4 and "FAIL" in states and "COMPLETE" in states, states
    for t in trials:
        diverged = t.params["training.learning_rate"] == 1e30
        assert t.state.name == ("FAIL" if diverged else "COMPLETE")
        if diverged:
            assert "non-finite loss" in t.user_attrs[tune.FAIL_REASON]
            assert f"trial {t.number} failed: training stopped" in printed
    assert (tmp_path / "o" / "best_config.yaml").exists() and "best: trial" in printed


def test_every_trial_failing_writes_the_report_and_exits_2(tmp_path, capsys):
    cfg = dict(TINY, training={**TINY["training"], "max_consecutive_nonfinite": 1, "weight_decay": 0.0},
               tune={**TINY["tune"], "search_space": {"training.learning_rate": {"choices": [1e30]}}})
    rc, trials = _run(tmp_path, cfg, 2)
    out, err = capsys.readouterr()
    assert rc == 2 and [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert err.splitlines()[-1].startswith("hftraining: error: tune: all 2 trial(s) of this run failed"), err
    assert "trial 0: training stopped" in err.splitlines()[-1] and "Traceback" not in err
    assert (tmp_path / "o" / "trials.csv").read_text().count("\n") == 3 and "no trial completed" in out


def test_a_trial_out_of_memory_is_recorded_and_the_search_goes_on(tmp_path, capsys, monkeypatch):
    """Out of memory in a trial (as the trainer reports it: its one-line OutOfMemory) fails that trial only."""
    real = tune.training_run

    def first_trial_out_of_memory(cfg, data, **kw):
        if str(cfg.output.output_dir).endswith("trial-0000"):
            raise OutOfMemory("data.batch_size: 32 windows of 16 steps do not fit in cuda memory")
        return real(cfg, data, **kw)

    monkeypatch.setattr(tune, "training_run", first_trial_out_of_memory)
    rc, trials = _run(tmp_path, TINY, 2)
    assert rc == 0, capsys.readouterr().err
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[0].user_attrs[tune.FAIL_REASON] == "data.batch_size: 32 windows of 16 steps do not fit in cuda memory"
    # any other error still stops the tune: it is no property of the drawn values
    assert tune.config_failure(UserError("no such folder")) is None
    try:  # torch's own error behind another one still counts
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError:
            raise RuntimeError("validation batch failed") from None
    except RuntimeError as e:
        assert tune.config_failure(e) == "RuntimeError: validation batch failed"


def test_a_rerun_and_a_resumed_study_repeat_the_same_trials(tmp_path):
    """tune.seed: the same command twice draws and scores the same trials; a study run as 2 + 1
    trials (resumed from its storage) equals one run of 3, so the best trial is the same."""
    cfg = dict(TINY, tune={**TINY["tune"], "sampler": "tpe", "pruner": "median", "pruner_startup_trials": 1})

    def seen(trials):
        return [(t.number, t.state.name, t.value, t.params, t.intermediate_values) for t in trials]

    rc_a, a = _run(tmp_path, cfg, 3, out="a")
    rc_b, b = _run(tmp_path, cfg, 3, out="b")
    _run(tmp_path, cfg, 2, out="c")
    rc_c, c = _run(tmp_path, cfg, 1, out="c")
    assert rc_a == rc_b == rc_c == 0
    assert seen(a) == seen(b) == seen(c)
    assert len({json.dumps(t.params) for t in a}) == 3
    best = [json.loads((tmp_path / d / "best.json").read_text()) for d in ("a", "b", "c")]
    assert best[0] == best[1] == best[2]


@pytest.mark.parametrize("bound", ["low", "high"])
def test_an_infinite_range_bound_is_one_line_naming_the_key(bound):
    spec = {"type": "float", "low": 0.0, "high": 1.0, bound: float("inf") if bound == "high" else float("-inf")}
    with pytest.raises(ConfigError) as e:
        tune.parse_space({"model.dropout": spec})
    assert str(e.value).startswith(f"tune.search_space.model.dropout.{bound}: expected a finite number"), str(e.value)


@pytest.mark.parametrize("space, named", [
    ({"training.optimizer": {"choices": ["adamw", "amos"]},
      "training.weight_decay": {"type": "float", "low": 0.0, "high": 0.1}}, "training.weight_decay: amos (a choice"),
    ({"training.adam_beta2": {"choices": [0.99, 0.999]}}, "training.adam_beta2: lion (training.optimizer)"),
])
def test_a_searched_setting_an_optimizer_ignores_is_refused_before_any_trial(tmp_path, capsys, space, named):
    """Searching weight decay over an optimizer without it (or Adam's betas with Lion) would give trials
    that differ in nothing, and the first value away from the default would stop the search: it is a
    one-line error before the study or its folder exist."""
    training = dict(TINY["training"], optimizer="adamw" if "training.optimizer" in space else "lion")
    cfg = dict(TINY, training=training, tune={**TINY["tune"], "search_space": space})
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(path), "--trials", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"tune.search_space.{named}" in err[0], err
    assert not (tmp_path / "o").exists()


def test_one_series_among_several_trials_gives_no_deflated_sharpe():
    """With one trial's series among N tried, the spread of the trials' Sharpe ratios (which sets the best
    of N by chance) is unknown: no DSR is claimed, instead of the undeflated PSR presented as deflated."""
    from hftraining.eval.selection import selection_stats

    rng = np.random.default_rng(3)
    dates = (np.arange(80, dtype=np.int64) + 20_000) * 86_400 * 10**9
    one = {0: (dates, rng.normal(0.001, 0.01, 80))}
    sel = selection_stats(one, 0, "tune trials", n_tried=5)
    assert sel.get("dsr") is None and "1 of the 5 trials has an out-of-sample series" in sel["dsr_skipped"]
    alone = selection_stats(one, 0, "tune trials")  # one trial tried: the PSR, named as the best of 1
    assert alone.get("dsr") is not None and alone["deflated_sharpe"]["n_trials"] == 1


def test_a_setting_one_optimizer_choice_refuses_stops_the_tune_before_any_trial(tmp_path, capsys):
    """training.weight_decay set (not searched) with training.optimizer searched over [adamw, amos]: the
    first trial drawing amos would stop the search; it is a one-line error naming the choice first."""
    cfg = dict(TINY, training=dict(TINY["training"], weight_decay=0.05),
               tune={**TINY["tune"], "search_space": {"training.optimizer": {"choices": ["adamw", "amos"]}}})
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(path), "--trials", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tune.search_space.training.optimizer: choice amos: training.weight_decay" in err[0], err
    assert not (tmp_path / "o").exists()


def test_an_out_folder_whose_name_holds_a_hash_sign_keeps_its_trials(tmp_path):
    """--out "exp #3": each trial's run folder is passed on as a config value, which YAML would cut at the
    ` #` (a comment): the trials must land in the folder given."""
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "exp #3"
    assert main(["tune", "--config", str(path), "--trials", "1", "--out", str(out)]) == 0
    assert (out / "trial-0000" / tune.OOS_FILE).is_file() and not (tmp_path / "exp").exists()
