"""Every file of a price folder is read right or named: macOS's hidden ``._AEM.csv`` beside ``AEM.csv`` is not
read and is named (it stopped the run as a file that is not UTF-8), ``predict --data folder/`` names the
files it does not read as training does, and a gap that the whole panel shares (an exchange's closure: Golden
Week in hourly bars) is the calendar, not a hole in each symbol's rows."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from io import StringIO

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining import cli
from hftraining.core.config import DataConfig, ModelConfig, load_config
from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import latest_windows, prepare
from hftraining.data.synth import synth_ohlcv
from hftraining.models import build_model

FEATURES = ["log_return_1", "rsi_14"]
# the head of the AppleDouble file macOS writes as ._NAME beside NAME on a drive or in a zip archive
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\x09\x00\x00\x002\x00\x00\x0e\xb0" + bytes(64)


def _config(**kw) -> DataConfig:
    return DataConfig(sequence_length=20, prediction_horizon=2, features=FEATURES, cache_dir=None, **kw)


def _prices(folder, *symbols: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sym in symbols:
        shutil.copy(sample_data_dir() / f"{sym}.csv", folder / f"{sym}.csv")


def _unread_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "not read" in r.getMessage()]


# ----------------------------------------------------------------------------- hidden files of a folder


def test_macos_resource_forks_in_a_price_folder_are_not_read_and_are_named(tmp_path, capsys, caplog):
    folder = tmp_path / "prices"
    _prices(folder, "AEM", "WPM")
    (folder / "._AEM.csv").write_bytes(APPLE_DOUBLE)
    (folder / "._WPM.csv").write_bytes(APPLE_DOUBLE)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(32))
    with caplog.at_level(logging.WARNING):
        assert cli.main(["data", "check", str(folder), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in got["files"]] == [str(folder / "AEM.csv"), str(folder / "WPM.csv")]
    assert "errors" not in got or not got["errors"]
    assert got["unread_files"]["files"] == [str(folder / "._AEM.csv"), str(folder / "._WPM.csv")]  # not .DS_Store
    (line,) = _unread_lines(caplog)
    assert line == got["unread_files"]["why"]
    assert line.startswith(f"data: {folder / '._AEM.csv'}, {folder / '._WPM.csv'}: not read (hidden files")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(data_dir=str(folder)))
    assert p.report["symbols"] == ["AEM", "WPM"]
    assert p.report["unread_files"]["files"] == [str(folder / "._AEM.csv"), str(folder / "._WPM.csv")]


def test_a_folder_of_hidden_files_only_says_so(tmp_path, capsys):
    folder = tmp_path / "prices"
    folder.mkdir()
    (folder / "._AEM.csv").write_bytes(APPLE_DOUBLE)
    assert cli.main(["data", "check", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{folder}: folder holds no .csv" in err and "hidden files such as ._AEM.csv are not read" in err


def test_a_hidden_parquet_file_in_a_symbol_folder_is_not_read(tmp_path, capsys):
    """A hive-partitioned dataset copied from a Mac: ``symbol=AEM/._part-0.parquet`` beside its data file."""
    root = tmp_path / "dataset"
    for sym in ("AEM", "WPM"):
        (root / f"symbol={sym}").mkdir(parents=True)
        pd.read_csv(sample_data_dir() / f"{sym}.csv").to_parquet(root / f"symbol={sym}" / "part-0.parquet", index=False)
    (root / "symbol=AEM" / "._part-0.parquet").write_bytes(APPLE_DOUBLE)
    assert cli.main(["data", "check", str(root), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in got["files"]] == [str(root / "symbol=AEM"), str(root / "symbol=WPM")]
    assert got["unread_files"]["files"] == [str(root / "symbol=AEM" / "._part-0.parquet")]
    p = prepare(_config(data_dir=str(root)))
    assert p.report["symbols"] == ["AEM", "WPM"] and p.report["rows_in"] == 2 * len(pd.read_csv(sample_data_dir() / "AEM.csv"))


def test_a_csv_file_beside_a_dataset_s_symbol_folders_is_named_unless_named_itself(tmp_path, capsys):
    """A folder of ``symbol=`` folders is read by those folders only: a symbol's CSV file put beside them was left
    out of the panel without a word. Named in data.data_dir beside the folder, it is read, and not named."""
    root = tmp_path / "dataset"
    (root / "symbol=AEM").mkdir(parents=True)
    pd.read_csv(sample_data_dir() / "AEM.csv").to_parquet(root / "symbol=AEM" / "part-0.parquet", index=False)
    shutil.copy(sample_data_dir() / "WPM.csv", root / "WPM.csv")
    (root / "_SUCCESS").write_text("")  # what Spark writes beside its folders: not prices
    assert cli.main(["data", "check", str(root), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in got["files"]] == [str(root / "symbol=AEM")]
    assert got["unread_files"]["files"] == [str(root / "WPM.csv")]
    assert "read by those folders only" in got["unread_files"]["why"]
    p = prepare(_config(data_dir=[str(root), str(root / "WPM.csv")]))
    assert p.report["symbols"] == ["AEM", "WPM"] and "unread_files" not in p.report


def test_a_hidden_file_named_on_its_own_is_read(tmp_path, capsys):
    """What a user names (a file, a glob that names dot files) is read: the folder rule is for what a folder happens
    to hold."""
    hidden = tmp_path / ".AEM.csv"
    shutil.copy(sample_data_dir() / "AEM.csv", hidden)
    assert cli.main(["data", "check", str(hidden), "--json"]) == 0
    assert [r["file"] for r in json.loads(capsys.readouterr().out)["files"]] == [str(hidden)]


def test_a_link_to_nothing_in_a_price_folder_is_named(tmp_path, capsys):
    """A folder of links into a drive that is not mounted: the symbol of a link to nothing was left out of the
    panel, and data check exited 0 without a word of it."""
    folder = tmp_path / "prices"
    _prices(folder, "AEM", "WPM")
    (folder / "NIO.csv").symlink_to(tmp_path / "drive" / "NIO.csv")
    assert cli.main(["data", "check", str(folder), "--json"]) == 2
    got = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in got["files"]] == [str(folder / "AEM.csv"), str(folder / "WPM.csv")]  # still checked
    (err,) = got["errors"]
    assert err == (f"{folder / 'NIO.csv'}: a link to {tmp_path / 'drive' / 'NIO.csv'}, which is not there: restore what "
                   "it links to, or remove the link")
    with pytest.raises(DataError, match="NIO.csv: a link to .* which is not there"):
        prepare(_config(data_dir=str(folder)))


def test_a_glob_that_matches_a_link_to_nothing_is_one_line_with_the_store_on(tmp_path):
    """The feature store hashed the link's missing target first: a FileNotFoundError traceback."""
    folder = tmp_path / "prices"
    _prices(folder, "AEM", "WPM")
    (folder / "NIO.csv").symlink_to(tmp_path / "drive" / "NIO.csv")
    d = DataConfig(sequence_length=20, prediction_horizon=2, features=FEATURES, data_dir=str(folder / "*.csv"),
                   cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="NIO.csv: a link to .* which is not there"):
        prepare(d)


