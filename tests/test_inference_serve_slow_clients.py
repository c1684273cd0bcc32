"""Slow and numerous clients against the real server (``build_server``: uvicorn with the package's
guarded HTTP protocol) on 127.0.0.1: a client sending its headers a byte at a time is disconnected
within ``serve.header_timeout_s``, connections beyond ``serve.max_connections`` are closed at once,
and the server keeps answering."""

import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from hftraining.core.config import ServeConfig  # noqa: E402
from hftraining.inference.serve import build_server  # noqa: E402
from test_inference_serve import _free_port, make_model, serving  # noqa: E402

TIMEOUT = 1.5
MAX_CONNECTIONS = 20


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    d = make_model(tmp_path_factory.mktemp("slow") / "model")
    p = _free_port()
    prepared = build_server(d, ServeConfig(port=p, header_timeout_s=TIMEOUT, max_connections=MAX_CONNECTIONS))
    with serving(prepared.server):
        yield p

def _closed_after(sock: socket.socket, drip: bytes, every: float, limit: float) -> float | None:
    """Send ``drip`` a byte every ``every`` seconds until the server closes the connection; the
    seconds that took, or None if it was still open after ``limit``."""
    t0 = time.monotonic()
    sock.settimeout(every)
    for i in range(10_000):
        if time.monotonic() - t0 > limit:
            return None
        try:
            sock.send(drip[i % len(drip): i % len(drip) + 1])
            if sock.recv(1) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:  # reset or broken pipe: closed
            return time.monotonic() - t0
    return None


def test_a_client_sending_its_headers_a_byte_at_a_time_is_disconnected(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        took = _closed_after(s, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000, 0.25, TIMEOUT + 10)
    assert took is not None and took < TIMEOUT + 2, took
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200


def test_a_kept_alive_connection_gets_a_new_deadline_after_each_response(port):
    """The first request comes 0.6 × TIMEOUT after the connection opened, so a deadline left where
    the connection's was (not renewed after the response) would close it 0.4 × TIMEOUT after the
    response; renewed, the slow second head is cut a whole TIMEOUT after the response (``took`` is
    measured from the moment the response was read)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        time.sleep(0.6 * TIMEOUT)  # well inside the first head's deadline
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        took = _closed_after(s, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000, 0.25, TIMEOUT + 10)
    # a closed connection is seen at once (recv returns b"" as the FIN arrives, not after the 0.25 s
    # drip), so ``took`` is the deadline's distance from the response less the response's delivery
    assert took is not None and TIMEOUT - 0.5 < took < TIMEOUT + 2, took


def test_connections_beyond_the_cap_are_closed_and_the_server_recovers(port):
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        time.sleep(0.5)
        closed = 0
        for s in socks:
            s.settimeout(0.2)
            try:
                closed += s.recv(1) == b""
            except socket.timeout:
                pass
            except OSError:
                closed += 1
        assert closed >= 10, closed  # the ones over the cap at once (the server's own checks may count one more)
        time.sleep(TIMEOUT + 1)  # the idle ones reach their header deadline
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        for s in socks:
            s.close()
