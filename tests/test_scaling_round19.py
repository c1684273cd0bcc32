"""Feature scaling where a few training rows lie far out: a day that traded a share beside days of
millions (Alpha158's VMA and VSTD divide by the row's volume) sets a standard scaler's spread, so the
rest of those columns is scaled to a near-constant, and a robust scaler puts those rows millions of
units from the model's other inputs. The fit names such columns and the symbol in a warning."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.data.scaling import GLOBAL, Scaler

SYMBOLS = ("AEM", "XPO")


def _files(tmp_path, one_share_rows: tuple[int, ...] = ()):
    """The bundled files of SYMBOLS; XPO traded one share on ``one_share_rows`` (all in its training split)."""
    for sym in SYMBOLS:
        f = pd.read_csv(sample_data_dir() / f"{sym}.csv")
        if sym == "XPO" and one_share_rows:
            f.loc[list(one_share_rows), "volume"] = 1
        f.to_csv(tmp_path / f"{sym}.csv", index=False)
    return tmp_path


def _far_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "interquartile ranges from the median" in r.getMessage()]


@pytest.mark.parametrize("kind,per_symbol", [("standard", False), ("robust", True)])
def test_one_share_days_named_at_the_fit(tmp_path, caplog, kind, per_symbol):
    """Three training days of XPO with a volume of 1 (its others: about a million): the fit names
    the volume columns of Alpha158 and XPO, and what the scaler made of them, measured on the
    fitted statistics: the standard scaler's VMA5 spread is set by those rows (its other training
    rows differ by under a thousandth of a unit after scaling), the robust scaler scales them to
    millions."""
    d = DataConfig(data_dir=str(_files(tmp_path, (300, 400, 500))), features=["alpha158"], cache_dir=None,
                   sequence_length=10, prediction_horizon=1, scaler=kind, scale_per_symbol=per_symbol)
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        p = prepare(d)
    said = _far_warnings(caplog)
    assert len(said) == 1, said
    assert f"data.scaler {kind}" in said[0] and "VMA" in said[0] and "VSTD" in said[0] and "of XPO" in said[0]
    j = p.preprocessing.feature_columns.index("VMA5")
    center, scale = p.preprocessing.scaler.stats("XPO")
    k = p.train.symbols.index("XPO")
    e = p.train.ends[p.train.symbol_ids == k]
    x = np.asarray(p.train.features[int(p.train.segment_first[k]): int(e.max()) + 1, j], dtype=np.float64)
    z = (x - center[j]) / scale[j]
    q25, q75 = np.percentile(z, [25, 75])
    if kind == "standard":
        assert q75 - q25 < 1e-3  # the harm the warning names: the column is a near-constant to the model
    else:
        assert np.abs(z).max() > 1e5


def test_bundled_files_are_not_named(tmp_path, caplog):
    """The same files as they are: no column of Alpha158 or of the other registered features lies
    that far out, pooled or per symbol, standard or robust."""
    data = _files(tmp_path)
    feats = ["alpha158", "log_return_1", "rsi_14", "macd_12_26_9", "bbands_20_2", "volume_ratio_20", "obv_20", "atr_14",
             "stoch_14_3", "volatility_20", "dist_high_20", "dist_low_20", "calendar", "market"]
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        for kind in ("standard", "robust"):
            for per in (False, True):
                prepare(DataConfig(data_dir=str(data), features=feats, cache_dir=None, sequence_length=10,
                                   prediction_horizon=1, scaler=kind, scale_per_symbol=per))
    assert _far_warnings(caplog) == []


def test_far_rows_named_by_every_fit_path(caplog):
    """``fit`` and ``fit_rows`` (the streamed standard path, and the gathered robust one) name a column
    two of whose 5,000 rows of B are a million times its spread, and not a heavy-tailed column whose
    farthest row lies under 1,000 interquartile ranges out (Student's t with 2 degrees of freedom)."""
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.normal(1, 0.3, 5000), rng.standard_t(2, 5000)]).astype(np.float32)
    b = np.column_stack([rng.normal(1, 0.3, 5000), rng.standard_t(2, 5000)]).astype(np.float32)
    assert np.abs(np.concatenate([a, b])[:, 1]).max() < 500  # the t column stays under the limit
    b[[10, 20], 0] = 1e6
    x = np.concatenate([a, b])
    train = {"A": slice(0, 5000), "B": slice(5000, 10000)}
    for kind, per in (("standard", False), ("robust", False), ("robust", True), ("standard", True)):
        for how in ("fit", "fit_rows"):
            caplog.clear()
            s = Scaler(kind=kind, per_symbol=per)
            with caplog.at_level(logging.WARNING, logger="hftraining"):
                if how == "fit":
                    s.fit({"A": a, "B": b}, names=["VMA5", "ROC5"])
                else:
                    s.fit_rows(x, train, names=["VMA5", "ROC5"])
            said = _far_warnings(caplog)
            assert len(said) == 1 and "VMA5: 2 rows of B up to 1e+06" in said[0] and "ROC5" not in said[0], \
                (kind, per, how, said)
            if kind == "standard" and not per:
                assert s.params[GLOBAL][1][0] > 1e4  # the spread those two rows set