def test_a_file_gone_before_the_store_hashes_it_is_one_line(tmp_path):
    """A file removed (or unreadable) between the listing of a folder and the hashing of the store's key."""
    from hftraining.data.store import file_digests

    with pytest.raises(DataError, match=r"gone\.csv: cannot read \(No such file or directory\)"):
        file_digests([tmp_path / "gone.csv"], tmp_path / "cache")


# ----------------------------------------------------------------------------- predict names unread files


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A model folder with real preprocessing (AEM, WPM) and random weights: what is checked needs no training."""
    cfg = load_config(None, ["data.symbols=[AEM, WPM]", "data.sequence_length=20", "data.prediction_horizon=3",
                             "data.cache_dir=null"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    m = build_model(ModelConfig(hidden_size=8, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon, pre.seq_len)
    path = tmp_path_factory.mktemp("forecaster") / "model"
    m.save_pretrained(path, preprocessing=pre.to_dict())
    return path


def test_predict_from_a_folder_names_the_files_it_does_not_read(model, tmp_path, capsys):
    """As training and ``data check`` do: a symbol zipped beside the others is not forecast, and nothing said so."""
    folder = tmp_path / "prices"
    _prices(folder, "AEM", "WPM")
    pd.read_csv(sample_data_dir() / "AEM.csv").to_csv(folder / "BIDU.csv.zip", index=False)
    assert cli.main(["predict", str(model), "--data", str(folder)]) == 0
    got = capsys.readouterr()
    assert sorted(set(pd.read_csv(StringIO(got.out))["symbol"])) == ["AEM", "WPM"]
    (line,) = [x for x in got.err.splitlines() if "not read" in x]
    assert line.startswith(f"data: {folder / 'BIDU.csv.zip'}: not read (a folder's data files are .csv")
    (folder / "BIDU.csv.zip").unlink()
    assert cli.main(["predict", str(model), "--data", str(folder)]) == 0
    assert "not read" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- gaps the whole panel shares


def _without(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    t = pd.DatetimeIndex(frame["timestamp"])
    return frame[~((t >= pd.Timestamp(start, tz="UTC")) & (t < pd.Timestamp(end, tz="UTC")))].reset_index(drop=True)


def _hourly(symbols, closed=("2024-04-27", "2024-05-06")) -> dict[str, pd.DataFrame]:
    """Hourly bars around the clock on business days (an exchange's: no bar on a weekend), 60 days from April
    2024, every symbol closed from 27 April to 6 May (a nine-day Golden Week)."""
    return {s: _without(synth_ohlcv(24 * 60, seed=k, start="2024-04-01", freq="1h", session="00:00-24:00", tz="UTC"),
                        *closed) for k, s in enumerate(symbols)}


def _gap_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "gaps inside" in r.getMessage()]


def test_a_closure_the_whole_panel_shares_is_no_hole(caplog):
    frames = _hourly(["AAA", "BBB", "CCC"])
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(), frames)
    assert "long_gaps" not in p.report and not _gap_lines(caplog)
    # one symbol's own outage beside it is still named, and only that symbol
    frames["CCC"] = _without(frames["CCC"], "2024-05-15", "2024-05-25")
    with caplog.at_level(logging.WARNING):
        p = prepare(_config(), frames)
    assert p.report["long_gaps"]["symbols"] == {"CCC": [["2024-05-14T23:00:00+00:00", "2024-05-27T00:00:00+00:00"]]}


def test_a_gap_no_other_symbol_spans_stays_named(caplog):
    """A symbol alone, or alone across its gap (the others listed after it), cannot tell a closure from a halt."""
    frames = _hourly(["AAA"])
    with caplog.at_level(logging.WARNING):
        assert list(prepare(_config(), frames).report["long_gaps"]["symbols"]) == ["AAA"]
    late = synth_ohlcv(24 * 20, seed=7, start="2024-05-08", freq="1h", session="24h")  # listed after the closure
    with caplog.at_level(logging.WARNING):
        assert list(prepare(_config(), {**frames, "LATE": late}).report["long_gaps"]["symbols"]) == ["AAA"]


def test_data_check_of_a_folder_leaves_out_the_shared_closure(tmp_path, capsys, caplog):
    folder = tmp_path / "prices"
    folder.mkdir()
    frames = _hourly(["AAA", "BBB"])
    frames["BBB"] = _without(frames["BBB"], "2024-05-15", "2024-05-25")
    for sym, f in frames.items():
        f.to_csv(folder / f"{sym}.csv", index=False)
    with caplog.at_level(logging.WARNING):
        assert cli.main(["data", "check", str(folder), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["long_gaps"]
    assert found["symbols"] == {str(folder / "BBB.csv"): [["2024-05-14T23:00:00+00:00", "2024-05-27T00:00:00+00:00"]]}


def test_a_forecast_across_the_shared_closure_says_nothing_of_a_gap(caplog):
    frames = _hourly(["AAA", "BBB"], closed=("2024-05-20", "2024-05-29"))
    pre = prepare(DataConfig(sequence_length=48, prediction_horizon=2, features=FEATURES, cache_dir=None),
                  _hourly(["AAA", "BBB"])).preprocessing
    recent = {s: f.iloc[: int(np.searchsorted(pd.DatetimeIndex(f["timestamp"]).asi8,
                                              pd.Timestamp("2024-05-29 10:00", tz="UTC").value))]
              for s, f in frames.items()}  # ten bars after the closure: the latest window reads across it
    with caplog.at_level(logging.WARNING):
        latest_windows(pre, recent)
    assert not [r for r in caplog.records if "reads across a gap" in r.getMessage()]
    with caplog.at_level(logging.WARNING):  # one symbol sent alone cannot tell: said, as before
        latest_windows(pre, {"AAA": recent["AAA"]})
    assert [r for r in caplog.records if "reads across a gap" in r.getMessage()]


# ----------------------------------------------------------------------------- the feature store's digests


def _whole_seconds(monkeypatch):
    """The file times of a file system that keeps whole seconds (HFS+, ext3, many NFS servers; FAT: two)."""
    from hftraining.data import store

    def stamp(path):
        st = path.stat()
        sec = st.st_mtime_ns // 10**9 * 10**9
        return [st.st_size, sec, sec]

    monkeypatch.setattr(store, "_file_stamp", stamp)


def test_a_file_rewritten_within_the_second_it_was_read_in_is_read_again(tmp_path, monkeypatch):
    """On a file system of whole seconds, a file rewritten to the same size within the second it was hashed in
    keeps its size and times: the store served the old file's rows for the new content."""
    from hftraining.data.pipeline import data_rows
    from hftraining.data.synth import write_synth

    _whole_seconds(monkeypatch)
    write_synth(tmp_path / "csv", 2, 200, seed=3)
    d = DataConfig(data_dir=str(tmp_path / "csv"), cache_dir=str(tmp_path / "cache"), sequence_length=20,
                   prediction_horizon=3)
    path = tmp_path / "csv" / "SYN001.csv"
    second = time.time_ns() // 10**9 * 10**9
    os.utime(path, ns=(second, second))
    first, rep = data_rows(d)
    assert rep["cache"] == "miss"
    lines = path.read_text().splitlines()
    header, cells = lines[0].split(","), lines[-1].split(",")
    o, c = header.index("open"), header.index("close")
    assert cells[o] != cells[c]
    cells[o], cells[c] = cells[c], cells[o]  # the same size, another close
    path.write_text("\n".join(lines[:-1] + [",".join(cells)]) + "\n")
    os.utime(path, ns=(second, second))  # the same second, as such a file system records it
    rows, rep = data_rows(d)
    assert rep["cache"] == "miss"
    k = rows.symbols.index("SYN001")
    assert not np.array_equal(np.asarray(rows.close[rows.rows(k)]), np.asarray(first.close[first.rows(k)]))


def test_an_older_file_s_digest_is_remembered(tmp_path, monkeypatch):
    """A file whose times are older than the clock's tick is hashed once, then known by its times."""
    from hftraining.data import store
    from hftraining.data.pipeline import data_rows
    from hftraining.data.synth import write_synth

    _whole_seconds(monkeypatch)
    write_synth(tmp_path / "csv", 2, 200, seed=3)
    hour_ago = time.time_ns() - 3600 * 10**9
    for f in (tmp_path / "csv").iterdir():
        os.utime(f, ns=(hour_ago, hour_ago))
    d = DataConfig(data_dir=str(tmp_path / "csv"), cache_dir=str(tmp_path / "cache"), sequence_length=20,
                   prediction_horizon=3)
    assert data_rows(d)[1]["cache"] == "miss"
    hashed = []
    real = store._digest
    monkeypatch.setattr(store, "_digest", lambda p: hashed.append(p.name) or real(p))
    assert data_rows(d)[1]["cache"] == "hit"
    assert not [h for h in hashed if h.endswith(".csv")]
