"""Evaluating a trained model on its data folder read again after it changed: rows appended, a bar
corrected, a symbol added or removed. The model folder keeps the rows training read
(``source_rows`` in preprocessing.json: each symbol's count, last date and a digest of its dates and
closes); what differs is a one-line warning naming it, the splits are still cut where training cut them,
a walk-forward fold's test block is the one it was scored on, and the run's own report (the one eval.json
describes) is never replaced by a report of other rows."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import Preprocessing, apply, prepare
from hftraining.data.splits import Fold
from hftraining.train.logging import log
from hftraining.workflows.evaluate_run import evaluation_config, evaluation_name, report_dir
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

SYMBOLS = ("AEM", "WPM")


def _write(folder: Path, rows: int, symbols=SYMBOLS) -> None:
    """The first ``rows`` rows of each bundled sample file of ``symbols`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for sym in symbols:
        lines = (sample_data_dir() / f"{sym}.csv").read_text().splitlines()
        (folder / f"{sym}.csv").write_text("\n".join(lines[:rows + 1]) + "\n")


def _correct_a_bar(path: Path, line: int) -> None:
    """The close of one row inside the file moved by 1%, as a corrected bad print."""
    lines = path.read_text().splitlines()
    cells = lines[line].split(",")
    cells[1] = repr(float(cells[1]) * 1.01)
    lines[line] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def warned():
    """The warnings of the data pipeline, whatever handlers the ``hftraining`` logger has now."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    lg = logging.getLogger("hftraining.data.pipeline")
    h = Keep(logging.WARNING)
    lg.addHandler(h)
    yield records
    lg.removeHandler(h)


def _cfg(data: Path, *extra: str):
    return load_config(None, tiny(None, f"data.data_dir={data}", "data.cache_dir=null", *extra)).data


def _target_dates(ws) -> tuple[int, int, int]:
    """(first, last target date, windows) of a window set."""
    ends = ws.ends.astype(np.int64)
    return int(ws.row_times[ends + 1].min()), int(ws.row_times[ends + ws.horizon].max()), len(ws)


def test_rows_appended_after_training_are_named_and_cut_at_the_training_dates(tmp_path, warned):
    """Rows appended since training: evaluation re-read them in silence. Now one warning names each symbol's
    new rows and the last date training read; the test split starts at the saved cut date, so no window
    the model trained or calibrated on is scored; and the data training read, unchanged, gives no warning."""
    data = tmp_path / "data"
    _write(data, 1000)
    prepared = prepare(_cfg(data))
    pre = Preprocessing.from_dict(json.loads(json.dumps(prepared.preprocessing.to_dict())))  # as saved
    same = apply(pre, None, "test")
    assert _target_dates(same) == _target_dates(prepared.test) and warned == []
    _write(data, 1200)
    test = apply(pre, None, "test")
    last = pd.Timestamp(int(prepared.test.row_times[-1]), tz="UTC").date().isoformat()
    assert len(warned) == 1 and "\n" not in warned[0]
    for sym in SYMBOLS:
        assert f"{sym}: 200 rows after {last}" in warned[0]
    test_from = pd.Timestamp(pre.data["split_dates"]["test"]).value
    assert _target_dates(test)[0] == _target_dates(prepared.test)[0] >= test_from
    assert _target_dates(test)[2] > _target_dates(prepared.test)[2]


def test_a_corrected_bar_a_new_and_a_removed_symbol_are_named(tmp_path, warned):
    """A close corrected inside the training period, a symbol added, a symbol gone: each named in the one
    warning (a digest of the dates and closes, not only the row counts, tells the correction)."""
    data = tmp_path / "data"
    _write(data, 800, ("AEM", "WPM", "NIO"))
    pre = prepare(_cfg(data, "data.symbols=null")).preprocessing
    _correct_a_bar(data / "AEM.csv", 300)
    (data / "NIO.csv").unlink()
    _write(data, 800, ("XPO",))
    apply(pre, None, "test")
    (line,) = warned
    assert "AEM: its rows up to" in line and "XPO: new" in line and "NIO: gone" in line and "WPM" not in line


def test_a_walk_forward_fold_read_again_scores_its_own_test_block(tmp_path, warned):
    """Purged k-fold's fold 2 trains on the rows after its test block too. Its blocks are shares of the rows,
    so with rows appended, evaluating its model again moved the block later, onto dates it had trained on
    (targets 2022-02 to 2024-03 where it trained on 2022-09 to 2023-12). Now the block is cut from the rows
    training read: the same windows; and rows changed inside them are a one-line error."""
    data = tmp_path / "data"
    _write(data, 1000)
    d = _cfg(data, "data.sequence_length=16", "data.prediction_horizon=2", "data.symbols=null")  # every file
    prepared = prepare(d, fold=Fold(1, 3, "purged_kfold"))
    pre = Preprocessing.from_dict(prepared.preprocessing.to_dict())
    _write(data, 1500)
    again = apply(pre, None, "test")
    assert _target_dates(again) == _target_dates(prepared.test)
    ends = [ws.row_times[ws.ends.astype(np.int64)] for ws in (again, prepared.test)]
    assert np.array_equal(*ends)
    assert "rows after" in warned[0] and "left out" in warned[0]
    (data / "NIO.csv").write_text((sample_data_dir() / "NIO.csv").read_text())  # a new symbol: other cross-sections
    with pytest.raises(DataError, match="NIO: new .* cannot be cut again") as e:
        apply(pre, None, "test")
    (data / "NIO.csv").unlink()
    _correct_a_bar(data / "WPM.csv", 200)
    with pytest.raises(DataError, match="WPM: its rows up to .* cannot be cut again") as e:
        apply(pre, None, "test")
    assert "\n" not in str(e.value)


def test_a_folder_without_the_record_still_loads_and_a_broken_one_is_named(tmp_path):
    """A model folder written before ``source_rows`` evaluates as before (nothing to compare); a broken
    record is a one-line error naming the file and the symbol."""
    data = tmp_path / "data"
    _write(data, 600)
    saved = prepare(_cfg(data)).preprocessing.to_dict()
    old = {k: v for k, v in saved.items() if k != "source_rows"}
    _write(data, 700)
    assert len(apply(Preprocessing.from_dict(old), None, "test")) > 0
    saved["source_rows"]["WPM"]["rows"] = "many"
    with pytest.raises(DataError, match=r"^m/preprocessing.json: source_rows.WPM: expected"):
        apply(Preprocessing.from_dict(saved), None, "test", "m/preprocessing.json")


def _hashes(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in ("report.md", "report.html", "eval.json")}


def test_evaluating_the_run_after_its_data_changed_keeps_the_runs_report(tmp_path, capsys, monkeypatch, warned):
    """`evaluate RUN` after rows were appended to its data folder (1200 rows trained on, all 1560 read)
    scored 1028 windows where eval.json has 308, wrote that report over the run's own (its data section
    still saying 308 test windows), and said nothing. Now the changes are named in a warning and in --json's
    "data_changes", and the report goes to evaluations/ as an evaluation of other data does: the folder
    `--data` of that data folder names."""
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    data, run = tmp_path / "data", tmp_path / "run"
    _write(data, 600)
    train(load_config(None, tiny(run, "training.max_steps=2", "evaluation.eval_steps=0", f"data.data_dir={data}",
                                 "data.cache_dir=null")))
    before = _hashes(run)
    last = json.loads((run / "data_report.json").read_text())["split"]["symbols"]["AEM"]["test"][1][:10]
    _write(data, 700)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert _hashes(run) == before
    assert result.get("data_changes") == [f"{sym}: 100 rows after {last}" for sym in SYMBOLS]
    assert len(warned) == 1 and f"AEM: 100 rows after {last}" in warned[0]
    assert result["n_windows"] > json.loads((run / "eval.json").read_text())["n_windows"]
    assert _hashes(run) == before
    where = Path(result["report"]).parent
    assert where.parent == run / "evaluations" and where.name == evaluation_name("test", str(data))
    assert report_dir(run, None, "test", None, evaluation_config(run), result) == where  # told, not read again


def test_a_broken_record_fails_when_the_folder_loads(tmp_path):
    """A model folder's broken ``source_rows`` is refused where the rest of preprocessing.json is
    checked (loading it), not first at evaluation."""
    from hftraining.models import load_preprocessing
    from test_inference_serve import make_model

    d = make_model(tmp_path / "m")
    pre = json.loads((d / "preprocessing.json").read_text())
    assert "source_rows" in pre and load_preprocessing(d)["source_rows"] == pre["source_rows"]
    sym = next(iter(pre["source_rows"]))
    pre["source_rows"][sym]["digest"] = 7
    (d / "preprocessing.json").write_text(json.dumps(pre))
    with pytest.raises(DataError, match=rf"preprocessing.json: source_rows.{sym}: expected"):
        load_preprocessing(d)
