"""Oversized and many-symbol requests against a real uvicorn server on 127.0.0.1 (issue 16): each
gets its 413 (or 401) as JSON naming the limit, never a connection reset, and the server keeps serving."""

import http.client
import json
import select
import socket
import time

import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from hftraining.core.config import ServeConfig  # noqa: E402
from hftraining.data.io import sample_data_dir  # noqa: E402
from hftraining.inference.serve import create_app  # noqa: E402
from test_inference_serve import make_model, running  # noqa: E402

LIMIT = 16 * 1024 * 1024
BIG = 20_000_000  # 20 MB
KEY = "test-key-0123456789"
PIECE = 64 * 1024


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    d = make_model(tmp_path_factory.mktemp("bodies") / "model")
    cfg = ServeConfig(max_body_bytes=LIMIT, max_symbols=1000, max_rows=100_000)
    with running(create_app(d, cfg, api_key=KEY)) as p:
        yield p


def _response_complete(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:")), None)
    return length is not None and len(body) >= length


def exchange(port: int, head: bytes, body_pieces, timeout: float = 120.0):
    """Send ``head`` and then ``body_pieces`` on a raw socket while reading whatever the server answers
    (it may answer before the body is sent). Returns (status, json body, what went wrong while sending)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setblocking(False)
    pieces, pending, resp, send_error = iter(body_pieces), memoryview(head), bytearray(), None
    deadline = time.monotonic() + timeout
    try:
        while not _response_complete(bytes(resp)):
            assert time.monotonic() < deadline, "no complete response"
            if not pending and send_error is None:
                nxt = next(pieces, None)
                pending = memoryview(nxt) if nxt is not None else None
            sending = pending is not None and send_error is None
            readable, writable, _ = select.select([s], [s] if sending else [], [], 1.0)
            if readable:
                try:
                    data = s.recv(1 << 16)
                except ConnectionResetError:
                    raise AssertionError(f"connection reset while reading (sending: {send_error!r})") from None
                assert data, f"the server closed without a complete response: {bytes(resp[:200])!r}"
                resp += data
            if writable and sending:
                try:
                    pending = pending[s.send(pending):]
                except (BrokenPipeError, ConnectionResetError) as e:
                    send_error = e
    finally:
        s.close()
    head_bytes, _, body = bytes(resp).partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(body), head_bytes.decode("latin-1"), send_error


def _fixed(n: int):
    for start in range(0, n, PIECE):
        yield b"x" * min(PIECE, n - start)


def _chunked(n: int):
    for piece in _fixed(n):
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"
    yield b"0\r\n\r\n"


def _head(extra: str, auth: bool = True) -> bytes:
    a = f"Authorization: Bearer {KEY}\r\n" if auth else ""
    return f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{a}{extra}\r\n".encode()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_20mb_body_gets_a_413_naming_the_limit_not_a_reset(port, framing):
    if framing == "content-length":
        head, pieces = _head(f"Content-Length: {BIG}\r\n"), _fixed(BIG)
    else:
        head, pieces = _head("Transfer-Encoding: chunked\r\n"), _chunked(BIG)
    status, body, _, send_error = exchange(port, head, pieces)
    assert status == 413, body
    assert str(LIMIT) in body["error"] and "serve.max_body_bytes" in body["error"]
    assert send_error is None, f"the server stopped reading the body: {send_error!r}"
    assert http_get(port, "/health")[0] == 200


def test_a_client_that_waits_for_100_continue_gets_the_413_without_sending(port):
    # curl sends "Expect: 100-continue" for bodies over 1 MB and waits before it sends the body
    status, body, head, _ = exchange(port, _head(f"Content-Length: {BIG}\r\nExpect: 100-continue\r\n"), [])
    assert status == 413 and str(LIMIT) in body["error"] and "connection: close" in head.lower()


def test_20mb_body_without_the_key_gets_a_401_not_a_reset(port):
    status, body, head, send_error = exchange(port, _head(f"Content-Length: {BIG}\r\n", auth=False), _fixed(BIG))
    assert status == 401 and "Authorization: Bearer" in body["error"]
    assert "www-authenticate: bearer" in head.lower() and send_error is None


def http_get(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def http_post(port, body, chunked=False):
    """http.client sends the whole body before it reads a byte of the answer: the client that sees a
    reset when a server answers early and closes."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    try:
        if chunked:
            c.request("POST", "/predict", body=(body[i:i + PIECE] for i in range(0, len(body), PIECE)),
                      headers=headers, encode_chunked=True)
        else:
            c.request("POST", "/predict", body=body, headers=headers)
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_http_client_sending_20mb_reads_the_413(port, chunked):
    status, body = http_post(port, b" " * BIG, chunked=chunked)
    assert status == 413 and str(LIMIT) in body["error"]


@pytest.fixture(scope="module")
def rows100():
    df = pd.read_csv(sample_data_dir() / "AEM.csv").tail(101)
    return [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for r in df.itertuples()]


def _symbols(rows, n):
    return json.dumps({"symbols": {f"S{i:04d}": rows for i in range(n)}}).encode()


def test_1000_symbols_x_100_rows_over_the_limits_is_a_413_naming_the_key(port, rows100):
    status, out = http_post(port, _symbols(rows100[1:], 1001), chunked=True)  # 1001 symbols x 100 rows
    assert status == 413 and "1001" in out["error"] and "serve.max_symbols" in out["error"], out
    status, out = http_post(port, _symbols(rows100, 1000))  # 1000 symbols x 101 rows
    assert status == 413 and "101000" in out["error"] and "100000" in out["error"] and "serve.max_rows" in out["error"], out
    assert http_get(port, "/health")[0] == 200


@pytest.mark.slow  # ~20 s on 2 busy cores: validation and features of 1000 symbols
def test_1000_symbols_x_100_rows_under_the_limits_is_served(port, rows100):
    body = _symbols(rows100[1:], 1000)
    assert len(body) < LIMIT
    status, out = http_post(port, body)
    assert status == 200, out
    assert len(out["forecasts"]) == 1000 * 3 and {f["symbol"] for f in out["forecasts"]} == {f"S{i:04d}" for i in range(1000)}
