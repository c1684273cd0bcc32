"""The server's checks of its model folder under load: many requests at once share one check of the folder
(none is queued behind the others' checks, and none is answered by a check that began before it came); a
folder that cannot be loaded for good is logged once, not once a second; an ensemble.json naming members a
load refuses (thousands of them) is a prompt 503 with the load's reason, not a check stat'ing each of them."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
sys.path.insert(0, str(Path(__file__).parent))
from test_inference_round12 import pre  # noqa: E402,F401 (a fixture)
from test_serve_round16 import _run  # noqa: E402
from test_serve_round17 import _assert_forecasts_of, _body, _frame, _save  # noqa: E402

from hftraining.core.config import ServeConfig  # noqa: E402


async def _all_at_once(app, n: int, path: str = "/model") -> list:
    """``n`` GET ``path`` requests sent to ``app`` at once."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await asyncio.gather(*(client.get(path) for _ in range(n)))


def test_requests_at_once_share_one_check_of_the_folder(pre, tmp_path, monkeypatch):
    """Each request checked the folder on the one thread checks run on, one after another: under many requests at
    once (50 clients), each waited for the checks of all those before it, every one a thread's hand-over and a
    few stat calls (or a slow network disk's), and throughput fell. Now the requests that come while a check
    runs share the next one: 30 requests at once cost a few checks, not 30; and a request never takes the
    answer of a check that began before it came (the folder replaced meanwhile is what it is served)."""
    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    app = serve.create_app(d, ServeConfig(request_timeout_s=20))
    real, calls = serve.folder_state, []
    hold = threading.Event()
    hold.set()

    def slow_disk(path):
        calls.append(path)
        state = real(path)
        time.sleep(0.05)  # a network disk's stat calls
        hold.wait(10)
        return state

    monkeypatch.setattr(serve, "folder_state", slow_disk)
    answers = asyncio.run(_all_at_once(app, 30))
    assert [r.status_code for r in answers] == [200] * 30, answers[0].text
    assert len({json.dumps(r.json(), sort_keys=True) for r in answers}) == 1
    assert len(calls) <= 5, len(calls)

    async def replaced_while_a_check_runs() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            hold.clear()
            first = asyncio.ensure_future(client.get("/model"))
            while not calls or len(calls) < n_before + 1:  # the first request's check has read the folder
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            _save(pre, d, seed=1, hidden=32)  # retrained while that check waits on the disk
            second = asyncio.ensure_future(client.get("/model"))
            await asyncio.sleep(0.1)
            hold.set()
            await first
            return await second

    n_before = len(calls)
    r = asyncio.run(replaced_while_a_check_runs())
    assert r.status_code == 200, r.text
    assert r.json()["config"]["model"]["hidden_size"] == 32


def test_a_folder_removed_for_good_is_logged_once(pre, tmp_path, monkeypatch, caplog):
    """A folder that cannot be loaded is read again every ``RETRY_S`` (a passing failure); a folder removed for
    good was so logged as a warning once a second for as long as the server ran, the same line each time
    (3,600 an hour, burying whatever else the log said). Now the same failure is a warning once; requests
    meanwhile are the 503 naming the folder, and the folder, once back, is served."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    monkeypatch.setattr(serve, "RETRY_S", 0.05)
    d = _save(pre, tmp_path / "model", seed=0)
    kept = tmp_path / "kept"
    df = _frame()
    with TestClient(serve.create_app(d)) as client:
        assert client.post("/predict", json=_body(df)).status_code == 200
        shutil.move(str(d), kept)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="hftraining.serve"):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.8:
                r = client.get("/model")
                assert r.status_code == 503 and str(d) in r.json()["error"], r.text
                assert "cannot be loaded now" in r.json()["error"], r.text
                time.sleep(0.02)
        warned = [x.getMessage() for x in caplog.records if x.levelno >= logging.WARNING]
        retried = [x for x in caplog.records if str(d) in x.getMessage()]
        assert len(warned) == 1 and str(d) in warned[0], warned
        assert len(retried) > 2, "the folder is still read again every RETRY_S"
        shutil.move(str(kept), d)
        time.sleep(0.1)
        r = client.post("/predict", json=_body(df))
        assert r.status_code == 200, r.text
        _assert_forecasts_of(r.json(), d, df)
        shutil.rmtree(d)  # failing again after it was served: a new warning
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hftraining.serve"):
            assert client.get("/model").status_code == 503
        assert len([x for x in caplog.records if x.levelno >= logging.WARNING]) == 1


def test_an_ensemble_json_naming_thousands_of_members_is_a_prompt_503(pre, tmp_path):
    """The server watches the members an ensemble.json names, and stat'ed every one of them on each check: an
    ensemble.json rewritten to name tens of thousands (or folders outside the ensemble) had each request's
    check stat hundreds of thousands of paths, several times over, the 503 only saying the check took longer
    than ``serve.request_timeout_s``, and a core busy with it for as long as the server ran. A load refuses
    such a list (2 to 64 members, each inside the folder): now the server watches only members a load reads,
    and the request is answered at once with the load's reason."""
    from fastapi.testclient import TestClient

    from hftraining.inference.ensemble import build_ensemble
    from hftraining.inference.serve import create_app

    ens = build_ensemble([_run(pre, tmp_path / "a", 0), _run(pre, tmp_path / "b", 1)], tmp_path / "ens")
    with TestClient(create_app(ens, ServeConfig(request_timeout_s=3))) as client:
        assert client.get("/model").status_code == 200
        meta = json.loads((ens / "ensemble.json").read_text())
        meta["members"] = [f"m{k}" for k in range(80_000)]
        (ens / "ensemble.json").write_text(json.dumps(meta))
        t0 = time.perf_counter()
        r = client.get("/model")
        assert r.status_code == 503, r.text
        assert "members must be a list of 2 to 64" in r.json()["error"], r.text
        assert time.perf_counter() - t0 < 2.5
        for outside in (["/", "members/member-1"], ["../a/final", "members/member-1"]):
            meta["members"] = outside
            (ens / "ensemble.json").write_text(json.dumps(meta))
            r = client.get("/model")
            error = r.json()["error"]
            assert r.status_code == 503 and ("not a path inside" in error or "leads outside" in error), r.text
