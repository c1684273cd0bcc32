"""The server as a monitor and many clients use it: HEAD of the open and keyed routes, and parallel
clients answered exactly as one client is."""

import http.client
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from hftraining.core.config import ServeConfig  # noqa: E402
from hftraining.inference.serve import create_app, guarded_http  # noqa: E402

from test_inference_serve import _free_port, _rows, make_model, serving  # noqa: E402

KEY = "k" * 32


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A real server (the production HTTP protocol) of a tiny model with an API key; yields its port."""
    cfg = ServeConfig()
    app = create_app(make_model(tmp_path_factory.mktemp("serve8") / "model"), cfg, KEY)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                        http=guarded_http(cfg)))
    with serving(srv):
        yield port, app


def _call(conn, method, path, body=None, key=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.getheader("content-length"), r.read()


def test_head_of_health_and_model_answers_as_get_without_a_body(keyed):
    """A monitor's ``HEAD /health`` (``curl -I``) is the GET's status and length, no body, no key
    needed; ``HEAD /model`` needs the key as its GET does; the kept-alive connection serves on after."""
    port, app = keyed
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for path, key in (("/health", None), ("/model", KEY)):
        status, length, body = _call(conn, "HEAD", path, key=key)
        g_status, g_length, g_body = _call(conn, "GET", path, key=key)
        assert (status, body) == (200, b""), (path, status, body)
        assert g_status == 200 and length == g_length == str(len(g_body))
    status, _, _ = _call(conn, "HEAD", "/model")
    assert status == 401
    conn.close()
    assert not any("head" in ops for ops in app.openapi()["paths"].values())  # the schema lists GET alone


def test_parallel_clients_get_the_answers_one_client_gets(keyed):
    """8 clients on kept-alive connections, each request a different window and symbol pair: every
    answer is 200 and equal, float for float, to the sequential one."""
    port, _ = keyed
    _, rows = _rows(140)
    bodies = [json.dumps({"symbols": {"AEM": rows[k * 7:], f"B{k}": rows[:140 - k * 5]}}) for k in range(8)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    want = []
    for b in bodies:
        status, _, out = _call(conn, "POST", "/predict", b, KEY)
        assert status == 200, out
        want.append(json.loads(out))
    conn.close()
    assert len({json.dumps(w["forecasts"]) for w in want}) == len(bodies)  # distinct answers: a mix-up would show
    errors = []

    def client(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for j in range(4):
            k = (i + j) % len(bodies)
            status, _, out = _call(c, "POST", "/predict", bodies[k], KEY)
            if status != 200 or json.loads(out) != want[k]:
                errors.append((i, k, status, out[:200]))
        c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_max_predictions_beyond_40_run_at_once_and_health_answers_while_they_run(tmp_path):
    """``serve.max_predictions`` 48: all 48 predictions run at once (anyio's default pool of 40 threads
    held 8 back), and ``GET /health`` answers at once while they run (it waited for a free thread)."""
    from test_inference_serve import running

    n = 48
    app = create_app(make_model(tmp_path / "model"), ServeConfig(max_predictions=n, request_timeout_s=30))
    fc = app.state.forecaster
    real, release, lock, inside = fc.predict, threading.Event(), threading.Lock(), [0]

    def held(*a, **k):
        with lock:
            inside[0] += 1
        release.wait(20)
        return real(*a, **k)

    fc.predict = held
    _, rows = _rows(60)
    body = json.dumps({"symbols": {"AEM": rows}})
    statuses = []
    with running(app) as port:
        def client():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            statuses.append(_call(c, "POST", "/predict", body)[0])
            c.close()

        threads = [threading.Thread(target=client) for _ in range(n)]
        try:
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while inside[0] < n and time.monotonic() < deadline:
                time.sleep(0.05)
            running_at_once = inside[0]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                health = _call(conn, "GET", "/health")[0]
            except TimeoutError:
                health = "no answer within 2 s"
        finally:
            release.set()
            for t in threads:
                t.join(30)
    assert (running_at_once, health) == (n, 200)
    assert statuses == [200] * n
