"""The server and the model folder on disk: a folder replaced or rewritten while the server runs (or while it
loads) is served as it is now, or refused while it cannot be loaded, never answered from a model the folder
no longer holds nor described by another folder's files; and a ``POST /predict/csv`` form that gives a field
twice, or one it does not have, is refused naming it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("fastapi")
sys.path.insert(0, str(Path(__file__).parent))
from test_inference_round12 import pre  # noqa: E402,F401 (a fixture)

from hftraining.core.config import ModelConfig  # noqa: E402
from hftraining.data.io import sample_data_dir  # noqa: E402
from hftraining.inference.forecaster import Forecaster  # noqa: E402
from hftraining.models import build_model  # noqa: E402


def _save(pre: dict, d: Path, seed: int, hidden: int = 16) -> Path:
    """A seeded untrained model of ``pre`` saved as the folder ``d`` (replacing it whole, as training saves ``final/``)."""
    torch.manual_seed(seed)
    build_model(ModelConfig(hidden_size=hidden, num_heads=2, num_layers=1, dropout=0.0), len(pre["feature_columns"]),
                pre["horizon"], pre["seq_len"]).save_pretrained(d, preprocessing=pre)
    return d


def _frame(n: int = 120) -> pd.DataFrame:
    return pd.read_csv(sample_data_dir() / "AEM.csv").tail(n).reset_index(drop=True)


def _body(df: pd.DataFrame) -> dict:
    return {"symbols": {"AEM": [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close,
                                 "volume": r.volume} for r in df.itertuples()]}}


def _assert_forecasts_of(answer: dict, folder: Path, df: pd.DataFrame) -> None:
    """The forecasts of a ``POST /predict`` answer are those ``Forecaster.predict`` gives of ``folder`` as it is now."""
    got = pd.DataFrame(answer["forecasts"])
    want = Forecaster.from_pretrained(folder).predict({"AEM": df})
    assert list(got["step"]) == list(want["step"])
    assert list(got["as_of"]) == [t.isoformat() for t in want["as_of"]]
    np.testing.assert_array_equal(got["forecast_return"].to_numpy(), want["forecast_return"].to_numpy())


def test_a_model_folder_replaced_while_serving_is_served_as_it_is_now(pre, tmp_path):
    """A run retrained into the folder a server serves (``final/`` replaced whole) went on being forecast
    by the model loaded at start, ``GET /model`` describing that one, with no word said: forecasts of a
    model no longer on disk. Now the next request loads the folder again: its forecasts and ``/model`` are
    the new model's, and ``Forecaster.predict`` of the folder gives the same numbers."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    d = _save(pre, tmp_path / "model", seed=0)
    df = _frame()
    with TestClient(create_app(d)) as client:
        first = client.post("/predict", json=_body(df))
        assert first.status_code == 200, first.text
        _assert_forecasts_of(first.json(), d, df)
        _save(pre, d, seed=1, hidden=32)  # retrained in place
        second = client.post("/predict", json=_body(df))
        assert second.status_code == 200, second.text
        assert second.json()["forecasts"] != first.json()["forecasts"]
        _assert_forecasts_of(second.json(), d, df)
        assert client.get("/model").json()["config"]["model"]["hidden_size"] == 32
        assert client.app.state.forecaster.model.cfg.hidden_size == 32


def test_a_link_pointed_at_another_model_serves_that_model(pre, tmp_path):
    """``serve current`` with ``current -> a``: pointing the link at ``b`` (a deployment's switch) served ``a``
    until the server was restarted. Now the next request is answered by ``b``, and ``/model`` names it."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    a, b = _save(pre, tmp_path / "a", seed=0), _save(pre, tmp_path / "b", seed=1)
    link = tmp_path / "current"
    link.symlink_to(a)
    df = _frame()
    with TestClient(create_app(link)) as client:
        _assert_forecasts_of(client.post("/predict", json=_body(df)).json(), a, df)
        (tmp_path / "next").symlink_to(b)
        os.replace(tmp_path / "next", link)
        answer = client.post("/predict", json=_body(df))
        assert answer.status_code == 200, answer.text
        _assert_forecasts_of(answer.json(), b, df)
        assert os.path.realpath(client.get("/model").json()["model_dir"]) == os.path.realpath(b)


def test_a_model_folder_that_cannot_be_loaded_now_is_refused_until_it_can(pre, tmp_path):
    """A model file rewritten in place and cut short (a copy still running, a full disk) was no matter to a
    server that went on forecasting from the weights it had loaded. Now each request is a 503 naming the
    folder and the file (``/health`` still answers); once the file is whole again the folder is served."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    d = _save(pre, tmp_path / "model", seed=0)
    df = _frame()
    weights = (d / "model.safetensors").read_bytes()
    with TestClient(create_app(d)) as client:
        assert client.post("/predict", json=_body(df)).status_code == 200
        _save(pre, tmp_path / "other", seed=1)
        (d / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes()[:100])
        for _ in range(2):
            r = client.post("/predict", json=_body(df))
            assert r.status_code == 503, r.text
            assert str(d) in r.json()["error"] and "model.safetensors" in r.json()["error"], r.text
            assert "\n" not in r.json()["error"]
        assert client.get("/model").status_code == 503
        assert client.get("/health").json() == {"status": "ok"}
        (d / "model.safetensors").write_bytes(weights)
        r = client.post("/predict", json=_body(df))
        assert r.status_code == 200, r.text
        _assert_forecasts_of(r.json(), d, df)


