"""A panel is split by calendar: symbols listed on different dates share the cut dates, so nothing a
model trains on is dated inside another symbol's validation or test period — in the train/val/test
split, in walk-forward folds (expanding, rolling, purged k-fold) and in tune folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import Config, DataConfig, load_config
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.pipeline import apply, prepare
from hftraining.data.synth import synth_ohlcv
from hftraining.workflows.walkforward import prepare_fold

FEATURES = ["log_return_1", "rsi_14"]


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    """Three symbols listed years apart, all trading until the same last day (as real panels do)."""
    end = pd.Timestamp("2026-03-31")
    out = {}
    for k, (sym, rows) in enumerate((("OLD", 1500), ("MID", 900), ("NEW", 600))):
        start = (end - pd.offsets.BDay(rows - 1)).strftime("%Y-%m-%d")
        out[sym] = synth_ohlcv(rows, seed=k, start=start)
    return out


def _target_dates(ws) -> np.ndarray:
    """(W, H) dates of every window's targets."""
    return ws.row_times[ws.ends[:, None] + np.arange(1, ws.horizon + 1)]


def _first_row_dates(ws) -> dict[int, int]:
    """symbol id → date of the first row its windows of this split may read (after the embargo)."""
    return {k: int(ws.row_times[ws.segment_first[k]]) for k in np.unique(ws.symbol_ids)}


def _leak(train, later) -> bool:
    """True when a training target is dated on or after any symbol's first row of ``later``."""
    return bool(_target_dates(train).max() >= min(_first_row_dates(later).values()))


@pytest.mark.parametrize("embargo", [0, 3])
def test_no_training_target_is_dated_in_any_symbols_validation_or_test_period(panel, embargo):
    d = DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES, embargo=embargo)
    p = prepare(d, panel)
    assert p.train.symbols == ["OLD", "MID", "NEW"] and set(np.unique(p.train.symbol_ids)) == {0, 1, 2}
    val_from = pd.Timestamp(p.report["split"]["val_from"]).value
    test_from = pd.Timestamp(p.report["split"]["test_from"]).value
    assert _target_dates(p.train).max() < val_from
    assert not _leak(p.train, p.val) and not _leak(p.train, p.test) and not _leak(p.val, p.test)
    assert _target_dates(p.val).max() < test_from <= _target_dates(p.test).min()
    # the embargo is counted in each symbol's own rows from the shared date
    for ws, cut in ((p.val, val_from), (p.test, test_from)):
        for k in np.unique(ws.symbol_ids):
            first = int(ws.segment_first[k])  # the symbol's first row of the split
            assert (ws.row_times[first - embargo : first + 1] >= cut).all()  # embargoed rows are after the cut
            assert ws.row_times[first - embargo - 1] < cut  # and the row before them is not


def test_per_symbol_rows_are_the_explicit_option_and_do_leak_on_this_panel(panel):
    d = DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES, split="per_symbol")
    p = prepare(d, panel)
    assert p.report["split"]["mode"] == "per_symbol" and "val_from" not in p.report["split"]
    # NEW's rows start in 2024: cut by its own rows it trains on dates inside OLD's validation period
    assert _leak(p.train, p.val)


def test_one_symbol_alone_is_cut_exactly_as_by_rows(panel):
    kw = dict(sequence_length=20, prediction_horizon=3, features=FEATURES, embargo=2)
    by_date = prepare(DataConfig(**kw), {"OLD": panel["OLD"]})
    by_rows = prepare(DataConfig(**kw, split="per_symbol"), {"OLD": panel["OLD"]})
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(by_date.split(name).ends, by_rows.split(name).ends)


def test_given_cut_dates_are_used_and_kept_for_evaluation(panel):
    d = DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES,
                   split_dates={"val": "2025-01-02", "test": "2025-07-01"})
    p = prepare(d, panel)
    assert p.report["split"]["val_from"].startswith("2025-01-02") and p.report["split"]["test_from"].startswith("2025-07-01")
    assert _target_dates(p.train).max() < pd.Timestamp("2025-01-02", tz="UTC").value
    assert _target_dates(p.test).min() >= pd.Timestamp("2025-07-01", tz="UTC").value
    # evaluation on the same data rebuilds the same test windows from the saved dates
    again = apply(p.preprocessing, panel, "test")
    np.testing.assert_array_equal(again.ends, p.test.ends)
    # cut dates from ratios are saved too: new data is cut where the training data was
    q = prepare(DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES), panel)
    saved = q.preprocessing.data_config().split_dates
    assert saved is not None and saved["test"].startswith(q.report["split"]["test_from"][:10])
    np.testing.assert_array_equal(apply(q.preprocessing, panel, "test").ends, q.test.ends)


