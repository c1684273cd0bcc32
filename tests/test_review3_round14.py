"""A top-k book's per-side limit counts the symbols the split trades; a JSON file rewritten whole keeps its
permission bits and a read-only one stays refused; the bf16-on-CPU warning names a fix the config loads; a tune
that searches a choice (data.batching) may set the keys each of its options reads."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_backtest_round13 import _ev, _forecasts  # noqa: E402
from test_train_resume import logged  # noqa: E402,F401  (the hftraining logger's records)

import hftraining.train.runner as runner  # noqa: E402
from hftraining.core.config import load_config  # noqa: E402
from hftraining.core.jsonio import write_json  # noqa: E402
from hftraining.eval.backtest import backtest_forecasts  # noqa: E402

# --------------------------------------------------------------------------------------------
# backtest: a panel symbol without a window in the split is never ranked, so it widens no side


def test_topk_per_side_limit_counts_the_symbols_with_a_window_in_the_split():
    dates = pd.date_range("2024-01-01", periods=60, freq="B", tz="UTC").as_unit("ns").asi8
    rng = np.random.default_rng(0)
    R = rng.normal(0, 0.01, (60, 4))
    R[:, 3] = np.nan  # S3: in the panel (delisted), no window in this split: 3 symbols traded
    s = backtest_forecasts(_forecasts(dates, R, rng.normal(0, 1, (60, 4, 1))),
                           _ev("backtest_portfolio=topk", "backtest_topk=2"))["settings"]
    # long-short of 3 symbols holds one name a side: the settings and the report say so, as for a panel of 3
    assert s["n_symbols"] == 3 and s.get("topk_held") == 1, s
    assert "more than the 3 symbols allow: each side holds at most 1" in s.get("warning", ""), s


# --------------------------------------------------------------------------------------------
# write_json: a file rewritten whole (a sibling renamed over it) is the file the user had, permissions included


def test_a_json_file_rewritten_keeps_its_permission_bits(tmp_path):
    path = tmp_path / "tracking.json"
    write_json(path, {"a": 1})
    os.chmod(path, 0o600)  # kept private by its owner
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    new = tmp_path / "eval.json"  # a new file takes the process's umask, as before
    write_json(new, {})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~mask


def test_a_read_only_json_file_is_refused_as_a_rewrite_in_place_refused_it(tmp_path, monkeypatch):
    """A user who made eval.json read-only to keep it: the write is one line naming it, the file as it was (a
    rename over it needs only the folder's permission, and replaced it)."""
    from hftraining.core.errors import WriteError

    path = tmp_path / "eval.json"
    path.write_text('{"a": 1}\n')
    os.chmod(path, 0o444)
    if os.geteuid() == 0:  # root may write any file: the permission check of a user who may not write it
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == path and mode & os.W_OK
                            else real(p, mode, **kw))
    with pytest.raises(WriteError, match=r"eval\.json: cannot write"):
        write_json(path, {"b": 2})
    assert path.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no sibling left behind


# --------------------------------------------------------------------------------------------
# the bf16-on-CPU warning: the fix it names is one the config then loads


class _Stop(Exception):
    pass


def test_the_bf16_warning_names_a_fix_that_loads_beside_use_mixed_precision(tmp_path, logged, monkeypatch):
    """configs/quickstart.yaml sets use_mixed_precision: true; with training.precision=bf16 beside it the warning
    said training.precision=fp32 alone, which a config load refuses (use_mixed_precision ignored under fp32)."""
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: False)

    def stop(*_a, **_k):
        raise _Stop

    monkeypatch.setattr(runner, "prepare_run_dir", stop)  # the warning is said before the run folder
    given = tiny(tmp_path / "run", "training.use_mixed_precision=true", "training.precision=bf16")
    with pytest.raises(_Stop):
        runner.build_trainer(load_config(None, given))
    said = [r.getMessage() for r in logged if "on a CPU without bf16 instructions" in r.getMessage()]
    assert len(said) == 1, said
    fix = said[0].rsplit("; ", 1)[1].removesuffix(" trains in fp32")
    keys = [k for k in fix.split() if "=" in k]
    cfg = load_config(None, given + keys)  # the fix, taken as it is said
    assert cfg.training.precision == "fp32" and not cfg.training.use_mixed_precision, fix


# --------------------------------------------------------------------------------------------
# check_ignored: a choice the tune searches reads the key in the trials that draw the option reading it


def test_a_tune_over_both_batchings_with_their_sizes_is_not_refused(tmp_path):
    from hftraining.workflows.tune import check_space_values

    path = tmp_path / "tune.yaml"
    path.write_text("data:\n  batch_size: 16\ntune:\n  search_space:\n    data.batching: {choices: [windows, dates]}\n"
                    "    data.dates_per_batch: {choices: [2, 8]}\n")
    cfg = load_config(path)
    check_space_values(path, [], cfg.tune.search_space, tmp_path / "out")  # every combination a trial may draw
    trial = load_config(path, ["data.batching=dates", "data.dates_per_batch=8"])  # batch_size 16 read by no trial of it
    assert trial.data.dates_per_batch == 8
    # the choice fixed by the config while the ignored key is searched: every trial ignores it, refused as before
    path.write_text("data:\n  batching: dates\ntune:\n  search_space:\n    data.batch_size: {choices: [16, 64]}\n")
    with pytest.raises(Exception, match="data.batch_size: 16 is ignored under data.batching=dates"):
        check_space_values(path, [], load_config(path).tune.search_space, tmp_path / "out")
