"""``GET /ready`` against what a ``/predict`` gets at the same moment, on a real uvicorn server: a probe that
says ready while every ``/predict`` is a 503 keeps a load balancer sending traffic to a replica that refuses it."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sys.path.insert(0, str(Path(__file__).parent))
from test_inference_round12 import pre  # noqa: E402,F401 (a fixture)
from test_inference_serve import running  # noqa: E402
from test_serve_round17 import _body, _frame, _save  # noqa: E402

from hftraining.core.config import ServeConfig  # noqa: E402

KEY = "r" * 32


def _wait_for(get, status: int, within: float = 10.0):
    deadline = time.monotonic() + within
    while (r := get()).status_code != status and time.monotonic() < deadline:
        time.sleep(0.05)
    return r


@pytest.mark.slow  # waits for request timeouts on a real server
@pytest.mark.parametrize("keyed", [False, True])
def test_not_ready_while_every_prediction_slot_is_held_by_predictions_past_their_limit(pre, tmp_path, monkeypatch, keyed):
    """Predictions that run past ``serve.request_timeout_s`` keep their slot until they end (Python cannot stop
    them). Once all ``serve.max_predictions`` slots are held by such predictions every ``/predict`` waits and is a
    503 at its limit, yet ``/ready`` said 200 "ready". It is a 503 "not ready" naming the limit until one of them
    ends, then 200 again and ``/predict`` answers. Without the API key its answer names nothing (no path, no
    limit); with it the detail names ``serve.max_predictions``."""
    import httpx

    from hftraining.inference.forecaster import Forecaster

    d = _save(pre, tmp_path / "model", seed=0)
    body = _body(_frame())
    release = threading.Event()
    real = Forecaster.predict

    def predict(self, *a, **k):
        if not release.is_set():
            release.wait(30)  # a prediction that takes far longer than its request's limit
        return real(self, *a, **k)

    monkeypatch.setattr(Forecaster, "predict", predict)
    from hftraining.inference.serve import create_app

    app = create_app(d, ServeConfig(max_predictions=2, request_timeout_s=1.5), api_key=KEY if keyed else None)
    auth = {"Authorization": f"Bearer {KEY}"} if keyed else {}
    try:
        with running(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20, headers=auth) as c:
            assert c.get("/ready").status_code == 200
            late = []
            threads = [threading.Thread(target=lambda: late.append(c.post("/predict", json=body))) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert [r.status_code for r in late] == [503, 503], [r.text for r in late]

            r = c.get("/ready")
            assert r.status_code == 503, r.text
            assert r.json()["status"] == "not ready"
            assert "serve.max_predictions" in r.json()["detail"] and "\n" not in r.json()["detail"], r.text
            assert c.head("/ready").status_code == 503
            if keyed:
                bare = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=20)
                assert bare.status_code == 503 and bare.json()["status"] == "not ready", bare.text
                assert str(tmp_path) not in bare.text and "max_predictions" not in bare.text, bare.text
                assert str(tmp_path) not in str(dict(bare.headers)), bare.headers
            p = c.post("/predict", json=body)  # what the probe said: it would be a 503
            assert p.status_code == 503 and "serve.max_predictions" in p.json()["error"], p.text
            assert c.get("/health").json() == {"status": "ok"}

            release.set()  # the stuck predictions end and free their slots
            r = _wait_for(lambda: c.get("/ready"), 200)
            assert r.status_code == 200 and r.json()["status"] == "ready", r.text
            assert c.post("/predict", json=body).status_code == 200
    finally:
        release.set()


def test_ready_while_a_prediction_runs_within_its_limit(pre, tmp_path, monkeypatch):
    """A prediction running within its limit holds a slot but is no reason to take the replica out: ``/ready``
    stays 200 while the one slot of ``serve.max_predictions: 1`` is busy, and after it ends."""
    import httpx

    from hftraining.inference.forecaster import Forecaster

    d = _save(pre, tmp_path / "model", seed=0)
    body = _body(_frame())
    started, release = threading.Event(), threading.Event()
    real = Forecaster.predict

    def predict(self, *a, **k):
        started.set()
        release.wait(20)
        return real(self, *a, **k)

    monkeypatch.setattr(Forecaster, "predict", predict)
    from hftraining.inference.serve import create_app

    app = create_app(d, ServeConfig(max_predictions=1, request_timeout_s=30))
    try:
        with running(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=40) as c:
            got = []
            t = threading.Thread(target=lambda: got.append(c.post("/predict", json=body)))
            t.start()
            assert started.wait(20)
            r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=20)
            assert r.status_code == 200 and r.json()["status"] == "ready", r.text
            release.set()
            t.join(30)
            assert [g.status_code for g in got] == [200]
            assert c.get("/ready").status_code == 200
    finally:
        release.set()


@pytest.mark.parametrize("docs", [False, True])
def test_the_start_line_names_every_route_open_without_the_key(pre, tmp_path, docs):
    """The line a keyed server starts with said only the API's description was open without the key, while
    ``/health`` and ``/ready`` (which tells anyone whether the model loads) answer without it too: an operator
    checking what the server exposes was told less than it does. Every path it names is open, and every
    path the server opens to a request without the key is named."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import OPEN_PATHS, build_server, create_app

    d = _save(pre, tmp_path / "model", seed=0)
    cfg = ServeConfig(port=0, docs=docs)
    banner = build_server(d, cfg, api_key=KEY).banner
    with TestClient(create_app(d, cfg, api_key=KEY)) as client:
        opened = [p for p in OPEN_PATHS if p != "/docs/oauth2-redirect" and client.get(p).status_code != 401]
    assert "/ready" in opened and "/health" in opened
    assert all(p in banner for p in opened), (banner, opened)
    named = {p for p in OPEN_PATHS if p in banner.replace(",", " ").split()}
    assert named <= set(opened), (banner, opened)