@pytest.mark.parametrize("embargo", [0, 2])
def test_per_symbol_new_data_is_cut_at_each_symbols_saved_dates(panel, embargo):
    """A per_symbol model keeps each symbol's own cut dates: its training data gives the same windows
    again, and new data of a symbol it trained on (here the same files before their last 20% was
    written) holds no test window whose targets it trained or validated on. Cut at the new data's own
    row shares, every one of those 291 "test" windows lay in its training or validation period. A
    symbol it never saw is cut at its own row shares."""
    d = DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES, split="per_symbol", embargo=embargo)
    p = prepare(d, panel)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(apply(p.preprocessing, panel, name).ends, p.split(name).ends)
    last_seen = {}  # symbol → its last training or validation target date
    for ws in (p.train, p.val):
        for k, sym in enumerate(ws.symbols):
            mine = ws.symbol_ids == k
            if mine.any():
                last_seen[sym] = max(last_seen.get(sym, 0), int(_target_dates(ws)[mine].max()))
    short = {s: f.iloc[: int(len(f) * 0.8)].reset_index(drop=True) for s, f in panel.items()}
    short["FRESH"] = synth_ohlcv(400, seed=9)
    test = apply(p.preprocessing, short, "test")
    for k, sym in enumerate(test.symbols):
        mine = test.symbol_ids == k
        if sym in last_seen and mine.any():
            assert _target_dates(test)[mine].min() > last_seen[sym], sym
    fresh = test.symbols.index("FRESH")
    assert (test.symbol_ids == fresh).sum() == len(apply(prepare(d, {"FRESH": short["FRESH"]}).preprocessing,
                                                         {"FRESH": short["FRESH"]}, "test"))
    full = apply(p.preprocessing, {**panel, "FRESH": short["FRESH"]}, "test")  # the saved test period, and FRESH's
    np.testing.assert_array_equal(full.ends[full.symbol_ids != full.symbols.index("FRESH")], p.test.ends)
    assert set(p.preprocessing.to_dict()["symbol_split_dates"]) == {"OLD", "MID", "NEW"}


def test_per_symbol_saved_dates_are_checked_as_untrusted_input(panel, tmp_path):
    import json

    from hftraining.core.config import ModelConfig
    from hftraining.models import build_model
    from hftraining.models.base import load_preprocessing

    d = DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES, split="per_symbol")
    pre = prepare(d, panel).preprocessing
    model = build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), len(pre.feature_columns), 3, 20)
    model.save_pretrained(tmp_path, preprocessing=pre.to_dict())
    assert load_preprocessing(tmp_path)["symbol_split_dates"]["OLD"]["test"] == pre.symbol_split_dates["OLD"]["test"]
    raw = json.loads((tmp_path / "preprocessing.json").read_text())
    raw["symbol_split_dates"]["OLD"]["test"] = "soon"
    (tmp_path / "preprocessing.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"preprocessing.json: symbol_split_dates.OLD.test: 'soon' is not a date"):
        load_preprocessing(tmp_path)


@pytest.mark.parametrize("overrides, message", [
    (["data.split_dates={val: 2025-07-01, test: 2025-01-02}"], "data.split_dates: val 2025-07-01 must be before test 2025-01-02"),
    (["data.split_dates={val: soon, test: 2025-01-02}"], "data.split_dates.val: 'soon' is not a date"),
    (["data.split_dates={val: 2025-01-02}"], "data.split_dates: expected the keys val and test, got val"),
    (["data.split=per_symbol", "data.split_dates={val: 2025-01-02, test: 2025-07-01}"], "data.split_dates: cut dates apply to data.split=calendar"),
    (["data.split=by_date"], "data.split: 'by_date' is not one of 'calendar', 'per_symbol'"),
])
def test_bad_split_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_per_symbol_scaling_needs_training_rows_for_every_symbol(panel):
    d = DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES, scale_per_symbol=True,
                   split_dates={"val": "2024-12-02", "test": "2025-07-01"})
    assert prepare(d, panel).train.symbols == ["OLD", "MID", "NEW"]  # each has rows before 2024-12-02
    late = dict(panel, LATE=synth_ohlcv(150, seed=9, start="2025-02-03"))  # listed after the first validation date
    with pytest.raises(DataError, match=r"^LATE: no training rows to fit its own scaler \(its rows start on or after"):
        prepare(d, late)


def _assert_embargo_after_block(fold, embargo: int, rows_after: bool) -> None:
    """Purged k-fold, per symbol (in its own rows, which are contiguous in the row arrays): the
    first training target after the symbol's test block lies embargo + 1 rows after the block's
    last row (rows z .. z + embargo - 1 are left out, training targets start at z + embargo), and
    the symbol's rows after the block are trained on at all when the block is not the last."""
    test_rows = fold.test.ends[:, None] + np.arange(1, fold.test.horizon + 1)  # (W, H) target rows
    train_rows = fold.train.ends[:, None] + np.arange(1, fold.train.horizon + 1)
    checked = 0
    for sym in np.unique(fold.test.symbol_ids):
        last = int(test_rows[fold.test.symbol_ids == sym].max())  # the symbol's last row of the block
        mine = train_rows[fold.train.symbol_ids == sym]
        after = mine[mine.min(axis=1) > last]  # the symbol's training windows after the block
        if not rows_after:
            assert len(after) == 0, (sym, last)
            continue
        assert len(after), (sym, last)  # the rows after the block are trained on
        assert int(after.min()) - last == embargo + 1, (sym, last, int(after.min()), embargo)
        checked += 1
    assert checked or not rows_after


