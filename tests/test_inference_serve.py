"""The forecasting server, started for real on 127.0.0.1 and called over HTTP."""

import contextlib
import json
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from hftraining.core.config import ModelConfig, ServeConfig, load_config  # noqa: E402
from hftraining.data.io import sample_data_dir  # noqa: E402
from hftraining.data.pipeline import prepare  # noqa: E402
from hftraining.inference.forecaster import Forecaster  # noqa: E402
from hftraining.inference.serve import create_app  # noqa: E402
from hftraining.models import build_model  # noqa: E402

LIMIT = 64 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(d, sequence_length=20, horizon=3, symbol="AEM"):
    """A tiny trained-shape model folder at ``d`` (AEM, 20 rows in, 3 steps out, quantiles 0.1/0.9)."""
    cfg = load_config(None, [f"data.symbols=[{symbol}]", f"data.sequence_length={sequence_length}",
                             f"data.prediction_horizon={horizon}"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1, quantiles=[0.1, 0.9]),
                len(pre.feature_columns), pre.horizon, pre.seq_len).save_pretrained(d, preprocessing=pre.to_dict())
    return d


@contextlib.contextmanager
def running(app):
    """A real uvicorn server of ``app`` on a free 127.0.0.1 port, in a thread; yields the port."""
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    with serving(srv):
        yield port


@contextlib.contextmanager
def serving(srv):
    """Run the ``uvicorn.Server`` ``srv`` in a thread until the block ends."""
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = make_model(tmp_path_factory.mktemp("serve") / "model")
    with running(create_app(d, ServeConfig(max_body_bytes=LIMIT))) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, d


def _rows(n=80):
    df = pd.read_csv(sample_data_dir() / "AEM.csv").tail(n)
    return df, [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
                for r in df.itertuples()]


def test_health_model_and_openapi(server):
    client, d = server
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["preprocessing"]["sequence_length"] == 20 and info["config"]["model"]["hidden_size"] == 16
    assert info["quantile_levels"] == [0.1, 0.9] and info["min_rows"] > 20
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/csv", "/health", "/model"} <= set(spec["paths"])


def test_predict_json_and_csv_equal_the_python_api(server):
    client, d = server
    df, rows = _rows()
    r = client.post("/predict", json={"symbols": {"AEM": rows, "AEM2": rows}})
    assert r.status_code == 200, r.text
    got = pd.DataFrame(r.json()["forecasts"])
    want = Forecaster.from_pretrained(d).predict({"AEM": df})
    assert list(got["symbol"]) == ["AEM"] * 3 + ["AEM2"] * 3
    np.testing.assert_allclose(got["forecast_return"][:3], want["forecast_return"], rtol=1e-6)
    np.testing.assert_allclose(got["return_q0.9"][:3], want["return_q0.9"], rtol=1e-6)
    assert got["as_of"][0] == want["as_of"][0].isoformat()
    r = client.post("/predict/csv", files={"file": ("AEM.csv", df.to_csv(index=False).encode(), "text/csv")})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(pd.DataFrame(r.json()["forecasts"])["forecast_return"], want["forecast_return"], rtol=1e-6)


def _bad(mutate):
    _, rows = _rows()
    rows = [dict(r) for r in rows]
    mutate(rows)
    return {"symbols": {"AEM": rows}}


@pytest.mark.parametrize("body, status, words", [
    (_bad(lambda r: r[5].pop("volume")), 422, ["symbols.AEM[5].volume", "required"]),
    (_bad(lambda r: r[3].update(close="abc")), 422, ["symbols.AEM[3].close"]),
    (_bad(lambda r: r[7].update(high=float("nan"))), 422, ["symbols.AEM[7].high", "finite"]),
    (_bad(lambda r: r[7].update(close=-5.0)), 422, ["AEM", "row 7", "'close'"]),
    (_bad(lambda r: r[4].update(colour=1)), 422, ["symbols.AEM[4].colour"]),
    (_bad(lambda r: r[6].update(timestamp="9999-01-01")), 422, ["symbols.AEM[6].timestamp", "outside the supported range"]),
    (_bad(lambda r: r[6].update(timestamp="2300-06-01T00:00:00+02:00")), 422, ["symbols.AEM[6].timestamp"]),
    # past the year 9999 (or before 1) once in UTC: out of range, not an internal error
    (_bad(lambda r: r[6].update(timestamp="9999-12-31T23:59:59-05:00")), 422, ["symbols.AEM[6].timestamp", "outside the supported range"]),
    (_bad(lambda r: r[6].update(timestamp="0001-01-01T00:00:00+05:00")), 422, ["symbols.AEM[6].timestamp", "outside the supported range"]),
    (_bad(lambda r: r[6].update(timestamp=True)), 422, ["symbols.AEM[6].timestamp"]),
    (_bad(lambda r: r.__delitem__(slice(0, 60))), 422, ["AEM", "20 usable rows", "needs"]),
    ({"symbol": {}}, 422, ["symbols", "required"]),
    ("{not json", 422, ["not valid JSON"]),
    ({"symbols": {"AEM": [{"close": 1.0}] * 6000}}, 413, ["request body", str(LIMIT)]),
])
def test_bad_input_is_4xx_naming_the_field_and_the_server_keeps_serving(server, body, status, words):
    client, _ = server
    content = body if isinstance(body, str) else json.dumps(body)  # json.dumps writes NaN as NaN
    r = client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert all(w in msg for w in words), msg
    assert client.get("/health").status_code == 200


