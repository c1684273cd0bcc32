"""Purged k-fold with embargo and walk-forward folds: no training target ever overlaps a test
target; a short real walk-forward run through the trainer."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.core.errors import DataError
from hftraining.data.pipeline import Preprocessing, apply, panel_rows, read_frames
from hftraining.data.splits import purged_kfold, row_fold, window_ends
from hftraining.eval.selection import deflated_sharpe_ratio, pbo_cscv, sharpe_ratio
from hftraining.workflows import walkforward as wf
from hftraining.workflows.evaluate_run import evaluate_model_dir
from hftraining.workflows.walkforward import format_walkforward, prepare_fold, walk_forward
from conftest import tiny  # noqa: E402


def _targets(ends, H):
    return {t + h for t in ends for h in range(1, H + 1)}


@pytest.mark.parametrize("n,k,L,H,emb", [(200, 5, 10, 5, 0), (200, 4, 20, 3, 7), (97, 3, 1, 1, 0), (500, 10, 60, 5, 60)])
def test_purged_kfold_no_training_target_overlaps_a_test_target(n, k, L, H, emb):
    folds = purged_kfold(n, k, L, H, emb)
    assert len(folds) == k
    candidates = set(range(L - 1, n - H))
    seen = []
    for i, f in enumerate(folds):
        test = list(window_ends(f.test, L, H))
        train = [t for s in f.train for t in window_ends(s, L, H)]
        seen += test
        test_targets = _targets(test, H)
        assert not _targets(train, H) & test_targets  # the purge, both sides
        last_test_target = max(test_targets)
        # the embargo: no training target starts within `emb` rows after the last test target
        assert all(not (last_test_target < t + 1 <= last_test_target + emb) for t in train)
        # nothing more is removed than the purge and the embargo need
        removed = len(candidates) - len(test) - len(train)
        expected = (H - 1 if i > 0 else 0) + (min(H - 1 + emb, max(candidates) - max(test)) if i < k - 1 else 0)
        assert removed == expected
    assert sorted(seen) == sorted(candidates)  # every window is tested exactly once


def test_walk_forward_fold_segments_keep_targets_out_of_sample():
    cfg = load_config(None, ["data.sequence_length=20", "data.prediction_horizon=5", "data.embargo=3", "data.val_ratio=0.1"])
    n, K = 1000, 4
    prev_test_end = None
    for k in range(K):
        for scheme in ("expanding", "rolling"):
            d = cfg.data
            seg = row_fold(n, k, K, d.sequence_length, d.embargo, d.train_ratio, d.val_ratio, scheme)
            test = list(window_ends(seg["test"], 20, 5))
            train = list(window_ends(seg["train"], 20, 5)) + list(window_ends(seg["val"], 20, 5))
            b_k = 700 + 300 * k // K
            assert min(test) + 1 == b_k  # the first test target is the first row of the block
            assert max(_targets(train, 5)) < b_k - 3  # all training targets end before the embargo
            if scheme == "rolling":
                assert len(seg["train"]) + 3 + len(seg["val"]) == min(700, b_k - 3)  # the initial span's length at most
        if prev_test_end is not None:
            assert min(_targets(test, 5)) >= prev_test_end  # blocks follow each other
        prev_test_end = max(_targets(test, 5)) + 1


@pytest.mark.parametrize("scheme", ["expanding", "rolling", "purged_kfold"])
def test_left_padding_moves_no_window_across_a_fold_boundary(scheme):
    """data.min_history < data.sequence_length pads windows for their inputs only: a fold's test
    windows stay those without padding (each reads the L rows before the block), and no training
    or validation target is a test target (per_symbol folds: cut in each symbol's rows)."""
    base = ["data.symbols=[AEM]", "data.split=per_symbol", "data.cache_dir=null", "data.sequence_length=30",
            "data.prediction_horizon=5"]
    full_cfg, short_cfg = load_config(None, base), load_config(None, base + ["data.min_history=5"])
    frames = read_frames(full_cfg.data)[0]
    full, short = (prepare_fold(c, frames, 1, 4, scheme) for c in (full_cfg, short_cfg))
    np.testing.assert_array_equal(short.test.ends, full.test.ends)
    test_targets = _targets(short.test.ends, 5)
    for ws in (short.train, short.val):
        assert not _targets(ws.ends, 5) & test_targets
    assert len(short.train) > len(full.train)  # padding is on: the first training windows are short


@pytest.mark.parametrize("scheme, k", [("purged_kfold", 0), ("expanding", 2)])
def test_a_fold_model_is_evaluated_on_its_own_test_block_only(scheme, k):
    """A fold's preprocessing (as saved in its model folder) keeps the fold: evaluation of the data
    it was trained on rebuilds exactly the fold's test windows, never a test split re-cut by the
    data section's ratios (which, for purged k-fold, holds windows the fold trained on); any other
    split or other data is a one-line DataError naming the file and key."""
    cfg = load_config(None, ["data.symbols=[AEM, WPM]", "data.cache_dir=null", "data.sequence_length=30",
                             "data.prediction_horizon=5"])
    data = prepare_fold(cfg, panel_rows(cfg.data), k, 3, scheme)
    pre = Preprocessing.from_dict(json.loads(json.dumps(data.preprocessing.to_dict())))  # preprocessing.json
    ws = apply(pre, None, "test")
    np.testing.assert_array_equal(ws.ends, data.test.ends)
    np.testing.assert_array_equal(ws.symbol_ids, data.test.symbol_ids)
    assert not _targets(ws.ends, 5) & _targets(data.train.ends, 5)
    for split, frames in (("val", None), ("all", None), ("test", read_frames(cfg.data)[0])):
        with pytest.raises(DataError, match=rf"^m/preprocessing.json: fold: the model of walk-forward fold {k + 1} of 3 "
                                            rf"\({scheme}\) is scored only on that fold's test block") as e:
            apply(pre, frames, split, "m/preprocessing.json")
        assert "\n" not in str(e.value)


def test_walk_forward_runs_the_trainer_per_fold(tmp_path, monkeypatch, capsys):
    pooled_bt = []  # the backtest of the pooled forecasts (the one call of walkforward's backtest_forecasts)
    real_backtest = wf.backtest_forecasts

    def capture(fc, ev):
        pooled_bt.append(real_backtest(fc, ev))
        return pooled_bt[-1]

    monkeypatch.setattr(wf, "backtest_forecasts", capture)
    cfg = load_config(None, tiny(
        tmp_path / "wf", "model.hidden_size=8", "model.dropout=0.15", "data.sequence_length=16", "data.prediction_horizon=2",
        "data.symbols=[AEM, WPM, NIO]", "training.max_steps=3", "evaluation.eval_steps=0", "evaluation.report=false",
    ))
    res = walk_forward(cfg, 2, scheme="expanding", mode="finetune")
    folds = res["folds"]
    assert [f["fold"] for f in folds] == [1, 2]
    assert folds[1]["train_windows"] > folds[0]["train_windows"]  # expanding
    assert folds[0]["test_to"] < folds[1]["test_to"]
    assert res["pooled"]["n_windows"] == sum(f["n_windows"] for f in folds)
    agg = res["aggregate"]["mse_vs_zero"]
    assert agg["n"] == 2 and agg["ci_low"] <= agg["mean"] <= agg["ci_high"]
    saved = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text())
    assert saved["pooled"]["dm_vs_zero"]["lag"] == 1
    assert (tmp_path / "wf" / "walkforward" / "fold-2" / "final" / "model.safetensors").exists()
    # `evaluate <fold run>` scores the fold's own test block again, and nothing else (one line, exit 2)
    fold_run = tmp_path / "wf" / "walkforward" / "fold-1"
    again, _ = evaluate_model_dir(fold_run)
    assert again["n_windows"] == folds[0]["n_windows"] and again["model"]["mse"] == pytest.approx(folds[0]["mse"])
    capsys.readouterr()  # the runs' own log lines (the console handler an earlier CLI call may have left)
    assert main(["evaluate", str(fold_run), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "preprocessing.json: fold: the model of walk-forward fold 1 of 2" in err

    # selection bias: the trials are the strategies trading a forecast (model and every naive baseline)
    # on the pooled out-of-sample dates; recomputed from the pooled backtest's curves
    (bt,) = pooled_bt
    names = ["model", *sorted(k for k in bt["curves"] if k.startswith(("naive:", "fitted:")))]
    assert len(names) >= 3 and {"buy_and_hold", "model"} <= set(bt["curves"])
    dates = bt["curves"]["model"][0]
    assert all(np.array_equal(bt["curves"][n][0], dates) for n in names)  # one panel: the same dates
    m = np.column_stack([bt["curves"][n][1] for n in names])
    sharpes = [sharpe_ratio(c) for c in m.T]
    sharpes = [0.0 if not np.isfinite(v) and not c.any() else v for v, c in zip(sharpes, m.T)]  # flat: Sharpe 0
    T = len(dates)
    splits = max(s for s in range(2, 17, 2) if T // s >= 4)
    sel = saved["selection"]
    assert sel["chosen"] == "model" and sorted(sel["trials"]) == sorted(names) and sel["n_trials"] == len(names)
    assert sel["n_periods"] == T and sel["pbo_cscv"]["n_splits"] == splits
    assert sel["dsr"] == pytest.approx(deflated_sharpe_ratio(m[:, 0], sharpes)["dsr"], rel=1e-9, abs=1e-12)
    assert sel["pbo"] == pytest.approx(pbo_cscv(m, splits)["pbo"])
    assert 0 <= sel["dsr"] <= 1 and 0 <= sel["pbo"] <= 1
    assert res["selection"]["dsr"] == sel["dsr"]
    text = format_walkforward(res)
    assert f"deflated Sharpe ratio of the model's strategy: {sel['dsr']:.3f}" in text
    assert f"probability of backtest overfitting (CSCV): {sel['pbo']:.3f}" in text
    # the fold table: each fold's step-1 Pesaran–Timmermann p beside its accuracy, and p-values printed
    # as everywhere else (fmt_p): 0.04996 is not "0.050" beside a claim at 0.05, 3e-14 is not "0.000"
    assert all(f["directional_p"] == res["folds"][i]["directional_p"] for i, f in enumerate(saved["folds"]))
    tweaked = copy.deepcopy(res)
    tweaked["folds"][0]["dm_p_value"], tweaked["folds"][1]["dm_p_value"] = 0.04996, 3.2e-14
    tweaked["folds"][0]["directional_p"], tweaked["folds"][1]["directional_p"] = 0.0123, float("nan")
    rows = format_walkforward(tweaked).splitlines()
    head = next(ln for ln in rows if ln.strip().startswith("fold"))
    assert "PT p" in head and "DM p" in head
    f1, f2 = (next(ln.split() for ln in rows if ln.split()[:1] == [str(k)]) for k in (1, 2))
    assert f1[-3] == "0.04996" and f2[-3] == "3.2e-14"
    assert f1[6] == "0.0123" and f2[6] == "n/a"
    # a mean over fewer folds than the table shows (a fold whose value is undefined) says how many
    key = next(iter(tweaked["aggregate"]))
    tweaked["aggregate"][key]["n"] = len(tweaked["folds"]) - 1
    line = next(ln for ln in format_walkforward(tweaked).splitlines() if ln.strip().startswith(key + " "))
    assert line.endswith(f"({len(tweaked['folds']) - 1} of {len(tweaked['folds'])} folds defined)")
    assert not any("folds defined" in ln for ln in format_walkforward(res).splitlines())


def test_walkforward_cli_rejects_one_fold():
    proc = subprocess.run([sys.executable, "-m", "hftraining", "walkforward", "--folds", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--folds" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("cache", ["store", "memory"])
def test_a_3_fold_walk_forward_builds_each_symbols_features_once(tmp_path, monkeypatch, cache):
    """Folds read the panel's rows once, through the feature store (or once in memory without one),
    and cut their own splits from them: never one feature computation per fold."""
    from hftraining.data import rows as rows_mod
    from hftraining.data import store

    built = []
    real = rows_mod.symbol_rows

    def counting(frame, features, symbol, *args, **kwargs):
        built.append(symbol)
        return real(frame, features, symbol, *args, **kwargs)

    monkeypatch.setattr(rows_mod, "symbol_rows", counting)
    monkeypatch.setattr(store, "symbol_rows", counting)
    cache_dir = str(tmp_path / "cache") if cache == "store" else "null"
    cfg = load_config(None, tiny(
        tmp_path / "wf", "model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2",
        "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false", f"data.cache_dir={cache_dir}",
    ))
    res = walk_forward(cfg, 3, scheme="expanding")
    assert len(res["folds"]) == 3
    assert sorted(built) == ["AEM", "WPM"]  # the two symbols of the tiny config, once each


def test_an_earlier_walk_forward_is_not_replaced_silently(tmp_path, capsys):
    """A second walkforward into the same run folder replaced the first's folds without a word, even
    with output.overwrite=false, and a run with fewer folds left the earlier fold-3/ beside the new
    walkforward.json. Now: a one-line error, exit 2; with output.overwrite=true the earlier folds go."""
    args = tiny(tmp_path / "wf", "model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2",
                "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false",
                "evaluation.baseline_max_windows=200")
    base = tmp_path / "wf" / "walkforward"
    assert main(["walkforward", "--folds", "3", *args]) == 0
    before = (base / "walkforward.json").read_bytes()
    capsys.readouterr()
    assert main(["walkforward", "--folds", "2", *args]) == 2
    assert capsys.readouterr().err == (f"hftraining: error: {base}: holds an earlier walk-forward (fold-1, fold-2, fold-3, ...); "
                                       "start over with output.overwrite=true, or give another output.output_dir\n")
    assert (base / "walkforward.json").read_bytes() == before and (base / "fold-3").is_dir()
    assert main(["walkforward", "--folds", "2", *args, "output.overwrite=true"]) == 0
    assert sorted(p.name for p in base.iterdir()) == ["fold-1", "fold-2", "walkforward.json"]
    assert json.loads((base / "walkforward.json").read_text())["n_folds"] == 2


def _forecasts(n: int, symbols: list[str], intervals: dict | None, seed: int):
    """A hand-made Forecasts of ``n`` windows × 2 steps (no model needed to pool)."""
    from hftraining.eval.forecasts import Forecasts

    rng = np.random.default_rng(seed)
    true = rng.normal(0, 0.01, (n, 2))
    return Forecasts(pred={"model": true + rng.normal(0, 0.01, (n, 2)), "zero": np.zeros((n, 2))}, true=true,
                     dates=np.arange(n, dtype=np.int64) + 1000 * seed, symbol_ids=np.arange(n) % len(symbols),
                     symbols=symbols, last_return=rng.normal(0, 0.01, n), past_vol=np.full(n, 0.01),
                     last_close=np.full(n, 10.0), prev_time=np.arange(n, dtype=np.int64) - 1 + 1000 * seed,
                     intervals=None if intervals is None else {
                         lv: (true - w + rng.normal(0, 0.005, (n, 2)), true + w) for lv, w in intervals.items()})


def test_pooled_folds_keep_each_folds_intervals():
    """Forecasts.concat dropped the intervals, so the pooled walk-forward results had none even when
    every fold's model produced them. Now each part's own bounds are kept, in order; parts whose
    intervals differ are refused rather than pooled without a word."""
    from hftraining.eval.forecasts import Forecasts

    a = _forecasts(7, ["AEM", "WPM"], {0.8: 0.01, 0.9: 0.02}, seed=1)
    b = _forecasts(5, ["NIO", "WPM"], {0.9: 0.03, 0.8: 0.015}, seed=2)
    pooled = Forecasts.concat([a, b])
    assert pooled.intervals is not None and sorted(pooled.intervals) == [0.8, 0.9]
    for lv in (0.8, 0.9):
        for side in (0, 1):
            assert np.array_equal(pooled.intervals[lv][side], np.concatenate([a.intervals[lv][side], b.intervals[lv][side]]))
    assert Forecasts.concat([_forecasts(4, ["AEM"], None, 1), _forecasts(3, ["AEM"], None, 2)]).intervals is None
    with pytest.raises(ValueError, match=r"part 1: levels 0\.8, 0\.9; part 2: none"):
        Forecasts.concat([a, _forecasts(5, ["WPM"], None, 3)])
    with pytest.raises(ValueError, match=r"part 2: levels 0\.9"):
        Forecasts.concat([a, _forecasts(5, ["WPM"], {0.9: 0.02}, 3)])


WF_TINY = ("model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2", "training.max_steps=2",
           "evaluation.eval_steps=0", "evaluation.report=false", "evaluation.baseline_max_windows=200")


@pytest.mark.parametrize("method", ["split", "aci"])
def test_walk_forward_scores_the_folds_intervals_pooled(tmp_path, method):
    """The pooled out-of-sample report scores the intervals every fold's model produced (each
    calibrated on its own fold's validation windows, scored on its test block): its coverage is the
    folds' coverages weighted by their windows, and a calibration verdict is given (out of sample)."""
    cfg = load_config(None, tiny(tmp_path / "wf", *WF_TINY, f"evaluation.interval_method={method}"))
    res = walk_forward(cfg, 2, scheme="expanding")
    rep = res["pooled"]["intervals"]
    assert rep["method"] == method and sorted(rep["levels"]) == ["0.8", "0.9"]
    assert rep["calibrated"] is not None and "in_sample" not in rep  # the test blocks: out of sample
    evals = [json.loads((tmp_path / "wf" / "walkforward" / f"fold-{k}" / "eval.json").read_text()) for k in (1, 2)]
    n = [e["n_windows"] for e in evals]
    assert res["pooled"]["n_windows"] == sum(n)
    for lv in ("0.8", "0.9"):
        per_fold = [e["intervals"]["levels"][lv]["coverage_per_step"] for e in evals]
        for h in range(2):
            weighted = sum(c[h] * w for c, w in zip(per_fold, n)) / sum(n)
            assert rep["levels"][lv]["coverage_per_step"][h] == pytest.approx(weighted)
        assert [f["interval_coverage"][lv] for f in res["folds"]] == pytest.approx([c[0] for c in per_fold])
    saved = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text())
    assert saved["pooled"]["intervals"]["sentence"] == rep["sentence"]
    assert rep["sentence"] in format_walkforward(res)


def test_a_fold_without_intervals_is_said_not_pooled_silently(tmp_path, monkeypatch):
    """When one fold has no intervals (here its calibration is withheld, as when its validation split
    yields no window), the pooled forecasts are scored without intervals and walkforward.json says
    which fold lacked them, instead of pooling some folds' intervals as if they were all."""
    from hftraining.workflows import train_run

    real, calls = train_run.calibrate, []

    def second_fold_uncalibrated(*args, **kwargs):
        calls.append(1)
        return None if len(calls) == 2 else real(*args, **kwargs)

    monkeypatch.setattr(train_run, "calibrate", second_fold_uncalibrated)
    cfg = load_config(None, tiny(tmp_path / "wf", *WF_TINY))
    res = walk_forward(cfg, 2, scheme="expanding")
    assert "intervals" in json.loads((tmp_path / "wf" / "walkforward" / "fold-1" / "eval.json").read_text())
    saved = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text())
    assert "intervals" not in saved["pooled"]
    assert saved["pooled"]["intervals_note"].startswith("intervals: fold 2 has no intervals")
    assert saved["pooled"]["intervals_note"] in format_walkforward(res)


def test_pooled_intervals_say_why_they_are_missing():
    """Folds without intervals (purged k-fold keeps no validation window to calibrate them on) or with
    intervals of different methods are pooled without intervals, and a sentence says why; with
    evaluation.intervals empty nothing was asked for, so nothing is said."""
    a = _forecasts(6, ["AEM"], {0.8: 0.01}, seed=1)
    b = _forecasts(4, ["AEM"], {0.8: 0.02}, seed=2)
    bare = [_forecasts(6, ["AEM"], None, 1), _forecasts(4, ["AEM"], None, 2)]
    pooled, note = wf.pool_forecasts([a, b], ["split", "split"], "expanding", [0.8])
    assert note is None and pooled.intervals is not None and len(pooled.intervals[0.8][0]) == 10
    pooled, note = wf.pool_forecasts([a, b], ["split", "aci"], "expanding", [0.8])
    assert pooled.intervals is None and note.startswith("intervals: the folds' intervals differ (fold 1: split at 0.8; "
                                                        "fold 2: aci at 0.8)")
    pooled, note = wf.pool_forecasts(bare, [None, None], "purged_kfold", [0.8, 0.9])
    assert pooled.intervals is None and note == (
        "intervals: evaluation.intervals asks for 0.8, 0.9 but no fold has intervals (no validation window to calibrate "
        "them on: purged k-fold trains on them), so the pooled forecasts have none")
    assert wf.pool_forecasts(bare, [None, None], "expanding", [])[1] is None
