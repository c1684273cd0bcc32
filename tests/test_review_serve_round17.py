"""The server and a model file rewritten in place at its own size whose recorded times do not change: a copy
that keeps the modification time, or a filesystem that keeps times in whole seconds (FAT: two). The folder
is served as it is now, not as it was when the server read it."""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sys.path.insert(0, str(Path(__file__).parent))
from test_inference_round12 import pre  # noqa: E402,F401 (a fixture)
from test_serve_round17 import _assert_forecasts_of, _body, _frame, _save  # noqa: E402


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """``path`` rewritten through its own inode (as ``cp`` over an existing file writes it)."""
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()


def test_weights_copied_in_place_keeping_their_time_are_served(pre, tmp_path):
    """``cp -p other/model.safetensors final/`` (or ``rsync --inplace -t``, ``touch -r``): the same inode, the same
    size (the same architecture) and the modification time set back; the server saw no change and went on
    forecasting with the weights it had read, ``Forecaster.predict`` of the folder giving other numbers. Now
    the next request is answered by the weights on disk."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    d = _save(pre, tmp_path / "model", seed=0)
    other = _save(pre, tmp_path / "other", seed=1)
    hour_ago = time.time_ns() - 3600 * 10**9
    for f in d.iterdir():
        os.utime(f, ns=(hour_ago, hour_ago))
    weights = d / "model.safetensors"
    df = _frame()
    with TestClient(create_app(d)) as client:
        first = client.post("/predict", json=_body(df))
        assert first.status_code == 200, first.text
        kept = weights.stat()
        new = (other / "model.safetensors").read_bytes()
        assert len(new) == kept.st_size
        _rewrite_in_place(weights, new)
        os.utime(weights, ns=(kept.st_atime_ns, kept.st_mtime_ns))
        assert (weights.stat().st_ino, weights.stat().st_size, weights.stat().st_mtime_ns) == (
            kept.st_ino, kept.st_size, kept.st_mtime_ns)
        second = client.post("/predict", json=_body(df))
        assert second.status_code == 200, second.text
        assert second.json()["forecasts"] != first.json()["forecasts"]
        _assert_forecasts_of(second.json(), d, df)


class _TwoSecondStat:
    """An ``os.stat`` result as a filesystem keeping times in steps of two seconds (FAT) reports it: a file
    written again within the step of its last write keeps every time."""

    def __init__(self, st: os.stat_result):
        self._st = st

    def __getattr__(self, name: str):
        if name in ("st_mtime_ns", "st_ctime_ns"):
            t = self._st.st_mtime_ns
            return t - t % (2 * 10**9)
        return getattr(self._st, name)


def test_weights_rewritten_within_the_filesystems_time_step_are_served_once_it_has_passed(pre, tmp_path, monkeypatch):
    """On a filesystem whose times move in whole steps (FAT: two seconds; one on others), weights copied over
    the folder's within the step in which the server read it left every recorded time as it was: the server
    forecast with the weights it had read for as long as it ran. Now a folder read within the step of its newest
    file is read once more after the step: from then on the forecasts are those of the weights on disk."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    other = _save(pre, tmp_path / "other", seed=1)
    step = time.time_ns() // (2 * 10**9) * (2 * 10**9)  # the step the folder was written in
    for f in d.iterdir():
        os.utime(f, ns=(step, step))
    coarse = types.ModuleType("os")
    coarse.__dict__.update(vars(os))
    coarse.stat = lambda p, *a, **k: _TwoSecondStat(os.stat(p, *a, **k))
    monkeypatch.setattr(serve, "os", coarse)
    clock = [step / 1e9 + 0.5]  # the server reads the folder within its step
    monkeypatch.setattr(serve, "_wall_clock", lambda: clock[0], raising=False)
    weights = d / "model.safetensors"
    df = _frame()
    with TestClient(serve.create_app(d)) as client:
        first = client.post("/predict", json=_body(df))
        assert first.status_code == 200, first.text
        _rewrite_in_place(weights, (other / "model.safetensors").read_bytes())  # within the same step
        os.utime(weights, ns=(step, step))
        clock[0] = step / 1e9 + 2.5  # the step has passed
        second = client.post("/predict", json=_body(df))
        assert second.status_code == 200, second.text
        assert second.json()["forecasts"] != first.json()["forecasts"]
        _assert_forecasts_of(second.json(), d, df)
        assert client.app.state.forecaster.predict({"AEM": df}).equals(
            serve.Forecaster.from_pretrained(d).predict({"AEM": df}))
