"""Walk-forward and purged k-fold keep what a fold trains on apart from what it is scored on: under
purged k-fold the training windows after a test block read prices of the block unless
``data.embargo`` covers the window and the rows its features read, and a walk-forward says so."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig, load_config
from hftraining.data.features import feature_settle
from hftraining.data.pipeline import prepare
from hftraining.data.splits import Fold
from hftraining.data.synth import synth_ohlcv
from hftraining.workflows import walkforward as wf
from conftest import tiny  # noqa: E402

L, H, K = 20, 3, 3
FEATURES = ["log_return_1", "volatility_20"]  # features of a finite window: their settled rows are exact


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    """Weekday symbols listed on different dates, one delisted before the end, one trading every day."""
    end = pd.Timestamp("2026-03-31")
    out = {}
    for k, (sym, rows, off, freq) in enumerate((("OLD", 700, 0, "B"), ("MID", 500, 30, "B"), ("NEW", 300, 0, "B"),
                                                ("BTC", 800, 0, "D"))):
        last = end - (pd.offsets.BDay(off) if freq == "B" else pd.Timedelta(days=off))
        first = last - (pd.offsets.BDay(rows - 1) if freq == "B" else pd.Timedelta(days=rows - 1))
        out[sym] = synth_ohlcv(rows, seed=k, start=first.strftime("%Y-%m-%d"), freq=freq)
    return out


def _changed(frames: dict[str, pd.DataFrame], lo: int, hi: int, seed: int) -> dict[str, pd.DataFrame]:
    """Every symbol's bars dated in [lo, hi) moved to another random path (still valid bars)."""
    rng = np.random.default_rng(seed)
    out = {}
    for sym, f in frames.items():
        t = pd.to_datetime(f["timestamp"], utc=True).astype("int64").to_numpy()
        hit = (t >= lo) & (t < hi)
        f = f.copy()
        factor = np.exp(np.cumsum(rng.normal(0.0, 0.03, int(hit.sum()))))
        f.loc[hit, ["open", "high", "low", "close"]] = f.loc[hit, ["open", "high", "low", "close"]].to_numpy() * factor[:, None]
        out[sym] = f
    return out


def _trained(p) -> dict[str, np.ndarray]:
    """What a purged fold's model is given: its training windows on both sides of the block (as
    walkforward.prepare_fold joins them), scaled inputs, past labels and targets."""
    ws = p.train.join(p.val) if len(p.val) and len(p.train) else p.train
    b = ws.batch(np.arange(len(ws)))
    return {"time": np.asarray(ws.times), "x": b["x"].numpy(), "past": b["past"].numpy(), "y": b["y"].numpy()}


def _block(p) -> tuple[int, int]:
    """[first, last + 1 ns) of the dates the fold's test windows score."""
    t = p.test.row_times[p.test.ends[:, None].astype(np.int64) + np.arange(1, H + 1)]
    return int(t.min()), int(t.max()) + 1


def test_the_embargo_the_note_names_keeps_training_inputs_clear_of_the_test_block(panel):
    """With data.embargo = L + the features' settled rows nothing any fold trains on (inputs, targets,
    scaler, target scale) moves when its test block's prices change; one row fewer (or L alone, as
    the docs once advised) and the first windows after the block read the block's closes, and the
    note says so, naming the embargo that clears them."""
    settle = feature_settle(FEATURES)
    assert settle == 20
    clear = L + settle
    for emb in (L, clear - 1, clear):
        d = DataConfig(sequence_length=L, prediction_horizon=H, features=FEATURES, embargo=emb, cache_dir=None)
        note = wf.purged_inputs_note(d)
        assert (note is None) == (emb >= clear)
        if note is not None:
            assert f"data.embargo={emb}" in note and f"data.embargo >= {clear}" in note
        moved = []
        for k in range(K):
            fold = Fold(k, K, "purged_kfold")
            base = prepare(d, panel, fold=fold)
            lo, hi = _block(base)
            other = prepare(d, _changed(panel, lo, hi, seed=10 + k), fold=fold)
            a, b = _trained(base), _trained(other)
            np.testing.assert_array_equal(a["time"], b["time"])
            np.testing.assert_array_equal(a["y"], b["y"])  # the targets are purged whatever the embargo
            same = all(np.array_equal(a[key], b[key]) for key in ("x", "past"))
            same &= base.preprocessing.scaler.to_dict() == other.preprocessing.scaler.to_dict()
            same &= base.preprocessing.target_scale == other.preprocessing.target_scale
            moved.append(not same)
        assert any(moved) == (emb < clear), (emb, moved)


def test_a_recursive_or_unsettled_feature_is_named_in_the_note():
    d = DataConfig(sequence_length=L, prediction_horizon=H, features=["log_return_1", "rsi_14"], embargo=L, cache_dir=None)
    settle = feature_settle(list(d.features))
    note = wf.purged_inputs_note(d)
    assert f"data.embargo >= {L + settle}" in note and "settling tolerance" in note
    assert wf.purged_inputs_note(DataConfig(sequence_length=L, prediction_horizon=H, features=["log_return_1", "rsi_14"],
                                            embargo=L + settle, cache_dir=None)) is None


def test_a_purged_walk_forward_says_its_training_windows_read_the_test_blocks(tmp_path, caplog):
    """data.embargo = data.sequence_length: the walk-forward warns before any fold trains and keeps the
    sentence in walkforward.json; expanding folds, which train on no row after a block, say nothing."""
    for scheme in ("purged_kfold", "expanding"):
        out = tmp_path / scheme
        cfg = load_config(None, tiny(out, "model.type=zero", "evaluation.report=false", f"data.embargo={L}",
                                     "evaluation.baseline_max_windows=200", "evaluation.intervals=[]"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hftraining.workflows.walkforward"):
            res = wf.walk_forward(cfg, 2, scheme=scheme)
        said = [r.getMessage() for r in caplog.records if "after each test block read" in r.getMessage()]
        saved = json.loads((out / "walkforward" / "walkforward.json").read_text())
        if scheme == "purged_kfold":
            need = L + feature_settle(list(cfg.data.features))
            assert len(said) == 1 and f"data.embargo >= {need}" in said[0]
            assert saved["embargo_note"] == res["embargo_note"] == said[0]
        else:
            assert not said and "embargo_note" not in saved
