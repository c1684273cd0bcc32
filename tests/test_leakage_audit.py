"""An adversarial leakage audit: each test changes (or removes) every row a model may not learn from
and checks that nothing the model does learn from moves, bit for bit.

The panel is hostile on purpose: hourly bars of a New York session (so UTC times move with daylight
saving), with the time features read in ``data.timezone``; one symbol listed late, one with holes
in its calendar, one delisted during validation, one delisted before it; every registered feature
(Alpha158 and the cross-sectional ``market`` covariates included); cross-sectional labels.

What is pinned down:
- the train split (its windows' scaled inputs, past labels, targets, masks, and the scaler and
  target scale) is unchanged by any change to, or the removal of, every row dated on or after the
  first validation date; the train and validation splits are unchanged by any change to the rows
  dated in the test period;
- the same through the feature store (files rewritten in place, then cut short: no entry of the
  longer files is served);
- walk-forward folds (expanding, rolling) see nothing dated in or after their test block; tune's
  folds see nothing of the test split; purged k-fold trains on no target inside its block;
- fitted baselines (ridge, LightGBM) and the conformal calibrations (split, aci) do not read the
  test split; a trained model with early stopping and the best checkpoint is the same whatever
  the test split holds;
- every registered feature, with random parameters, at a half-hour time zone, is causal.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import Config, DataConfig, load_config
from hftraining.data.features import FEATURES, compute_features, parse_spec
from hftraining.data.pipeline import prepare
from hftraining.data.synth import synth_ohlcv
from hftraining.workflows.walkforward import prepare_fold
from conftest import tiny  # noqa: E402

SPECS = [
    "log_return_1", "return_3", "rsi_14", "macd_12_26_9", "bbands_20_2", "volume_ratio_20", "atr_14", "stoch_14_3_3",
    "obv_20", "volatility_20", "dist_high_20", "dist_low_20", "calendar", "hour", "alpha158", "market_5_20",
]
L, H = 20, 3


def _bars(rows: int, seed: int, start: str) -> pd.DataFrame:
    """Hourly bars of the New York session (6 a day, UTC times following daylight saving)."""
    return synth_ohlcv(rows, seed=seed, start=start, freq="1h", session="09:30-16:00")


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    full = _bars(900, 1, "2025-01-06")  # 150 sessions, over the March change of daylight saving
    gap = _bars(900, 3, "2025-01-06")
    gap = gap.drop(index=list(range(200, 230)) + list(range(700, 712))).reset_index(drop=True)  # holes: train and val
    return {
        "FULL": full,
        "LATE": _bars(660, 2, "2025-02-17"),  # listed 30 sessions later, trades to the end
        "GAP": gap,
        "EARLY": _bars(700, 4, "2025-01-06"),  # delisted during validation
        "GONE": _bars(480, 5, "2025-01-06"),  # delisted before validation
    }


def _times(f: pd.DataFrame) -> np.ndarray:
    return pd.DatetimeIndex(f["timestamp"]).asi8


def _cuts(frames: dict[str, pd.DataFrame], d: DataConfig) -> tuple[int, int]:
    """(first validation date, first test date) in ns, as the calendar split cuts ``frames``."""
    p = prepare(d, frames)
    return pd.Timestamp(p.report["split"]["val_from"]).value, pd.Timestamp(p.report["split"]["test_from"]).value


def _changed_from(frames: dict[str, pd.DataFrame], cut: int, seed: int, until: int | None = None) -> dict[str, pd.DataFrame]:
    """Every symbol's bars dated in [cut, until) moved to a new random path (prices and volume), the
    bars still valid; nothing before ``cut`` (nor from ``until``) touched."""
    rng = np.random.default_rng(seed)
    out = {}
    for sym, f in frames.items():
        t = _times(f)
        hit = (t >= cut) & (t < (until if until is not None else np.iinfo(np.int64).max))
        f = f.copy()
        n = int(hit.sum())
        if n:
            factor = np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
            f.loc[hit, ["open", "high", "low", "close"]] = f.loc[hit, ["open", "high", "low", "close"]].to_numpy() * factor[:, None]
            f.loc[hit, "volume"] = np.round(f.loc[hit, "volume"].to_numpy() * rng.uniform(0.2, 5.0, n))
        out[sym] = f
    assert any(not a.equals(b) for a, b in zip(frames.values(), out.values()))
    return out


def _cut_off(frames: dict[str, pd.DataFrame], cut: int) -> dict[str, pd.DataFrame]:
    """Every symbol's bars dated before ``cut`` only (a symbol left with none is dropped)."""
    out = {sym: f[_times(f) < cut].reset_index(drop=True) for sym, f in frames.items()}
    return {sym: f for sym, f in out.items() if len(f)}


