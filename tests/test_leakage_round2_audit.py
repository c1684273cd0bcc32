"""Leakage, the settings the first audit (tests/test_leakage_audit.py) leaves at their defaults:
cross-sectional labels with ``data.augment_jitter``, ``data.stride``, ``data.min_history`` with
``data.max_gap``, and ``data.batching: dates`` with the ``ic`` loss, through every way the data is
cut (the calendar split, walk-forward folds, purged k-fold, tune's folds).

What is pinned down, bit for bit, on the first audit's hostile panel (a symbol listed late, one with
holes, one delisted during validation, one before it):
- the final weights of a real (tiny) training run, no early stopping, are the same whatever every
  row dated on or after the first validation date holds: nothing of validation or test reaches the
  gradient, whatever the label, sampler or augmentation;
- a walk-forward fold's training batches as the trainer draws them (jittered) are the same whatever
  the rows from its test block on hold;
- purged k-fold (calendar) with a cross-sectional label: changing the rows inside a block moves no
  training target, jittered or not;
- tune's purged folds read nothing of the data's own test split;
- ``data.stride`` thins every window trained on: under ``data.batching: dates`` by whole as-of
  dates (each kept date keeps all its symbols), and under purged k-fold the windows after the test
  block as those before it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import Config, DataConfig, load_config
from hftraining.data.augment import training_batch
from hftraining.data.pipeline import prepare
from hftraining.workflows.walkforward import prepare_fold
from conftest import tiny  # noqa: E402
from test_leakage_audit import _assert_same_statistics, _bars, _changed_from, _cuts, _seen  # noqa: E402

L, H = 20, 3
FEATURES = ["log_return_1", "rsi_14", "hour", "market_5_20"]


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    """The first audit's panel, shorter: hourly New York sessions, a symbol listed late, one with holes
    in training and validation, one delisted during validation, one delisted before it."""
    gap = _bars(600, 3, "2025-01-06")
    gap = gap.drop(index=list(range(150, 170)) + list(range(470, 480))).reset_index(drop=True)
    return {
        "FULL": _bars(600, 1, "2025-01-06"),
        "LATE": _bars(420, 2, "2025-02-10"),
        "GAP": gap,
        "EARLY": _bars(470, 4, "2025-01-06"),
        "GONE": _bars(330, 5, "2025-01-06"),
    }


def _data(**kw) -> DataConfig:
    return DataConfig(sequence_length=L, prediction_horizon=H, features=FEATURES, cache_dir=None,
                      timezone="America/New_York", **kw)


VARIANTS = {
    "cs_rank-jitter-stride": dict(target="cs_rank", embargo=2, augment_jitter=4, stride=3),
    "excess-jitter-gaps": dict(target="excess_return", embargo=1, augment_jitter=3, min_history=5, max_gap="3D"),
    "cs_zscore-dates-stride": dict(target="cs_zscore", embargo=0, batching="dates", dates_per_batch=3, stride=2),
}


def _drawn(ws, d: DataConfig) -> dict[str, np.ndarray]:
    """:func:`_seen`, plus the batch of every window as the trainer draws it (jittered: the CPU's
    generator seeded the same for both sides)."""
    out = _seen(ws)
    if len(ws) and d.augment_jitter:
        torch.manual_seed(0)
        b = training_batch(ws, np.arange(len(ws)), d)
        out.update(jx=b["x"].numpy(), jpast=b["past"].numpy(), jy=b["y"].numpy())
    return out


def _assert_drawn_same(a, b, d: DataConfig, what: str) -> None:
    sa, sb = _drawn(a, d), _drawn(b, d)
    assert len(sa["time"]) > 0, f"{what}: no window to compare"
    assert sa.keys() == sb.keys(), what
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{what}: {key}")


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_trained_weights_do_not_depend_on_any_row_of_validation_or_test(panel, tmp_path, variant):
    """A real (tiny) training run on a cross-sectional label (jittered and strided, left-padded across
    gaps, or by whole dates with the ic loss), validating as it goes but without early stopping:
    its final weights are the same bit for bit when every symbol's rows from the first validation
    date on are moved to another random path. Its validation scores do move (the change reached
    the data the run was given)."""
    from hftraining.train.runner import training_run

    kw = VARIANTS[variant]
    val_from, test_from = _cuts(panel, _data(**kw))
    dates = {"val": pd.Timestamp(val_from, tz="UTC").isoformat(), "test": pd.Timestamp(test_from, tz="UTC").isoformat()}
    loss = ["data.batching=dates", "model.loss=ic"] if kw.get("batching") == "dates" else []
    runs = []
    for j, frames in enumerate((panel, _changed_from(panel, val_from, 60))):
        cfg = load_config(None, tiny(tmp_path / f"run{j}", "training.max_steps=12", "evaluation.eval_steps=4",
                                     "training.save_steps=0", "training.learning_rate=0.03",
                                     "evaluation.report=false", *loss))
        cfg.data = dataclasses.replace(cfg.data, features=FEATURES, cache_dir=None, timezone="America/New_York",
                                       symbols=None, split_dates=dates, **kw)
        with training_run(cfg, prepare(cfg.data, frames)) as run:
            runs.append({"weights": {k: v.detach().clone() for k, v in run.model.state_dict().items()},
                         "step": run.state.global_step, "dir": run.run_dir})
    a, b = runs
    assert a["step"] == b["step"] == 12
    for key in a["weights"]:
        np.testing.assert_array_equal(a["weights"][key].numpy(), b["weights"][key].numpy(), err_msg=key)
    evals = [[line for line in (r["dir"] / "metrics.jsonl").read_text().splitlines() if '"eval_' in line] for r in runs]
    assert evals[0] and evals[0] != evals[1]


def _fold_start(frames, d: DataConfig, k: int, n_folds: int) -> int:
    """The first date of walk-forward fold ``k``'s test block (calendar folds), from the calendar."""
    cal = np.unique(prepare(d, frames).train.row_times)
    n = len(cal)
    n0 = int(n * d.train_ratio)
    return int(cal[n0 + (n - n0) * k // n_folds])


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
@pytest.mark.parametrize("variant", ["cs_rank-jitter-stride", "excess-jitter-gaps"])
def test_a_fold_draws_the_same_training_batches_whatever_its_test_block_holds(panel, scheme, variant):
    """Walk-forward folds on a cross-sectional label: the jittered training batches (a window moved back
    never leaves its own run), the validation windows and the statistics of fold k are the same when
    every row dated from its test block's first date on changes."""
    K = 3
    d = _data(**VARIANTS[variant])
    cfg = Config(data=d)
    for k in range(K):
        start = _fold_start(panel, d, k, K)
        base = prepare_fold(cfg, panel, k, K, scheme)
        other = prepare_fold(cfg, _changed_from(panel, start, 70 + k), k, K, scheme)
        _assert_drawn_same(base.train, other.train, d, f"{scheme} fold {k} train")
        if len(base.val):
            _assert_drawn_same(base.val, other.val, dataclasses.replace(d, augment_jitter=0), f"{scheme} fold {k} val")
        _assert_same_statistics(base, other, f"{scheme} fold {k}")


@pytest.mark.parametrize("variant", ["cs_rank-jitter-stride", "excess-jitter-gaps"])
def test_purged_kfold_on_a_cross_sectional_label_moves_no_training_target(panel, variant):
    """Purged k-fold (calendar, embargo >= 1): a cross-sectional label of a date reads only that date's
    rows, so changing every row inside block k moves no training target, as drawn (jittered) or not;
    and (k > 0) no input of a window before the block nor the statistics, fit before it."""
    K = 3
    d = _data(**VARIANTS[variant])
    assert d.embargo >= 1
    cfg = Config(data=d)
    cal = np.unique(prepare(d, panel).train.row_times)
    n = len(cal)
    for k in range(K):
        lo = int(cal[k * n // K])
        hi = int(cal[(k + 1) * n // K]) if (k + 1) * n // K < n else None
        base = prepare_fold(cfg, panel, k, K, "purged_kfold")
        other = prepare_fold(cfg, _changed_from(panel, lo, 80 + k, until=hi), k, K, "purged_kfold")
        a, b = _drawn(base.train, d), _drawn(other.train, d)
        np.testing.assert_array_equal(a["time"], b["time"])
        np.testing.assert_array_equal(a["y"], b["y"], err_msg=f"fold {k}: a training target moved")
        np.testing.assert_array_equal(a["jy"], b["jy"], err_msg=f"fold {k}: a jittered training target moved")
        if k > 0:
            before = a["time"] < lo
            assert before.any()
            for key in ("x", "past", "mask"):
                np.testing.assert_array_equal(a[key][before], b[key][before], err_msg=f"fold {k}: {key}")
            _assert_same_statistics(base, other, f"purged fold {k}")


@pytest.mark.parametrize("target", ["cs_zscore", "excess_return"])
def test_tune_purged_folds_read_nothing_of_the_test_split(panel, target):
    """Tune's purged k-fold folds (before_test, calendar) on a cross-sectional label: every fold's
    windows (test blocks included) and statistics are the same when the data's own test split changes."""
    K = 3
    d = _data(target=target, embargo=1)
    _, test_from = _cuts(panel, d)
    changed = _changed_from(panel, test_from, 90)
    cfg = Config(data=d)
    for k in range(K):
        a = prepare_fold(cfg, panel, k, K, "purged_kfold", before_test=True)
        b = prepare_fold(cfg, changed, k, K, "purged_kfold", before_test=True)
        for name in ("train", "val", "test"):
            if len(a.split(name)):
                _assert_drawn_same(a.split(name), b.split(name), d, f"fold {k} {name}")
        assert len(a.test)
        _assert_same_statistics(a, b, f"fold {k}")


@pytest.mark.parametrize("split", ["calendar", "walk-forward"])
def test_a_stride_under_date_batching_keeps_whole_cross_sections(panel, split):
    """``data.stride`` with ``data.batching: dates`` keeps every stride-th as-of date, counted back from
    the newest, with all its symbols: each kept date holds the windows the stride-1 set has on it. A
    stride counted in each symbol's own rows would keep the symbol with holes, and those listed or
    delisted on other rows, on other dates than the rest (dates of one symbol, where a
    cross-sectional loss learns nothing)."""
    d = _data(target="cs_rank", batching="dates", embargo=1)

    def train(stride: int):
        dd = dataclasses.replace(d, stride=stride)
        return (prepare(dd, panel) if split == "calendar" else prepare_fold(Config(data=dd), panel, 1, 3, "expanding")).train

    every, strided = train(1), train(3)
    dates = np.unique(every.times)
    kept = np.unique(strided.times)
    np.testing.assert_array_equal(kept, dates[::-1][::3][::-1])  # the newest date, then every third back
    whole = np.isin(every.times, kept)
    pairs = lambda ws, m: sorted(zip(ws.times[m].tolist(), ws.ends[m].tolist()))  # noqa: E731
    assert pairs(strided, slice(None)) == pairs(every, whole)


@pytest.mark.parametrize("batching", ["windows", "dates"])
def test_purged_kfold_strides_the_training_windows_after_its_block_too(panel, batching):
    """Purged k-fold trains on the windows before its test block and on those after it (its "val"
    windows, joined to the training ones): ``data.stride`` thins both alike, the same windows as
    thinning each side of the stride-1 fold (rows of each symbol, or as-of dates under
    ``data.batching: dates``)."""
    d = _data(target="cs_rank", embargo=1, batching=batching)
    one, three = (prepare_fold(Config(data=dataclasses.replace(d, stride=s)), panel, 1, 3, "purged_kfold").train
                  for s in (1, 3))
    block = prepare_fold(Config(data=d), panel, 1, 3, "purged_kfold").test.times
    for side in (one.times < block.min(), one.times > block.max()):
        assert side.any()
        if batching == "dates":
            dates = np.unique(one.times[side])
            expect = np.isin(one.times, dates[::-1][::3]) & side
        else:  # every third of each symbol's windows, counted back from its last on that side
            expect = np.zeros(len(one), dtype=bool)
            for s in np.unique(one.symbol_ids[side]):
                mine = np.flatnonzero(side & (one.symbol_ids == s))
                expect[mine[np.argsort(one.ends[mine])][::-1][::3]] = True
        got = np.isin(one.ends, three.ends) & side  # a window's end is its row in the panel's block: unique
        np.testing.assert_array_equal(got, expect)
    assert len(three) == int(np.isin(one.ends, three.ends).sum())  # nothing but windows of the stride-1 fold
