"""The feature store where the disk or its own files let it down: a full disk while an entry is
built, a read-only store, bookkeeping files that are not what the store wrote, and a library
upgrade that changes what the rows would be."""

from __future__ import annotations

import dataclasses
import errno
import logging
import pathlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import UserError, WriteError
from hftraining.data import store
from hftraining.data.pipeline import data_rows, prepare
from hftraining.data.synth import write_synth
from test_train_disk_full import _mount_tmpfs

SMALL = dict(sequence_length=20, prediction_horizon=3)


def _config(tmp_path, symbols: int = 2, rows: int = 200, **extra) -> DataConfig:
    write_synth(tmp_path / "csv", symbols, rows, seed=3)
    return DataConfig(data_dir=str(tmp_path / "csv"), cache_dir=str(tmp_path / "cache"), **SMALL, **extra)


def _rows_equal(a, b):
    assert a.symbols == b.symbols
    for name in ("features", "returns", "times", "close"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))


def _entry(d: DataConfig) -> Path:
    return next(p for p in Path(d.cache_dir).iterdir() if p.is_dir() and not p.name.endswith(".damaged"))


def _full_disk_after(monkeypatch, n_bytes: int) -> None:
    """Every array file an entry build opens takes ``n_bytes`` in all, then raises ENOSPC, as a full disk does."""
    real_open, written = open, [0]

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            written[0] += len(data)
            if written[0] > n_bytes:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def full_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Full(fh) if mode == "wb" and Path(path).suffix in (".f32", ".i64", ".f64") else fh

    monkeypatch.setattr(store, "open", full_open, raising=False)


def test_a_full_disk_while_an_entry_is_built_is_one_line_naming_the_cache_dir(tmp_path, monkeypatch):
    d = _config(tmp_path)
    _full_disk_after(monkeypatch, 10_000)
    with pytest.raises(WriteError) as err:
        data_rows(d)
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, UserError) and err.value.exit_code == 2
    assert f"data.cache_dir={d.cache_dir}" in msg and "No space left on device" in msg and "free space" in msg
    assert not [p for p in Path(d.cache_dir).iterdir() if p.is_dir()]  # no temporary entry, no entry
    monkeypatch.undo()  # space freed: the next run builds the entry, the rows of an in-memory build
    rows, rep = data_rows(d)
    assert rep["cache"] == "miss"
    _rows_equal(rows, data_rows(dataclasses.replace(d, cache_dir=None))[0])


def test_a_real_full_disk_and_a_real_read_only_store(tmp_path):
    """On a 1 MB tmpfs (where this process may mount one): the build is one WriteError line; on a
    tmpfs remounted read-only, the entry built there before is read, not computed again."""
    mnt = tmp_path / "mnt"
    why = _mount_tmpfs(mnt, "1m")
    if why:
        pytest.skip(why)
    try:
        d = dataclasses.replace(_config(tmp_path, symbols=4, rows=8000), cache_dir=str(mnt / "cache"))
        with pytest.raises(WriteError, match="No space left on device"):
            data_rows(d)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        built, rep = data_rows(d)
        assert rep["cache"] == "miss"
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        again, rep = data_rows(d)
        assert rep["cache"] == "hit" and isinstance(again.features, np.memmap)
        _rows_equal(built, again)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_store_that_cannot_be_written_serves_its_entries_and_builds_nothing_else(tmp_path, monkeypatch, caplog):
    d = _config(tmp_path)
    intact = prepare(d)
    real_touch = pathlib.Path.touch

    def read_only(self, *a, **k):
        if str(self).startswith(d.cache_dir):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_touch(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "touch", read_only)
    monkeypatch.setattr(store, "_build", lambda *a: pytest.fail("an intact entry was computed again"))
    again = prepare(d)
    assert again.report["cache"] == "hit" and isinstance(again.train.features, np.memmap)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(np.asarray(intact.split(split).ends), np.asarray(again.split(split).ends))
    assert again.preprocessing.to_dict() == intact.preprocessing.to_dict()
    # a damaged entry there cannot be set aside: the rows are computed in memory, with a warning naming it
    monkeypatch.undo()
    monkeypatch.setattr(pathlib.Path, "touch", read_only)
    feats = _entry(d) / "features.f32"
    feats.write_bytes(feats.read_bytes()[:-4] + b"\0\0\0\1")
    with caplog.at_level(logging.WARNING, logger="hftraining.data.store"):
        rows, rep = data_rows(d)
    assert rep["cache"] == "unwritable" and "features.f32" in caplog.text and "computed in memory" in caplog.text
    _rows_equal(rows, data_rows(dataclasses.replace(d, cache_dir=None))[0])


