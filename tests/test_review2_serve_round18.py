"""The server's shared check of its model folder when the machine or the filesystem misbehaves under it: a check
whose thread cannot be started is a 503 for its requests and tried again by the next one (never a server that
answers every later request 503 for as long as it runs), and a link of the model path replaced while a check reads
it is a 503 or the model, never a 500."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
sys.path.insert(0, str(Path(__file__).parent))
from test_inference_round12 import pre  # noqa: E402,F401 (a fixture)
from test_serve_round17 import _assert_forecasts_of, _body, _frame, _save  # noqa: E402

from hftraining.core.config import ServeConfig  # noqa: E402


def test_a_check_whose_thread_cannot_start_is_a_503_and_the_next_request_checks_again(pre, tmp_path, monkeypatch):
    """Each check of the folder runs on a thread of its own. When none could be started (the process at its thread
    limit, memory short: ``RuntimeError: can't start new thread``), that request was a 500 and the check stayed
    marked as running: every later request waited for it until ``serve.request_timeout_s`` and was a 503 "took
    longer than the limit", for as long as the server ran, though threads could be started again a moment later.
    Now that request is a 503 saying why, and the next request checks the folder again and is served."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    df = _frame()
    start, refused = threading.Thread.start, {"left": 1}

    def start_or_fail(thread):
        if thread.name == "hftraining-serve-check" and refused["left"]:
            refused["left"] -= 1
            raise RuntimeError("can't start new thread")
        return start(thread)

    with TestClient(serve.create_app(d, ServeConfig(request_timeout_s=2)), raise_server_exceptions=False) as client:
        assert client.get("/model").status_code == 200
        monkeypatch.setattr(threading.Thread, "start", start_or_fail)
        r = client.post("/predict", json=_body(df))
        assert r.status_code == 503, r.text
        assert str(d) in r.json()["error"] and "thread" in r.json()["error"], r.text
        for _ in range(3):  # threads can be started again: served at once, not a 503 at the limit
            r = client.post("/predict", json=_body(df))
            assert r.status_code == 200, r.text
            _assert_forecasts_of(r.json(), d, df)
        _save(pre, d, seed=1)  # and the folder is still watched
        r = client.post("/predict", json=_body(df))
        assert r.status_code == 200, r.text
        _assert_forecasts_of(r.json(), d, df)


def test_a_check_that_fails_to_start_while_requests_wait_answers_them_503(pre, tmp_path, monkeypatch):
    """The requests that come while a check runs share the next, started when it ends: when that one's thread could
    not be started, they waited until their limit and every request after them too (a 503 each). Now they are a
    503 at once, and the request after them is served."""
    import asyncio
    import time

    import httpx

    from hftraining.inference import serve

    d = _save(pre, tmp_path / "model", seed=0)
    app = serve.create_app(d, ServeConfig(request_timeout_s=3))
    real, hold = serve.folder_state, threading.Event()
    start, refused = threading.Thread.start, {"left": 0}

    def slow_disk(path):
        hold.wait(5)
        return real(path)

    def start_or_fail(thread):
        if thread.name == "hftraining-serve-check" and refused["left"]:
            refused["left"] -= 1
            raise RuntimeError("can't start new thread")
        return start(thread)

    monkeypatch.setattr(serve, "folder_state", slow_disk)
    monkeypatch.setattr(threading.Thread, "start", start_or_fail)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            first = asyncio.ensure_future(client.get("/model"))
            await asyncio.sleep(0.2)  # its check waits on the disk
            waiting = [asyncio.ensure_future(client.get("/model")) for _ in range(3)]
            await asyncio.sleep(0.2)
            refused["left"] = 1  # the next check's thread cannot be started
            t0 = time.perf_counter()
            hold.set()
            answers = [await first, *[await w for w in waiting]]
            waited = time.perf_counter() - t0
            return answers, waited, await client.get("/model")

    answers, waited, after = asyncio.run(main())
    assert answers[0].status_code == 200, answers[0].text
    assert [r.status_code for r in answers[1:]] == [503] * 3, [r.text for r in answers[1:]]
    assert all("thread" in r.json()["error"] for r in answers[1:]), answers[1].text
    assert waited < 2, waited
    assert after.status_code == 200, after.text


def test_a_link_replaced_while_the_folder_is_checked_is_never_a_500(pre, tmp_path, monkeypatch):
    """A server of a path through a link (``current -> runs/x``) re-pointed by removing and making it again (what
    ``ln -sfn`` and ``rm; ln -s`` do): a check reading the link just as it was removed answered the request 500
    "internal error (FileNotFoundError)" with a traceback in the log (one in a few hundred requests while links
    were re-pointed). Now that read is the folder as unreadable for that moment: the request is served, by the
    folder as it is once the link is back."""
    from fastapi.testclient import TestClient

    from hftraining.inference import serve

    runs = tmp_path / "runs"
    _save(pre, runs / "model", seed=0)
    link = tmp_path / "current"
    link.symlink_to(runs)
    d = link / "model"
    df = _frame()
    readlink, raced = os.readlink, {"left": 0}

    def replaced_as_read(path, *args, **kwargs):
        """The link removed just before its target is read, and made again just after: the race, every time."""
        if raced["left"] and os.fspath(path) == os.fspath(link):
            raced["left"] -= 1
            os.unlink(link)
            try:
                return readlink(path, *args, **kwargs)
            finally:
                os.symlink(runs, link)
        return readlink(path, *args, **kwargs)

    with TestClient(serve.create_app(d), raise_server_exceptions=False) as client:
        assert client.get("/model").status_code == 200
        monkeypatch.setattr(os, "readlink", replaced_as_read)
        for _ in range(3):
            raced["left"] = 1
            r = client.post("/predict", json=_body(df))
            assert r.status_code == 200, r.text
            _assert_forecasts_of(r.json(), d, df)
            assert raced["left"] == 0, "the check read the link"