def test_csv_upload_missing_column_names_it(server):
    client, _ = server
    df, _ = _rows()
    r = client.post("/predict/csv", files={"file": ("AEM.csv", df.drop(columns="volume").to_csv(index=False).encode())})
    assert r.status_code == 422 and "missing column 'volume'" in r.json()["error"] and "hftraining-upload" not in r.json()["error"]


def test_serve_without_the_extra_is_one_line(monkeypatch, capsys):
    import builtins

    from hftraining.cli import main

    real = builtins.__import__

    def no_fastapi(name, *a, **k):
        if name.split(".")[0] in ("fastapi", "uvicorn"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_fastapi)
    capsys.readouterr()
    assert main(["serve", "nowhere"]) == 2
    # the server fixture's access log (JSON lines from its own thread) may land here after its last request
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True) if not line.startswith('{"time"'))
    assert "'.[serve]'" in err and err.count("\n") == 1, err


def test_a_run_killed_mid_write_still_serves_and_a_corrupt_metrics_line_is_one_line(server, tmp_path, capsys):
    """``metrics.jsonl`` of a run killed while writing ends in half a line: serve skips it (as the
    report does); a corrupt line anywhere else is a one-line error naming the file and the line."""
    import shutil

    from hftraining.cli import main
    from hftraining.inference.serve import model_info

    _, d = server
    run = tmp_path / "run"
    shutil.copytree(d, run / "final")
    recs = [{"step": 1, "loss": 1.0}, {"step": 2, "eval_mse": 0.5}, {"step": 3, "loss": 0.9}]
    lines = [json.dumps(r) for r in recs]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "eval_ms')  # killed mid-write
    info = model_info(Forecaster.from_pretrained(run / "final"))
    assert info["training_metrics"]["validation"] == recs[1]
    lines[1] = lines[1][:-3]  # a corrupt line that is not the last one
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["serve", str(run / "final")]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'}: line 2 is not valid JSON" in err and err.count("\n") == 1, err


def test_symbol_names_bodies_and_uploads_that_are_not_json_get_an_error_naming_them(server):
    client, _ = server
    _, rows = _rows()
    r = client.post("/predict", json={"symbols": {"AEM\n": rows}})
    assert r.status_code == 422 and "not a symbol name" in r.json()["error"]
    r = client.post("/predict", json={"symbols": {"^GSPC": rows}})  # index symbols start with ^
    assert r.status_code == 200 and r.json()["forecasts"][0]["symbol"] == "^GSPC"
    r = client.post("/predict", content=b'{"symbols": \x80}', headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and r.json()["error"].startswith("body:")
    r = client.post("/predict/csv", files={"file": ("", b"timestamp,close\n")})  # a form field, not a file
    assert r.status_code == 422 and r.json()["error"].startswith("file: expected a file upload")
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "GET /nowhere: Not Found"


def test_a_date_or_an_epoch_sent_as_text_reads_as_the_same_number_and_csv_cell_do(server):
    """"20260318" is the YYYYMMDD date it is in a CSV file (and as a JSON number), not 20,260,318
    seconds after 1970; "1773792000" the epoch seconds it is as a number."""
    client, _ = server
    df, rows = _rows()
    want = client.post("/predict", json={"symbols": {"AEM": rows}}).json()["forecasts"]
    epoch = {r["timestamp"]: str(int(pd.Timestamp(r["timestamp"], tz="UTC").timestamp())) for r in rows}
    for form in (lambda t: t.replace("-", ""), epoch.get):
        for cast in (str, int):
            body = {"symbols": {"AEM": [dict(r, timestamp=cast(form(r["timestamp"]))) for r in rows]}}
            r = client.post("/predict", json=body)
            assert r.status_code == 200, r.text
            got = r.json()["forecasts"]
            assert [g["as_of"] for g in got] == [w["as_of"] for w in want], (form(rows[0]["timestamp"]), cast)
            np.testing.assert_allclose([g["forecast_return"] for g in got], [w["forecast_return"] for w in want], rtol=1e-6)
