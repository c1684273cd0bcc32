"""The server's plain ASGI middlewares (no FastAPI needed): the access log, the API key and the body
limit, and the one way all of them refuse a request (:func:`reject`).

A refusal sent while the client is still sending its body must not reset the connection: closing a
socket with unread data makes the kernel answer with a TCP reset, and a client that sends its whole
body before it reads (``http.client``, ``requests``, most SDKs) then sees "connection reset" instead
of the 413. So :func:`reject` first reads and discards the rest of the body, up to
:data:`DRAIN_MAX_BYTES` and the request timeout, and only then answers; a body beyond that bound is
answered with ``Connection: close`` at once (the one case where a client may still see a reset).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable

log = logging.getLogger("hftraining.serve")

DRAIN_MAX_BYTES = 64 * 1024 * 1024
"""Most bytes of a refused request's body read and discarded before the answer (see the module doc)."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v
    return None


def _has_body(scope: Scope) -> bool:
    declared = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (declared is not None and declared.strip() not in (b"", b"0"))


async def drain(scope: Scope, receive: Receive, seen: int, timeout_s: float) -> bool:
    """Read and discard the rest of the request body (``seen`` bytes of it already read). True when
    it ended within :data:`DRAIN_MAX_BYTES` and ``timeout_s``; False when the connection must close."""
    if not _has_body(scope):
        return True
    if (_header(scope, b"expect") or b"").lower() == b"100-continue":
        return False  # the client waits for our answer before it sends: do not invite the body
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_MAX_BYTES:
        return False
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return False
                seen += len(msg.get("body", b""))
                if not msg.get("more_body", False):
                    return True
                if seen > DRAIN_MAX_BYTES:
                    return False
    except TimeoutError:
        return False


async def reject(scope: Scope, receive: Receive | None, send: Send, status: int, error: str, *,
                 headers: Iterable[tuple[bytes, bytes]] = (), seen: int = 0, complete: bool = False,
                 timeout_s: float = 30.0) -> None:
    """Answer ``status`` with ``{"error": error}`` after draining the body (``seen`` bytes of it read
    already; ``complete``: all of it). ``receive`` None: do not read it, close the connection instead."""
    drained = complete or (receive is not None and await drain(scope, receive, seen, timeout_s))
    body = json.dumps({"error": error}).encode()
    out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    if not drained:
        out.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One JSON line per request on the ``hftraining.serve`` logger (INFO): time, client, method, path
    (no query string), status, duration_ms, bytes (of the response body). Headers are never logged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            return await self.app(scope, receive, send)
        t0, status, nbytes = time.perf_counter(), None, 0

        async def counting_send(msg: dict[str, Any]) -> None:
            nonlocal status, nbytes
            if msg["type"] == "http.response.start":
                status = msg["status"]
            elif msg["type"] == "http.response.body":
                nbytes += len(msg.get("body", b""))
            await send(msg)

        failed = True
        try:
            await self.app(scope, receive, counting_send)
            failed = False
        finally:
            client = scope.get("client")
            log.info(json.dumps({
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "client": client[0] if client else None,
                "method": scope["method"],
                "path": scope["path"][:512],
                "status": status if status is not None else (500 if failed else None),
                "duration_ms": round((time.perf_counter() - t0) * 1e3, 3),
                "bytes": nbytes,
            }))


def _bearer(scope: Scope) -> tuple[bytes, bytes]:
    """The scheme and token of the request's ``Authorization`` header (empty when it has none)."""
    scheme, _, token = (_header(scope, b"authorization") or b"").strip().partition(b" ")
    return scheme, token.strip()


def has_key(scope: Scope, key: bytes) -> bool:
    """Whether the request carries ``Authorization: Bearer <key>`` (the scheme in any case; compared in
    constant time)."""
    scheme, token = _bearer(scope)
    return scheme.lower() == b"bearer" and bool(token) and hmac.compare_digest(token, key)


class ApiKey:
    """Every request needs ``Authorization: Bearer <key>`` (compared in constant time: :func:`has_key`), but a
    GET or HEAD of one of ``open_paths`` (exact paths: the probes ``/health`` and ``/ready`` and the API's
    description, see :func:`hftraining.inference.serve.create_app`); else 401 with ``WWW-Authenticate: Bearer``."""

    def __init__(self, app, key: str, timeout_s: float, open_paths: Iterable[str]):
        self.app, self.key, self.timeout_s = app, key.encode(), timeout_s
        self.open = {(method, path) for path in open_paths for method in ("GET", "HEAD")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.open:
            return await self.app(scope, receive, send)
        if has_key(scope, self.key):
            return await self.app(scope, receive, send)
        if _bearer(scope)[0]:
            error, challenge = "unauthorized: wrong API key", b'Bearer error="invalid_token"'
        else:
            error, challenge = "unauthorized: send the API key as 'Authorization: Bearer <key>'", b"Bearer"
        await reject(scope, receive, send, 401, error, headers=[(b"www-authenticate", challenge)], timeout_s=self.timeout_s)


class BodyLimit:
    """Read a request body of at most ``limit`` bytes within ``timeout_s`` (413 beyond the size, 408
    beyond the time, before anything parses it), then hand it to the application in one piece."""

    def __init__(self, app, limit: int, timeout_s: float):
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):  # any method: a GET may carry a body too
            return await self.app(scope, receive, send)
        key = "(serve.max_body_bytes, --max-body-bytes)"
        declared = (_header(scope, b"content-length") or b"").strip()
        if declared.isdigit() and int(declared) > self.limit:
            return await reject(scope, receive, send, 413, f"request body: {int(declared)} bytes exceeds the limit of "
                                f"{self.limit} bytes {key}", timeout_s=self.timeout_s)
        chunks, size, more = [], 0, True
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    chunk, more = msg.get("body", b""), msg.get("more_body", False)
                    size += len(chunk)
                    if size > self.limit:
                        break
                    chunks.append(chunk)
                    if not more:
                        break
        except TimeoutError:
            return await reject(scope, None, send, 408, f"request body: not received within {self.timeout_s:g} s "
                                "(serve.request_timeout_s, --request-timeout)")
        if size > self.limit:
            return await reject(scope, receive, send, 413, f"request body: more than the limit of {self.limit} bytes {key}",
                                seen=size, complete=not more, timeout_s=self.timeout_s)
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)
