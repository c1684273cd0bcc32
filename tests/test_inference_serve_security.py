"""The server's guards (issue 15.3): the API key, no unkeyed listening beyond loopback, the request
timeout, the caps on symbols and rows, CORS off by default and the JSON access log."""

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import ServeConfig  # noqa: E402
from hftraining.core.errors import UserError  # noqa: E402
from hftraining.data.io import sample_data_dir  # noqa: E402
from hftraining.inference.serve import check_exposure, create_app, is_loopback, resolve_api_key  # noqa: E402
from hftraining.inference.serve_asgi import BodyLimit  # noqa: E402
from test_inference_serve import _free_port, make_model  # noqa: E402

KEY = "s3cret-key-for-tests-0123456789"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("security") / "model")


@pytest.fixture(scope="module")
def keyed(model_dir):
    with TestClient(create_app(model_dir, ServeConfig(docs=True), api_key=KEY)) as c:
        yield c


def _csv(n=80):
    return pd.read_csv(sample_data_dir() / "AEM.csv").tail(n)


def _rows(n=80):
    return [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for r in _csv(n).itertuples()]


def test_every_route_but_health_and_the_docs_needs_the_key(keyed):
    assert keyed.get("/health").json() == {"status": "ok"}
    calls = [("GET", "/model", {}), ("POST", "/openapi.json", {}), ("GET", "/docs/", {}), ("GET", "/nowhere", {}),
             ("POST", "/predict", {"json": {"symbols": {"AEM": _rows()}}}),
             ("POST", "/predict/csv", {"files": {"file": ("AEM.csv", _csv().to_csv(index=False).encode())}})]
    for method, path, kw in calls:
        r = keyed.request(method, path, **kw)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
        assert "Authorization: Bearer" in r.json()["error"]
        wrong = keyed.request(method, path, headers={"Authorization": "Bearer not-the-key"}, **kw)
        assert wrong.status_code == 401 and "invalid_token" in wrong.headers["www-authenticate"]
        assert "not-the-key" not in wrong.text
        basic = keyed.request(method, path, headers={"Authorization": f"Basic {KEY}"}, **kw)
        assert basic.status_code == 401
    for method, path, kw in calls[:1] + calls[4:]:
        r = keyed.request(method, path, headers={"Authorization": f"bearer {KEY}"}, **kw)  # the scheme is case-insensitive
        assert r.status_code == 200, (path, r.text)
    assert len(keyed.post("/predict", json={"symbols": {"AEM": _rows()}},
                          headers={"Authorization": f"Bearer {KEY}"}).json()["forecasts"]) == 3


@pytest.mark.parametrize("key", [KEY, None])
def test_the_docs_pages_that_load_scripts_from_a_cdn_are_off_unless_asked_for(model_dir, key):
    """By default no page of the server makes a browser fetch anything from elsewhere: /docs and /redoc
    (Swagger UI and ReDoc from jsdelivr) are not served, with or without the key; the schema is."""
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    with TestClient(create_app(model_dir, ServeConfig(), api_key=key)) as c:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert c.get(path).status_code == (401 if key else 404), path  # closed like any unknown path
            assert c.get(path, headers=auth).status_code == 404, path
        r = c.get("/openapi.json")
        assert r.status_code == 200 and "cdn." not in r.text
        assert c.get("/health").json() == {"status": "ok"}
    with TestClient(create_app(model_dir, ServeConfig(docs=True), api_key=key)) as c:
        assert c.get("/docs").status_code == 200 and "cdn.jsdelivr.net" in c.get("/docs").text


def test_a_browser_opens_the_docs_without_the_key_and_they_name_nothing_of_the_model(keyed, model_dir, tmp_path):
    """/docs (and /openapi.json, /redoc) need no key, so a browser can show them; the schema declares
    the bearer key (the docs' Authorize button), and holds nothing of the model folder."""
    for path in ("/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"):
        assert keyed.get(path).status_code == 200, path
        assert keyed.head(path).status_code == 200, path
    assert "/openapi.json" in keyed.get("/docs").text
    spec = keyed.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"] == {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "the server's API key"}}
    assert spec["security"] == [{"apiKey": []}]  # every route...
    assert spec["paths"]["/health"]["get"]["security"] == []  # ...but /health
    assert all("security" not in op for p in ("/model", "/predict", "/predict/csv") for op in spec["paths"][p].values())
    text = json.dumps(spec)
    assert str(model_dir) not in text and model_dir.parent.name not in text and "AEM" not in text
    # nothing of the model: a model of another shape gives the same schema
    other = make_model(tmp_path / "other", sequence_length=30, horizon=2, symbol="NIO")
    with TestClient(create_app(other, ServeConfig(), api_key=KEY)) as c:
        assert c.get("/openapi.json").json() == spec
    with TestClient(create_app(model_dir, ServeConfig())) as c:  # without a key: no security scheme
        plain = c.get("/openapi.json").json()
        assert "security" not in plain and "securitySchemes" not in plain.get("components", {})


