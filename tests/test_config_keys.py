"""Config keys a user sets and relies on, each checked for its effect (a key that were silently
ignored fails here): scalers, per-symbol scaling, the training stride, ``min_rows``, the best
model at the end, epoch-end checkpoints, learning-rate scaling, the backtest signal, walk-forward
fine-tuning and the rolling / purged k-fold schemes."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from hftraining.core.config import DataConfig, load_config
from hftraining.core.errors import DataError
from hftraining.data.pipeline import build_rows, prepare, read_frames
from hftraining.data.splits import chronological_split, row_fold
from hftraining.data.sources import load_and_validate
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import Forecasts
from hftraining.optim.schedules import lr_multiplier
from hftraining.train.checkpoint import list_checkpoints
from hftraining.train.distributed import DistInfo
from hftraining.train.trainer import Trainer
from hftraining.workflows.train_run import train
from hftraining.workflows.walkforward import prepare_fold, walk_forward
from conftest import tiny  # noqa: E402

QUICK = ["output.tensorboard=false", "evaluation.report=false", "output.progress_bar=never"]


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# data.scaler, data.scale_per_symbol, data.stride, data.min_rows


def _training_rows(d: DataConfig):
    """Independently of ``prepare``: the validated frames' feature rows, and each symbol's rows of
    the chronological training split (float64)."""
    frames = load_and_validate(d)[0]
    rows, _ = build_rows(frames, d.features, tz=d.timezone)
    train = {}
    for k, sym in enumerate(rows.symbols):
        seg = chronological_split(int(rows.lengths[k]), d.train_ratio, d.val_ratio, d.embargo)["train"]
        train[sym] = rows.features[rows.rows(k)][seg.start : seg.stop].astype(np.float64)
    return rows, train


def _scaled_training_rows(p, rows, train, sym):
    """The training rows of ``sym`` as ``prepare`` scaled them (same row layout as ``rows``)."""
    assert p.train.symbols == rows.symbols and len(p.train.features) == len(rows.features)
    k = rows.symbols.index(sym)
    start = int(rows.starts[k])
    return p.train.scaled_features(slice(start, start + len(train[sym])), k).astype(np.float64)


def test_robust_scaler_is_median_and_iqr_of_the_training_rows():
    base = dict(symbols=["AEM", "WPM"], sequence_length=20, prediction_horizon=3)
    robust = prepare(DataConfig(**base, scaler="robust"))
    standard = prepare(DataConfig(**base, scaler="standard"))
    rows, train = _training_rows(DataConfig(**base))
    x = np.concatenate(list(train.values()))
    q25, med, q75 = np.percentile(x, [25, 50, 75], axis=0)
    assert (q75 - q25 > 1e-12).all()  # no constant column: the scale is the IQR itself
    sc = robust.preprocessing.scaler
    assert sc.kind == "robust" and not sc.per_symbol
    for sym in ("AEM", "WPM"):  # one global fit applied to both symbols
        center, scale = sc.stats(sym)
        np.testing.assert_allclose(center, med, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(scale, q75 - q25, rtol=1e-6, atol=1e-9)
    # the standard scaler is mean / population std of the same rows, and a different fit
    s_center, s_scale = standard.preprocessing.scaler.stats("AEM")
    np.testing.assert_allclose(s_center, x.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s_scale, x.std(axis=0), rtol=1e-6, atol=1e-9)
    assert not np.allclose(sc.stats("AEM")[0], s_center) and not np.allclose(sc.stats("AEM")[1], s_scale)
    # the saved preprocessing keeps the robust fit
    saved = robust.preprocessing.to_dict()["scaler"]
    assert saved["kind"] == "robust" and np.allclose(saved["params"]["*"]["center"], med)
    # and the scaled training features have median 0 and IQR 1
    scaled = np.concatenate([_scaled_training_rows(robust, rows, train, s) for s in rows.symbols])
    s25, s50, s75 = np.percentile(scaled, [25, 50, 75], axis=0)
    np.testing.assert_allclose(s50, 0.0, atol=1e-5)
    np.testing.assert_allclose(s75 - s25, 1.0, rtol=1e-4)


def test_scale_per_symbol_fits_each_symbol_on_its_own_training_rows():
    base = dict(symbols=["AEM", "WPM"], sequence_length=20, prediction_horizon=3)
    p = prepare(DataConfig(**base, scale_per_symbol=True))
    glob = prepare(DataConfig(**base))
    rows, train = _training_rows(DataConfig(**base))
    sc = p.preprocessing.scaler
    assert sc.per_symbol and set(sc.params) == {"AEM", "WPM"}
    for sym in ("AEM", "WPM"):
        center, scale = sc.stats(sym)
        np.testing.assert_allclose(center, train[sym].mean(axis=0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(scale, train[sym].std(axis=0), rtol=1e-6, atol=1e-9)
        scaled = _scaled_training_rows(p, rows, train, sym)
        np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(scaled.std(axis=0), 1.0, rtol=1e-3)
    assert not np.allclose(sc.stats("AEM")[0], sc.stats("WPM")[0])  # two fits, not one copied
    # the per-symbol fit is what centers each symbol: one global fit leaves a symbol off-center
    off = max(np.abs(_scaled_training_rows(glob, rows, train, s).mean(axis=0)).max() for s in ("AEM", "WPM"))
    assert off > 0.05
    with pytest.raises(DataError, match="NIO"):  # no statistics for a symbol it was not fit on
        sc.stats("NIO")


def test_stride_spaces_training_windows_and_keeps_the_latest():
    base = dict(symbols=["AEM", "WPM"], sequence_length=20, prediction_horizon=3)
    k = 4
    one = prepare(DataConfig(**base, stride=1))
    strided = prepare(DataConfig(**base, stride=k))
    for sid, sym in enumerate(one.train.symbols):
        e1 = one.train.ends[one.train.symbol_ids == sid]
        ek = strided.train.ends[strided.train.symbol_ids == sid]
        assert len(e1) > 2 * k, sym
        assert (np.diff(ek) == k).all(), sym  # consecutive training windows are k rows apart
        assert ek[-1] == e1[-1], sym  # the most recent training window is kept
        np.testing.assert_array_equal(ek, e1[::-1][::k][::-1])  # every k-th, counted back from it
    for name in ("val", "test"):  # stride only thins the training windows
        a, b = one.split(name), strided.split(name)
        assert len(a) > 0
        np.testing.assert_array_equal(b.ends, a.ends)
        np.testing.assert_array_equal(b.symbol_ids, a.symbol_ids)
        for sid in range(len(b.symbols)):
            assert (np.diff(b.ends[b.symbol_ids == sid]) == 1).all()


def test_min_rows_skips_short_symbols_and_keeps_the_others(tmp_path):
    base = dict(symbols=["AEM", "ARM"], sequence_length=20, prediction_horizon=3, cache_dir=str(tmp_path / "cache"))
    frames = load_and_validate(DataConfig(**base))[0]
    rows, _ = build_rows(frames, DataConfig().features, tz="UTC")
    usable = dict(zip(rows.symbols, (int(n) for n in rows.lengths)))
    assert usable["ARM"] < usable["AEM"]  # ARM is the short one
    # exactly ARM's usable rows: both are kept, through the data folder and through given frames
    at = DataConfig(**base, min_rows=usable["ARM"])
    for p in (prepare(at), prepare(at, frames)):
        assert p.train.symbols == ["AEM", "ARM"] and p.report["skipped_symbols"] == []
    # one row more: ARM is skipped and listed, AEM trains alone
    above = DataConfig(**base, min_rows=usable["ARM"] + 1)
    p = prepare(above)
    assert p.report["symbols"] == ["AEM"] and p.train.symbols == ["AEM"]
    assert "ARM" in p.report["too_few_rows"] and "AEM" not in p.report["too_few_rows"]
    assert len(p.train) > 0 and len(p.test) > 0
    q = prepare(above, frames)  # frames given directly: build_rows applies the same rule
    assert q.report["skipped_symbols"] == ["ARM"] and q.train.symbols == ["AEM"]
    np.testing.assert_array_equal(q.train.ends, p.train.ends)


# --------------------------------------------------------------------------------------------
# training.load_best_model_at_end, training.save_on_epoch_end, training.lr_scaling


def test_load_best_model_at_end_writes_the_best_checkpoint_as_final(tiny_overrides):
    cfg = load_config(None, tiny_overrides + QUICK + [
        "training.load_best_model_at_end=true", "training.max_steps=30", "training.save_steps=5",
        "evaluation.eval_steps=5", "training.learning_rate=0.03", "training.lr_scheduler=constant",
        "training.warmup_steps=0",
    ])
    train(cfg)
    run = cfg.run_dir()
    evals = [(r["step"], r["eval_mse"]) for r in _metrics(run) if "eval_mse" in r]
    assert [s for s, _ in evals] == [5, 10, 15, 20, 25, 30]
    best_step = min(evals, key=lambda e: e[1])[0]
    state = json.loads((run / "checkpoints" / "step-00000030" / "trainer_state.json").read_text())
    assert state["best_step"] == best_step and state["best_checkpoint"].endswith(f"step-{best_step:08d}")
    assert best_step != 30  # the precondition: the last step is not the best
    final = load_file(str(run / "final" / "model.safetensors"))
    best = load_file(str(run / "checkpoints" / f"step-{best_step:08d}" / "model.safetensors"))
    last = load_file(str(run / "checkpoints" / "step-00000030" / "model.safetensors"))
    assert _weights_equal(final, best)
    assert not _weights_equal(final, last)
    scored = json.loads((run / "eval.json").read_text())
    assert scored["model"]["mse"] > 0  # the test split was scored
    # with the best step's weights, and eval.json says whose (its "step" is the run's last)
    assert (scored["step"], scored["weights_step"]) == (30, best_step)


def test_save_on_epoch_end_checkpoints_every_epoch_end(tiny_overrides):
    batch, max_steps, save_steps = 128, 40, 25
    cfg = load_config(None, tiny_overrides + QUICK + [
        f"data.batch_size={batch}", f"training.max_steps={max_steps}", f"training.save_steps={save_steps}",
        "training.save_on_epoch_end=true", "training.save_total_limit=100", "evaluation.eval_steps=0",
    ])
    n_train = len(prepare(cfg.data).train)
    per_epoch = n_train // batch  # the sampler drops the last partial batch of each epoch
    # the precondition: at least two epoch ends within the run, neither on a save_steps multiple
    assert 2 * per_epoch <= max_steps and all((e * per_epoch) % save_steps for e in (1, 2))
    train(cfg)
    run = cfg.run_dir()
    got = [s for s, _ in list_checkpoints(run / "checkpoints")]
    epoch_ends = [s for s in range(1, max_steps + 1) if s % per_epoch == 0]
    expected = sorted(set(epoch_ends) | {s for s in range(1, max_steps + 1) if s % save_steps == 0} | {max_steps})
    assert got == expected
    for e, step in enumerate(epoch_ends):  # each of them was saved right as its epoch's last batch was drawn
        state = json.loads((run / "checkpoints" / f"step-{step:08d}" / "trainer_state.json").read_text())
        assert state["sampler"] == {"seed": cfg.training.seed, "epoch": e, "position": per_epoch * batch}


@pytest.mark.parametrize("scaling", ["none", "linear", "sqrt"])
def test_lr_scaling_leaves_the_schedule_unchanged_in_one_process(tiny_overrides, scaling):
    cfg = load_config(None, tiny_overrides + QUICK + [
        f"training.lr_scaling={scaling}", "training.max_steps=6", "training.warmup_steps=2",
        "training.lr_scheduler=cosine", "training.save_steps=0", "evaluation.eval_steps=0",
    ])
    train(cfg)
    logged = {r["step"]: r["learning_rate"] for r in _metrics(cfg.run_dir()) if "learning_rate" in r}
    assert sorted(logged) == list(range(1, 7))
    for step, lr in logged.items():  # the update of step s (1-based) uses the multiplier of 0-based s - 1
        assert lr == pytest.approx(cfg.training.learning_rate * lr_multiplier(step - 1, cfg.training), rel=1e-12)
    assert len(set(logged.values())) > 2  # warmup and decay: the schedule really varies


def test_lr_scaling_factor_depends_on_the_world_size(tiny_overrides, tmp_path, monkeypatch):
    """The trainer of rank 0 of two: no process group is needed to build it except for the DDP
    wrapper, replaced here (nothing is trained or reduced)."""
    import hftraining.train.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "DDP", lambda model: None)
    cfg0 = load_config(None, tiny_overrides + QUICK)
    data = prepare(cfg0.data)
    base = cfg0.training.learning_rate * lr_multiplier(0, cfg0.training)
    for scaling, factor in (("none", 1.0), ("linear", 2.0), ("sqrt", math.sqrt(2.0))):
        cfg = load_config(None, tiny_overrides + QUICK + [f"training.lr_scaling={scaling}"])
        for world, expect in ((1, 1.0), (2, factor)):
            tr = Trainer(cfg, data, DistInfo(rank=0, world_size=world), tmp_path / f"{scaling}-{world}")
            try:
                lrs = [g["lr"] for g in tr.optimizer.param_groups]
                assert lrs == pytest.approx([base * expect] * len(lrs), rel=1e-12), (scaling, world)
                assert tr.scheduler.base_lrs == pytest.approx([cfg.training.learning_rate * expect] * len(lrs), rel=1e-12)
            finally:
                tr.close()


# --------------------------------------------------------------------------------------------
# evaluation.backtest_signal


def test_backtest_signal_mean_trades_the_mean_of_the_horizon():
    T, N, H = 60, 2, 3
    rng = np.random.default_rng(3)
    R = rng.normal(0, 0.01, size=(T, N))
    step1 = rng.choice([-1.0, 1.0], size=(T, N)) * 0.01
    pred = np.stack([step1, -3 * step1, -3 * step1], axis=2)  # step 1 and the mean (-5/3 step 1) disagree in sign
    dates = pd.bdate_range("2024-01-01", periods=T, tz="UTC").as_unit("ns").asi8
    W = T * N
    fc = Forecasts(
        pred={"model": pred.reshape(W, H)}, true=np.zeros((W, H)), dates=np.repeat(dates, N),
        symbol_ids=np.tile(np.arange(N), T), symbols=["A", "B"], last_return=R.reshape(W),
        past_vol=np.full(W, 0.01), last_close=np.full(W, 100.0),
    )
    assert (np.sign(fc.pred["model"][:, 0]) == -np.sign(fc.pred["model"].mean(axis=1))).all()
    runs = {}
    for signal in ("step1", "mean"):
        ev = load_config(None, [f"evaluation.backtest_signal={signal}", "evaluation.backtest_cost_bps=0",
                                "evaluation.backtest_slippage_bps=0"]).evaluation
        res = backtest_forecasts(fc, ev)
        assert res["settings"]["signal"] == signal
        runs[signal] = res["curves"]["model"][1]
    held = {"step1": np.sign(step1), "mean": np.sign(pred.mean(axis=2))}
    for signal, w in held.items():  # equal notional 1/N on the sign of the chosen forecast, earning the next return
        expected = (w[:-1] / N * np.expm1(R[1:])).sum(axis=1)
        np.testing.assert_allclose(runs[signal], expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(runs["mean"], -runs["step1"], rtol=1e-12, atol=1e-15)  # opposite trades
    assert np.abs(runs["step1"]).sum() > 0


# --------------------------------------------------------------------------------------------
# walk-forward: --mode finetune, --scheme rolling / purged_kfold

WF = tiny(None, "model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2",
          "training.max_steps=3", "evaluation.eval_steps=0", "training.save_steps=0", *QUICK)


def _record_fit_starts(monkeypatch):
    """Spy on Trainer.fit: the weights each fold's model starts training from."""
    starts = []
    original = Trainer.fit

    def fit(self):
        starts.append({k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
        return original(self)

    monkeypatch.setattr(Trainer, "fit", fit)
    return starts


@pytest.mark.parametrize("mode", ["finetune", "retrain"])
def test_walk_forward_finetune_starts_each_fold_from_the_previous_folds_weights(tmp_path, monkeypatch, mode):
    starts = _record_fit_starts(monkeypatch)
    cfg = load_config(None, WF + [f"output.output_dir={tmp_path / 'wf'}"])
    res = walk_forward(cfg, 2, scheme="expanding", mode=mode)
    assert res["mode"] == mode and len(res["folds"]) == 2 and len(starts) == 2
    base = tmp_path / "wf" / "walkforward"
    final1 = load_file(str(base / "fold-1" / "final" / "model.safetensors"))
    final2 = load_file(str(base / "fold-2" / "final" / "model.safetensors"))
    assert not _weights_equal(final1, starts[0])  # fold 1 trained: its final weights moved
    assert not _weights_equal(final2, final1)  # fold 2 trained too
    if mode == "finetune":
        assert _weights_equal(starts[1], final1)  # fold 2 starts from fold 1's final weights
    else:
        assert _weights_equal(starts[1], starts[0])  # a fresh model of the same seed
        assert not _weights_equal(starts[1], final1)


def _targets(ends, H):
    return {int(t) + h for t in ends for h in range(1, H + 1)}


def test_walk_forward_rolling_slides_a_fixed_length_training_span(tmp_path):
    cfg = load_config(None, WF + [f"output.output_dir={tmp_path / 'wf'}"])
    K, H = 3, cfg.data.prediction_horizon
    res = walk_forward(cfg, K, scheme="rolling")
    assert res["scheme"] == "rolling" and [f["fold"] for f in res["folds"]] == [1, 2, 3]
    assert json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text())["n_folds"] == K
    frames = read_frames(cfg.data)[0]
    rows, _ = build_rows(frames, cfg.data.features, tz=cfg.data.timezone)
    folds = [prepare_fold(cfg, frames, k, K, "rolling") for k in range(K)]
    assert [f["train_windows"] for f in res["folds"]] == [len(d.train) for d in folds]
    for sid, sym in enumerate(rows.symbols):
        d = cfg.data
        spans = [row_fold(int(rows.lengths[sid]), k, K, d.sequence_length, d.embargo, d.train_ratio, d.val_ratio,
                          "rolling") for k in range(K)]
        lengths = {len(s["train"]) + len(s["val"]) + (cfg.data.embargo if len(s["val"]) else 0) for s in spans}
        assert len(lengths) == 1, sym  # the same span length in every fold ...
        assert all(a["train"].start < b["train"].start for a, b in zip(spans, spans[1:])), sym  # ... sliding forward
        counts = [int((d.train.symbol_ids == sid).sum()) for d in folds]
        assert len(set(counts)) == 1 and counts[0] > 0, sym  # as many training windows in each fold
        firsts = [int(d.train.ends[d.train.symbol_ids == sid].min()) for d in folds]
        assert firsts == sorted(set(firsts)), sym  # the oldest training window moves forward
        for d in folds:  # and every training target precedes every test target of the fold
            mine = lambda ws: ws.ends[ws.symbol_ids == sid]  # noqa: E731
            assert max(_targets(mine(d.train), H) | _targets(mine(d.val), H)) < min(_targets(mine(d.test), H))
    expanding = [len(prepare_fold(cfg, frames, k, K, "expanding").train) for k in range(K)]
    assert expanding[-1] > expanding[0] == len(folds[0].train)  # unlike the expanding scheme's growth


def test_walk_forward_purged_kfold_keeps_training_targets_off_the_test_targets(tmp_path):
    emb = 3
    cfg = load_config(None, WF + [f"output.output_dir={tmp_path / 'wf'}", f"data.embargo={emb}"])
    K, H = 3, cfg.data.prediction_horizon
    res = walk_forward(cfg, K, scheme="purged_kfold")
    assert res["scheme"] == "purged_kfold" and [f["fold"] for f in res["folds"]] == [1, 2, 3]
    frames = read_frames(cfg.data)[0]
    folds = [prepare_fold(cfg, frames, k, K, "purged_kfold") for k in range(K)]
    assert [f["train_windows"] for f in res["folds"]] == [len(d.train) for d in folds]
    tested = {}
    for k, d in enumerate(folds):
        for sid, sym in enumerate(d.train.symbols):
            tr = d.train.ends[d.train.symbol_ids == sid]
            te = d.test.ends[d.test.symbol_ids == sid]
            assert len(tr) and len(te), (k, sym)
            test_targets = _targets(te, H)
            assert not _targets(tr, H) & test_targets, (k, sym)  # the purge
            last = max(test_targets)
            assert not any(last < t + 1 <= last + emb for t in tr), (k, sym)  # the embargo after the block
            if k == 1:  # a middle block trains on both sides of it
                assert tr.min() < te.min() and tr.max() > te.max(), sym
            tested.setdefault(sym, []).append(te)
    for sym, parts in tested.items():  # the test blocks are disjoint and follow each other
        assert all(a.max() < b.min() for a, b in zip(parts, parts[1:])), sym
