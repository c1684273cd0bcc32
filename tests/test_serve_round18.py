"""The server and its model folder on disk: an ensemble member named anywhere inside the folder is watched for
changes; a load that failed for a passing reason is tried again; a folder that loads slowly, or a disk that does
not answer, is a 503 at ``serve.request_timeout_s``, never a request (or the whole server) waiting on it."""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import sys
import threading
import time
import types
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sys.path.insert(0, str(Path(__file__).parent))
from test_inference_round12 import pre  # noqa: E402,F401 (a fixture)
from test_serve_round16 import _run  # noqa: E402
from test_serve_round17 import _assert_forecasts_of, _body, _frame, _save  # noqa: E402

from hftraining.core.config import ServeConfig  # noqa: E402
from hftraining.inference.forecaster import Forecaster  # noqa: E402


def test_an_ensemble_member_outside_members_is_served_as_it_is_now(pre, tmp_path):
    """An ensemble.json may name its members anywhere inside the ensemble folder (``m/member-0``), yet the
    server watched only ``members/``: a member's weights replaced on disk went on being forecast from the
    weights read at start, ``Forecaster.predict`` of the folder giving other numbers. Now the members its
    ensemble.json names are watched too: the next request is answered by the folder as it is."""
    from fastapi.testclient import TestClient

    from hftraining.inference.ensemble import build_ensemble
    from hftraining.inference.serve import create_app

    built = build_ensemble([_run(pre, tmp_path / "a", 0), _run(pre, tmp_path / "b", 1)], tmp_path / "built")
    ens = tmp_path / "ens"
    shutil.copytree(built, ens)
    os.rename(ens / "members", ens / "m")
    meta = json.loads((ens / "ensemble.json").read_text())
    meta["members"] = ["m/member-0", "m/member-1"]
    meta.pop("member_digests", None)  # as a folder written before they were recorded
    (ens / "ensemble.json").write_text(json.dumps(meta))
    df = _frame()
    with TestClient(create_app(ens)) as client:
        first = client.post("/predict", json=_body(df))
        assert first.status_code == 200, first.text
        _assert_forecasts_of(first.json(), ens, df)
        other = _save(pre, tmp_path / "other", seed=7)
        shutil.copy(other / "model.safetensors", ens / "m" / "member-0" / "model.safetensors")
        second = client.post("/predict", json=_body(df))
        assert second.status_code == 200, second.text
        assert second.json()["forecasts"] != first.json()["forecasts"]
        _assert_forecasts_of(second.json(), ens, df)


def test_a_load_that_failed_for_a_passing_reason_is_tried_again(pre, tmp_path, monkeypatch):
    """A retrained folder read while the process had no file descriptor left ("Too many open files", as under
    many connections) was answered 503 for as long as the folder stayed as it was, though it was whole and
    loadable and the 503 said the server would load it again as soon as it could. Now the folder is read again
    once :data:`~hftraining.inference.serve.RETRY_S` has passed: its forecasts are then served."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    df = _frame()
    with TestClient(serve.create_app(d)) as client:
        assert client.post("/predict", json=_body(df)).status_code == 200
        _save(pre, d, seed=1, hidden=32)  # retrained
        real_open, failed = builtins.open, []

        def no_descriptor_left(path, *a, **k):
            if str(path).startswith(str(d)) and not failed:
                failed.append(path)
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return real_open(path, *a, **k)

        monkeypatch.setattr(builtins, "open", no_descriptor_left)
        r = client.post("/predict", json=_body(df))
        assert r.status_code == 503 and "Too many open files" in r.json()["error"], r.text
        assert failed
        monkeypatch.setattr(builtins, "open", real_open)
        time.sleep(getattr(serve, "RETRY_S", 1.0) + 0.2)
        r = client.post("/predict", json=_body(df))
        assert r.status_code == 200, r.text
        _assert_forecasts_of(r.json(), d, df)
        assert client.get("/model").json()["config"]["model"]["hidden_size"] == 32


def test_a_folder_that_loads_slower_than_the_request_timeout_is_a_503_at_it(pre, tmp_path, monkeypatch):
    """``serve.request_timeout_s`` bounds the time a request takes; a request that found the folder changed
    waited for the whole load, however long (a large ensemble on a slow disk), past the limit the user set.
    Now it is a 503 at the limit naming it and its key; the load goes on, and once done the folder is served."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    df = _frame()
    real = Forecaster.from_pretrained.__func__
    with TestClient(serve.create_app(d, ServeConfig(request_timeout_s=0.5))) as client:
        assert client.post("/predict", json=_body(df)).status_code == 200
        loaded = threading.Event()

        def slow(cls, path, *a, **k):
            time.sleep(2.5)
            fc = real(cls, path, *a, **k)
            loaded.set()
            return fc

        monkeypatch.setattr(Forecaster, "from_pretrained", classmethod(slow))
        _save(pre, d, seed=1, hidden=32)
        for ask in (lambda: client.post("/predict", json=_body(df)), lambda: client.get("/model")):
            t0 = time.perf_counter()
            r = ask()
            took = time.perf_counter() - t0
            assert r.status_code == 503, r.text
            assert took < 1.5, took
            error = r.json()["error"]
            assert str(d) in error and "serve.request_timeout_s" in error and "\n" not in error, error
        assert loaded.wait(10)
        monkeypatch.setattr(Forecaster, "from_pretrained", classmethod(real))
        for _ in range(50):  # the load's thread hands its model over as it ends
            r = client.post("/predict", json=_body(df))
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        _assert_forecasts_of(r.json(), d, df)


def test_a_disk_that_does_not_answer_is_a_503_and_health_still_answers(pre, tmp_path, monkeypatch):
    """The check of the folder's files (a few stat calls) ran on the event loop: a disk that stopped answering
    (a network mount gone) held every request, ``/health`` too, however short ``serve.request_timeout_s``.
    Now a request is a 503 at the limit, ``/health`` answers meanwhile, and once the disk answers the
    folder is served again."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    df = _frame()
    answers = threading.Event()
    answers.set()
    hung = types.ModuleType("os")
    hung.__dict__.update(vars(os))

    def stat(path, *a, **k):
        answers.wait(timeout=4)  # a test that never ends is no test: the disk answers after 4 s at the latest
        return os.stat(path, *a, **k)

    hung.stat = stat
    monkeypatch.setattr(serve, "os", hung)
    with TestClient(serve.create_app(d, ServeConfig(request_timeout_s=0.5))) as client:
        assert client.post("/predict", json=_body(df)).status_code == 200
        answers.clear()
        for _ in range(2):
            t0 = time.perf_counter()
            r = client.post("/predict", json=_body(df))
            took = time.perf_counter() - t0
            assert r.status_code == 503, r.text
            assert took < 1.5, took
            assert "serve.request_timeout_s" in r.json()["error"], r.text
        t0 = time.perf_counter()
        assert client.get("/health").json() == {"status": "ok"}
        assert time.perf_counter() - t0 < 0.5
        answers.set()
        time.sleep(0.2)
        r = client.post("/predict", json=_body(df))
        assert r.status_code == 200, r.text
        _assert_forecasts_of(r.json(), d, df)
