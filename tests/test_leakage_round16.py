"""Walk-forward and tune folds over random panels, under both ways of cutting a panel.

Random panels mix daily, business-day and hourly symbols, with holes, late listings and early
delistings, under random horizons (``data.prediction_horizon`` up to 6), embargoes, padding
(``data.min_history``), gaps (``data.max_gap``) and strides. For every scheme (expanding, rolling,
purged k-fold), every fold, with and without ``before_test`` (tune's folds), under ``data.split:
calendar`` and ``per_symbol``:

- no training or validation target lies at or after the fold's test block (purged k-fold: inside
  it); under a calendar split, of any symbol's block, under ``per_symbol``, of the symbol's own;
- tune's folds never reach the data's own test split, neither to train nor to score;
- the training windows (scaled inputs, past labels, masks, targets), the scaler and the target
  scale of an expanding or rolling fold are the same bit for bit when every row from its first
  validation date on is changed, and its validation windows too when every row from its test
  block on is (a calendar split: every symbol's rows from the earliest such date, with a random
  label; ``per_symbol``: each symbol's rows from its own).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.pipeline import prepare
from hftraining.data.splits import Fold
from hftraining.data.windows import WindowSet

from test_leakage_round8 import _changed_from, _random_panel, _seen  # noqa: E402

N_FOLDS = 3
CALENDAR = (0, 7, 9)
"""Seeds whose panel is cut by calendar; the others per symbol."""


def _panel(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """2-4 symbols of 80 to 259 days of bars (:func:`test_leakage_round8._random_panel`)."""
    return _random_panel(rng, fewest=80)


def _config(rng: np.random.Generator, split: str) -> DataConfig:
    L = int(rng.integers(3, 12))
    # per_symbol carries other symbols' returns of dates in their later splits in a cross-sectional
    # label (README): the return label there, any label on a calendar
    target = "return" if split == "per_symbol" else str(rng.choice(["return", "excess_return", "cs_zscore", "cs_rank"]))
    return DataConfig(sequence_length=L, prediction_horizon=int(rng.integers(1, 7)), cache_dir=None,
                      features=["log_return_1", "rsi_5"], embargo=int(rng.integers(0, 4)), split=split, target=target,
                      min_history=int(rng.integers(1, L + 1)) if rng.random() < 0.4 else None,
                      max_gap=str(rng.choice(["2D", "5D"])) if rng.random() < 0.3 else None,
                      stride=int(rng.integers(1, 4)))


def _target_rows(ws: WindowSet) -> np.ndarray:
    """(W, H) row of every target step of every window."""
    return ws.ends[:, None].astype(np.int64) + np.arange(1, ws.horizon + 1)


def _fold(d: DataConfig, panel, k: int, scheme: str, before_test: bool):
    """The fold's (training windows as the trainer joins them, validation windows, test windows, prepared data);
    None when the fold has no test window."""
    try:
        p = prepare(d, panel, fold=Fold(k, N_FOLDS, scheme, before_test))
    except DataError:  # a fold with too few rows for a training window: said, and not what is checked here
        return None
    if not len(p.test):
        return None
    if scheme == "purged_kfold":  # the windows after the test block join those before it (walkforward.prepare_fold)
        train = p.train.join(p.val) if len(p.train) and len(p.val) else (p.train if len(p.train) else p.val)
        return train, p.val.subset(slice(0, 0)), p.test, p
    return p.train, p.val, p.test, p


def _outside(rows: np.ndarray, block: np.ndarray, purged: bool) -> bool:
    """Whether target ``rows`` (row numbers or dates) are all before ``block``'s (or, purged, outside its span)."""
    if not rows.size or not block.size:
        return True
    if purged:
        return not ((rows >= block.min()) & (rows <= block.max())).any()
    return bool(rows.max() < block.min())


def _first_dates(p, split: str) -> dict[str, int]:
    """Each symbol's first date (ns) of ``split`` as data_report.json states it (symbols whose segment of it is empty left out)."""
    per = p.report["split"]["symbols"]
    return {sym: pd.Timestamp(seg[split][0]).value for sym, seg in per.items() if seg[split] is not None}


