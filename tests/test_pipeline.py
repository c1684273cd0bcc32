import numpy as np
import pandas as pd
import pytest

from hftraining.config import DataConfig
from hftraining.data.io import load_frames
from hftraining.data.pipeline import apply, latest_windows, prepare
from hftraining.data.splits import chronological_split, window_ends


@pytest.fixture(scope="module")
def prepared():
    d = DataConfig(symbols=["AEM", "ARM", "WPM"], sequence_length=30, prediction_horizon=5, embargo=2)
    return d, prepare(d)


def test_no_window_crosses_a_symbol_or_split(prepared):
    d, p = prepared
    frames = load_frames(None, d.symbols)
    for name in ("train", "val", "test"):
        ws = p.split(name)
        # each window's rows (inputs and targets) must come from one symbol's segment of this split
        starts = ws.ends - d.sequence_length + 1
        stops = ws.ends + d.prediction_horizon
        seg_id = np.zeros(len(ws.returns), dtype=np.int64)
        # rebuild the segment boundaries from the per-symbol row counts
        bounds, offset = [], 0
        from hftraining.data.pipeline import build_series

        for s in build_series(frames, d.features):
            seg = chronological_split(len(s.times), d.train_ratio, d.val_ratio, d.embargo)[name]
            bounds.append((offset, offset + len(seg), s.symbol))
            offset += len(seg)
        assert offset == len(ws.returns)
        for k, (a, b, sym) in enumerate(bounds):
            seg_id[a:b] = k
        assert (seg_id[starts] == seg_id[stops]).all()
        assert (starts >= 0).all() and (stops < len(ws.returns)).all()
        for k, (a, b, sym) in enumerate(bounds):
            mine = seg_id[ws.ends] == k
            assert all(ws.symbols[i] == sym for i in ws.symbol_ids[mine])


def test_splits_are_chronological_with_embargo(prepared):
    d, p = prepared
    for sym_id, sym in enumerate(p.train.symbols):
        tr = p.train.times[p.train.symbol_ids == sym_id]
        va = p.val.times[p.val.symbol_ids == sym_id]
        te = p.test.times[p.test.symbol_ids == sym_id]
        if len(va) and len(te):
            assert tr.max() < va.min() and va.max() < te.min()


def test_window_ends_keep_targets_inside_segment():
    from hftraining.data.splits import Segment

    seg = Segment(100, 150)
    ends = list(window_ends(seg, seq_len=10, horizon=5))
    assert ends[0] == 109 and ends[-1] == 144  # inputs 100..109, targets of 144 end at 149


def test_scaler_uses_training_rows_only(prepared):
    d, p = prepared
    # standardised training features have mean 0 / std 1; validation and test do not in general
    np.testing.assert_allclose(p.train.features.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(p.train.features.std(axis=0), 1, atol=1e-3)
    # changing prices in the test period leaves the fitted scaler untouched
    frames = load_frames(None, d.symbols)
    n = len(frames["AEM"])
    frames["AEM"].loc[frames["AEM"].index[int(n * 0.9):], ["open", "high", "low", "close"]] *= 3.0
    p2 = prepare(d, frames)
    assert p2.preprocessing.scaler.to_dict() == p.preprocessing.scaler.to_dict()
    assert p2.preprocessing.target_scale == p.preprocessing.target_scale


def test_targets_are_future_log_returns_of_close(prepared):
    d, p = prepared
    frames = load_frames(None, d.symbols)
    ws = p.test
    i = len(ws) // 2
    sym = ws.symbols[ws.symbol_ids[i]]
    f = frames[sym].set_index("timestamp")
    t = pd.Timestamp(ws.times[i], tz="UTC")
    pos = f.index.get_loc(t)
    close = f["close"].to_numpy()
    expected = np.log(close[pos + 1 : pos + 1 + d.prediction_horizon] / close[pos : pos + d.prediction_horizon])
    np.testing.assert_allclose(ws.targets()[i] * p.preprocessing.target_scale, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ws.last_close[i], close[pos])


def test_apply_reproduces_training_windows(prepared):
    d, p = prepared
    again = apply(p.preprocessing, load_frames(None, d.symbols), "test")
    np.testing.assert_array_equal(again.ends, p.test.ends)
    np.testing.assert_array_equal(again.features, p.test.features)


def test_latest_window_is_the_last_rows(prepared):
    d, p = prepared
    frames = load_frames(None, d.symbols)
    ws = latest_windows(p.preprocessing, frames)
    assert len(ws) == 3
    for k, sym in enumerate(ws.symbols):
        assert pd.Timestamp(ws.times[k], tz="UTC") == frames[sym]["timestamp"].iloc[-1]
    assert ws.batch([0, 1, 2])["x"].shape == (3, d.sequence_length, len(p.preprocessing.feature_columns))
