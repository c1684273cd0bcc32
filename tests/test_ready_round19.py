"""``GET /ready``, the server's readiness probe: 200 naming the folder loaded while ``/predict`` can be answered,
503 with the line a ``/predict`` 503 gives while it cannot (the folder removed, a disk that does not answer),
answered by the folder check the predictions use (shared, off the event loop, never a second load), open
without the API key as ``/health`` is but naming the folder only to a request that sends the key."""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
import types
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sys.path.insert(0, str(Path(__file__).parent))
from test_inference_round12 import pre  # noqa: E402,F401 (a fixture)
from test_inference_serve import running  # noqa: E402
from test_serve_round17 import _assert_forecasts_of, _body, _frame, _save  # noqa: E402

from hftraining.core.config import ServeConfig  # noqa: E402

KEY = "k" * 32


def _aged(d: Path) -> Path:
    """``d`` once :data:`~hftraining.inference.serve.RACY_S` has passed since its files were written: a folder
    loaded sooner is read once more after it (a filesystem's whole-second times), a load the probes do not make."""
    from hftraining.inference import serve

    time.sleep(serve.RACY_S + 0.05)
    return d


def test_ready_after_start_names_the_model_and_is_in_the_schema(pre, tmp_path):
    """An orchestrator had only ``/health``, which says the process runs, not whether ``/predict`` answers.
    ``/ready`` is 200 once the server has started, naming the folder as ``/model`` does, to GET and HEAD,
    and the schema lists it."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    d = _save(pre, tmp_path / "model", seed=0)
    with TestClient(create_app(d)) as client:
        r = client.get("/ready")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "model": client.get("/model").json()["model_dir"]}
        assert os.path.realpath(r.json()["model"]) == os.path.realpath(d)
        head = client.head("/ready")
        assert head.status_code == 200 and head.content == b""
        spec = client.get("/openapi.json").json()
        assert "get" in spec["paths"]["/ready"] and "503" in spec["paths"]["/ready"]["get"]["responses"]
        assert str(d) not in str(spec)
        assert client.get("/health").json() == {"status": "ok"}


def test_a_removed_folder_is_not_ready_with_the_predict_503_line_and_ready_once_restored(pre, tmp_path, monkeypatch):
    """While the model folder cannot be loaded every ``/predict`` is a 503 naming it, but nothing told a load
    balancer to send the traffic elsewhere (``/health`` stays 200). ``/ready`` is then a 503 whose ``detail``
    is the line a ``/predict`` gets; once the folder is back it is 200 again, and the probes never load the
    model a second time (the folder restored as it was is the model loaded)."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    d = _aged(_save(pre, tmp_path / "model", seed=0))
    df = _frame()
    loads = []
    real = serve.load_model
    monkeypatch.setattr(serve, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    with TestClient(serve.create_app(d)) as client:
        assert client.get("/ready").status_code == 200
        loads.clear()
        os.rename(d, tmp_path / "away")
        r = client.get("/ready")
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "not ready"
        line = r.json()["detail"]
        assert str(d) in line and "\n" not in line, line
        p = client.post("/predict", json=_body(df))
        assert p.status_code == 503 and p.json()["error"] == line, (p.text, line)
        assert client.get("/ready").json() == {"status": "not ready", "detail": line}
        assert client.get("/health").json() == {"status": "ok"}
        os.rename(tmp_path / "away", d)
        r = client.get("/ready")
        assert r.status_code == 200, r.text
        assert os.path.realpath(r.json()["model"]) == os.path.realpath(d)
        p = client.post("/predict", json=_body(df))
        assert p.status_code == 200, p.text
        _assert_forecasts_of(p.json(), d, df)
        assert len(loads) <= 1, loads  # the failed load of the removed folder at most; none to serve it again


def test_a_retrained_folder_is_loaded_once_for_many_probes_and_requests_at_once(pre, tmp_path, monkeypatch):
    """Probes and predictions that arrive together after the folder changed share one check: the new model is
    loaded once, every probe is 200 naming it, and every forecast is the new folder's."""
    import httpx

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    df = _frame()
    app = serve.create_app(d)
    loads, real = [], serve.load_model

    def slow_load(*a, **k):
        loads.append(a)
        time.sleep(0.3)  # a folder that takes a while to read: the requests pile up behind its check
        return real(*a, **k)

    monkeypatch.setattr(serve, "load_model", slow_load)
    with running(app) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
        _aged(_save(pre, d, seed=1, hidden=32))  # retrained
        answers: list = []

        def call(i: int) -> None:
            with httpx.Client(base_url=base, timeout=20) as c:
                answers.append(c.get("/ready") if i % 2 else c.post("/predict", json=_body(df)))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(answers) == 12 and all(a.status_code == 200 for a in answers), [a.text[:200] for a in answers]
    assert len(loads) == 1, loads
    for a in answers:
        if a.request.url.path == "/ready":
            assert os.path.realpath(a.json()["model"]) == os.path.realpath(d)
        else:
            _assert_forecasts_of(a.json(), d, df)
    assert app.state.forecaster.model.cfg.hidden_size == 32


def test_a_disk_that_does_not_answer_is_not_ready_at_the_limit_and_probes_share_one_check(pre, tmp_path, monkeypatch):
    """A disk that stops answering (a network mount gone): ``/ready`` is a 503 at ``serve.request_timeout_s``
    naming the limit, as ``/predict`` is, ``/health`` answers meanwhile, and probes arriving at once wait on
    one check of the folder, not one thread each left hanging on the disk; once it answers, ready again."""
    import httpx

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    answers = threading.Event()
    answers.set()
    hung = types.ModuleType("os")
    hung.__dict__.update(vars(os))

    lock, waiting = threading.Lock(), [0, 0]  # callers waiting on the disk now, the most at once

    def stat(path, *a, **k):
        with lock:
            waiting[0] += 1
            waiting[1] = max(waiting)
        try:
            answers.wait(timeout=6)  # a test that never ends is no test: the disk answers after 6 s at the latest
        finally:
            with lock:
                waiting[0] -= 1
        return os.stat(path, *a, **k)

    hung.stat = stat
    monkeypatch.setattr(serve, "os", hung)
    with running(serve.create_app(d, ServeConfig(request_timeout_s=0.5))) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
        answers.clear()
        try:
            got: list = []

            def probe() -> None:
                t0 = time.perf_counter()
                r = httpx.get(f"{base}/ready", timeout=10)
                got.append((r, time.perf_counter() - t0))

            threads = [threading.Thread(target=probe) for _ in range(8)]
            for t in threads:
                t.start()
            time.sleep(0.2)
            t0 = time.perf_counter()
            assert httpx.get(f"{base}/health", timeout=2).json() == {"status": "ok"}
            assert time.perf_counter() - t0 < 0.5
            for t in threads:
                t.join(10)
            assert waiting[1] == 1, waiting  # one check waits on the disk, not one per probe
        finally:
            answers.set()
        assert len(got) == 8
        for r, took in got:
            assert r.status_code == 503, r.text
            assert r.json()["status"] == "not ready" and "serve.request_timeout_s" in r.json()["detail"], r.text
            assert str(d) in r.json()["detail"]
            assert took < 2.0, took
        deadline = time.monotonic() + 5
        while (r := httpx.get(f"{base}/ready", timeout=10)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert r.status_code == 200, r.text


def test_ready_is_open_without_the_key_and_names_the_folder_only_to_the_key(pre, tmp_path):
    """With an API key, an orchestrator's probe (which carries no secret) gets ``/ready`` as it gets
    ``/health``; the folder's path and the reason it cannot be loaded, which ``/model`` keeps behind the key,
    go only to a request that sends the key."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    d = _save(pre, tmp_path / "model", seed=0)
    auth = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(d, ServeConfig(), api_key=KEY)) as client:
        assert client.get("/model").status_code == 401
        assert client.get("/ready").json() == {"status": "ready"}
        assert client.head("/ready").status_code == 200
        keyed = client.get("/ready", headers=auth)
        described = client.get("/model", headers=auth).json()["model_dir"]
        assert keyed.status_code == 200 and keyed.json() == {"status": "ready", "model": described}
        assert client.get("/ready", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ready"}
        spec = client.get("/openapi.json").json()
        assert spec["paths"]["/ready"]["get"]["security"] == []
        os.rename(d, tmp_path / "away")
        r = client.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "not ready", r.text
        assert str(d) not in r.text and str(tmp_path) not in r.text, r.text
        keyed = client.get("/ready", headers=auth)
        assert keyed.status_code == 503 and str(d) in keyed.json()["detail"], keyed.text
        assert keyed.json()["detail"] == client.post("/predict", json=_body(_frame()), headers=auth).json()["error"]


@pytest.mark.slow  # a timing bound: another test process on the 2 cores moves the medians
def test_a_probe_loop_does_not_slow_predictions(pre, tmp_path, monkeypatch):
    """Probes every few milliseconds (a load balancer per upstream, several replicas' orchestrators) while
    predictions are served: the probes load nothing, and a prediction takes about as long as without them."""
    import httpx

    from hftraining.inference import serve

    d = _aged(_save(pre, tmp_path / "model", seed=0))
    body = _body(_frame())
    loads, real = [], serve.load_model
    monkeypatch.setattr(serve, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    app = serve.create_app(d)
    loads.clear()
    with running(app) as port:
        base = f"http://127.0.0.1:{port}"

        def timed(c: httpx.Client, n: int) -> float:
            took = []
            for _ in range(n):
                t0 = time.perf_counter()
                assert c.post("/predict", json=body).status_code == 200
                took.append(time.perf_counter() - t0)
            return statistics.median(took)

        with httpx.Client(base_url=base, timeout=20) as c:
            timed(c, 3)  # warm
            alone = timed(c, 15)
            stop, probes, statuses = threading.Event(), [0], set()

            def loop() -> None:
                with httpx.Client(base_url=base, timeout=20) as p:
                    while not stop.is_set():
                        statuses.add(p.get("/ready").status_code)
                        probes[0] += 1
                        time.sleep(0.005)

            threads = [threading.Thread(target=loop) for _ in range(2)]
            for t in threads:
                t.start()
            try:
                time.sleep(0.2)
                probed = timed(c, 15)
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
    assert statuses == {200} and probes[0] > 20, (statuses, probes)
    assert loads == []
    print(f"/predict p50 alone {alone * 1e3:.1f} ms, beside {probes[0]} probes {probed * 1e3:.1f} ms")
    assert probed < 2 * alone + 0.05, (alone, probed)
