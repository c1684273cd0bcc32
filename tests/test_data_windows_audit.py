"""Windows, splits, scaling and training-only augmentation checked against first principles.

- The window index of every split kind (calendar and per-symbol splits, walk-forward and purged
  folds) equals a brute-force enumeration of the admissible windows on random panels (unequal
  lengths, missing dates, ``embargo``, ``stride``, ``min_history``, ``max_gap``), and so do the runs
  that jitter keeps a window inside; through :func:`prepare` on a ragged panel too.
- Augmentation keeps padded steps exactly zero, gives a jittered window its own targets and past
  labels, never moves it out of its run, and is the same under the same seed.
- Scalers never divide by zero (a constant column is scaled by 1, a zero-IQR one that varies by its std); a symbol without
  training rows gets the pooled statistics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data import augment
from hftraining.data.pipeline import prepare
from hftraining.data.rows import Rows, build_rows
from hftraining.data.scaling import GLOBAL, Scaler, target_scale
from hftraining.data.splits import (
    Segment, calendar_cuts, calendar_fold, calendar_purged_fold, calendar_split, chronological_split, purged_kfold,
    row_fold, union_calendar,
)
from hftraining.data.synth import synth_ohlcv
from hftraining.data.windows import WindowSet, index_windows, window_runs

DAY = 86400 * 10**9


def _admissible(times: np.ndarray, seg: Segment, L: int, H: int, min_history: int, max_gap: int | None) -> list[int]:
    """Every row e of one symbol that may end a window of ``seg``, from the definition: targets
    e+1..e+H in [start, stop); real inputs (rows e-L+1..e at or after ``read_from``, the rest padding)
    at least ``min_history`` of them; no gap over ``max_gap`` between consecutive real rows and targets."""
    out = []
    for e in range(len(times)):
        if e + 1 < seg.start or e + H >= seg.stop:
            continue
        first_real = max(e - L + 1, seg.read_from)
        if e - first_real + 1 < min_history:
            continue
        if max_gap is not None and (np.diff(times[first_real : e + H + 1]) > max_gap).any():
            continue
        out.append(e)
    return out


def _runs(ends: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive rows."""
    runs: list[list[int]] = []
    for e in ends:
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    return runs


def _strided(ends: list[int], stride: int) -> list[int]:
    """Each run's ends from its latest back by ``stride`` (the latest window is always kept)."""
    return sorted(e for run in _runs(ends) for e in run[::-1][::stride])


def _random_times(rng: np.random.Generator) -> np.ndarray:
    """Daily times with missing dates (steps of 1 to 7 days), starting on a random date."""
    n = int(rng.integers(5, 80))
    return ((int(rng.integers(0, 40)) + np.cumsum(rng.choice([1, 1, 1, 1, 2, 3, 7], size=n))) * DAY).astype(np.int64)


