"""The leakage line of a calendar split, checked on panels the other leakage tests do not build.

- Random panels that mix daily, business-day and hourly symbols, with holes, late listings and
  early delistings, under random horizons, embargoes, labels, scalers, padding, gaps, strides and
  date batches: every step of every training target is dated before the first validation date,
  every validation target in the validation period, every test target in the test period, and the
  training windows, scaler and target scale are the same bit for bit when the rows from the first
  validation date on are changed or removed.
- A multi-step horizon without an embargo: each symbol's last training window is the last whose
  H-th target is dated before the cut, not one row later (a leak) nor earlier (a needless purge).
- Cross-sectional labels of training dates are the same with or without a symbol listed after the
  cut (whose later rows do enter the validation dates' cross-sections).
- The scaler (pooled standard, pooled robust, per symbol) and the target scale equal a fit, from
  first principles, on the rows dated before the cut.
- Jittered training batches keep every target before the cut, padding included.
- A hole that validation leaves in a file (rows with bad values dropped) is a gap: under
  ``data.max_gap`` no window of any split reads or forecasts across it.
- The feature store builds an entry of its own for every setting that changes the rows (time zone,
  Close or Adj Close, each validation policy, date range, rows needed), equal to the rows computed
  in memory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import DataConfig
from hftraining.data import augment
from hftraining.data.labels import row_labels
from hftraining.data.pipeline import prepare
from hftraining.data.rows import RowsNeeded, build_rows
from hftraining.data.synth import synth_ohlcv
from hftraining.data.windows import WindowSet


def _times(f: pd.DataFrame) -> np.ndarray:
    return pd.DatetimeIndex(f["timestamp"]).asi8


def _random_panel(rng: np.random.Generator, fewest: int = 60) -> dict[str, pd.DataFrame]:
    """2-4 symbols of daily, business-day or hourly (New York session) bars, listed on random dates,
    of random lengths (``fewest`` to 259 days), half of them with runs of missing rows."""
    out = {}
    for i in range(int(rng.integers(2, 5))):
        freq = str(rng.choice(["B", "D", "1h"]))
        rows = int(rng.integers(fewest, 260)) * (6 if freq == "1h" else 1)
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 120)))
        f = synth_ohlcv(rows, seed=int(rng.integers(10**6)), start=str(start.date()), freq=freq,
                        session="09:30-16:00" if freq == "1h" else None)
        if rng.random() < 0.5:
            holes: set[int] = set()
            for _ in range(int(rng.integers(1, 5))):
                a = int(rng.integers(1, len(f) - 10))
                holes |= set(range(a, a + int(rng.integers(1, 8))))
            f = f.drop(index=sorted(holes)).reset_index(drop=True)
        out[f"S{i}"] = f
    return out


def _random_config(rng: np.random.Generator) -> dict:
    L = int(rng.integers(3, 12))
    return dict(
        sequence_length=L, prediction_horizon=int(rng.integers(1, 7)), cache_dir=None,
        features=[["log_return_1"], ["log_return_1", "market_5"], ["rsi_5", "calendar", "hour"]][int(rng.integers(3))],
        embargo=int(rng.integers(0, 4)), target=str(rng.choice(["return", "excess_return", "cs_zscore", "cs_rank"])),
        scaler=str(rng.choice(["standard", "robust"])),
        min_history=int(rng.integers(1, L + 1)) if rng.random() < 0.4 else None,
        max_gap=str(rng.choice(["2D", "5D"])) if rng.random() < 0.3 else None,
        stride=int(rng.integers(1, 4)), batching=str(rng.choice(["windows", "dates"])),
    )


def _with_cuts(kw: dict, panel: dict[str, pd.DataFrame]) -> tuple[DataConfig, int, int]:
    """The config ``kw`` with the cut dates its ratios give on ``panel`` written out (so a changed or
    shortened panel is cut at the same dates) → (config, first validation date, first test date)."""
    split = prepare(DataConfig(**kw), panel).report["split"]
    val, test = pd.Timestamp(split["val_from"]), pd.Timestamp(split["test_from"])
    return DataConfig(**kw, split_dates={"val": val.isoformat(), "test": test.isoformat()}), val.value, test.value


def _changed_from(frames: dict[str, pd.DataFrame], cut: int | dict[str, int], seed: int) -> dict[str, pd.DataFrame]:
    """Every symbol's bars dated on or after ``cut`` (or its own cut, where ``cut`` maps symbols to theirs: the
    others unchanged) moved to a new random path (still valid bars)."""
    rng = np.random.default_rng(seed)
    out = {}
    for sym, f in frames.items():
        hit = _times(f) >= (cut.get(sym, np.iinfo(np.int64).max) if isinstance(cut, dict) else cut)
        f, n = f.copy(), int(hit.sum())
        if n:
            factor = np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
            cols = ["open", "high", "low", "close"]
            f.loc[hit, cols] = f.loc[hit, cols].to_numpy() * factor[:, None]
            f.loc[hit, "volume"] = np.round(f.loc[hit, "volume"].to_numpy() * rng.uniform(0.2, 5.0, n))
        out[sym] = f
    return out


def _cut_off(frames: dict[str, pd.DataFrame], cut: int) -> dict[str, pd.DataFrame]:
    out = {sym: f[_times(f) < cut].reset_index(drop=True) for sym, f in frames.items()}
    return {sym: f for sym, f in out.items() if len(f)}


def _seen(ws: WindowSet) -> dict[str, np.ndarray]:
    """What a model is given by a window set: symbols, as-of times, scaled inputs, past labels, masks, targets."""
    out = {"symbol": np.asarray(ws.symbols)[ws.symbol_ids], "time": np.asarray(ws.times)}
    if len(ws):
        b = ws.batch(np.arange(len(ws)))
        out.update(x=b["x"].numpy(), past=b["past"].numpy(), y=b["y"].numpy(),
                   mask=b["mask"].numpy() if "mask" in b else np.ones(b["past"].shape, dtype=bool))
    return out


def _target_times(ws: WindowSet) -> np.ndarray:
    """(W, H) dates of every target step of every window."""
    return ws.row_times[ws.ends[:, None].astype(np.int64) + np.arange(1, ws.horizon + 1)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 10])
def test_training_is_unmoved_by_the_rows_from_the_cut_on_over_random_calendars(seed):
    """Seeds 0, 2, 3, 4 and 5 put hourly symbols next to daily ones (a ratio's cut is then an hour of
    a session); every label, date batches, strides, padding and gaps occur among them."""
    rng = np.random.default_rng(seed)
    panel, kw = _random_panel(rng), _random_config(rng)
    d, val_from, test_from = _with_cuts(kw, panel)
    base = prepare(d, panel)
    assert len(base.train)
    assert _target_times(base.train).max() < val_from
    if len(base.val):
        t = _target_times(base.val)
        assert t.min() >= val_from and t.max() < test_from
    if len(base.test):
        assert _target_times(base.test).min() >= test_from
    seen = _seen(base.train)
    for what, other in (("changed", _changed_from(panel, val_from, seed)), ("removed", _cut_off(panel, val_from))):
        p = prepare(d, other)
        if p.report["skipped_symbols"] != base.report["skipped_symbols"]:
            # a symbol too short for one window without its later rows: kept by them, a documented choice
            # (the universe of the market features, the cross-sectional labels and the pooled scaler)
            assert what == "removed" and set(base.report["skipped_symbols"]) < set(p.report["skipped_symbols"])
            continue
        again = _seen(p.train)
        assert seen.keys() == again.keys(), what
        for key in seen:
            np.testing.assert_array_equal(seen[key], again[key], err_msg=f"rows from the cut {what}: {key}")
        assert p.preprocessing.scaler.to_dict() == base.preprocessing.scaler.to_dict(), what
        assert p.preprocessing.target_scale == base.preprocessing.target_scale, what


def _panel() -> dict[str, pd.DataFrame]:
    """Business days of three symbols on different calendars: one with holes, one listed later."""
    gap = synth_ohlcv(400, seed=2, start="2024-01-01")
    return {
        "FULL": synth_ohlcv(400, seed=1, start="2024-01-01"),
        "GAP": gap.drop(index=list(range(150, 160)) + list(range(240, 246))).reset_index(drop=True),
        "LATER": synth_ohlcv(300, seed=3, start="2024-05-01"),
    }


@pytest.mark.parametrize("embargo", [0, 3])
def test_every_step_of_a_multi_step_horizon_is_dated_before_the_cut_and_no_more_is_purged(embargo):
    """With horizon 5 and no embargo the last training window of a symbol ends 5 rows before its
    first row dated on or after the cut: its 5th target is that symbol's last row before the cut. The
    embargo then leaves ``embargo`` rows out of the validation split, never the training split."""
    H = 5
    d = DataConfig(sequence_length=10, prediction_horizon=H, features=["log_return_1", "rsi_5"], cache_dir=None,
                   embargo=embargo, split_dates={"val": "2024-11-04", "test": "2025-02-03"})
    p = prepare(d, _panel())
    val_from = pd.Timestamp("2024-11-04", tz="UTC").value
    tr, va = p.train, p.val
    for k, sym in enumerate(tr.symbols):
        first_val_row = int(tr.ends[tr.symbol_ids == k].max()) + H + 1  # the row after the last training target
        assert tr.row_times[first_val_row - 1] < val_from <= tr.row_times[first_val_row], sym
        # the first validation window reads L real rows from the embargo's end
        assert int(va.ends[va.symbol_ids == k].min()) - d.sequence_length + 1 == first_val_row + embargo, sym


@pytest.mark.parametrize("target", ["excess_return", "cs_zscore", "cs_rank"])
def test_cross_sectional_labels_of_training_dates_ignore_a_symbol_listed_after_the_cut(target):
    d = DataConfig(sequence_length=10, prediction_horizon=3, features=["log_return_1", "market_5"], cache_dir=None,
                   target=target, split_dates={"val": "2024-11-04", "test": "2025-02-03"})
    panel = _panel()
    base = prepare(d, panel)
    # listed on the Friday before the cut: its first row (which has no return) is the warm-up, its first
    # labelled row is dated on the cut
    late = prepare(d, dict(panel, NEW=synth_ohlcv(120, seed=9, start="2024-11-01")))
    k = late.val.symbols.index("NEW")
    assert not (late.train.symbol_ids == k).any()
    assert late.val.row_times[late.val.segment_first[k]] == pd.Timestamp("2024-11-04", tz="UTC").value
    seen, again = _seen(base.train), _seen(late.train)
    for key in seen:
        np.testing.assert_array_equal(seen[key], again[key], err_msg=key)
    assert late.preprocessing.target_scale == base.preprocessing.target_scale
    # the listing does reach the validation dates: their labels and market features move
    assert not np.array_equal(_seen(base.val)["y"], _seen(late.val)["y"][late.val.symbol_ids != k])


def _rows_before(d: DataConfig, panel: dict[str, pd.DataFrame], p, cut: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each symbol's unscaled feature rows dated before ``cut`` and the labels of all of them."""
    rows, _ = build_rows(panel, d.features, RowsNeeded.of(d).usable, tz=d.timezone)
    np.testing.assert_array_equal(rows.times, p.train.row_times)  # the rows prepare cut
    feats, labels = {}, []
    for k, sym in enumerate(rows.symbols):
        keep = np.arange(rows.rows(k).start, rows.rows(k).stop)[rows.times[rows.rows(k)] < cut]
        feats[sym] = np.asarray(rows.features[keep], dtype=np.float64)
        labels.append(np.asarray(p.train.label_rows[keep], dtype=np.float64))
    return feats, np.concatenate(labels)


