"""Causality and leakage, by fuzzing with fixed seeds.

- Features: on random OHLCV frames (1 to 500 rows; gaps; runs of zero and of missing volume; flat
  prices and bars whose open, high, low and close are one price; daily bars stamped at UTC midnight or
  another hour, intraday bars), every registered feature with random parameters gives each row t
  the same bits (NaN in the same places) on the whole frame, on the frame cut after t, and on the
  frame whose rows after t are replaced by other bars (other prices, volumes and stamps of the same
  bar spacing; frames that switch spacing: `tests/test_calendar_causal.py`).
- The feature store: an entry built from files cut at a date holds the rows the entry of the longer
  files holds up to that date, and the rows computed in memory, bit for bit.
- Splits: on random panels (symbols listed and delisted at other dates, with holes), every label,
  embargo, horizon, cut (``data.split_dates`` or the ratios), padding, stride and scaler: no training
  target is dated on or after the first validation date, no validation target on or after the first
  test date, each symbol leaves out ``data.embargo`` rows after each cut, and changing (or removing)
  every row from a cut date on moves nothing trained on (windows, scaler, target scale) bit for bit.
  Walk-forward folds (expanding, rolling, purged k-fold) likewise, with the ridge baseline's weights.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig, ModelConfig
from hftraining.data.features import FEATURES, compute_features
from hftraining.data.pipeline import data_rows, prepare
from hftraining.data.splits import Fold
from hftraining.data.synth import synth_ohlcv
from hftraining.models import build_model
from test_leakage_audit import _random_spec, _seen  # noqa: E402

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]


# --- features --------------------------------------------------------------------------------------


def _spec(name: str, rng: np.random.Generator) -> str:
    """A valid spec of feature ``name`` with random parameters (returns over 1-11 bars too)."""
    if name in ("log_return", "return"):
        return f"{name}_{int(rng.integers(1, 12))}"
    return _random_spec(name, rng)


def _stamps(rng: np.random.Generator, n: int, daily: bool, after: pd.Timestamp | None = None) -> pd.DatetimeIndex:
    """``n`` increasing UTC stamps: daily bars (a day or more apart, at one time of day: midnight is a
    date) or intraday bars (gaps up to 12 steps, all under 18 hours), from ``after`` on."""
    if daily:
        step, gaps = pd.Timedelta("1D"), rng.choice([1, 1, 1, 1, 3, 4, 10], n)
        start = pd.Timestamp("2021-01-04", tz="UTC") + pd.Timedelta(hours=int(rng.choice([0, 0, 5, 21])))
    else:
        step = pd.Timedelta(str(rng.choice(["1min", "5min", "30min", "1h"])))
        gaps = np.where(rng.random(n) < 0.1, rng.integers(2, 13, n), 1)
        start = pd.Timestamp("2021-01-04", tz="UTC") + step * int(rng.integers(0, 30))
    if after is not None:  # the next stamps of the same bars
        start = after
    return pd.DatetimeIndex(start + step * np.cumsum(gaps)).as_unit("ns")


def _bars(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Valid OHLCV values of ``n`` bars with hostile stretches: flat prices, bars of one price, zero
    volume, missing volume (NaN), volumes of other units."""
    close = 100 * np.exp(np.cumsum(rng.normal(0, rng.choice([1e-4, 0.01, 0.1]), n)))
    for _ in range(int(rng.integers(0, 4))):
        a = int(rng.integers(0, n))
        close[a : a + int(rng.integers(1, 80))] = close[a]
    op = close * np.exp(rng.normal(0, 0.01, n))
    same = rng.random(n) < 0.2
    op[same] = close[same]
    hi = np.maximum(op, close) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    lo = np.minimum(op, close) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    one = rng.random(n) < 0.1
    op[one] = hi[one] = lo[one] = close[one]
    vol = rng.uniform(0, 1e6, n) * rng.choice([1e-3, 1, 1e3], n)
    for _ in range(int(rng.integers(0, 3))):
        a = int(rng.integers(0, n))
        vol[a : a + int(rng.integers(1, 30))] = 0.0
    if rng.random() < 0.3:
        a = int(rng.integers(0, n))
        vol[a : a + int(rng.integers(1, 30))] = np.nan
    return {"open": op, "high": hi, "low": lo, "close": close, "volume": vol}


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, NaN in the same places (and +0.0 told from -0.0)."""
    na, nb = np.isnan(a), np.isnan(b)
    return a.shape == b.shape and np.array_equal(na, nb) and np.array_equal(np.where(na, 0.0, a).view(np.int64),
                                                                             np.where(nb, 0.0, b).view(np.int64))


@pytest.mark.parametrize("seed", range(12))
def test_no_feature_row_changes_when_later_rows_change_or_go_on_random_frames(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([rng.integers(1, 25), rng.integers(25, 120), rng.integers(120, 501)]))
    daily = bool(rng.random() < 0.5)
    ts = _stamps(rng, n, daily)
    frame = pd.DataFrame({"timestamp": ts, **_bars(rng, n)})
    specs = [_spec(name, rng) for name in FEATURES.names()]
    tz = str(rng.choice(ZONES))
    # the bars' spacing, which a frame of a few rows is read by (date_stamps), as a model's recorded one
    spacing = 86400.0 if daily else float(np.median(np.diff(ts.asi8))) / 1e9 if n > 1 else 60.0
    feats = lambda f: compute_features(f, specs, tz=tz, bar_seconds=spacing).to_numpy()  # noqa: E731
    full = feats(frame)
    for t in sorted(set(rng.integers(0, n, 6).tolist()) | {n - 1}):
        stamps = lambda t=t: (ts[: t + 1].append(_stamps(rng, n - t - 1, daily, after=ts[t]))  # noqa: E731
                              if rng.random() < 0.5 else None)  # other stamps too, the same kind of bars
        check_rows_up_to(feats, frame, full, t, rng, stamps, f"seed {seed}: {specs} row <= {t} of {n}")


def check_rows_up_to(feats, frame: pd.DataFrame, full: np.ndarray, t: int, rng: np.random.Generator, stamps,
                     what: str) -> None:
    """Rows <= ``t`` of ``feats(frame)`` (``full``) have the same bits on the frame cut after ``t`` and on the
    frame whose rows after ``t`` are other random bars (and the stamps ``stamps()`` returns, unless None)."""
    cut = feats(frame.iloc[: t + 1].reset_index(drop=True))
    assert _same_bits(cut, full[: t + 1]), f"{what}: later rows cut"
    if t + 1 == len(frame):
        return
    other = frame.copy()
    for col, values in _bars(rng, len(frame) - t - 1).items():
        other.loc[t + 1 :, col] = values
    new = stamps()
    if new is not None:
        other["timestamp"] = new
    assert _same_bits(feats(other)[: t + 1], full[: t + 1]), f"{what}: later rows changed"


def _panel(rng: np.random.Generator, days: int = 400, max_symbols: int = 5) -> dict[str, pd.DataFrame]:
    """2 to ``max_symbols`` symbols of business days, the others listed and delisted on their own dates, with holes."""
    calendar = pd.bdate_range("2020-01-01", periods=days, tz="UTC").as_unit("ns")
    out = {}
    for s in range(int(rng.integers(2, max_symbols + 1))):
        a = 0 if s < 2 else int(rng.integers(0, days * 3 // 8))  # two symbols trade throughout
        keep = np.arange(a, days if s < 2 else int(rng.integers(a + days * 3 // 10, days + 1)))
        keep = keep[rng.random(len(keep)) >= rng.choice([0.0, 0.05, 0.3])]
        f = synth_ohlcv(len(keep), seed=int(rng.integers(2**31)))
        f["timestamp"] = calendar[keep]
        f.loc[rng.random(len(f)) < 0.03, "volume"] = 0.0
        out[f"S{s}"] = f
    return out


def test_a_store_entry_of_files_cut_at_a_date_holds_the_longer_files_rows_up_to_it(tmp_path):
    rng = np.random.default_rng(17)
    frames = _panel(rng, days=260, max_symbols=3)
    cut = pd.Timestamp("2020-10-15", tz="UTC")
    assert all((f["timestamp"] < cut).sum() > 80 and (f["timestamp"] >= cut).any() for f in frames.values())
    src = tmp_path / "data"
    src.mkdir()

    def rows(fr: dict[str, pd.DataFrame], cache):
        for old in src.glob("*.csv"):
            old.unlink()
        for sym, f in fr.items():
            f.to_csv(src / f"{sym}.csv", index=False)
        d = DataConfig(data_dir=str(src), cache_dir=cache, sequence_length=5, prediction_horizon=1,
                       timezone="America/New_York", features=["alpha158", "rsi_7", "macd_5_13_4", "obv_10", "calendar",
                                                              "hour", "market_3_9"])
        return data_rows(d)[0]

    store = str(tmp_path / "store")
    short = rows({s: f[f["timestamp"] < cut] for s, f in frames.items()}, store)
    full = rows(frames, store)
    memory = rows(frames, None)
    assert short.symbols == full.symbols == memory.symbols and len(full.times) > len(short.times)
    for key in ("features", "returns", "times", "close"):
        assert np.array_equal(np.asarray(getattr(full, key)), np.asarray(getattr(memory, key))), key
    for k, sym in enumerate(short.symbols):
        a, b = short.rows(k), full.rows(k)
        n = a.stop - a.start
        assert np.asarray(short.times[a]).max() < cut.value <= np.asarray(full.times[b]).max()
        for key in ("features", "returns", "times", "close"):
            assert np.array_equal(np.asarray(getattr(short, key)[a]), np.asarray(getattr(full, key)[b.start : b.start + n])), (sym, key)


# --- splits ----------------------------------------------------------------------------------------

FEATURE_SETS = [["log_return_1", "rsi_5"], ["log_return_1", "market_3_7"], ["return_2", "bbands_5_2", "calendar"],
                ["log_return_1", "volatility_4", "obv_6"]]


def _changed_from(frames: dict[str, pd.DataFrame], cut: int, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Every symbol's bars dated on or after ``cut`` moved to another path (prices and volume)."""
    out = {}
    for sym, f in frames.items():
        f = f.copy()
        hit = pd.DatetimeIndex(f["timestamp"]).as_unit("ns").asi8 >= cut
        n = int(hit.sum())
        if n:
            price = ["open", "high", "low", "close"]
            f.loc[hit, price] = f.loc[hit, price].to_numpy() * np.exp(np.cumsum(rng.normal(0, 0.05, n)))[:, None]
            f.loc[hit, "volume"] = f.loc[hit, "volume"].to_numpy() * rng.uniform(0.1, 10, n)
        out[sym] = f
    return out


