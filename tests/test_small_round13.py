"""Small fixes: each test fails on the code before its fix."""
from __future__ import annotations

import pytest

from hftraining.core.config import ModelConfig
from hftraining.models.registry import MODELS, unread_settings, unread_settings_warning


@pytest.mark.parametrize("model_type", sorted(MODELS.names()))
def test_loss_weights_are_said_to_do_nothing_for_a_model_fitted_without_gradient_steps(model_type):
    # ridge, LightGBM and the naive models are fitted by squared error (or not at all): weighting the loss's
    # parts changes nothing, so the key is named like any other unread setting; a gradient-trained model reads it
    cfg = ModelConfig(type=model_type, loss_weights={"mse": 2.0})
    if MODELS.get(model_type).needs_training:
        assert unread_settings(cfg) == []
    else:
        assert unread_settings(cfg) == ["model.loss_weights={'mse': 2.0}"]
        assert "model.loss_weights" in unread_settings_warning(cfg)


def test_a_file_written_whole_goes_through_a_hidden_sibling_of_this_process(tmp_path):
    import os

    from hftraining.core.files import replace_file
    from hftraining.data.io import resolve_paths

    (tmp_path / "AAA.csv").write_text("timestamp,close\n2024-01-02,1\n")
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_text("timestamp,close\n2024-01-02,2\n")
        # a write killed here leaves the sibling behind: no reader of the folder lists it, and a second
        # process writing the same file at once writes a sibling of its own
        assert resolve_paths(tmp_path) == [tmp_path / "AAA.csv"]

    replace_file(tmp_path / "AAA.csv", write)
    assert seen[0].name == f".AAA.csv.tmp-{os.getpid()}"
    assert (tmp_path / "AAA.csv").read_text().endswith(",2\n") and sorted(tmp_path.iterdir()) == [tmp_path / "AAA.csv"]


def test_a_failed_write_names_the_users_file_and_its_cause_not_the_temporary_one(tmp_path):
    import errno

    from hftraining.core.errors import WriteError
    from hftraining.core.files import replace_file

    def full_disk(tmp):
        tmp.write_text("part")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(WriteError) as e:
        replace_file(tmp_path / "out.parquet", full_disk)
    assert str(e.value) == f"{tmp_path / 'out.parquet'}: cannot write (No space left on device)"
    assert list(tmp_path.iterdir()) == []  # the partial sibling removed
    (tmp_path / "afile").write_text("")
    with pytest.raises(WriteError, match="afile/x.csv: cannot write"):  # was a raw NotADirectoryError from the cleanup
        replace_file(tmp_path / "afile" / "x.csv", lambda tmp: tmp.write_text("x"))


def test_a_name_yaml_reads_as_an_impossible_date_is_refused_with_how_to_give_it_as_text():
    from hftraining.core.config import load_config
    from hftraining.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(None, ["output.experiment_name=2024-02-30"])
    assert str(e.value).endswith("""as text (a name) it needs quotes in YAML: "2024-02-30\"""")
    assert load_config(None, ['output.experiment_name="2024-02-30"']).output.experiment_name == "2024-02-30"