def test_a_folder_replaced_while_the_server_loads_it_is_read_again(pre, tmp_path, monkeypatch):
    """A training run that saves ``final/`` just as the server starts: the weights were read from the old
    folder and ``GET /model``'s config from the new one, so the server forecast with one model and described
    another (hidden size 16 served, 32 said). Now a folder that changed while it was read is read again:
    the forecasts and the description are both of the folder as it is."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    real, calls = Forecaster.from_pretrained.__func__, []

    def from_pretrained(cls, path, *a, **k):
        fc = real(cls, path, *a, **k)
        calls.append(path)
        if len(calls) == 1:  # the folder is replaced once the weights have been read
            _save(pre, d, seed=1, hidden=32)
        return fc

    monkeypatch.setattr(Forecaster, "from_pretrained", classmethod(from_pretrained))
    app = serve.create_app(d)
    monkeypatch.undo()
    df = _frame()
    with TestClient(app) as client:
        said = client.get("/model").json()["config"]["model"]["hidden_size"]
        assert (said, app.state.forecaster.model.cfg.hidden_size) == (32, 32)
        answer = client.post("/predict", json=_body(df))
        assert answer.status_code == 200, answer.text
        _assert_forecasts_of(answer.json(), d, df)


def test_a_csv_form_that_gives_a_field_twice_or_an_unknown_one_is_refused_naming_it(pre, tmp_path):
    """``curl -F file=@AEM.csv -F file=@WPM.csv`` was answered with WPM's forecasts alone, AEM's file dropped
    with no word said (the last part of a name is read), and a misspelt ``symbols`` field was ignored (the
    forecast named after the file). Now each is a 422 naming the field; one file per request is forecast."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    d = _save(pre, tmp_path / "model", seed=0)
    df = _frame()
    aem = df.to_csv(index=False).encode()
    wpm = pd.read_csv(sample_data_dir() / "WPM.csv").tail(120).to_csv(index=False).encode()
    with TestClient(create_app(d)) as client:
        r = client.post("/predict/csv", files=[("file", ("AEM.csv", aem, "text/csv")), ("file", ("WPM.csv", wpm, "text/csv"))])
        assert r.status_code == 422 and r.json()["error"].startswith("file: given 2 times"), r.text
        r = client.post("/predict/csv", files={"file": ("up.csv", aem, "text/csv")}, data={"symbol": ["AEM", "WPM"]})
        assert r.status_code == 422 and r.json()["error"].startswith("symbol: given 2 times"), r.text
        r = client.post("/predict/csv", files={"file": ("up.csv", aem, "text/csv")}, data={"symbols": "AEM"})
        assert r.status_code == 422 and "'symbols': not a field" in r.json()["error"], r.text
        r = client.post("/predict/csv", files={"file": ("up.csv", aem, "text/csv")}, data={"symbol": "AEM"})
        assert r.status_code == 200, r.text
        _assert_forecasts_of(r.json(), d, df)
        assert json.loads(r.text)["forecasts"][0]["symbol"] == "AEM"


@pytest.mark.parametrize("body, words", [
    (b'{"symbols": {"AEM\xff": []}}', ["body: not valid JSON: not UTF-8 text (byte 0xff at byte 17)", "send the JSON as UTF-8"]),
    (b'{"symbols": ' + b"[" * 100_000 + b"}", ["body: not valid JSON: nested too deeply"]),
])
def test_a_json_body_that_cannot_be_read_is_a_422_saying_why(pre, tmp_path, body, words):
    """A body that is not UTF-8 (a Latin-1 file sent as JSON) or nests beyond Python's recursion limit was a 400
    "There was an error parsing the body", saying neither what nor where. Now it is the 422 of bad JSON, saying
    which byte cannot be read or that it nests too deeply; the server serves on."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    with TestClient(create_app(_save(pre, tmp_path / "model", seed=0))) as client:
        r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert all(w in r.json()["error"] for w in words), r.text
        assert client.post("/predict", json=_body(_frame())).status_code == 200