def _assert_same(a, b, what: str) -> None:
    sa, sb = _seen(a), _seen(b)
    assert sa.keys() == sb.keys(), what
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{what}: {key}")


def _statistics(p) -> tuple:
    return p.preprocessing.scaler.to_dict(), p.preprocessing.target_scale


def _target_times(ws, H: int) -> np.ndarray:
    return ws.row_times[ws.ends[:, None] + np.arange(1, H + 1)] if len(ws) else np.zeros((0, H), np.int64)


def _input_times(ws, L: int) -> np.ndarray:
    if not len(ws):
        return np.zeros((0, L), np.int64)
    rows = np.maximum(ws.ends[:, None] + np.arange(-L + 1, 1), ws.first_rows[:, None])  # padding reads the first row
    return ws.row_times[rows]


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)  # the random panels draw the scalers' and the short symbols' warnings
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("seed", range(6))
def test_nothing_dated_from_a_cut_on_reaches_the_split_before_it_on_random_panels(seed):
    rng = np.random.default_rng(100 + seed)
    frames = _panel(rng)
    kw = dict(sequence_length=int(rng.choice([3, 8, 15])), prediction_horizon=int(rng.choice([1, 2, 5])),
              features=FEATURE_SETS[seed % len(FEATURE_SETS)], cache_dir=None,
              target=["return", "excess_return", "cs_zscore", "cs_rank"][seed % 4], embargo=int(rng.choice([0, 1, 4, 9])),
              scaler=str(rng.choice(["standard", "robust"])), scale_per_symbol=bool(seed % 3 == 0),
              min_history=None if rng.random() < 0.5 else 1, stride=int(rng.choice([1, 3])),
              batching=str(rng.choice(["windows", "dates"])))
    if seed % 2:
        val = pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(days=int(rng.integers(300, 420)))
        kw["split_dates"] = {"val": val.isoformat(), "test": (val + pd.Timedelta(days=int(rng.integers(40, 120)))).isoformat()}
    else:
        kw.update(train_ratio=float(rng.choice([0.5, 0.6, 0.7])), val_ratio=float(rng.choice([0.1, 0.2])))
    d = DataConfig(**kw)
    L, H = d.sequence_length, d.prediction_horizon
    p = prepare(d, frames)
    val_from = pd.Timestamp(p.report["split"]["val_from"]).value
    test_from = pd.Timestamp(p.report["split"]["test_from"]).value
    assert len(p.train) and len(p.test)
    assert (_target_times(p.train, H) < val_from).all()
    assert (_target_times(p.val, H) >= val_from).all() and (_target_times(p.val, H) < test_from).all()
    assert (_input_times(p.val, L) >= val_from).all()
    assert (_target_times(p.test, H) >= test_from).all() and (_input_times(p.test, L) >= test_from).all()
    starts = np.asarray(p.train.segment_first)  # a calendar split's training rows start at each symbol's first row
    stops = np.r_[starts[1:], len(p.train.row_times)]
    for k, sym in enumerate(p.train.symbols):  # data.embargo of the symbol's own rows left out after each cut
        t = p.train.row_times[starts[k] : stops[k]]
        a, b = np.searchsorted(t, val_from), np.searchsorted(t, test_from)
        assert p.val.segment_first[k] - starts[k] == min(a + d.embargo, b), sym
        assert p.test.segment_first[k] - starts[k] == min(b + d.embargo, len(t)), sym

    q = prepare(d, _changed_from(frames, val_from, rng))
    _assert_same(p.train, q.train, "train, rows from the first validation date changed")
    assert _statistics(p) == _statistics(q)
    q = prepare(d, _changed_from(frames, test_from, rng))
    _assert_same(p.train, q.train, "train, test rows changed")
    _assert_same(p.val, q.val, "val, test rows changed")
    assert _statistics(p) == _statistics(q)
    assert not np.array_equal(_seen(p.test)["y"], _seen(q.test)["y"])  # the change reached the test windows
    if "split_dates" in kw:  # the same dates cut the shorter files
        short = {s: f[pd.DatetimeIndex(f["timestamp"]).as_unit("ns").asi8 < val_from] for s, f in frames.items()}
        q = prepare(d, {s: f.reset_index(drop=True) for s, f in short.items() if len(f)})
        _assert_same(p.train, q.train, "train, rows from the first validation date removed")
        assert _statistics(p) == _statistics(q)