@pytest.mark.parametrize("scaler, per_symbol, target", [
    ("standard", False, "return"), ("robust", False, "cs_rank"), ("standard", True, "cs_zscore"), ("robust", True, "return"),
])
def test_the_scaler_and_target_scale_are_a_fit_on_the_rows_dated_before_the_cut(scaler, per_symbol, target):
    d = DataConfig(sequence_length=10, prediction_horizon=3, features=["log_return_1", "rsi_5", "volatility_10"],
                   cache_dir=None, scaler=scaler, scale_per_symbol=per_symbol, target=target,
                   split_dates={"val": "2024-11-04", "test": "2025-02-03"})
    panel = _panel()
    p = prepare(d, panel)
    feats, labels = _rows_before(d, panel, p, pd.Timestamp("2024-11-04", tz="UTC").value)

    def fit(x):
        if scaler == "standard":
            return x.mean(axis=0), x.std(axis=0)
        q25, med, q75 = np.percentile(x, [25, 50, 75], axis=0)
        return med, q75 - q25

    params = p.preprocessing.scaler.params
    expected = {sym: fit(x) for sym, x in feats.items()} if per_symbol else {"*": fit(np.concatenate(list(feats.values())))}
    assert params.keys() == expected.keys()
    for key, (center, scale) in expected.items():
        np.testing.assert_allclose(params[key][0], center, rtol=1e-9, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(params[key][1], scale, rtol=1e-9, atol=1e-12, err_msg=key)
    assert p.preprocessing.target_scale == pytest.approx(labels.std(), rel=1e-9)
    if target != "return":  # the labels of those rows are computed from those dates' rows alone
        all_labels = row_labels(p.train.returns, p.train.row_times, target)
        np.testing.assert_array_equal(all_labels, p.train.labels)


@pytest.mark.parametrize("min_history, max_gap", [(None, None), (4, None), (4, "3D")])
def test_jittered_training_batches_keep_every_target_before_the_cut(min_history, max_gap, monkeypatch):
    """The windows the jitter moves to (spied on as they are gathered) end no later than the
    plain ones and keep all their targets before the first validation date, their inputs after
    their segment's first row (padding) and inside one run between gaps."""
    d = DataConfig(sequence_length=10, prediction_horizon=4, features=["log_return_1"], cache_dir=None,
                   min_history=min_history, max_gap=max_gap, augment_jitter=6,
                   split_dates={"val": "2024-11-04", "test": "2025-02-03"})
    p = prepare(d, _panel())
    ws = p.train
    val_from = pd.Timestamp("2024-11-04", tz="UTC").value
    gathered: list[tuple[np.ndarray, np.ndarray]] = []  # (ends, symbols) of each gathered batch
    batch = WindowSet.batch

    def spy(self, idx):
        gathered.append((self.ends[np.asarray(idx)].astype(np.int64), self.symbol_ids[np.asarray(idx)].copy()))
        return batch(self, idx)

    monkeypatch.setattr(WindowSet, "batch", spy)
    torch.manual_seed(0)
    moved = 0
    for _ in range(5):
        idx = np.arange(len(ws))
        out = augment.training_batch(ws, idx, d)
        ends, sids = gathered[-1]
        moved += int((ends != ws.ends[idx]).sum())
        assert (ends <= ws.ends[idx]).all()
        assert ws.row_times[ends[:, None] + np.arange(1, d.prediction_horizon + 1)].max() < val_from
        first = ws.segment_first[sids]
        assert (ends - (min_history or d.sequence_length) + 1 >= first).all()  # at least min_history real rows
        if max_gap is not None:
            real = np.maximum(ends[:, None] + np.arange(-d.sequence_length + 1, d.prediction_horizon + 1), first[:, None])
            assert (np.diff(ws.row_times[real], axis=1) <= pd.Timedelta(max_gap).value).all()
        if "mask" in out:
            assert torch.all(out["x"][~out["mask"]] == 0)
    assert moved > 0


def test_a_hole_validation_leaves_is_a_gap_no_window_spans(tmp_path):
    """Rows of a file dropped by validation (bad values) leave a hole of several days; with
    ``data.max_gap`` no window of any split reads inputs or forecasts targets across it."""
    f = synth_ohlcv(300, seed=4, start="2024-01-01").astype({"close": object})
    bad = list(range(100, 104)) + list(range(230, 234))  # one hole in training, one in the test period
    f.loc[bad, "close"] = "n/a"
    f.to_csv(tmp_path / "HOLE.csv", index=False)
    synth_ohlcv(300, seed=5, start="2024-01-01").to_csv(tmp_path / "FULL.csv", index=False)
    d = DataConfig(data_dir=str(tmp_path), sequence_length=10, prediction_horizon=3, features=["log_return_1"],
                   cache_dir=None, max_gap="4D", min_history=5, split_dates={"val": "2024-08-01", "test": "2024-11-01"})
    p = prepare(d)
    k = p.train.symbols.index("HOLE")
    L, H = d.sequence_length, d.prediction_horizon
    spans = 0
    for ws in (p.train, p.val, p.test):
        own = ws.symbol_ids == k
        ends, first = ws.ends[own].astype(np.int64), ws.segment_first[k]
        rows = np.maximum(ends[:, None] + np.arange(-L + 1, H + 1), first)
        gaps = np.diff(ws.row_times[rows], axis=1)
        assert (gaps <= pd.Timedelta("4D").value).all()
        spans += int(len(ends))
    assert spans > 0
    # the holes are there: without data.max_gap windows do span them
    q = prepare(DataConfig(**{**vars(d), "max_gap": None}))
    own = q.train.symbol_ids == k
    rows = q.train.ends[own].astype(np.int64)[:, None] + np.arange(-L + 1, H + 1)
    assert (np.diff(q.train.row_times[np.maximum(rows, q.train.segment_first[k])], axis=1) > pd.Timedelta("4D").value).any()


def test_the_feature_store_serves_no_entry_to_settings_that_read_or_compute_other_rows(tmp_path):
    """Each setting that changes which rows are read, validated or computed (the time zone of the time
    features, Close or Adj Close, each validation policy, the date range, the rows a window needs)
    builds an entry of its own whose rows equal those computed in memory; settings that do not
    change the rows share the entry."""
    import dataclasses

    from hftraining.data.pipeline import data_rows

    (tmp_path / "csv").mkdir()
    for i in range(2):
        f = synth_ohlcv(240, seed=i, start="2024-01-01", freq="1h", session="09:30-16:00")
        f["Adj Close"] = f["close"] * np.linspace(0.9, 1.0, len(f))  # a split-like adjustment
        f.loc[50, "close"] = -1.0  # an invalid price
        f.loc[60, "high"] = f.loc[60, "low"] * 0.99  # an OHLC violation
        f.loc[120, ["open", "high", "low", "close"]] *= 3  # a jump
        f = pd.concat([f, f.iloc[[70]]]).sort_index(kind="stable").reset_index(drop=True)  # a duplicate stamp
        f.loc[[100, 101]] = f.loc[[101, 100]].to_numpy()  # two rows out of order
        f.to_csv(tmp_path / "csv" / f"S{i}.csv", index=False)
    base = DataConfig(data_dir=str(tmp_path / "csv"), cache_dir=str(tmp_path / "cache"), sequence_length=10,
                      prediction_horizon=2, features=["log_return_1", "rsi_5", "calendar", "hour"])
    assert data_rows(base)[1]["cache"] == "miss"
    changes = [dict(timezone="America/New_York"), dict(price_adjustment="raw"), dict(invalid_values="ffill"),
               dict(ohlc_violations="drop"), dict(duplicate_timestamps="last"), dict(unsorted_timestamps="drop"),
               dict(jumps="drop"), dict(start_date="2024-01-20"), dict(end_date="2024-02-20"), dict(min_rows=200)]
    for change in [*changes, dict(max_gap="1D"), dict(embargo=5)]:
        d = dataclasses.replace(base, **change)
        stored, report = data_rows(d)
        assert report["cache"] == ("miss" if change in changes else "hit"), change
        memory, _ = data_rows(dataclasses.replace(d, cache_dir=None))
        assert stored.symbols == memory.symbols, change
        for name in ("features", "returns", "times", "close", "lengths"):
            np.testing.assert_array_equal(np.asarray(getattr(stored, name)), np.asarray(getattr(memory, name)),
                                          err_msg=f"{change}: {name}")
