"""``hftraining data synth`` refuses sizes it cannot honour in one line (exit 2) before it writes anything, and
the bar times it writes always increase: a session's times past 2262 are refused, not wrapped back to 1710.
Early stopping beside validation only at the last step is a one-line error naming both keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.synth import bar_times
from conftest import tiny


def _one_line_refusal(capsys, args: list[str], *words: str) -> None:
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hftraining: error: synth: ") and err.count("\n") == 1, err[-2000:]
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


def test_synth_refuses_a_symbol_count_that_does_not_fit_in_one_line(tmp_path, capsys):
    # 99999999999 symbols: their start prices were one 745 GiB array, a MemoryError traceback
    out = tmp_path / "s"
    _one_line_refusal(capsys, ["data", "synth", "--symbols", "99999999999", "--rows", "10", "--out", str(out)],
                      "symbols must be at most 100,000", "99,999,999,999")
    assert not out.exists()  # refused before the folder is made


def test_synth_refuses_rows_per_symbol_beyond_memory_in_one_line(tmp_path, capsys):
    # one symbol's bars are generated whole: 10^11 one-second bars were a MemoryError traceback
    out = tmp_path / "s"
    _one_line_refusal(capsys, ["data", "synth", "--symbols", "1", "--rows", "99999999999", "--freq", "1s",
                               "--session", "24h", "--out", str(out)], "rows must be at most 50,000,000", "99,999,999,999")
    assert not out.exists()


def test_the_limits_themselves_are_accepted():
    # the checks are bounds, not a change of what a valid size writes
    from hftraining.data.synth import MAX_ROWS, MAX_SYMBOLS, _symbols
    assert len(_symbols(3, 0)) == 3 and MAX_SYMBOLS == 100_000 and MAX_ROWS == 50_000_000
    assert _symbols(3, 0) == _symbols(MAX_SYMBOLS, 0)[:3]  # the first symbols' prices do not depend on the count


def test_session_bars_past_2262_are_refused_not_wrapped_to_an_earlier_century():
    # 13 half-hour bars a business day: a million of them run past 2262. The days were microseconds, the bars
    # nanoseconds, and their sum wrapped silently: the last bar was dated 1710-04-20 and `data synth` wrote it
    with pytest.raises(DataError, match=r"1,000,000 rows at frequency '30min' do not fit .*fewer --rows"):
        bar_times(1_000_000, "30min", "2000-01-03")


def test_synth_cli_writes_nothing_for_bars_past_2262(tmp_path, capsys):
    out = tmp_path / "s"
    _one_line_refusal(capsys, ["data", "synth", "--symbols", "1", "--rows", "1000000", "--freq", "30min", "--out",
                               str(out)], "do not fit", "fewer --rows")
    assert not out.exists()


@pytest.mark.parametrize("rows, freq, session", [(60_000, "30min", None), (50_000, "1h", "24h"), (20_000, "B", None),
                                                 (5_000, "5min", "08:00-20:00")])
def test_bar_times_that_fit_increase_strictly_and_stay_in_range(rows, freq, session):
    t = bar_times(rows, freq, "2000-01-03", session)
    assert len(t) == rows and str(t.dtype) == "datetime64[ns, UTC]"
    assert (np.diff(t.asi8) > 0).all()
    assert t[0] >= pd.Timestamp("2000-01-03", tz="UTC") and t[-1] < pd.Timestamp("2262-04-11", tz="UTC")


def test_a_session_just_before_the_limit_keeps_its_last_bar_in_order():
    # the last business days before 2262-04-11: still written, and in order
    t = bar_times(68_000 * 13, "30min", "2000-01-03")
    assert (np.diff(t.asi8) > 0).all() and t[-1].year in (2260, 2261, 2262)


def test_early_stopping_under_evaluation_only_at_the_end_is_one_line_naming_both_keys(tmp_path, capsys):
    # evaluation.eval_steps=0 validates once, at the last step: the patience never stopped anything, and the run
    # trained every step with exit 0 as if it had been asked for none
    with pytest.raises(ConfigError) as e:
        load_config(None, ["training.early_stopping_patience=3", "evaluation.eval_steps=0"])
    assert str(e.value).startswith("training.early_stopping_patience: 3 is ignored under evaluation.eval_steps=0")
    assert "\n" not in str(e.value)
    assert main(["train", *tiny(tmp_path / "run", "training.early_stopping_patience=2", "evaluation.eval_steps=0")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.early_stopping_patience" in err and "evaluation.eval_steps=0" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("patience, eval_steps, extra", [
    (3, 50, []),  # periodic validation: the patience acts
    (0, 0, ["training.load_best_model_at_end=true"]),  # no early stopping asked for
    # a tune that searches the cadence draws periodic validation in some trials
    (3, 0, ["tune.search_space={evaluation.eval_steps: {choices: [0, 50]}}"]),
])
def test_early_stopping_beside_periodic_validation_still_loads(patience, eval_steps, extra):
    cfg = load_config(None, [f"training.early_stopping_patience={patience}", f"evaluation.eval_steps={eval_steps}", *extra])
    assert (cfg.training.early_stopping_patience, cfg.evaluation.eval_steps) == (patience, eval_steps)