def _from(first: dict[str, int], calendar: bool) -> dict[str, int]:
    """The cut of :func:`_changed_from`: per symbol its own first date; by calendar the earliest, for every symbol."""
    return {sym: min(first.values()) for sym in first} if calendar and first else first


@pytest.mark.parametrize("seed", [0, 1, 3, 5, 7, 8, 9])
def test_no_fold_trains_or_validates_on_a_target_of_its_test_block_or_of_the_test_split(seed):
    """Seeds 0, 7 and 9 cut by calendar, the others per symbol; 1, 5, 8 and 9 without an embargo (a
    target one row too late is then inside the block); hourly symbols sit beside daily ones."""
    logging.disable(logging.WARNING)
    try:
        rng = np.random.default_rng(seed)
        panel = _panel(rng)
        d = _config(rng, "calendar" if seed in CALENDAR else "per_symbol")
        base = prepare(d, panel)
        test_from = _from(_first_dates(base, "test"), d.split == "calendar")  # the data's own test split
        checked = 0
        for scheme in ("expanding", "rolling", "purged_kfold"):
            for before_test in (False, True):
                for k in range(N_FOLDS):
                    got = _fold(d, panel, k, scheme, before_test)
                    if got is None:
                        continue
                    train, val, test, _ = got
                    where = f"{scheme} fold {k} before_test={before_test}"
                    purged = scheme == "purged_kfold"
                    for ws in (train, val, test):
                        if not len(ws):
                            continue
                        times = ws.row_times[_target_rows(ws)]
                        if ws is not test:
                            if d.split == "calendar":  # nothing dated inside any symbol's block
                                assert _outside(times, test.row_times[_target_rows(test)], purged), where
                            else:  # each symbol's own rows
                                for s, sym in enumerate(ws.symbols):
                                    rows = _target_rows(ws)[ws.symbol_ids == s]
                                    assert _outside(rows, _target_rows(test)[test.symbol_ids == s], purged), (where, sym)
                            checked += 1
                        if before_test:  # a tune fold neither trains, validates nor scores on the test split
                            for s, sym in enumerate(ws.symbols):
                                if sym in test_from:
                                    assert _outside(times[ws.symbol_ids == s], np.array([test_from[sym]]), False), (where, sym)
        assert checked >= 6  # the panel yields folds to check
    finally:
        logging.disable(logging.NOTSET)


def _same(a: WindowSet, b: WindowSet, what: str) -> None:
    x, y = _seen(a), _seen(b)
    assert x.keys() == y.keys(), what
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=f"{what}: {key}")


@pytest.mark.parametrize("seed", [0, 5, 9, 12])
@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_a_folds_training_is_unmoved_by_every_row_of_its_later_segments(seed, scheme):
    """Every row from the fold's first validation date on is changed: its training windows, scaler and
    target scale stay the same bit for bit; every row from its test block's first date on: its
    validation windows too. Under a calendar split every symbol's rows from the earliest such date,
    per symbol each symbol's rows from its own."""
    logging.disable(logging.WARNING)
    try:
        rng = np.random.default_rng(seed)
        panel = _panel(rng)
        d = _config(rng, "calendar" if seed in CALENDAR else "per_symbol")
        compared = 0
        for k in range(N_FOLDS):
            got = _fold(d, panel, k, scheme, False)
            if got is None or not len(got[0]):
                continue
            train, val, _, p = got
            for split, kept in (("val", ("train",)), ("test", ("train", "val"))):
                cut = _from(_first_dates(p, split), d.split == "calendar")
                again = _fold(d, _changed_from(panel, cut, seed), k, scheme, False)
                assert again is not None
                for name in kept:
                    _same(train if name == "train" else val, again[0] if name == "train" else again[1],
                          f"fold {k}, rows from {split} changed: {name}")
                assert again[3].preprocessing.scaler.to_dict() == p.preprocessing.scaler.to_dict(), (k, split)
                assert again[3].preprocessing.target_scale == p.preprocessing.target_scale, (k, split)
            compared += 1
        assert compared >= 2
    finally:
        logging.disable(logging.NOTSET)
