"""Leakage and honesty guarantees that one careless character would break without another test noticing.

- Walk-forward folds: ``data.embargo`` of a symbol's own rows lie between a fold's last training target
  and the first row its validation windows read (calendar and per-symbol cuts, expanding and rolling),
  as between the training split's last target and the first row the validation split reads.
"""

from __future__ import annotations

import numpy as np
import pytest

from hftraining.core.config import Config, DataConfig
from hftraining.data.pipeline import prepare
from hftraining.data.synth import synth_ohlcv
from hftraining.workflows.walkforward import prepare_fold


def _embargo_rows(train, later, horizon: int) -> dict[int, int]:
    """symbol id → rows strictly between its last training target and the first row ``later`` reads."""
    out = {}
    for s in np.unique(later.symbol_ids):
        mine = train.ends[train.symbol_ids == s]
        if len(mine):
            out[int(s)] = int(later.segment_first[s]) - (int(mine.max()) + horizon) - 1
    return out


@pytest.mark.parametrize("split", ["calendar", "per_symbol"])
@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_a_walk_forward_fold_leaves_the_embargo_before_the_rows_validation_reads(split, scheme):
    """Validation windows read their inputs from their segment's first row on. The embargo exists so
    that those inputs are not the rows whose moves the model was trained to forecast: at least
    ``data.embargo`` of a symbol's rows separate a fold's last training target from the first row a
    validation window reads (early stopping and the best checkpoint are chosen on those windows)."""
    emb, H, K = 4, 3, 3
    frames = {"A": synth_ohlcv(420, seed=3), "B": synth_ohlcv(330, seed=4, start="2000-03-01")}
    cfg = Config(data=DataConfig(sequence_length=10, prediction_horizon=H, features=["log_return_1"], cache_dir=None,
                                 embargo=emb, val_ratio=0.25, min_history=1, split=split))
    checked = 0
    for k in range(K):
        data = prepare_fold(cfg, frames, k, K, scheme)
        assert len(data.train) and len(data.val), (k, split, scheme)
        gaps = _embargo_rows(data.train, data.val, H)
        assert gaps, (k, split, scheme)
        for s, rows in gaps.items():
            assert rows >= emb, (k, split, scheme, s, rows)
            checked += 1
    assert checked >= K


@pytest.mark.parametrize("split", ["calendar", "per_symbol"])
def test_the_split_leaves_the_embargo_before_the_rows_validation_reads(split):
    """The same for the train / validation split the training command cuts."""
    emb, H = 4, 3
    frames = {"A": synth_ohlcv(420, seed=3), "B": synth_ohlcv(330, seed=4, start="2000-03-01")}
    p = prepare(DataConfig(sequence_length=10, prediction_horizon=H, features=["log_return_1"], cache_dir=None,
                           embargo=emb, min_history=1, split=split), frames)
    gaps = _embargo_rows(p.train, p.val, H)
    assert len(gaps) == 2 and min(gaps.values()) >= emb, (split, gaps)
