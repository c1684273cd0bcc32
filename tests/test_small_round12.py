"""Writes that a failure or Ctrl-C leaves whole (``data features --out``, ``data synth``), ``data synth``
into a folder of other data and with a ``--tz`` that changes nothing, ``tune --storage journal://`` of a
file that is no journal, a run folder that lost its config.json, and ``ensemble`` naming the folder
given twice."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import DataConfig
from hftraining.core.errors import ConfigError, DataError
from hftraining.data.feature_table import write_feature_table
from hftraining.data.synth import DEFAULT_TZ, bar_times, write_synth
from hftraining.inference.forecaster import Forecaster
from conftest import tiny  # noqa: E402


def _cut_short(method: str, monkeypatch) -> None:
    """``DataFrame.<method>`` writes a few bytes to its path, then is interrupted (Ctrl-C)."""

    def interrupted(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"symbol,timesta")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, method, interrupted)


def _files(folder):
    return sorted(p.name for p in folder.rglob("*"))


# --- data features --out / data synth: written whole or not at all --------------------------------------


@pytest.mark.parametrize("name,method", [("f.csv", "to_csv"), ("f.parquet", "to_parquet")])
def test_an_interrupted_feature_table_leaves_the_earlier_one_whole(tmp_path, monkeypatch, name, method):
    """Ctrl-C while ``data features --out X`` writes left the earlier X cut short, CSV or Parquet."""
    write_synth(tmp_path / "d", 1, 120)
    cfg = DataConfig(data_dir=str(tmp_path / "d"), cache_dir=None)
    out = tmp_path / "out" / name
    assert write_feature_table(cfg, out) == (len(pd.read_csv(out) if method == "to_csv" else pd.read_parquet(out)), 1)
    before = out.read_bytes()
    _cut_short(method, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write_feature_table(cfg, out)
    assert out.read_bytes() == before
    assert _files(out.parent) == [name]  # no temporary file left beside it
    monkeypatch.undo()
    link = tmp_path / "out" / f"latest{out.suffix}"
    link.symlink_to(out)
    write_feature_table(cfg, link)  # a link stays a link: the file it names is rewritten
    assert link.is_symlink() and _files(out.parent) == sorted([name, link.name])


@pytest.mark.parametrize("fmt,method", [("csv", "to_csv"), ("parquet-dataset", "to_parquet")])
def test_an_interrupted_synth_leaves_each_earlier_file_whole(tmp_path, monkeypatch, fmt, method):
    """Ctrl-C during ``data synth --out DIR`` left SYN000 cut short: a later train read a broken file."""
    (path,) = write_synth(tmp_path / "s", 1, 50, fmt=fmt)
    before, names = path.read_bytes(), _files(tmp_path / "s")
    _cut_short(method, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write_synth(tmp_path / "s", 1, 50, seed=1, fmt=fmt)
    assert path.read_bytes() == before
    assert _files(tmp_path / "s") == names  # no temporary file left beside it


def test_synth_refuses_a_folder_holding_other_data_files(tmp_path):
    """Synthetic files written beside a user's AAPL.csv: a later ``train`` on the folder read both, real
    and synthetic, as one panel. Synth's own files (an earlier synth) are rewritten as before."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "AAPL.csv").write_text("timestamp,open,high,low,close,volume\n")
    with pytest.raises(DataError) as e:
        write_synth(tmp_path / "mine", 2, 30)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "mine") in msg and "AAPL.csv" in msg
    assert _files(tmp_path / "mine") == ["AAPL.csv"]
    (tmp_path / "ds" / "symbol=AAPL").mkdir(parents=True)
    with pytest.raises(DataError, match="symbol=AAPL"):
        write_synth(tmp_path / "ds", 1, 30, fmt="parquet-dataset")
    write_synth(tmp_path / "again", 3, 30)
    (tmp_path / "again" / "notes.txt").write_text("not data")
    assert len(write_synth(tmp_path / "again", 2, 40)) == 2  # synth's own files, and a file that is no data
    assert len(pd.read_csv(tmp_path / "again" / "SYN000.csv")) == 40


