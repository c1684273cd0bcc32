"""Feature scalers and labels at their edges.

- A symbol scaled by its own statistics (``data.scale_per_symbol``) from one training row would be
  left unscaled (every column constant, scale 1): a one-line error naming it, as from fewer than
  ``MIN_OWN_ROWS``; from that many its statistics are those rows' own.
- preprocessing.json reproduces the training-time scaled inputs and targets bit for bit.
- Every ``data.target`` equals a pandas reference on random panels (ties, dates with one or two
  symbols, missing dates, rows in symbol order), and :func:`group_ranks` equals a lexsort of
  (values, groups) bit for bit, NaNs and more than 65,536 groups included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.core.jsonio import read_json, write_json
from hftraining.data.features import feature_warmup
from hftraining.data.labels import RANK_SCALE, group_ranks, row_labels
from hftraining.data.pipeline import Preprocessing, apply, latest_windows, prepare
from hftraining.data.scaling import MIN_OWN_ROWS, Scaler
from hftraining.data.synth import synth_ohlcv

FEATURES = ["log_return_1", "rsi_14", "bbands_20_2"]
VAL, TEST = "2025-06-02", "2025-11-03"


def _late_listing(train_rows: int) -> dict[str, pd.DataFrame]:
    """OLD over the whole calendar, LATE listed so that ``train_rows`` of its feature rows (those after
    its features' warm-up) fall before the first validation date."""
    end = pd.Timestamp("2026-03-31")
    old = synth_ohlcv(700, seed=0, start=(end - pd.offsets.BDay(699)).strftime("%Y-%m-%d"))
    start = pd.Timestamp(VAL) - pd.offsets.BDay(feature_warmup(FEATURES) + train_rows)
    return {"OLD": old, "LATE": synth_ohlcv(150, seed=9, start=start.strftime("%Y-%m-%d"))}


def _config(**kw) -> DataConfig:
    return DataConfig(sequence_length=20, prediction_horizon=3, features=FEATURES, cache_dir=None,
                      split_dates={"val": VAL, "test": TEST}, **kw)


@pytest.mark.parametrize("kind", ["standard", "robust"])
def test_a_symbol_with_one_training_row_is_not_left_unscaled(kind):
    """From one row a per-symbol fit has no spread: the symbol would be centred on that row and
    scaled by 1 (its RSI fed to the model in raw points). A one-line error names it; the pooled
    scaler scales it by the other symbols' statistics as before; MIN_OWN_ROWS rows are a fit of their own."""
    frames = _late_listing(1)
    with pytest.raises(DataError, match=r"^LATE: 1 training row to fit its own scaler .*data.scale_per_symbol=false$"):
        prepare(_config(scaler=kind, scale_per_symbol=True), frames)
    pooled = prepare(_config(scaler=kind), frames)
    assert pooled.preprocessing.scaler.stats("LATE")[1].min() < 0.1  # log returns: scaled by their pooled spread
    with pytest.raises(DataError, match=r"^LATE: 2 training rows to fit its own scaler \(at least"):
        prepare(_config(scaler=kind, scale_per_symbol=True), _late_listing(2))
    own = prepare(_config(scaler=kind, scale_per_symbol=True), _late_listing(MIN_OWN_ROWS))
    k = own.train.symbols.index("LATE")
    start = int(own.train.segment_first[k])  # the symbol's first row: its training rows begin there
    rows = np.asarray(own.train.features[start:start + MIN_OWN_ROWS], np.float64)
    center, scale = own.preprocessing.scaler.stats("LATE")
    q25, q50, q75 = np.percentile(rows, [25, 50, 75], axis=0)
    np.testing.assert_allclose(center, rows.mean(axis=0) if kind == "standard" else q50, rtol=1e-12)
    np.testing.assert_allclose(scale, rows.std(axis=0) if kind == "standard" else q75 - q25, rtol=1e-12)
    with pytest.raises(DataError, match="^B: 1 training row"):
        Scaler(kind, per_symbol=True).fit({"A": np.ones((5, 2)), "B": np.ones((1, 2))})


@pytest.mark.parametrize("kind,per_symbol", [("standard", False), ("robust", True)])
def test_preprocessing_json_reproduces_training_inputs_bit_for_bit(tmp_path, kind, per_symbol):
    frames = _late_listing(40)
    p = prepare(_config(scaler=kind, scale_per_symbol=per_symbol, target="cs_zscore"), frames)
    write_json(tmp_path / "preprocessing.json", p.preprocessing.to_dict())
    pre = Preprocessing.from_dict(read_json(tmp_path / "preprocessing.json"))
    for split in ("train", "test"):
        ws, again = p.split(split), apply(pre, frames, split=split)
        a, b = ws.batch(np.arange(len(ws))), again.batch(np.arange(len(again)))
        for key in ("x", "past", "y"):
            assert a[key].numpy().tobytes() == b[key].numpy().tobytes(), (split, key)
    a, b = latest_windows(p.preprocessing, frames), latest_windows(pre, frames)
    assert a.batch(np.arange(2))["x"].numpy().tobytes() == b.batch(np.arange(2))["x"].numpy().tobytes()


def _panel(seed: int, symbols: int = 30, dates: int = 60) -> pd.DataFrame:
    """Rows in symbol order with missing (symbol, date) pairs, dates with one and with two symbols,
    and returns rounded to 1e-3 so that ties are common."""
    rng = np.random.default_rng(seed)
    keep = rng.random((symbols, dates)) > 0.3
    keep[:, 5] = False
    keep[rng.integers(symbols), 5] = True  # one symbol
    keep[:, 9] = False
    keep[:2, 9] = True  # two symbols
    keep[:, 13] = False  # no symbol: a missing date
    s, d = np.nonzero(keep)
    r = np.round(rng.normal(0, 0.01, s.size), 3).astype(np.float32)
    return pd.DataFrame({"date": d.astype(np.int64) * 86_400 * 10**9 + 1_700_000_000 * 10**9, "r": r})


def _reference(df: pd.DataFrame, target: str) -> np.ndarray:
    g = df.groupby("date")["r"]
    r = df["r"].astype(np.float64)
    n = g.transform("size")
    if target == "excess_return":
        out = r - np.log(g.transform(lambda x: np.exp(x.astype(np.float64)).mean()))
    elif target == "cs_zscore":
        out = ((r - g.transform("mean")) / g.transform("std")).fillna(0.0)  # all equal: 0
    else:
        out = ((g.rank(method="average") - 0.5) / n - 0.5) * RANK_SCALE
    return out.where(n >= 2, 0.0).to_numpy()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", ["excess_return", "cs_zscore", "cs_rank"])
def test_every_label_equals_pandas_on_random_panels(seed, target):
    df = _panel(seed)
    got = row_labels(df["r"].to_numpy(), df["date"].to_numpy(), target)
    assert got.dtype == np.float32 and got.shape == (len(df),)
    np.testing.assert_allclose(got, _reference(df, target), rtol=1e-5, atol=1e-6)
    per_date = pd.Series(got.astype(np.float64)).groupby(df["date"].to_numpy())
    if target == "cs_rank":  # centred on every date, ties included
        np.testing.assert_allclose(per_date.mean(), 0.0, atol=1e-6)
    assert row_labels(df["r"].to_numpy(), df["date"].to_numpy(), "return") is None


def _lexsort_ranks(values: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Average ranks from one lexsort of (values, inv), the mean position of each tie run."""
    order = np.lexsort((values, inv))
    g, v = inv[order], values[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_run = new_group | np.r_[True, v[1:] != v[:-1]]
    pos = np.arange(len(v))
    start = np.maximum.accumulate(np.where(new_group, pos, 0))
    run = np.cumsum(new_run) - 1
    ranks = np.empty(len(v))
    ranks[order] = (np.bincount(run, weights=pos - start + 1.0) / np.bincount(run))[run]
    return ranks


@pytest.mark.parametrize("groups", [1, 7, 300, 70_000])
def test_group_ranks_equal_a_lexsort_bit_for_bit(groups):
    rng = np.random.default_rng(groups)
    n = 5 * groups + 50
    inv = rng.integers(0, groups, n)
    inv[:3] = groups - 1  # the highest code present
    values = np.round(rng.normal(0, 1, n), 1)  # many ties
    values[rng.random(n) < 0.05] = np.nan
    values[rng.random(n) < 0.05] = -0.0  # equal to 0.0: tied with it
    got = group_ranks(values, inv)
    assert got.tobytes() == _lexsort_ranks(values, inv).tobytes()
    finite = ~np.isnan(values)
    ref = pd.Series(values[finite]).groupby(inv[finite]).rank(method="average").to_numpy()
    # ranks of the numbers are pandas' (NaNs rank after them, so they do not move the numbers' ranks)
    np.testing.assert_array_equal(got[finite], ref)
    assert group_ranks(np.zeros(0), np.zeros(0, np.int64)).shape == (0,)
    # groups of 1, 2 and 3 rows: 3 groups × 2 rows is as many rows as there are, yet not every group has 2
    v, g = np.array([5.0, 2.0, 1.0, 3.0, 3.0, 0.0]), np.array([0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(group_ranks(v, g), [1.0, 2.0, 1.0, 2.5, 2.5, 1.0])


def test_statistics_a_feature_store_kept_from_before_the_one_row_check_are_refused_too(tmp_path, monkeypatch):
    """The store keeps fitted statistics by a key that the check did not change: statistics fitted
    for a one-row symbol before the check existed must not be served from it in silence."""
    from hftraining.data import pipeline, scaling

    data = tmp_path / "data"
    data.mkdir()
    for sym, frame in _late_listing(1).items():
        frame.to_csv(data / f"{sym}.csv", index=False)
    d = _config(scale_per_symbol=True)
    d.data_dir, d.cache_dir = str(data), str(tmp_path / "cache")
    with monkeypatch.context() as m:  # the code before the check: the statistics go into the store
        m.setattr(scaling, "check_own_rows", lambda counts: None)
        m.setattr(pipeline, "check_own_rows", lambda counts: None, raising=False)
        assert set(prepare(d).preprocessing.scaler.stats("LATE")[1].tolist()) == {1.0}  # left unscaled
    assert any((tmp_path / "cache").rglob("stats-*.json"))
    with pytest.raises(DataError, match=r"^LATE: 1 training row to fit its own scaler"):
        prepare(d)
