"""Purged k-fold's embargo note names an embargo that keeps what a fold trains on clear of its test
block's prices: the past-return channel reads the close before each input row whatever the features,
and the market features and the cross-sectional labels read every symbol's return of a date, which
in a panel of a weekday stock and a coin that trades every day reaches back over the weekend."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig, load_config
from hftraining.data.pipeline import panel_rows, prepare
from hftraining.data.splits import Fold
from hftraining.data.synth import synth_ohlcv
from hftraining.workflows import walkforward as wf
from conftest import tiny  # noqa: E402

L, H, K = 20, 3, 3


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[dict[str, pd.DataFrame], str]:
    """A weekday stock and a coin trading every day, ending on a Sunday: the blocks' last dates fall so
    that the coin's first rows after a block are dated on a Monday whose stock return reads the Friday
    before, in the block. The frames, and the folder of their CSV files."""
    end = pd.Timestamp("2026-04-05")
    out = {}
    for k, (sym, rows, freq) in enumerate((("STK", 700, "B"), ("BTC", 800, "D"))):
        last = end - pd.offsets.BDay(0) if freq == "B" else end
        first = last - (pd.offsets.BDay(rows - 1) if freq == "B" else pd.Timedelta(days=rows - 1))
        out[sym] = synth_ohlcv(rows, seed=k, start=first.strftime("%Y-%m-%d"), freq=freq)
    folder = tmp_path_factory.mktemp("mixed")
    for sym, f in out.items():
        f.to_csv(folder / f"{sym}.csv", index=False)
    return out, str(folder)


from test_walkforward_round18 import _changed  # noqa: E402  (a block of bars moved to another path)


def _moved(d: DataConfig, frames: dict[str, pd.DataFrame]) -> bool:
    """Whether any purged fold's training windows (inputs, past returns, targets) or its scaler move when
    the prices of every bar dated in its test block's target dates change."""
    for k in range(K):
        fold = Fold(k, K, "purged_kfold")
        base = prepare(d, frames, fold=fold)
        t = base.test.row_times[base.test.ends[:, None].astype(np.int64) + np.arange(1, H + 1)]
        other = prepare(d, _changed(frames, int(t.min()), int(t.max()) + 1, seed=10 + k), fold=fold)
        for p in (base, other):
            ws = p.train.join(p.val) if len(p.val) and len(p.train) else p.train
            p.seen = ws.batch(np.arange(len(ws)))
        if any(not np.array_equal(base.seen[key].numpy(), other.seen[key].numpy()) for key in ("x", "past", "y")):
            return True
        if base.preprocessing.scaler.to_dict() != other.preprocessing.scaler.to_dict():
            return True
    return False


def _named(note: str | None) -> int | None:
    m = re.search(r"data\.embargo >= (\d+)", note or "")
    return int(m.group(1)) if m else None


def test_time_features_alone_still_read_the_close_before_the_first_input_row(mixed):
    """``calendar`` settles at once, yet every window's past-return channel reads the return of its first
    row, from the close before it: data.embargo = L left the last close of the block in the training
    windows after it, and the note said nothing; it names L + 1, the smallest embargo that moves nothing."""
    frames, _ = mixed
    d = DataConfig(sequence_length=L, prediction_horizon=H, features=["calendar"], embargo=L, cache_dir=None)
    assert _moved(d, frames)
    assert _named(wf.purged_inputs_note(d)) == L + 1
    clear = DataConfig(sequence_length=L, prediction_horizon=H, features=["calendar"], embargo=L + 1, cache_dir=None)
    assert wf.purged_inputs_note(clear) is None and not _moved(clear, frames)


@pytest.mark.parametrize("features,target", [(["market_5"], "return"), (["calendar"], "excess_return")])
def test_features_and_labels_across_symbols_name_the_embargo_of_the_panels_dates(mixed, features, target):
    """The market features and the excess-return labels read the stock's Monday return, from its Friday
    close: the coin's rows after a block ending on a Sunday read the block two dates further back than its
    own rows. The note names the embargo that clears them (one fewer moves the training windows)."""
    frames, folder = mixed
    d = DataConfig(sequence_length=L, prediction_horizon=H, features=features, target=target, embargo=L,
                   data_dir=folder, symbols=None, cache_dir=None)
    gap = wf.panel_gap(panel_rows(d))
    assert gap == 3  # Friday -> Monday across the coin's Saturday and Sunday
    need = _named(wf.purged_inputs_note(d, gap))
    at = lambda e: DataConfig(sequence_length=L, prediction_horizon=H, features=features, target=target,  # noqa: E731
                              embargo=e, cache_dir=None)
    assert _moved(at(need - 1), frames) and not _moved(at(need), frames)
    assert wf.purged_inputs_note(at(need), gap) is None and wf.purged_inputs_note(at(need - 1), gap) is not None


def test_a_walk_forward_of_a_mixed_calendar_panel_names_the_embargo_its_dates_need(mixed, tmp_path, caplog):
    """data.embargo = L + 5 with ``market_5`` clears the coin's own rows but not the stock's Friday close
    its Monday market return reads: the walk-forward said nothing and trained on the block's prices; it
    now warns once and keeps the sentence, naming L + 7, in walkforward.json."""
    _, folder = mixed
    out = tmp_path / "run"
    cfg = load_config(None, tiny(out, "model.type=zero", "evaluation.report=false", "data.symbols=null",
                                 f"data.data_dir={folder}", "data.cache_dir=null", "data.features=[market_5]",
                                 f"data.embargo={L + 5}", "evaluation.baseline_max_windows=200",
                                 "evaluation.intervals=[]"))
    with caplog.at_level(logging.WARNING, logger="hftraining.workflows.walkforward"):
        res = wf.walk_forward(cfg, 2, scheme="purged_kfold")
    said = [r.getMessage() for r in caplog.records if "after each test block read" in r.getMessage()]
    saved = json.loads((out / "walkforward" / "walkforward.json").read_text())
    assert len(said) == 1 and _named(said[0]) == L + 7
    assert saved["embargo_note"] == res["embargo_note"] == said[0]