def test_walkforward_names_the_fold_whose_training_dates_hold_one_symbol(tmp_path, capsys):
    """WPM listed late: an expanding walk-forward's first fold trains on AEM alone, where a cross-sectional
    label is 0 on every date. The error named data.target but not the fold, though the panel has two symbols."""
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import tiny

    from hftraining.cli import main
    from hftraining.data.io import sample_data_dir

    data = tmp_path / "data"
    data.mkdir()
    src = sample_data_dir()
    (data / "AEM.csv").write_text((src / "AEM.csv").read_text())
    wpm = pd.read_csv(src / "WPM.csv")
    wpm.iloc[len(wpm) * 3 // 5:].to_csv(data / "WPM.csv", index=False)
    args = tiny(tmp_path / "run", "training.max_steps=2", "training.save_steps=0", "evaluation.eval_steps=2",
                "evaluation.intervals=[]", "evaluation.report=false", f"data.data_dir={data}", "data.target=cs_rank")
    assert main(["walkforward", "--folds", "3", *args]) == 2
    last = capsys.readouterr().err.rstrip("\n").splitlines()[-1]
    assert last.startswith("hftraining: error: walkforward fold 1 of 3 (expanding): data.target: cs_rank"), last


def test_a_file_whose_rows_nearly_all_break_the_ohlc_rule_is_refused_as_misnamed(tmp_path):
    """Coinbase's candles (time, low, high, open, close, volume) given the usual six names: every low read
    as the open, every row "repaired" by the clip rule and the file read as wrong prices with exit 0. Now a
    one-line error naming the column that holds each row's lowest price, under every policy; a file with a
    few broken bars is still clipped as before."""
    import pandas as pd

    from hftraining.core.config import DataConfig
    from hftraining.core.errors import DataError
    from hftraining.data.io import sample_data_dir
    from hftraining.data.validate import validate_frame

    df = pd.read_csv(sample_data_dir() / "AEM.csv").iloc[:200]
    frame = pd.DataFrame({"timestamp": pd.to_datetime(df["Date"], utc=True), "open": df["low"], "high": df["high"],
                          "low": df["open"], "close": df["close"], "volume": df["volume"]})
    for policy in ("clip", "drop", "error"):
        with pytest.raises(DataError) as e:
            validate_frame(frame, DataConfig(ohlc_violations=policy), "f.csv")
        msg = str(e.value)
        assert msg.startswith("f.csv: high and low do not cover open and close in ") and "likely misnamed" in msg
        assert "the column read as 'open' is the lowest price in 100% of rows" in msg, msg
    right = frame.rename(columns={"open": "low", "low": "open"})
    right.loc[5, "high"] = right.loc[5, "low"] * 0.9  # one broken bar: clipped as before
    out, rep = validate_frame(right, DataConfig(), "f.csv")
    assert len(out) == 200 and rep.rules["ohlc_inconsistent"]["repaired"] == 1


@pytest.mark.parametrize("fields, told", [
    ("ohlc_adj_volume", "timestamp,open,high,low,close,adj_close,volume"),
    ("close", "timestamp,close"),
    ("close_volume", "timestamp,close,volume"),
])
def test_a_header_less_file_is_told_names_that_read_its_fields_right(tmp_path, capsys, fields, told):
    """Yahoo's columns without a header, whose Adj Close sits below each row's low (years of dividends
    since): the hint named it ``volume`` (after "trades" and "vwap" were learnt), and following it read the
    Adj Close as the volume without a word. A file of closes was told ``open``, and following that failed."""
    import pandas as pd

    from hftraining.cli import main
    from hftraining.data.io import sample_data_dir

    df = pd.read_csv(sample_data_dir() / "AEM.csv").iloc[:120]
    cols = {"ohlc_adj_volume": [df["open"], df["high"], df["low"], df["close"], df["close"] * 0.8, df["volume"]],
            "close": [df["close"]], "close_volume": [df["close"], df["volume"]]}[fields]
    body = pd.concat([df["Date"], *cols], axis=1)
    path = tmp_path / "AEM.csv"
    body.to_csv(path, index=False, header=False)
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"e.g. {told}" in err, err
    named = tmp_path / "named" / "AEM.csv"
    named.parent.mkdir()
    body.to_csv(named, index=False, header=told.split(","))
    if fields == "close":  # closes alone: the next line asks for an empty volume column, as for FX
        assert main(["data", "check", str(named)]) == 2
        assert "missing column 'volume'" in capsys.readouterr().err
        return
    assert main(["data", "check", str(named), "--json"]) == 0  # the hint followed reads the file
    capsys.readouterr()


def test_a_change_of_the_data_layers_code_builds_a_new_store_entry(tmp_path):
    """The entry's key held FORMAT and the package version, not the code that computed the rows: a checkout
    whose feature or reader code changed without a FORMAT bump was served rows computed the old way."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import hftraining

    src = tmp_path / "src"
    shutil.copytree(Path(hftraining.__file__).parent, src / "hftraining",
                    ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    script = ("from hftraining.core.config import DataConfig\nfrom hftraining.data.pipeline import data_rows\n"
              f"data_rows(DataConfig(symbols=['AEM'], cache_dir={str(cache)!r}, sequence_length=20, "
              "prediction_horizon=3, features=['log_return_1']))\n")

    def build():
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
        return sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))

    first = build()
    assert len(first) == 1 and build() == first  # the same code: the entry is served
    features = src / "hftraining" / "data" / "features.py"
    features.write_text(features.read_text() + "\n# a change of the code that computes the rows\n")
    assert len(build()) == 2  # a new entry, not the old rows