def _segments(kind: str, t: np.ndarray, calendar: np.ndarray, L: int, H: int, emb: int, scheme: str) -> dict[str, Segment]:
    if kind == "calendar":
        return calendar_split(t, *calendar_cuts(calendar, 0.6, 0.2), emb)
    if kind == "per_symbol":
        return chronological_split(len(t), 0.6, 0.2, emb)
    if kind == "row_fold":
        return row_fold(len(t), 1, 3, L, emb, 0.5, 0.2, scheme)
    if kind == "calendar_fold":
        return calendar_fold(t, calendar, 1, 3, L, emb, 0.5, 0.2, scheme)
    if kind == "purged":
        folds = purged_kfold(len(t), 3, L, H, emb)
        fold = folds[1] if folds else None
    else:
        fold = calendar_purged_fold(t, calendar, 1, 3, L, H, emb)
    if fold is None:
        return {}
    return {**{f"train{i}": s for i, s in enumerate(fold.train)}, "test": fold.test}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_window_index_equals_a_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(80):
        S = int(rng.integers(1, 4))
        times = [_random_times(rng) for _ in range(S)]
        calendar = union_calendar(times)
        L, H, stride = int(rng.integers(1, 8)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
        mh, emb = int(rng.integers(1, L + 1)), int(rng.integers(0, 4))
        max_gap = None if rng.random() < 0.4 else int(rng.integers(1, 4)) * DAY
        kind = str(rng.choice(["calendar", "per_symbol", "row_fold", "calendar_fold", "purged", "calendar_purged"]))
        scheme = str(rng.choice(["expanding", "rolling"]))
        for t in times:
            one = Rows(["X"], np.array([0]), np.array([len(t)]), np.zeros((len(t), 1), np.float32),
                       np.zeros(len(t), np.float32), t, np.ones(len(t)))
            for name, seg in _segments(kind, t, calendar, L, H, emb, scheme).items():
                step = stride if name.startswith("train") else 1
                admissible = _admissible(t, seg, L, H, mh, max_gap)
                ends, ids = index_windows(one, [seg], L, H, step, mh, max_gap)
                what = f"{kind} {name} {seg} L={L} H={H} stride={step} min_history={mh} max_gap={max_gap} times={t // DAY}"
                assert ends.tolist() == _strided(admissible, step), what
                assert (ids == 0).all()
                # the runs jitter keeps a window in: the earliest end of each run of admissible windows
                assert window_runs(one, [seg], L, H, mh, max_gap).tolist() == [r[0] for r in _runs(admissible)], what
                checked += len(ends)
    assert checked > 1000


def _ragged_panel() -> dict[str, pd.DataFrame]:
    """Three symbols of unequal length, listed on different dates, with missing dates (holes of a few
    business days, longer than a weekend) in each."""
    rng = np.random.default_rng(5)
    out = {}
    for k, (sym, rows, start) in enumerate((("A", 420, "2020-01-01"), ("B", 300, "2020-04-01"), ("C", 250, "2020-02-03"))):
        f = synth_ohlcv(rows, seed=k, start=start)
        holes = rng.choice(np.arange(30, rows - 30), size=6, replace=False)
        drop = np.concatenate([np.arange(h, h + int(rng.integers(1, 4))) for h in holes])
        out[sym] = f.drop(index=np.unique(drop)).reset_index(drop=True)
    return out


@pytest.mark.parametrize("max_gap", [None, "4D"])
def test_prepared_windows_of_a_ragged_panel_equal_a_brute_force_enumeration(max_gap):
    """Through :func:`prepare`: each symbol's train/val/test rows are those dated before / from the
    shared cut dates, less ``embargo`` of its own rows after each cut; its windows are the admissible
    ones (training windows ``stride`` apart from each run's latest); so the last training target lies
    more than ``embargo`` rows before the first validation input, and so on."""
    frames = _ragged_panel()
    L, H, stride, mh, emb = 12, 3, 3, 7, 2
    d = DataConfig(features=["log_return_1", "rsi_14"], sequence_length=L, prediction_horizon=H, stride=stride,
                   min_history=mh, embargo=emb, max_gap=max_gap, cache_dir=None)
    p = prepare(d, frames)
    rows, _ = build_rows(frames, d.features, tz=d.timezone)
    assert p.train.symbols == rows.symbols == ["A", "B", "C"]
    val_from, test_from = (pd.Timestamp(p.report["split"][k]).value for k in ("val_from", "test_from"))
    gap = None if max_gap is None else 4 * DAY
    for ws in (p.train, p.val):  # the panel exercises left padding, and gaps over max_gap inside a symbol
        assert ((ws.ends - ws.first_rows + 1) < L).any()
    assert any((np.diff(rows.times[rows.rows(k)]) > 4 * DAY).sum() >= 2 for k in range(len(rows.symbols)))
    for k in range(len(rows.symbols)):
        t = rows.times[rows.rows(k)]
        a, b = int((t < val_from).sum()), int((t < test_from).sum())
        own = {"train": Segment(0, a), "val": Segment(min(a + emb, b), b), "test": Segment(min(b + emb, len(t)), len(t))}
        for name, seg in own.items():
            ws = p.split(name)
            mine = (ws.ends[ws.symbol_ids == k] - rows.starts[k]).tolist()
            expected = _admissible(t, seg, L, H, mh, gap)
            assert mine == (_strided(expected, stride) if name == "train" else expected), (rows.symbols[k], name)
        tr, va = p.train.ends[p.train.symbol_ids == k], p.val.ends[p.val.symbol_ids == k]
        if len(tr) and len(va):  # the embargo, in the symbol's own rows
            first_val_input = max(int(va.min()) - L + 1, int(rows.starts[k]) + own["val"].read_from)
            assert int(tr.max()) + H + emb < first_val_input


@pytest.fixture(scope="module")
def padded():
    return prepare(DataConfig(symbols=["AEM", "WPM"], sequence_length=30, prediction_horizon=3, min_history=5,
                              cache_dir=None, max_gap="3D"))


def test_augmentation_keeps_padding_zero_and_each_windows_own_targets(padded, monkeypatch):
    """Noise and scaling never reach a padded step (it stays exactly 0, as the mask says); a
    jittered window reads the targets and past labels of the rows it now ends on, and never ends
    before the earliest end of its own run (segment, part between gaps, padding allowance)."""
    ws = padded.train
    d = DataConfig(augment_noise_std=0.5, augment_scale_std=0.3, augment_jitter=8)
    seen: list[np.ndarray] = []
    real = WindowSet.batch

    def spy(self, idx):
        seen.append(np.asarray(self.ends)[np.asarray(idx)].astype(np.int64))
        return real(self, idx)

    monkeypatch.setattr(WindowSet, "batch", spy)
    idx = np.arange(len(ws))
    torch.manual_seed(0)
    b = augment.training_batch(ws, idx, d)
    (ends,) = seen
    assert (ends <= ws.ends).all() and (ends >= ws.earliest_ends(idx)).all() and (ends != ws.ends).mean() > 0.5
    mask = b["mask"].numpy()
    assert (~mask).any() and (b["x"].numpy()[~mask] == 0).all() and (b["past"].numpy()[~mask] == 0).all()
    assert (b["x"].numpy()[mask] != 0).all()  # the noise reached every real step
    np.testing.assert_array_equal(b["y"].numpy(), ws.scaled_labels(ends[:, None] + np.arange(1, ws.horizon + 1)))
    real_past = ws.scaled_labels(ends[:, None] + np.arange(-ws.seq_len + 1, 1))
    np.testing.assert_array_equal(b["past"].numpy()[mask], real_past[mask])
    np.testing.assert_array_equal(b["index"].numpy(), idx)  # the sampler's windows, whatever the jitter
    # the mask marks exactly the steps before the window's first readable row
    np.testing.assert_array_equal(mask, (ends[:, None] + np.arange(-ws.seq_len + 1, 1)) >= ws.first_rows[:, None])


def test_augmentation_is_the_same_under_the_same_seed(padded):
    ws, d = padded.train, DataConfig(augment_noise_std=0.2, augment_scale_std=0.2, augment_jitter=4)
    idx = np.arange(0, len(ws), 7)

    def draw(seed):
        torch.manual_seed(seed)
        return augment.training_batch(ws, idx, d)

    a, b, c = draw(1), draw(1), draw(2)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert not torch.equal(a["x"], c["x"])


@pytest.mark.parametrize("kind", ["standard", "robust"])
@pytest.mark.parametrize("per_symbol", [False, True])
def test_constant_and_zero_spread_columns_are_scaled_by_one(kind, per_symbol):
    """A column without spread on the training rows (constant) is scaled by 1, never divided by 0; one
    of zero IQR that varies, by the robust scaler, by its std; the other columns by their std or IQR."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(3, 2, 400), np.full(400, 7.0), np.where(np.arange(400) % 10 == 0, 5.0, 0.0)])
    x = x.astype(np.float32)
    train = {"A": slice(0, 150), "B": slice(200, 350), "NONE": slice(360, 360)}
    sc = Scaler(kind, per_symbol).fit_rows(x, train)
    assert sorted(sc.params) == (["A", "B"] if per_symbol else [GLOBAL])
    for sym in ("A", "B"):
        rows = x[train[sym]] if per_symbol else np.concatenate([x[0:150], x[200:350]])
        center, scale = sc.stats(sym)
        spread = rows.std(axis=0) if kind == "standard" else np.subtract(*np.percentile(rows, [75, 25], axis=0))
        np.testing.assert_allclose(scale[0], spread[0], rtol=1e-6)
        assert scale[1] == 1.0 and np.isfinite(sc.transform(x, sym)).all()
        if kind == "robust":
            assert scale[2] == pytest.approx(rows[:, 2].astype(np.float64).std(), rel=1e-9)  # 90% zeros: the IQR is 0
    if per_symbol:
        with pytest.raises(DataError, match="^symbol 'NONE': the scaler was fit per symbol"):
            sc.stats("NONE")


def test_target_scale_is_the_std_of_the_training_labels_only():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, 1000)
    train = {"A": slice(0, 300), "B": slice(500, 800), "C": slice(900, 900)}
    later = r.copy()
    later[300:500] *= 50
    later[800:] *= 50
    expected = np.concatenate([r[0:300], r[500:800]]).std()
    assert target_scale(r, train) == pytest.approx(expected, rel=1e-12)
    assert target_scale(later, train) == target_scale(r, train)
    assert target_scale(np.zeros(10), {"A": slice(0, 10)}) == 1.0  # no spread: 1, never a division by 0


def test_a_symbol_without_training_rows_gets_the_pooled_statistics():
    """A symbol listed after the first validation date has no training rows: with the pooled scaler
    (the default) it is scaled by the statistics of the other symbols' training rows, and it has
    validation and test windows but no training window."""
    end = pd.Timestamp("2026-03-31")
    frames = {sym: synth_ohlcv(n, seed=k, start=(end - pd.offsets.BDay(n - 1)).strftime("%Y-%m-%d"))
              for k, (sym, n) in enumerate((("OLD", 900), ("MID", 600)))}
    d = DataConfig(sequence_length=20, prediction_horizon=3, features=["log_return_1", "rsi_14"], cache_dir=None,
                   split_dates={"val": "2025-06-02", "test": "2025-11-03"})
    base = prepare(d, frames)
    late = prepare(d, dict(frames, LATE=synth_ohlcv(180, seed=9, start="2025-07-01")))
    assert late.train.symbols == ["OLD", "MID", "LATE"]
    k = late.train.symbols.index("LATE")
    assert not (late.train.symbol_ids == k).any() and (late.val.symbol_ids == k).any() and (late.test.symbol_ids == k).any()
    assert late.preprocessing.scaler.to_dict() == base.preprocessing.scaler.to_dict()
    assert late.preprocessing.target_scale == base.preprocessing.target_scale
    np.testing.assert_array_equal(late.val.center[k], late.val.center[0])
    np.testing.assert_array_equal(late.val.scale[k], late.val.scale[0])


def test_a_resumed_run_augments_as_an_uninterrupted_one(tmp_path):
    """Jitter, scaling and noise (with left padding) draw from the random states a checkpoint saves:
    a run resumed from its step-3 checkpoint ends with the uninterrupted run's weights, bit for bit
    (no dropout: the augmentation is the only random draw of a step)."""
    import shutil

    from safetensors.torch import load_file

    from hftraining.core.config import load_config
    from hftraining.train.runner import training_run
    from conftest import tiny

    common = ["training.max_steps=6", "training.save_steps=3", "training.logging_steps=3", "evaluation.eval_steps=0",
              "data.min_history=8", "data.augment_noise_std=0.3", "data.augment_scale_std=0.2",
              "data.augment_jitter=4", "data.cache_dir=null"]
    with training_run(load_config(None, tiny(tmp_path / "full", *common))):
        pass
    saved = tmp_path / "full" / "checkpoints" / "step-00000003"
    shutil.copytree(saved, tmp_path / "resumed" / "checkpoints" / saved.name)
    with training_run(load_config(None, tiny(tmp_path / "resumed", *common, "training.resume_from_checkpoint=auto"))) as run:
        assert run.state.global_step == 6
    full = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    again = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert full.keys() == again.keys() and all(torch.equal(full[k], again[k]) for k in full)