def _seen(ws) -> dict[str, np.ndarray]:
    """Everything a model is given by a window set: per window its symbol, as-of time, scaled inputs,
    past labels, padding mask and targets (in window order)."""
    out = {"symbol": np.asarray(ws.symbols)[ws.symbol_ids], "time": np.asarray(ws.times)}
    if len(ws):
        b = ws.batch(np.arange(len(ws)))
        out.update(x=b["x"].numpy(), past=b["past"].numpy(), y=b["y"].numpy())
        out["mask"] = b["mask"].numpy() if "mask" in b else np.ones(b["past"].shape, dtype=bool)
    return out


def _assert_same(a, b, what: str) -> None:
    sa, sb = _seen(a), _seen(b)
    assert len(sa["time"]) > 0, f"{what}: no window to compare"
    assert sa.keys() == sb.keys(), what
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{what}: {key}")


def _assert_same_statistics(p, q, what: str) -> None:
    assert p.preprocessing.scaler.to_dict() == q.preprocessing.scaler.to_dict(), what
    assert p.preprocessing.target_scale == q.preprocessing.target_scale, what


def _data(**kw) -> DataConfig:
    return DataConfig(sequence_length=L, prediction_horizon=H, features=SPECS, cache_dir=None, **kw)


CASES = [
    dict(target="return", embargo=0, timezone="America/New_York"),
    dict(target="cs_zscore", embargo=3, min_history=5, max_gap="3D", scaler="robust", scale_per_symbol=False,
         timezone="America/New_York"),
    dict(target="cs_rank", embargo=1, scale_per_symbol=True, timezone="Asia/Kolkata", stride=2),
    dict(target="excess_return", embargo=2, timezone="Europe/London"),
]


def test_the_audit_covers_every_registered_feature():
    assert {parse_spec(s)[0] for s in SPECS} == set(FEATURES.names())


@pytest.mark.parametrize("case", CASES, ids=[c["target"] for c in CASES])
def test_nothing_dated_in_validation_or_test_reaches_training(panel, case):
    """Training (windows, scaler, target scale) is the same bit for bit when every symbol's rows
    from the first validation date on are changed, or removed; training and validation are the
    same when the rows of the test period are changed."""
    val_from, test_from = _cuts(panel, _data(**case))
    d = _data(**case, split_dates={"val": pd.Timestamp(val_from, tz="UTC").isoformat(),
                                   "test": pd.Timestamp(test_from, tz="UTC").isoformat()})
    base = prepare(d, panel)
    assert set(base.train.symbols) == set(panel) and len(base.val) and len(base.test)
    assert base.train.row_times[base.train.ends[:, None] + np.arange(1, H + 1)].max() < val_from

    for what, other in (("changed from val", _changed_from(panel, val_from, 1)), ("removed from val", _cut_off(panel, val_from))):
        p = prepare(d, other)
        _assert_same(base.train, p.train, f"train, rows {what}")
        _assert_same_statistics(base, p, f"statistics, rows {what}")

    p = prepare(d, _changed_from(panel, test_from, 2))
    _assert_same(base.train, p.train, "train, test rows changed")
    _assert_same(base.val, p.val, "val, test rows changed")
    _assert_same_statistics(base, p, "statistics, test rows changed")
    assert not np.array_equal(_seen(base.test)["y"], _seen(p.test)["y"])  # the change did reach the test windows


def _write(frames: dict[str, pd.DataFrame], folder) -> None:
    for old in folder.glob("*.csv"):
        old.unlink()
    for sym, f in frames.items():
        f.to_csv(folder / f"{sym}.csv", index=False)