@pytest.mark.parametrize("name", ["verified.json", "file-digests.json"])
@pytest.mark.parametrize("content", ["null", "[]", "7", '"x"', '{"a": 1}'])
def test_a_bookkeeping_file_that_is_not_what_the_store_wrote_is_recomputed(tmp_path, name, content):
    """verified.json (the entry's stamps) and file-digests.json (the inputs' digests) only save work:
    any content in them is checked, and the rows are those of an in-memory build."""
    d = _config(tmp_path)
    data_rows(d)
    path = _entry(d) / name if name == "verified.json" else Path(d.cache_dir) / name
    path.write_text(content)
    rows, rep = data_rows(d)
    assert rep["cache"] == "hit"
    _rows_equal(rows, data_rows(dataclasses.replace(d, cache_dir=None))[0])
    assert data_rows(d)[1]["cache"] == "hit"


def test_a_digest_memo_without_a_digest_is_recomputed(tmp_path):
    d = _config(tmp_path)
    data_rows(d)
    memo = Path(d.cache_dir) / "file-digests.json"
    memo.write_text(memo.read_text().replace('"digest"', '"other"'))
    assert data_rows(d)[1]["cache"] == "hit"


@pytest.mark.parametrize("module", ["talib", "numpy", "pandas", "pyarrow"])
def test_an_upgrade_of_a_library_that_computes_the_rows_builds_a_new_entry(tmp_path, monkeypatch, module):
    d = _config(tmp_path)
    assert data_rows(d)[1]["cache"] == "miss"
    assert data_rows(d)[1]["cache"] == "hit"
    lib = pytest.importorskip(module)
    monkeypatch.setattr(lib, "__version__", lib.__version__ + ".post1")
    assert data_rows(d)[1]["cache"] == "miss"
    monkeypatch.undo()
    assert data_rows(d)[1]["cache"] == "hit"  # the entry of the versions in use is still there


def test_a_copied_model_folder_scores_its_data_when_its_recorded_cache_dir_is_gone_or_cannot_be_made(tmp_path, caplog):
    """A model folder records the training's ``data.cache_dir`` as given (here absolute). Copied
    elsewhere with that store deleted, it rebuilds the store there; where that folder cannot be made
    (another machine), the rows are computed in memory with a warning naming it: the same windows."""
    from hftraining.core.config import ModelConfig, load_config
    from hftraining.inference.forecaster import Forecaster
    from hftraining.models import build_model

    cache = tmp_path / "cache"
    cfg = load_config(None, [*(f"data.{k}={v}" for k, v in SMALL.items()), "data.symbols=[AEM, WPM]",
                             f"data.cache_dir={cache}"])
    pre = prepare(cfg.data).preprocessing
    build_model(ModelConfig(type="ridge", ridge_lags=5), len(pre.feature_columns), pre.horizon,
                pre.seq_len).save_pretrained(tmp_path / "model", preprocessing=pre.to_dict())
    before = Forecaster.from_pretrained(tmp_path / "model").windows()
    shutil.copytree(tmp_path / "model", tmp_path / "copied")
    shutil.rmtree(tmp_path / "model")
    shutil.rmtree(cache)
    rebuilt = Forecaster.from_pretrained(tmp_path / "copied").windows()
    np.testing.assert_array_equal(rebuilt.ends, before.ends)
    assert any(p.is_dir() for p in cache.iterdir())  # the store is built again where it was recorded
    shutil.rmtree(cache)
    cache.write_text("")  # a file where the folder was: it cannot be made, whoever runs this
    with caplog.at_level(logging.WARNING, logger="hftraining.data.store"):
        in_memory = Forecaster.from_pretrained(tmp_path / "copied").windows()
    assert f"data.cache_dir={cache}" in caplog.text and "computed in memory" in caplog.text
    np.testing.assert_array_equal(in_memory.ends, before.ends)
    np.testing.assert_array_equal(np.asarray(in_memory.features), np.asarray(before.features))
