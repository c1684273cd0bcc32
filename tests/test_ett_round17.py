"""``bench ett``'s input: a malformed row of an ETT CSV is refused naming its file line and column
(a row with an extra field was read with its values shifted and its last dropped; numpy's row count,
two below the file's line, was passed on), and a model flag the chosen model does not read is an
error, not a setting ignored and then recorded as used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.core.errors import ConfigError, DataError
from hftraining.workflows import ett


def write_etth1(folder: Path, rows: int = 30, edit=None) -> Path:
    """An ETTh1.csv of ``rows`` hourly rows from 2016-07-01 00:00; ``edit(lines)`` changes the text lines
    (lines[0] is the header, lines[k] the file's line k + 1)."""
    rng = np.random.default_rng(0)
    dates = np.datetime64("2016-07-01T00:00") + np.arange(rows) * np.timedelta64(1, "h")
    lines = [",".join(ett.COLUMNS)]
    for d, v in zip(dates, rng.normal(size=(rows, 7))):
        lines.append(str(d).replace("T", " ") + ":00," + ",".join(f"{x:.3f}" for x in v))
    if edit:
        edit(lines)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ETTh1.csv").write_text("\n".join(lines) + "\n")
    return folder


def _set_field(lines: list[str], line: int, col: int, text: str) -> None:
    fields = lines[line - 1].split(",")
    fields[col] = text
    lines[line - 1] = ",".join(fields)


def test_a_clean_file_loads_every_value(tmp_path: Path) -> None:
    folder = write_etth1(tmp_path)
    values = ett.load_ett(folder, "ETTh1")
    text = (folder / "ETTh1.csv").read_text().splitlines()[1:]
    assert values.shape == (30, 7)
    assert np.array_equal(values, np.array([[float(x) for x in line.split(",")[1:]] for line in text]))


@pytest.mark.parametrize("edit, message", [
    # a value split by a comma: HULL read 234, every later channel the one before it, OT dropped
    (lambda ls: _set_field(ls, 10, 2, "1,234"), "ETTh1.csv: line 10: 9 fields, expected 8"),
    (lambda ls: ls.__setitem__(9, ls[9].rsplit(",", 1)[0]), "ETTh1.csv: line 10: 7 fields, expected 8"),
    (lambda ls: _set_field(ls, 7, 2, "abc"), "ETTh1.csv: unreadable value on line 7, column HULL: 'abc' is not a number"),
    (lambda ls: _set_field(ls, 12, 4, ""), "ETTh1.csv: unreadable value on line 12, column MULL: '' is not a number"),
    (lambda ls: _set_field(ls, 5, 0, "07/01/2016 04:00"), "ETTh1.csv: unreadable value on line 5, column date: '07/01/2016 04:00' is not a date"),
    # after a blank line, the file's line, not the data row's index + 2
    (lambda ls: (_set_field(ls, 20, 7, "inf"), ls.insert(3, "")), "ETTh1.csv: line 21, column OT: non-finite value"),
    (lambda ls: (ls.insert(3, ""), ls.pop(15)), "ETTh1.csv: line 16: date 2016-07-01T14:00:00, expected 2016-07-01T13:00:00"),
])
def test_a_malformed_row_names_its_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture, edit, message: str) -> None:
    folder = write_etth1(tmp_path, edit=edit)
    with pytest.raises(DataError) as e:
        ett.load_ett(folder, "ETTh1")
    assert message in str(e.value), str(e.value)
    # the command: one line, exit 2, before any fit
    assert main(["bench", "ett", "--data", str(folder), "--model", "linear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line " in err[0] and "Traceback" not in err[0]


def test_a_file_of_the_header_alone_has_no_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_etth1(tmp_path, rows=0)
    assert ett.load_ett(folder, "ETTh1").shape == (0, 7)
    assert main(["bench", "ett", "--data", str(folder), "--model", "linear"]) == 2
    assert capsys.readouterr().err.strip().endswith("0 rows, the protocol needs 14400 (12/4/4 months of 30 days: the end of its test split)")


@pytest.mark.parametrize("model, flags, message", [
    ("dlinear", ["--hidden-size", "64"], "--hidden-size: not a setting of --model dlinear (it reads --moving-avg)"),
    ("dlinear", ["--num-layers", "7"], "--num-layers: not a setting of --model dlinear"),
    ("patchtst", ["--moving-avg", "49"], "--moving-avg: not a setting of --model patchtst (it reads --hidden-size"),
])
def test_a_model_flag_the_model_does_not_read_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture, model: str,
                                                           flags: list[str], message: str) -> None:
    # refused before any file is read (tmp_path holds none) or any model trains
    assert main(["bench", "ett", "--data", str(tmp_path), "--model", model, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    key = flags[0][2:].replace("-", "_")
    with pytest.raises(ConfigError, match=flags[0]):
        ett.run_suite(tmp_path, ["ETTh1"], [96], model, model_overrides={key: int(flags[1])}, log=lambda _: None)


def test_the_flags_a_model_reads_are_taken(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # --moving-avg of dlinear and --patch-len of patchtst pass the check (they fail later here: no data)
    for model, flag in (("dlinear", ["--moving-avg", "13"]), ("patchtst", ["--patch-len", "24", "--patch-stride", "12"])):
        assert main(["bench", "ett", "--data", str(tmp_path), "--model", model, *flag]) == 2
        assert "ETTh1.csv: no such file" in capsys.readouterr().err


def test_a_trained_dlinear_records_the_settings_it_read(tmp_path: Path) -> None:
    values = np.random.default_rng(1).normal(size=(14400, 7))
    s = ett.TrainSettings(epochs=1, batch_size=2048, evals_per_epoch=1, patience=1)
    r = ett.run_ett(tmp_path, "ETTh1", 24, "dlinear", 48, settings=s, ensemble=False, log=lambda _: None,
                    run_dir=tmp_path / "runs", values=values)
    assert r["trained"]["model_config"] == {"moving_avg": 25}  # not PatchTST's width, heads and dropout
    json.dumps(r["trained"]["model_config"])