# --- data synth --tz --------------------------------------------------------------------------------------


@pytest.mark.parametrize("freq,session", [("B", None), ("D", None), ("1h", "24h"), ("1min", "24/7")])
def test_synth_refuses_a_time_zone_it_would_ignore(freq, session):
    """``--tz`` with daily bars or around-the-clock bars changed nothing, without a word (``--session``
    with daily bars was refused)."""
    with pytest.raises(DataError) as e:
        bar_times(50, freq, "2024-01-02", session=session, tz="Asia/Tokyo")
    assert "--tz" in str(e.value) and "\n" not in str(e.value)
    assert len(bar_times(50, freq, "2024-01-02", session=session)) == 50  # without a tz: as before


def test_synth_without_a_time_zone_uses_the_default_one():
    """No tz: the session is in :data:`DEFAULT_TZ`, as the CLI's default did."""
    got = bar_times(390 * 3, "1min", "2024-03-08", tz=None)
    assert got.equals(bar_times(390 * 3, "1min", "2024-03-08", tz=DEFAULT_TZ))
    assert got[0] == pd.Timestamp("2024-03-08 14:30", tz="UTC")


# --- tune --storage journal:// ----------------------------------------------------------------------------


def test_a_journal_storage_that_is_no_journal_is_refused_and_left_as_it_was(tmp_path):
    """``--storage journal:///path/prices.csv`` appended an Optuna record to the user's file, then failed
    with "Expecting value: line 1 column 1"."""
    import optuna

    from hftraining.workflows.tune import storage_url

    mine = tmp_path / "prices.csv"
    mine.write_text("timestamp,close\n2024-01-02,10.5\n")
    with pytest.raises(ConfigError) as e:
        storage_url(f"journal://{mine}", 1, tmp_path / "out")
    assert str(e.value) == (f"--storage journal://{mine}: {mine} is not an Optuna journal; give a new file or a "
                            "study's journal")
    assert mine.read_text() == "timestamp,close\n2024-01-02,10.5\n"
    (tmp_path / "list.json").write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="not an Optuna journal"):
        storage_url(f"journal://{tmp_path / 'list.json'}", 1, tmp_path / "out")
    # a study's journal, an empty file and a new file are storage
    journal = tmp_path / "study.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    for ok in (journal, tmp_path / "empty.log", tmp_path / "new.log"):
        if ok.name == "empty.log":
            ok.touch()
        assert storage_url(f"journal://{ok}", 2, tmp_path / "out") == f"journal://{ok}"


# --- run folders and ensembles ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", *tiny(root, "model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2",
                                "training.max_steps=3", "training.save_steps=0", "evaluation.eval_steps=0")]) == 0
    return root


def test_a_run_folder_without_its_config_is_refused_not_read_as_a_bare_model(run, tmp_path, capsys):
    """A run folder that lost config.json was evaluated as a bare model: its evaluation settings and
    fitted baselines dropped, the verdict against the naive baselines only. A copy of its final/ (a model
    folder) still loads."""
    broken = tmp_path / "broken"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("report_files", "tensorboard"))
    (broken / "config.json").unlink()
    want = f"{broken}: a run folder without config.json; restore it, or copy final/ out to use it as a model folder"
    for path in (broken, broken / "final"):
        with pytest.raises(DataError) as e:
            Forecaster.from_pretrained(path)
        assert str(e.value) == want
    capsys.readouterr()
    assert main(["evaluate", str(broken), "--no-report"]) == 2
    assert capsys.readouterr().err.strip().endswith(want)
    shutil.copytree(run / "final", tmp_path / "model")
    Forecaster.from_pretrained(tmp_path / "model")  # a bare model folder
    Forecaster.from_pretrained(run)  # the run itself


def test_ensemble_names_the_folder_given_twice(run, tmp_path, capsys):
    """"ensemble: the same model folder is given twice" did not say which, among several arguments."""
    assert main(["ensemble", str(run), str(run / "final"), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "given twice" in err and f"{run} and {run / 'final'}" in err
    assert not (tmp_path / "ens").exists()
