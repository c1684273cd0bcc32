import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import apply, build_rows, latest_windows, prepare
from hftraining.data.sources import load_and_validate
from hftraining.data.splits import chronological_split, window_ends


def validated(symbols):
    """The validated sample frames of ``symbols`` (no row-count rule applied)."""
    return load_and_validate(DataConfig(symbols=symbols))[0]


@pytest.fixture(scope="module")
def prepared():
    d = DataConfig(symbols=["AEM", "ARM", "WPM"], sequence_length=30, prediction_horizon=5, embargo=2)
    return d, prepare(d)


def test_no_window_crosses_a_symbol_or_split():
    d = DataConfig(symbols=["AEM", "ARM", "WPM"], sequence_length=30, prediction_horizon=5, embargo=2, split="per_symbol")
    p = prepare(d)
    frames = validated(d.symbols)
    rows, _ = build_rows(frames, d.features, tz=d.timezone)
    for name in ("train", "val", "test"):
        ws = p.split(name)
        assert len(ws) > 0
        for k, sym in enumerate(rows.symbols):
            seg = chronological_split(int(rows.lengths[k]), d.train_ratio, d.val_ratio, d.embargo)[name]
            lo, hi = int(rows.starts[k]) + seg.start, int(rows.starts[k]) + seg.stop
            mine = ws.symbol_ids == k
            assert all(ws.symbols[i] == sym for i in ws.symbol_ids[mine])
            # every input row and every target row of the window lies in this symbol's segment
            assert (ws.ends[mine] - d.sequence_length + 1 >= lo).all()
            assert (ws.ends[mine] + d.prediction_horizon < hi).all()
            assert (ws.first_rows[mine] == lo).all()
        b = ws.batch(np.arange(min(len(ws), 64)))
        assert "mask" not in b  # full windows only: min_history defaults to sequence_length


def test_calendar_windows_lie_between_the_shared_cut_dates(prepared):
    d, p = prepared  # ARM was listed in 2023, AEM and WPM trade since 2020
    split = p.report["split"]
    assert split["mode"] == "calendar"
    val_from, test_from = (pd.Timestamp(split[k]).value for k in ("val_from", "test_from"))
    for name, lo, hi in (("train", -np.inf, val_from), ("val", val_from, test_from), ("test", test_from, np.inf)):
        ws = p.split(name)
        assert set(np.unique(ws.symbol_ids)) == {0, 1, 2}  # every symbol has windows in every split
        inputs = ws.ends[:, None] + np.arange(-d.sequence_length + 1, 1)
        targets = ws.row_times[ws.ends[:, None] + np.arange(1, d.prediction_horizon + 1)]
        assert (inputs >= ws.first_rows[:, None]).all()  # never a row of another symbol or an earlier split
        assert ((targets >= lo) & (targets < hi)).all()
        if name != "train":  # each symbol's segment starts data.embargo=2 of its rows after the cut
            for k in range(3):
                first = int(ws.segment_first[k])
                assert ws.row_times[first - 2] >= lo > ws.row_times[first - 3]


def test_short_history_is_left_padded_and_masked():
    d = DataConfig(symbols=["AEM"], sequence_length=30, prediction_horizon=5, min_history=10)
    p = prepare(d)
    ws = p.train
    first = np.flatnonzero(ws.ends - ws.first_rows + 1 < d.sequence_length)
    assert len(first) == 20  # windows with 10..29 real rows
    b = ws.batch(first[:3])
    mask = b["mask"].numpy()
    assert mask[:, -10:].all() and mask.sum(axis=1).tolist() == [10, 11, 12]
    assert (b["x"].numpy()[~mask] == 0).all() and (b["past"].numpy()[~mask] == 0).all()
    full = prepare(DataConfig(symbols=["AEM"], sequence_length=30, prediction_horizon=5))
    assert len(ws) == len(full.train) + 20


def test_splits_are_chronological_with_embargo(prepared):
    d, p = prepared
    for sym_id, sym in enumerate(p.train.symbols):
        tr = p.train.times[p.train.symbol_ids == sym_id]
        va = p.val.times[p.val.symbol_ids == sym_id]
        te = p.test.times[p.test.symbol_ids == sym_id]
        if len(va) and len(te):
            assert tr.max() < va.min() and va.max() < te.min()
    # the embargo: each symbol's first validation (test) row lies data.embargo of its own rows after
    # the cut, the shared first validation (test) date; counted here from the symbol's row dates
    rows, _ = build_rows(validated(d.symbols), d.features, tz=d.timezone)
    checked = 0
    for name, cut in (("val", p.report["split"]["val_from"]), ("test", p.report["split"]["test_from"])):
        ws, cut = p.split(name), pd.Timestamp(cut).value
        for k in range(len(rows.symbols)):
            mine = ws.ends[ws.symbol_ids == k]
            if not len(mine):
                continue
            before_cut = int((rows.times[rows.rows(k)] < cut).sum())  # the symbol's rows dated before the cut
            first_read = int(mine.min()) - d.sequence_length + 1 - int(rows.starts[k])  # in the symbol's own rows
            assert first_read == before_cut + d.embargo, (name, rows.symbols[k], first_read, before_cut)
            checked += 1
    assert checked == 2 * len(rows.symbols)


def test_window_ends_keep_targets_inside_segment():
    from hftraining.data.splits import Segment

    seg = Segment(100, 150)
    ends = list(window_ends(seg, seq_len=10, horizon=5))
    assert ends[0] == 109 and ends[-1] == 144  # inputs 100..109, targets of 144 end at 149


def test_scaler_uses_training_rows_only(prepared):
    d, p = prepared
    # standardised training features have mean 0 / std 1; validation and test do not in general
    rows, _ = build_rows(validated(d.symbols), d.features, tz=d.timezone)
    val_from = pd.Timestamp(p.report["split"]["val_from"]).value  # the shared first validation date
    train_rows = np.concatenate([
        p.train.scaled_features(slice(int(rows.starts[k]), int(rows.starts[k]) + int((rows.times[rows.rows(k)] < val_from).sum())), k)
        for k in range(len(rows.symbols))
    ])
    np.testing.assert_allclose(train_rows.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(train_rows.std(axis=0), 1, atol=1e-3)
    # changing prices in the test period leaves the fitted scaler untouched
    frames = validated(d.symbols)
    n = len(frames["AEM"])
    frames["AEM"].loc[frames["AEM"].index[int(n * 0.9):], ["open", "high", "low", "close"]] *= 3.0
    p2 = prepare(d, frames)
    assert p2.preprocessing.scaler.to_dict() == p.preprocessing.scaler.to_dict()
    assert p2.preprocessing.target_scale == p.preprocessing.target_scale


def test_targets_are_future_log_returns_of_close(prepared):
    d, p = prepared
    frames = validated(d.symbols)
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
    again = apply(p.preprocessing, validated(d.symbols), "test")
    np.testing.assert_array_equal(again.ends, p.test.ends)
    idx = np.arange(len(again))
    np.testing.assert_array_equal(again.batch(idx)["x"], p.test.batch(idx)["x"])


def test_latest_window_is_the_last_rows(prepared):
    d, p = prepared
    frames = validated(d.symbols)
    ws = latest_windows(p.preprocessing, frames)
    assert len(ws) == 3
    for k, sym in enumerate(ws.symbols):
        assert pd.Timestamp(ws.times[k], tz="UTC") == frames[sym]["timestamp"].iloc[-1]
    assert ws.batch([0, 1, 2])["x"].shape == (3, d.sequence_length, len(p.preprocessing.feature_columns))