@pytest.mark.parametrize("seed", range(6))
def test_a_walk_forward_fold_trains_on_nothing_dated_in_its_test_block_on_random_panels(seed):
    """Folds cut at shared dates: an expanding or rolling fold's training and validation targets are
    dated before its test block, and nothing they give a model (windows, scaler, target scale, the
    ridge baseline fitted on them and its penalty chosen on validation) moves when every row from the block on changes; purged k-fold
    trains on no target inside its block."""
    rng = np.random.default_rng(200 + seed)
    frames = _panel(rng)
    scheme = ["expanding", "rolling", "purged_kfold"][seed % 3]
    n_folds = int(rng.integers(2, 5))
    k = int(rng.integers(0, n_folds))
    d = DataConfig(sequence_length=int(rng.choice([3, 8])), prediction_horizon=int(rng.choice([1, 3])),
                   features=FEATURE_SETS[seed % len(FEATURE_SETS)], cache_dir=None,
                   target=["return", "excess_return", "cs_zscore", "cs_rank"][seed % 4],
                   embargo=int(rng.choice([0, 2, 5])), train_ratio=float(rng.choice([0.4, 0.6])),
                   val_ratio=float(rng.choice([0.1, 0.2])))
    H = d.prediction_horizon
    fold = Fold(k, n_folds, scheme)
    p = prepare(d, frames, fold=fold)
    calendar = np.unique(p.train.row_times)  # every row's date: the union calendar the folds cut
    n = len(calendar)
    date = lambda i: int(calendar[i]) if i < n else np.iinfo(np.int64).max  # noqa: E731
    if scheme == "purged_kfold":
        lo, hi = date(k * n // n_folds), date((k + 1) * n // n_folds)
        trained = np.concatenate([_target_times(p.train, H).ravel(), _target_times(p.val, H).ravel()])
        assert len(trained) and not ((trained >= lo) & (trained < hi)).any()
        assert len(p.test) and ((_target_times(p.test, H) >= lo) & (_target_times(p.test, H) < hi)).all()
        return
    n0 = int(n * d.train_ratio)
    b = [n0 + (n - n0) * j // n_folds for j in range(n_folds + 1)]
    lo, hi = date(b[k]), date(b[k + 1])
    assert len(p.train) and (_target_times(p.train, H) < lo).all() and (_target_times(p.val, H) < lo).all()
    assert len(p.test) and ((_target_times(p.test, H) >= lo) & (_target_times(p.test, H) < hi)).all()
    q = prepare(d, _changed_from(frames, lo, rng), fold=fold)
    _assert_same(p.train, q.train, "train, the test block and later rows changed")
    _assert_same(p.val, q.val, "val, the test block and later rows changed")
    assert _statistics(p) == _statistics(q)
    ridge = [build_model(ModelConfig(type="ridge"), x.train.features.shape[1], H, d.sequence_length) for x in (p, q)]
    assert ridge[0].fit_windows(p.train, p.val) == ridge[1].fit_windows(q.train, q.val)  # as the fitted baselines are fitted
    assert bool((ridge[0].weight == ridge[1].weight).all())
    assert not np.array_equal(_seen(p.test)["y"], _seen(q.test)["y"])  # the change reached the test windows