@pytest.mark.parametrize("scheme", ["expanding", "rolling", "purged_kfold"])
def test_walk_forward_and_tune_folds_are_cut_at_shared_dates(panel, scheme):
    cfg = Config(data=DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES, embargo=2))
    tested = []
    for k in range(3):
        fold = prepare_fold(cfg, panel, k, 3, scheme)
        test_dates = _target_dates(fold.test)
        block = (test_dates.min(), test_dates.max())
        tested.append(block)
        assert len(fold.train) and len(fold.test)
        train_dates = _target_dates(fold.train)
        # no symbol's training target is dated inside any symbol's test block
        inside = (train_dates >= block[0]) & (train_dates <= block[1])
        assert not inside.any()
        if scheme != "purged_kfold":  # forward schemes: training and validation lie wholly before the block
            assert train_dates.max() < block[0]
            if len(fold.val):
                assert not _leak(fold.train, fold.val) and _target_dates(fold.val).max() < block[0]
        else:  # purged: the training windows after the block start data.embargo rows after its last row
            _assert_embargo_after_block(fold, embargo=cfg.data.embargo, rows_after=k < 2)
    starts = [b[0] for b in tested]
    assert starts == sorted(starts) and all(a[1] < b[0] for a, b in zip(tested, tested[1:]))  # blocks in date order, disjoint


@pytest.mark.parametrize("scheme", ["expanding", "rolling", "purged_kfold"])
def test_left_padding_never_moves_a_fold_window_across_its_test_block(panel, scheme):
    """With data.min_history < data.sequence_length, windows are left-padded for their inputs only:
    every test target is dated inside the fold's block of shared dates (computed here from the
    calendar, not from the windows) and no training target is."""
    L, H, K, k = 20, 3, 3, 1
    cfg = Config(data=DataConfig(sequence_length=L, prediction_horizon=H, features=FEATURES, min_history=5))
    fold = prepare_fold(cfg, panel, k, K, scheme)
    cal = np.unique(fold.test.row_times)  # the panel's calendar: the dates of every symbol's rows
    n = len(cal)
    if scheme == "purged_kfold":
        bounds = [j * n // K for j in (k, k + 1)]
    else:
        n0 = int(n * cfg.data.train_ratio)
        bounds = [n0 + (n - n0) * j // K for j in (k, k + 1)]
    lo, hi = (int(cal[b]) if b < n else int(cal[-1]) + 1 for b in bounds)
    test_dates = _target_dates(fold.test)
    assert ((test_dates >= lo) & (test_dates < hi)).all()
    for ws in (fold.train, fold.val):
        dates = _target_dates(ws)
        assert not ((dates >= lo) & (dates < hi)).any()
    assert (fold.train.ends - fold.train.first_rows + 1 < L).any()  # padding is on: short windows were made


@pytest.mark.parametrize("split", ["calendar", "per_symbol"])
@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_tune_folds_never_reach_the_test_split(panel, split, scheme):
    """Tune's folds (before_test) train and validate on rows before the data's own test split only:
    the configuration they choose is scored on that split afterwards. Walk-forward folds over all
    rows would validate its later folds inside it."""
    from hftraining.data.pipeline import prepare

    L, H, K = 20, 3, 4
    cfg = Config(data=DataConfig(sequence_length=L, prediction_horizon=H, features=FEATURES, split=split, embargo=2))
    test = prepare(cfg.data, panel).test
    # each symbol's first row of the test split: its test segment starts data.embargo rows after it
    first_test = {k: int(test.row_times[test.segment_first[k] - cfg.data.embargo]) for k in np.unique(test.symbol_ids)}
    for k in range(K):
        fold = prepare_fold(cfg, panel, k, K, scheme, before_test=True)
        for ws in (fold.train, fold.val, fold.test):
            dates = _target_dates(ws)
            limit = np.array([first_test[int(s)] for s in ws.symbol_ids])[:, None]
            assert (dates < limit).all(), (k, scheme)
        assert len(fold.val)
    leaky = prepare_fold(cfg, panel, K - 1, K, scheme)  # all rows: the last fold validates inside the test split
    limit = np.array([first_test[int(s)] for s in leaky.val.symbol_ids])[:, None]
    assert (_target_dates(leaky.val) >= limit).any()