def test_the_feature_store_never_serves_rows_of_later_or_longer_files(panel, tmp_path):
    """Through the feature store (the default path of a run): files rewritten in place with another
    future, then cut short at the first validation date, then restored. Each version gets its own
    entry (the longer files' rows are never served for the shorter ones) and training is the same
    for all of them."""
    src = tmp_path / "data"
    src.mkdir()
    case = dict(target="cs_zscore", embargo=2, timezone="America/New_York")
    val_from, test_from = _cuts(panel, _data(**case))
    d = dataclasses.replace(_data(**case), data_dir=str(src), cache_dir=str(tmp_path / "store"),
                            split_dates={"val": pd.Timestamp(val_from, tz="UTC").isoformat(),
                                         "test": pd.Timestamp(test_from, tz="UTC").isoformat()})
    _write(panel, src)
    base = prepare(d)
    _write(_changed_from(panel, val_from, 3), src)
    changed = prepare(d)
    _write(_cut_off(panel, val_from), src)
    short = prepare(d)
    assert short.train.row_times.max() < val_from  # the entry of the shorter files, not of the longer ones
    _write(panel, src)
    again = prepare(d)
    entries = [p for p in (tmp_path / "store").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 3, sorted(p.name for p in entries)  # one per content; the restored files hit the first
    for what, p in (("changed", changed), ("cut short", short), ("restored", again)):
        _assert_same(base.train, p.train, f"store, files {what}")
        _assert_same_statistics(base, p, f"store, files {what}")
    _assert_same(base.val, again.val, "store, restored")
    _assert_same(base.test, again.test, "store, restored")


def _fold_start(frames, d: DataConfig, k: int, n_folds: int) -> int:
    """The first date of walk-forward fold ``k``'s test block (calendar folds), from the calendar."""
    cal = np.unique(prepare(d, frames).train.row_times)  # the calendar of the rows the features leave
    n = len(cal)
    n0 = int(n * d.train_ratio)
    return int(cal[n0 + (n - n0) * k // n_folds])


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_a_walk_forward_fold_sees_nothing_dated_in_or_after_its_test_block(panel, scheme):
    """Fold k's training and validation windows and statistics are the same when every row dated
    from its test block's first date on is changed; each symbol's last training or validation
    target lies at least data.embargo of its own rows before its first row of the block."""
    K, emb = 3, 2
    d = _data(target="cs_zscore", embargo=emb, timezone="America/New_York")
    cfg = Config(data=d)
    for k in range(K):
        start = _fold_start(panel, d, k, K)
        base = prepare_fold(cfg, panel, k, K, scheme)
        other = prepare_fold(cfg, _changed_from(panel, start, 10 + k), k, K, scheme)
        _assert_same(base.train, other.train, f"fold {k} train")
        if len(base.val):
            _assert_same(base.val, other.val, f"fold {k} val")
        _assert_same_statistics(base, other, f"fold {k}")
        # each symbol's first row of the block: its first test target (test windows read the rows before it)
        first = {int(s): int(base.test.ends[base.test.symbol_ids == s].min()) + 1 for s in np.unique(base.test.symbol_ids)}
        assert all(base.test.row_times[r] >= start for r in first.values())
        for ws in (base.train, base.val):
            if not len(ws):
                continue
            last = ws.ends[:, None] + np.arange(1, H + 1)  # (W, H) target rows
            assert ws.row_times[last].max() < start
            for s, row in first.items():
                mine = last[ws.symbol_ids == s]
                if len(mine):  # rows last+1 .. row-1 (at least data.embargo of them) belong to no split
                    assert row - int(mine.max()) > emb, (k, s, row, int(mine.max()))


@pytest.mark.parametrize("split", ["calendar", "per_symbol"])
def test_tune_folds_read_nothing_of_the_test_split(panel, split):
    """Tune's folds (before_test) give the same windows and statistics, test blocks included, when
    every row of the data's own test split is changed: no trial can be chosen on it. (per_symbol:
    each symbol's own test rows, with per-symbol features only; with ``market`` or a
    cross-sectional target a symbol's rows carry the other symbols' returns of the same date, which
    that split places in their test periods, as the README says of it.)"""
    K = 3
    d = _data(target="return", embargo=2, timezone="America/New_York", split=split)
    if split == "per_symbol":
        d = dataclasses.replace(d, features=[s for s in SPECS if not s.startswith("market")])
    full = prepare(d, panel)
    cfg = Config(data=d)
    if split == "calendar":
        first_test = {s: pd.Timestamp(full.report["split"]["test_from"]).value for s in panel}
    else:  # each symbol's own first test row (after the embargo rows: those belong to no split)
        first_test = {s: int(full.test.row_times[full.test.segment_first[k] - d.embargo])
                      for k, s in enumerate(full.test.symbols) if (full.test.symbol_ids == k).any()}
    changed = {}
    for j, (s, f) in enumerate(panel.items()):
        hit = s in first_test and (_times(f) >= first_test[s]).any()
        changed[s] = _changed_from({s: f}, first_test[s], 20 + j)[s] if hit else f
    for scheme in ("expanding", "rolling"):
        for k in range(K):
            a = prepare_fold(cfg, panel, k, K, scheme, before_test=True)
            b = prepare_fold(cfg, changed, k, K, scheme, before_test=True)
            for name in ("train", "val", "test"):
                if len(a.split(name)):
                    _assert_same(a.split(name), b.split(name), f"{scheme} fold {k} {name}")
            _assert_same_statistics(a, b, f"{scheme} fold {k}")


def test_purged_kfold_trains_on_no_target_of_its_block(panel):
    """Purged k-fold (calendar): changing every row dated inside fold k's test block changes no
    training target (embargo >= 1: the first target after the block is the return between two rows
    after it), no input of a training window before the block, and (k > 0) not the statistics,
    fit on the rows before the block."""
    K = 3
    d = _data(target="return", embargo=1, timezone="America/New_York")
    cfg = Config(data=d)
    base_all = prepare(d, panel)
    cal = np.unique(base_all.train.row_times)  # the calendar of the rows (after the features' warm-up)
    n = len(cal)
    for k in range(K):
        lo = int(cal[k * n // K])
        hi = int(cal[(k + 1) * n // K]) if (k + 1) * n // K < n else None
        base = prepare_fold(cfg, panel, k, K, "purged_kfold")
        other = prepare_fold(cfg, _changed_from(panel, lo, 30 + k, until=hi), k, K, "purged_kfold")
        a, b = _seen(base.train), _seen(other.train)
        np.testing.assert_array_equal(a["time"], b["time"])
        np.testing.assert_array_equal(a["y"], b["y"], err_msg=f"fold {k}: a training target moved")
        before = a["time"] < lo
        assert before.any() or k == 0
        for key in ("x", "past", "mask"):
            if k > 0:  # the statistics (fit before the block) and so every input before it
                np.testing.assert_array_equal(a[key][before], b[key][before], err_msg=f"fold {k}: {key}")
        if k > 0:
            _assert_same_statistics(base, other, f"purged fold {k}")


def test_fitted_baselines_and_conformal_calibration_never_read_the_test_split(panel):
    """Ridge (penalty chosen on validation), LightGBM (early-stopped on validation) and the split and
    aci calibrations (on the validation windows) are identical when the test period changes: the
    weights, the boosters and the validation error each fit reports."""
    from hftraining.core.config import ModelConfig
    from hftraining.eval.forecasts import FITTED_BASELINES
    from hftraining.models.intervals import calibrate_windows
    from hftraining.models.predict import predict_scaled
    from hftraining.models.registry import build_model

    case = dict(target="return", embargo=1, timezone="America/New_York")
    _, test_from = _cuts(panel, _data(**case))
    d = dataclasses.replace(_data(**case), features=["log_return_1", "rsi_14", "hour", "market_5"])
    runs = [prepare(d, panel), prepare(d, _changed_from(panel, test_from, 40))]
    assert set(FITTED_BASELINES) == {"ridge", "lightgbm"}
    for name in FITTED_BASELINES:
        models, reports = [], []
        for p in runs:
            m = build_model(ModelConfig(type=name), p.train.features.shape[1], H, L)
            reports.append(m.fit_windows(p.train, p.val))
            models.append(m.eval())
        assert reports[0] == reports[1] and np.isfinite(reports[0]["val_mse"]), name
        a, b = (m.state_dict() for m in models)
        for key in a:
            assert bytes(a[key].numpy().tobytes()) == bytes(b[key].numpy().tobytes()), f"{name} {key}"
        # the test forecasts themselves do move: the fitted models were given different test inputs
        assert not np.array_equal(*(predict_scaled(m, p.test, 256) for m, p in zip(models, runs)))
        for method in ("split", "aci"):
            cals = [calibrate_windows(m, p.val, p.preprocessing.target_scale, [0.8, 0.9], method, 0.01).to_dict()
                    for m, p in zip(models, runs)]
            assert cals[0] == cals[1] and cals[0]["n"] == len(runs[0].val), (name, method)


def test_training_early_stopping_best_checkpoint_intervals_and_fitted_baselines_never_read_the_test_split(panel, tmp_path):
    """A real (tiny) ``train``: validating, early stopping and keeping its best checkpoint, then the
    test evaluation fitting ridge and LightGBM and calibrating split-conformal intervals. Every
    validation score, the best step, the final weights, the saved calibration and the saved fitted
    baselines are the same whatever the test period holds; only the test scores move."""
    import json

    from hftraining.train.runner import training_run
    from hftraining.workflows.train_run import evaluate_test

    case = dict(target="return", embargo=0, timezone="America/New_York")
    _, test_from = _cuts(panel, _data(**case))
    d = dataclasses.replace(_data(**case), features=["log_return_1", "rsi_14", "hour"])
    runs = []
    for j, frames in enumerate((panel, _changed_from(panel, test_from, 50))):
        cfg = load_config(None, tiny(tmp_path / f"run{j}", "training.max_steps=24", "evaluation.eval_steps=4",
                                     "training.save_steps=4", "training.load_best_model_at_end=true",
                                     "training.early_stopping_patience=2", "training.learning_rate=0.03",
                                     "evaluation.report=false", "evaluation.intervals=[0.8, 0.9]",
                                     "evaluation.interval_method=split"))
        cfg.data = dataclasses.replace(cfg.data, features=d.features, timezone=d.timezone, symbols=None, cache_dir=None)
        with training_run(cfg, prepare(cfg.data, frames)) as run:
            result, _, _ = evaluate_test(run)
            runs.append({"weights": {k: v.detach().clone() for k, v in run.model.state_dict().items()},
                         "best": run.state.best_step, "step": run.state.global_step, "result": result,
                         "dir": run.run_dir})
    a, b = runs
    evals = [[line for line in (r["dir"] / "metrics.jsonl").read_text().splitlines() if '"eval_' in line] for r in runs]
    assert len(evals[0]) >= 2 and evals[0] == evals[1]  # every validation score, bit for bit
    assert a["best"] is not None and (a["best"], a["step"]) == (b["best"], b["step"])
    for key in a["weights"]:
        np.testing.assert_array_equal(a["weights"][key].numpy(), b["weights"][key].numpy(), err_msg=key)
    cal = [json.loads((r["dir"] / "final" / "intervals.json").read_text()) for r in runs]
    assert cal[0]["split"] == "val" and cal[0] == cal[1]
    for name in ("ridge", "lightgbm"):
        files = [sorted((r["dir"] / "baselines" / name).glob("*.safetensors")) for r in runs]
        assert files[0] and [f.read_bytes() for f in files[0]] == [f.read_bytes() for f in files[1]], name
    assert a["result"]["model"]["mse"] != b["result"]["model"]["mse"]  # the test split itself did change


def _random_spec(name: str, rng: np.random.Generator) -> str:
    """A valid spec of feature ``name`` with random small parameters."""
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    if name in ("calendar", "hour", "alpha158"):
        return name
    if name == "macd":
        fast = r(2, 8)
        return f"macd_{fast}_{fast + r(1, 12)}_{r(2, 9)}"
    if name == "stoch":
        return f"stoch_{r(2, 20)}_{r(1, 5)}_{r(1, 5)}"
    if name == "bbands":
        return f"bbands_{r(2, 30)}_{rng.choice([1, 1.5, 2, 2.5])}"
    if name == "market":
        return "market_" + "_".join(str(w) for w in sorted(set(rng.integers(1, 40, 3).tolist())))
    return f"{name}_{r(2, 40)}"


@pytest.mark.parametrize("seed", [0, 1])
def test_every_feature_with_random_parameters_is_causal_at_a_half_hour_time_zone(seed):
    """Any spec the config allows (random parameters for each registered feature), on 30-minute
    bars read in a zone half an hour off UTC: changing every bar after t changes no value at or
    before t."""
    rng = np.random.default_rng(seed)
    specs = [_random_spec(name, rng) for name in FEATURES.names()]
    frame = synth_ohlcv(700, seed=seed, start="2025-03-03", freq="30min", session="09:15-15:30", tz="Asia/Kolkata")
    base = compute_features(frame, specs, tz="Asia/Kolkata").to_numpy()
    for t in rng.integers(80, len(frame) - 2, 5):
        t = int(t)
        later = _changed_from({"s": frame}, int(_times(frame)[t + 1]), int(t))["s"]
        other = compute_features(later, specs, tz="Asia/Kolkata").to_numpy()
        np.testing.assert_array_equal(other[: t + 1], base[: t + 1], err_msg=f"{specs} t={t}")
        assert not np.allclose(other[t + 1 :], base[t + 1 :], equal_nan=True)
