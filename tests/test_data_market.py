"""Market covariates (``data.features: [market]``): the equal-weight universe's return and volatility
per date across symbols, against a pandas reference, causal, and in the windows the models see."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.features import feature_columns, market_columns
from hftraining.data.pipeline import prepare
from hftraining.data.rows import build_rows
from hftraining.data.synth import synth_frames


def _reference(frames: dict[str, pd.DataFrame], w: int) -> pd.DataFrame:
    """Per (symbol, timestamp): the sum over the last ``w`` dates of log(mean over symbols of exp(r)),
    and the population std of that daily series over the same dates, by pandas."""
    long = pd.concat([f.assign(symbol=s, r=np.log(f["close"]).diff()) for s, f in frames.items()]).dropna(subset=["r"])
    daily = long.groupby("timestamp")["r"].apply(lambda x: np.log(np.exp(x).mean())).sort_index()
    ret, std = daily.rolling(w, min_periods=1).sum(), daily.rolling(w, min_periods=1).std(ddof=0)
    return long.assign(ret=long["timestamp"].map(ret), std=long["timestamp"].map(std))


@pytest.fixture(scope="module")
def frames():
    out = synth_frames(5, 150, seed=2)
    # unaligned calendars: one symbol starts later, one misses some dates
    out["SYN001"] = out["SYN001"].iloc[30:].reset_index(drop=True)
    out["SYN002"] = out["SYN002"].drop(index=[40, 41, 90]).reset_index(drop=True)
    return out


def test_market_columns_match_pandas_across_the_panel(frames):
    rows, _ = build_rows(frames, ["log_return_1", "market_5_20"], tz="UTC")
    cols = feature_columns(["market_5_20", "log_return_1"])
    assert cols == ["log_return_1", "MKT_RET5", "MKT_STD5", "MKT_RET20", "MKT_STD20"]  # per-symbol columns first
    assert rows.features.shape[1] == 5
    ref = _reference(frames, 20)
    for k, sym in enumerate(rows.symbols):
        sl = rows.rows(k)
        t = pd.to_datetime(rows.times[sl], utc=True)
        mine = ref[ref["symbol"] == sym].set_index("timestamp").loc[t]
        np.testing.assert_allclose(rows.features[sl, 3], mine["ret"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(rows.features[sl, 4], mine["std"], rtol=1e-4, atol=1e-7)
    # every symbol of a date sees the same market value
    df = pd.DataFrame({"t": rows.times, "m": rows.features[:, 3]})
    assert (df.groupby("t")["m"].nunique() == 1).all()


def test_market_covariates_are_causal(frames):
    """A value at date t is unchanged when every row after t is changed or removed."""
    cut = pd.Timestamp(frames["SYN000"]["timestamp"].iloc[100])
    base, _ = build_rows(frames, ["log_return_1", "market"], tz="UTC")
    rng = np.random.default_rng(1)
    changed = {}
    for s, f in frames.items():
        f = f.copy()
        late = f["timestamp"] > cut
        f.loc[late, ["open", "high", "low", "close"]] *= rng.uniform(0.5, 1.5, (int(late.sum()), 1))
        f["high"] = f[["open", "high", "low", "close"]].max(axis=1)
        f["low"] = f[["open", "high", "low", "close"]].min(axis=1)
        changed[s] = f
    cut_frames = {s: f[f["timestamp"] <= cut].reset_index(drop=True) for s, f in frames.items()}
    early = base.times <= cut.value
    for other in (changed, cut_frames):
        rows, _ = build_rows(other, ["log_return_1", "market"], tz="UTC")
        keep = rows.times <= cut.value
        np.testing.assert_array_equal(rows.features[keep], base.features[early])


def test_market_features_reach_the_windows_and_are_scaled(frames):
    d = dataclasses.replace(DataConfig(), features=["rsi_14", "market_10"], sequence_length=10, prediction_horizon=2)
    data = prepare(d, dict(frames))
    assert data.preprocessing.feature_columns == ["rsi_14", "MKT_RET10", "MKT_STD10"]
    b = data.train.batch(np.arange(4))
    assert b["x"].shape == (4, 10, 3) and np.isfinite(b["x"].numpy()).all()
    assert np.asarray(data.train.features).shape[1] == 3
    # one symbol alone: its market is itself
    one = market_columns(np.array([np.nan, 0.01, -0.02, 0.03]), np.arange(4), (2,))
    np.testing.assert_allclose(one["MKT_RET2"][1:], [0.01, -0.01, 0.01])


def test_market_features_are_kept_in_the_feature_store(frames, tmp_path):
    """Through the store, the market columns are written into the entry (mapped, not copied, by
    later runs), verified on the next open, and equal to the in-memory build."""
    from hftraining.data.pipeline import data_rows

    folder = tmp_path / "data"
    folder.mkdir()
    for s, f in frames.items():
        f.to_csv(folder / f"{s}.csv", index=False)
    d = dataclasses.replace(DataConfig(), data_dir=str(folder), features=["rsi_14", "market_5"], cache_dir=str(tmp_path / "c"))
    built, rep1 = data_rows(d)
    again, rep2 = data_rows(d)
    memory, _ = data_rows(dataclasses.replace(d, cache_dir=None))
    assert (rep1["cache"], rep2["cache"]) == ("miss", "hit")  # the digests match the filled file
    assert isinstance(again.features, np.memmap) and again.features.shape[1] == 3
    np.testing.assert_array_equal(np.asarray(again.features), memory.features)
    assert np.abs(memory.features[:, 1]).max() > 0  # the market columns are filled, not left at zero


def test_the_market_is_that_of_the_selected_symbols_in_every_layout(frames, tmp_path):
    """``data.symbols`` selects the panel before the market columns and the cross-sectional labels
    are computed: a long CSV that also holds other symbols gives the rows a folder gives, in memory
    and through the feature store (whose arrays hold the selected symbols' rows only)."""
    from hftraining.data.labels import row_labels
    from hftraining.data.pipeline import data_rows

    folder = tmp_path / "data"
    folder.mkdir()
    for s, f in frames.items():
        f.to_csv(folder / f"{s}.csv", index=False)
    pd.concat([f.assign(symbol=s) for s, f in frames.items()]).to_csv(tmp_path / "long.csv", index=False)
    d = dataclasses.replace(DataConfig(), symbols=["SYN003", "SYN000"], features=["log_return_1", "market_5"], cache_dir=None)
    ref, _ = data_rows(dataclasses.replace(d, data_dir=str(folder)))
    ref_labels = row_labels(ref.returns, ref.times, "cs_rank")
    for cache in (None, str(tmp_path / "c")):
        rows, rep = data_rows(dataclasses.replace(d, data_dir=str(tmp_path / "long.csv"), cache_dir=cache))
        assert rows.symbols == ["SYN000", "SYN003"]  # sorted by name, whatever the order of data.symbols
        assert len(rows.returns) == int(rows.lengths.sum()) == len(ref.returns)  # no other symbol's rows in the arrays
        assert rep["rows_in"] == len(frames["SYN003"]) + len(frames["SYN000"])  # nor in the report
        labels = row_labels(np.asarray(rows.returns), np.asarray(rows.times), "cs_rank")
        for k in range(2):
            for name in ("features", "returns", "times"):
                np.testing.assert_array_equal(np.asarray(getattr(rows, name)[rows.rows(k)]), getattr(ref, name)[ref.rows(k)])
            np.testing.assert_array_equal(labels[rows.rows(k)], ref_labels[ref.rows(k)])