def test_no_key_beyond_loopback_is_refused_unless_insecure(monkeypatch, capsys, model_dir):
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
        check_exposure(host, None, False)
    for host in ("0.0.0.0", "::", "10.1.2.3", "192.168.0.7", "example.com", ""):
        assert not is_loopback(host), host
        with pytest.raises(UserError, match="--insecure"):
            check_exposure(host, None, False)
        check_exposure(host, KEY, False)
        check_exposure(host, None, True)
    monkeypatch.delenv("HFTRAINING_API_KEY", raising=False)
    assert main(["serve", str(model_dir), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--host 0.0.0.0" in err and "--insecure" in err and "HFTRAINING_API_KEY" in err


def test_the_key_comes_from_the_flag_or_the_environment_and_is_never_shown(monkeypatch, capsys, model_dir):
    assert resolve_api_key(None, {}) is None
    assert resolve_api_key(None, {"HFTRAINING_API_KEY": KEY}) == KEY
    assert resolve_api_key("flag-key", {"HFTRAINING_API_KEY": KEY}) == "flag-key"
    monkeypatch.setenv("HFTRAINING_API_KEY", "")
    assert main(["serve", str(model_dir), "--host", "0.0.0.0"]) == 2
    assert "HFTRAINING_API_KEY: empty" in capsys.readouterr().err
    assert main(["serve", str(model_dir), "--api-key", "two words"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hftraining: error: --api-key:") and "two words" not in err


@pytest.mark.parametrize("flags, key", [(["--request-timeout", "0"], "serve.request_timeout_s"),
                                        (["--max-rows", "-1"], "serve.max_rows"),
                                        (["--cors-origin", "https://ok.example", "--cors-origin", "ftp://x.example/path"],
                                         "serve.cors_origins[1]")])
def test_bad_serve_flags_name_the_key(capsys, model_dir, flags, key):
    assert main(["serve", str(model_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert key in err and err.count("\n") == 1


def test_a_prediction_slower_than_the_timeout_is_a_503_naming_the_limit(model_dir):
    release = threading.Event()
    with TestClient(create_app(model_dir, ServeConfig(request_timeout_s=0.5))) as c:
        fc = c.app.state.forecaster
        real = fc.predict

        def stuck(*a, **k):
            release.wait(60)
            return real(*a, **k)

        fc.predict = stuck
        try:
            r = c.post("/predict", json={"symbols": {"AEM": _rows()}})
            assert r.status_code == 503 and "0.5 s" in r.json()["error"] and "serve.request_timeout_s" in r.json()["error"]
            r = c.post("/predict/csv", files={"file": ("AEM.csv", _csv().to_csv(index=False).encode())})
            assert r.status_code == 503 and "serve.request_timeout_s" in r.json()["error"]
        finally:
            release.set()
            fc.predict = real
        assert c.get("/health").status_code == 200
        assert c.post("/predict", json={"symbols": {"AEM": _rows()}}).status_code == 200


def test_a_body_slower_than_the_timeout_is_a_408():
    sent = []

    async def never(*_):  # a client that sends its headers and then nothing
        await asyncio.Event().wait()

    async def send(msg):
        sent.append(msg)

    async def app(*_):
        raise AssertionError("the application must not run")

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-length", b"100")]}
    asyncio.run(BodyLimit(app, limit=1000, timeout_s=0.05)(scope, never, send))
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert "serve.request_timeout_s" in json.loads(sent[1]["body"])["error"]


def test_symbol_and_row_caps_are_413_naming_the_key(model_dir):
    with TestClient(create_app(model_dir, ServeConfig(max_symbols=2, max_rows=150))) as c:
        r = c.post("/predict", json={"symbols": {"A": _rows(), "B": _rows(), "C": _rows()}})
        assert r.status_code == 413 and "3 symbols" in r.json()["error"] and "serve.max_symbols" in r.json()["error"]
        r = c.post("/predict", json={"symbols": {"A": _rows(), "B": _rows()}})  # 160 rows
        assert r.status_code == 413 and "160 rows" in r.json()["error"] and "serve.max_rows" in r.json()["error"]
        r = c.post("/predict/csv", files={"file": ("AEM.csv", _csv(151).to_csv(index=False).encode())})
        assert r.status_code == 413 and "151 rows" in r.json()["error"] and "serve.max_rows" in r.json()["error"]
        assert c.post("/predict/csv", files={"file": ("AEM.csv", _csv(150).to_csv(index=False).encode())}).status_code == 200
    spec = TestClient(create_app(model_dir, ServeConfig(max_symbols=2))).get("/openapi.json").json()
    req = spec["components"]["schemas"]["PredictRequest"]["properties"]["symbols"]
    assert req["maxProperties"] == 2  # the limit is in the schema clients are generated from


def test_cors_is_off_by_default_and_on_for_the_listed_origins(model_dir):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(model_dir, ServeConfig())) as c:
        assert not any(h.startswith("access-control-") for h in c.get("/health", headers={"Origin": "https://app.example"}).headers)
        assert not any(h.startswith("access-control-") for h in c.options("/predict", headers=preflight).headers)
    with TestClient(create_app(model_dir, ServeConfig(cors_origins=["https://app.example"]), api_key=KEY)) as c:
        r = c.options("/predict", headers=preflight)  # a preflight carries no key: answered before the key check
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        other = c.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_access_log_is_one_json_line_per_request_without_the_key(model_dir):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("hftraining.serve")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with TestClient(create_app(model_dir, ServeConfig(), api_key=KEY)) as c:
            auth = {"Authorization": f"Bearer {KEY}"}
            answers = [c.get("/health"), c.get("/model?secret=1", headers=auth), c.get("/model"),
                       c.post("/predict", json={"symbols": {"AEM": _rows()}}, headers=auth),
                       c.post("/predict", content=b"{not json", headers={**auth, "content-type": "application/json"})]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    text = stream.getvalue()
    assert KEY not in text and "secret" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == len(answers)
    for line, r in zip(lines, answers):
        assert set(line) == {"time", "client", "method", "path", "status", "duration_ms", "bytes"}
        assert line["status"] == r.status_code and line["bytes"] == len(r.content) and line["duration_ms"] >= 0
        assert (line["method"], line["path"]) == (r.request.method, r.request.url.path)
    assert [line["status"] for line in lines] == [200, 200, 401, 200, 422]


def test_the_command_serves_with_the_key_from_the_environment_and_logs_json(model_dir, tmp_path):
    port = _free_port()
    env = {**os.environ, "HFTRAINING_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hftraining", "serve", str(model_dir), "--port", str(port),
                                 "--request-timeout", "20", "--keep-alive-timeout", "2", "--docs"], stderr=err, stdout=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, err_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/model", timeout=10).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/model", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = err_path.read_text()
    assert KEY not in text and "API key required; /docs, /redoc and /openapi.json open without it" in text
    access = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [(a["path"], a["status"]) for a in access][-2:] == [("/model", 401), ("/model", 200)]


def test_predictions_past_their_timeout_cannot_pile_up_without_bound(model_dir):
    """A timed-out prediction's thread runs on (Python cannot stop it), but keeps its slot until it
    ends: beyond serve.max_predictions running at once, a request waits for a slot within its own
    timeout (503 after it) instead of starting one more thread; once the work ends, all is served."""
    release = threading.Event()
    running = []
    with TestClient(create_app(model_dir, ServeConfig(request_timeout_s=0.3, max_predictions=3))) as c:
        fc = c.app.state.forecaster
        real = fc.predict

        def stuck(*a, **k):
            running.append(1)
            try:
                release.wait(60)
                return real(*a, **k)
            finally:
                running.pop()

        fc.predict = stuck
        try:
            for _ in range(8):
                r = c.post("/predict", json={"symbols": {"AEM": _rows()}})
                assert r.status_code == 503 and "serve.request_timeout_s" in r.json()["error"]
            assert len(running) == 3  # not 8: the other 5 never started a thread
            assert "prediction slots" in r.json()["error"]
        finally:
            release.set()
            fc.predict = real
        deadline = time.monotonic() + 30
        while running and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(4):  # the slots came back when the stuck work ended: no request waits for one
            for _attempt in range(5):  # a real prediction may outlast 0.3 s on a loaded machine: not a slot
                r = c.post("/predict", json={"symbols": {"AEM": _rows()}})
                assert r.status_code in (200, 503) and "prediction slots" not in r.text, r.text
                if r.status_code == 200:
                    break
            assert r.status_code == 200, r.text
