"""The feature store serves what a build without it gives: the same rows, the same validation report
(whatever the path the data is named by and whatever settings add up to the rows it needs) and the
same warnings (of the build, its workers and the scaler's fit); a script that its build workers run
again as they start stops instead of hanging."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import data_rows, prepare



def _folder(tmp_path: Path, where: str, rows: dict[str, int]) -> Path:
    """A folder ``where/prices`` of daily OHLCV files, one per symbol of ``rows`` (its row count)."""
    folder = tmp_path / where / "prices"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for sym, n in rows.items():
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        days = np.datetime_as_string(np.datetime64("2020-01-01") + np.arange(n), unit="D")
        lines = ["Date,Open,High,Low,Close,Volume"] + [
            f"{d},{c:.4f},{c * 1.01:.4f},{c * 0.99:.4f},{c:.4f},{1000 + i}" for i, (d, c) in enumerate(zip(days, close))]
        (folder / f"{sym}.csv").write_text("\n".join(lines) + "\n")
    return folder


def _served_as_built(d: DataConfig) -> dict:
    """The report the store serves for ``d`` after asserting it (and its rows) equal a build without the store."""
    rows, report = data_rows(d)
    fresh, fresh_report = data_rows(dataclasses.replace(d, cache_dir=None))
    assert rows.symbols == fresh.symbols
    for name in ("features", "returns", "times", "close"):
        np.testing.assert_array_equal(np.asarray(getattr(rows, name)), np.asarray(getattr(fresh, name)))
    served = {k: v for k, v in report.items() if k not in ("cache", "store")}
    built = {k: v for k, v in fresh_report.items() if k != "cache"}
    assert json.dumps(served, sort_keys=True) == json.dumps(built, sort_keys=True)
    return report


def test_a_copied_data_folder_is_reported_by_its_own_paths(tmp_path):
    first = _folder(tmp_path, "first", {"AAA": 150, "BBB": 150})
    cache = str(tmp_path / "cache")
    d = DataConfig(data_dir=str(first), cache_dir=cache, sequence_length=20, prediction_horizon=3)
    data_rows(d)
    copy = tmp_path / "second" / "prices"  # same folder name, same bytes, another place
    shutil.copytree(first, copy)
    shutil.rmtree(first)
    report = _served_as_built(dataclasses.replace(d, data_dir=str(copy)))
    assert [f["file"] for f in report["files"]] == [str(copy / "AAA.csv"), str(copy / "BBB.csv")]


def test_a_data_folder_named_by_a_relative_path_is_reported_by_it(tmp_path, monkeypatch):
    folder = _folder(tmp_path, "data", {"AAA": 150})
    d = DataConfig(data_dir=str(folder), cache_dir=str(tmp_path / "cache"), sequence_length=20, prediction_horizon=3)
    data_rows(d)
    monkeypatch.chdir(tmp_path / "data")
    report = _served_as_built(dataclasses.replace(d, data_dir="prices"))
    assert [f["file"] for f in report["files"]] == [os.path.join("prices", "AAA.csv")]


def test_a_too_short_symbol_is_reported_with_the_settings_of_the_run(tmp_path):
    # 60 + 5 and 64 + 1 need the same rows; the reason given for the short symbol names the run's own
    folder = _folder(tmp_path, "data", {"AAA": 150, "BBB": 60})
    d = DataConfig(data_dir=str(folder), cache_dir=str(tmp_path / "cache"), sequence_length=60, prediction_horizon=5)
    assert "data.sequence_length 60 + data.prediction_horizon 5" in json.dumps(data_rows(d)[1]["too_few_rows"])
    other = dataclasses.replace(d, sequence_length=64, prediction_horizon=1)
    report = _served_as_built(other)
    assert "data.sequence_length 64 + data.prediction_horizon 1" in json.dumps(report["too_few_rows"])


def _undecided(folder: Path, syms: tuple[str, ...]) -> None:
    """Files whose dates read two ways (21/03/01: 1 March 2021 or 21 March 2001), which a build warns of."""
    folder.mkdir(parents=True)
    for sym in syms:
        lines = ["Date,Open,High,Low,Close,Volume"] + [
            f"21/03/{i:02d},{10 + i % 3},{11 + i % 3},9,{10 + i % 2},{100 + i}" for i in range(1, 29)]
        (folder / f"{sym}.csv").write_text("\n".join(lines) + "\n")


def _undecided_warnings(caplog) -> list[str]:
    return sorted(r.getMessage() for r in caplog.records if "dates such as '21/03/01'" in r.getMessage())


def test_a_warning_of_the_build_is_said_again_by_each_run_the_entry_serves(tmp_path, caplog):
    _undecided(tmp_path / "data", ("AAA",))
    d = DataConfig(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), sequence_length=5,
                   prediction_horizon=2, features=["log_return_1"])
    with caplog.at_level(logging.WARNING):
        built = data_rows(dataclasses.replace(d, cache_dir=None))
        fresh = _undecided_warnings(caplog)
        assert len(fresh) == 1 and "AAA.csv" in fresh[0]
        for status in ("miss", "hit"):
            caplog.clear()
            rows, report = data_rows(d)
            assert report["cache"] == status
            assert _undecided_warnings(caplog) == fresh, status
    np.testing.assert_array_equal(np.asarray(rows.times), np.asarray(built[0].times))


def test_a_build_workers_warnings_reach_the_runs_log(tmp_path, caplog):
    _undecided(tmp_path / "data", ("AAA", "BBB"))
    d = DataConfig(data_dir=str(tmp_path / "data"), cache_dir=None, sequence_length=5, prediction_horizon=2,
                   features=["log_return_1"], num_workers=2)
    with caplog.at_level(logging.WARNING):
        data_rows(d)
    said = _undecided_warnings(caplog)
    assert len(said) == 2 and "AAA.csv" in said[0] and "BBB.csv" in said[1]


def test_a_script_without_a_main_guard_stops_instead_of_hanging_with_build_workers(tmp_path):
    # each spawned worker runs the script again as it starts; it used to wait for the entry's lock,
    # which the script's own build held while it waited for the worker: a hang with no word
    folder = _folder(tmp_path, "data", {"AAA": 120, "BBB": 120})
    script = tmp_path / "build.py"
    script.write_text(
        "from hftraining.core.config import DataConfig\nfrom hftraining.data.pipeline import data_rows\n"
        f"data_rows(DataConfig(data_dir={str(folder)!r}, cache_dir={str(tmp_path / 'cache')!r}, num_workers=2, "
        "sequence_length=20, prediction_horizon=3))\n")
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail("the build waited on its workers, which waited on its lock")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "data.num_workers=2: a build worker process died" in last and 'if __name__ == "__main__":' in last
    assert 'if __name__ == "__main__":' in done.stderr.split("data.num_workers=2")[0]  # the worker said why too


def test_a_warning_of_the_scaler_fit_is_said_again_by_each_run_that_reads_its_statistics(tmp_path, caplog):
    folder = tmp_path / "data"
    folder.mkdir()
    n = 300
    close = 50 + np.repeat(np.arange(n // 10), 10) * 0.5  # the close moves once every 10 bars: returns mostly 0
    days = np.datetime_as_string(np.datetime64("2020-01-01") + np.arange(n), unit="D")
    (folder / "AAA.csv").write_text("\n".join(["Date,Open,High,Low,Close,Volume"] + [
        f"{d},{c},{c + 1},{c - 1},{c},{1000 + i}" for i, (d, c) in enumerate(zip(days, close))]) + "\n")
    d = DataConfig(data_dir=str(folder), cache_dir=str(tmp_path / "cache"), sequence_length=20, prediction_horizon=3,
                   features=["log_return_1"], scaler="robust")

    def robust_warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("data.scaler robust:")]

    with caplog.at_level(logging.WARNING):
        fresh = prepare(dataclasses.replace(d, cache_dir=None))
        said = robust_warnings()
        assert len(said) == 1 and "log_return_1" in said[0]
        for _ in range(2):  # fitted and remembered, then read from the store
            caplog.clear()
            stored = prepare(d)
            assert robust_warnings() == said
            assert stored.report["scaled_by_std"] == fresh.report["scaled_by_std"]
