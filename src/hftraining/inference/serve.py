"""Forecasting server (the ``serve`` extra): ``hftraining serve MODEL_DIR [--host 127.0.0.1] [--port 8000]``.

Endpoints (the OpenAPI schema is at ``/openapi.json``, the interactive docs at ``/docs``):

    GET  /health        {"status": "ok"}
    GET  /model         the model's config, preprocessing and training metrics
    POST /predict       JSON {"symbols": {"AEM": [{"timestamp", "open", "high", "low", "close", "volume"}, ...]}}
    POST /predict/csv   multipart upload: ``file`` (CSV; one symbol, or a ``symbol`` column) and ``symbol``

Both predict endpoints answer ``{"forecasts": [row, ...]}`` with the rows of
:meth:`Forecaster.predict` (symbol, as_of, step, forecast_return, ..., quantiles, probabilities).
The rows go through exactly the validation and features of training. Bad input is a 4xx whose
``error`` names the field (``symbols.AEM[3].close: Input should be a finite number``); a body larger
than ``--max-body-bytes`` is a 413. A failing request never stops the server.
"""


import json
import logging
import re
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import numpy as np
import pandas as pd

from hftraining.core.config import ServeConfig
from hftraining.core.errors import UserError
from hftraining.core.jsonio import dumps, json_safe
from hftraining.inference.folders import ENSEMBLE_NAME, is_ensemble
from hftraining.inference.forecaster import Forecaster
from hftraining.models.outputs import CLASS_NAMES

log = logging.getLogger("hftraining.serve")

TS_MIN = pd.Timestamp.min.ceil("us").to_pydatetime()  # the nanosecond range of pandas, as datetimes
TS_MAX = pd.Timestamp.max.floor("us").to_pydatetime()
SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-^=]{0,63}$")


def _require():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("serve needs FastAPI and uvicorn: pip install 'hftraining[serve]'") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def model_info(fc) -> dict[str, Any]:
    """What ``GET /model`` answers: config, preprocessing summary and training metrics."""
    d = Path(fc.model_dir) if fc.model_dir else None
    pre = fc.preprocessing
    info: dict[str, Any] = {
        "model_dir": str(d) if d else None,
        "kind": "ensemble" if hasattr(fc.model, "members") else "model",
        "preprocessing": {"features": pre.features, "feature_columns": pre.feature_columns,
                          "sequence_length": pre.seq_len, "horizon": pre.horizon, "target_scale": pre.target_scale},
        "min_rows": fc.min_rows(),
        "quantile_levels": fc.quantile_levels,
        "classes": list(CLASS_NAMES) if fc.has_classes else [],
    }
    if d is None:
        return json_safe(info)
    if is_ensemble(d):
        info["ensemble"] = _read_json(d / ENSEMBLE_NAME)
        info["config"] = _read_json(d / info["ensemble"]["members"][0] / "config.json")
    else:
        info["config"] = _read_json(d / "config.json")
    run = d.parent  # a run folder's final/ or ensemble/
    metrics: dict[str, Any] = {}
    if (run / "eval.json").exists():
        ev = _read_json(run / "eval.json") or {}
        metrics["test"] = {k: ev.get(k) for k in ("split", "step", "n_windows", "horizon", "model", "mse_vs_zero", "verdict") if k in ev}
    if (run / "metrics.jsonl").exists():
        evals = [r for r in map(json.loads, filter(str.strip, (run / "metrics.jsonl").read_text().splitlines())) if "eval_mse" in r]
        if evals:
            metrics["validation"] = evals[-1]
    if (run / "config.json").exists():
        info["run_config"] = _read_json(run / "config.json")
    info["training_metrics"] = metrics
    return json_safe(info)


def _loc(loc: tuple | list) -> str:
    """("body", "symbols", "AEM", 3, "close") → "symbols.AEM[3].close"."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def create_app(model_dir: str | Path, cfg: ServeConfig | None = None):
    """The FastAPI application serving ``model_dir`` (a run, model or ensemble folder) with the
    limits of ``cfg`` (default: the ``serve`` section's defaults)."""
    _require()
    cfg = cfg or ServeConfig()
    max_body_bytes, max_symbols = cfg.max_body_bytes, cfg.max_symbols
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

    fc = Forecaster.from_pretrained(model_dir)
    info = model_info(fc)
    Price = Annotated[float, Field(strict=True, allow_inf_nan=False)]

    class Bar(BaseModel):
        """One OHLCV row. ``open``/``high``/``low`` may be left out (the bar is then the close, as in training)."""

        model_config = ConfigDict(extra="forbid")
        timestamp: Union[datetime, int, float] = Field(description="ISO 8601 (UTC when no offset) or Unix epoch seconds")
        open: Optional[Price] = None
        high: Optional[Price] = None
        low: Optional[Price] = None
        close: Price
        volume: Price

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        symbols: dict[str, list[Bar]] = Field(
            description=f"recent rows per symbol, oldest first; each symbol needs at least {info['min_rows']} rows",
            min_length=1, max_length=max_symbols,
        )

    class PredictResponse(BaseModel):
        forecasts: list[dict[str, Any]]

    app = FastAPI(title="hftraining forecaster", version="1",
                  description=f"Forecasts of the next {fc.preprocessing.horizon} log returns per symbol from recent OHLCV rows.")
    app.state.forecaster = fc
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": ("body",), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            pos = next((p for p in first.get("loc", ())[1:] if isinstance(p, int)), None)
            msg = "body: not valid JSON" + (f" (at character {pos})" if pos is not None else "")
        else:
            msg = f"{_loc(first.get('loc', ()))}: {first.get('msg', 'invalid')}"
        detail = [{k: v for k, v in e.items() if k != "input"} for e in errs[:10]]  # bounded: no echo of the body
        return JSONResponse({"error": msg, "detail": json_safe(jsonable(detail)), "n_errors": len(errs)}, status_code=422)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the request was not served"}, status_code=500)

    def table_response(table: pd.DataFrame) -> dict[str, Any]:
        out = table.copy()
        out["as_of"] = out["as_of"].map(lambda t: t.isoformat())
        return {"forecasts": json_safe(out.to_dict(orient="records"))}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return info

    @app.post("/predict", response_model=PredictResponse)
    def predict(req: PredictRequest) -> dict[str, Any]:
        frames = {}
        for sym, bars in req.symbols.items():
            if not SYMBOL.match(sym):
                raise UserError(f"symbols.{sym}: not a symbol name (letters, digits and . _ - ^ =, at most 64)")
            if not bars:
                raise UserError(f"symbols.{sym}: no rows (at least {info['min_rows']} needed)")
            cols: dict[str, list] = {"timestamp": [], "close": [], "volume": []}
            has = {k: any(getattr(b, k) is not None for b in bars) for k in ("open", "high", "low")}
            for k, present in has.items():
                if present:
                    missing = next((i for i, b in enumerate(bars) if getattr(b, k) is None), None)
                    if missing is not None:
                        raise UserError(f"symbols.{sym}[{missing}].{k}: missing (other rows have it)")
                    cols[k] = []
            for b in bars:
                for k in cols:
                    cols[k].append(getattr(b, k))
            ts = cols["timestamp"]
            if all(isinstance(t, datetime) for t in ts):
                for i, t in enumerate(ts):  # pandas holds nanoseconds: 1677-09-22 .. 2262-04-11
                    utc = t if t.tzinfo is None else t.astimezone(timezone.utc).replace(tzinfo=None)
                    if not TS_MIN <= utc <= TS_MAX:
                        raise UserError(f"symbols.{sym}[{i}].timestamp: {t.isoformat()} is outside the supported "
                                        f"range {TS_MIN:%Y-%m-%d} .. {TS_MAX:%Y-%m-%d}")
                cols["timestamp"] = pd.to_datetime(ts, utc=True)
            elif all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts):
                cols["timestamp"] = np.asarray(ts, dtype=np.float64)
            else:
                raise UserError(f"symbols.{sym}: timestamps mix text and numbers")
            frames[sym] = pd.DataFrame(cols)
        return table_response(fc.predict(frames, strict=True))

    @app.post("/predict/csv", response_model=PredictResponse)
    async def predict_csv(file: UploadFile = File(..., description="CSV of OHLCV rows"),
                          symbol: Optional[str] = Form(None, description="symbol of a one-symbol file")) -> dict[str, Any]:
        name = symbol or Path(file.filename or "upload").stem
        if not SYMBOL.match(name):
            raise UserError(f"symbol: {name!r} is not a symbol name (letters, digits and . _ - ^ =, at most 64)")
        data = await file.read()
        with tempfile.TemporaryDirectory(prefix="hftraining-upload-") as tmp:
            path = Path(tmp) / f"{name}.csv"
            path.write_bytes(data)
            try:
                table = fc.predict(str(path), strict=True)
            except UserError as e:  # name the upload, not the temporary file
                raise UserError(str(e).replace(str(path), f"file {file.filename or name}")) from None
        return table_response(table)

    return app


class BodyLimit:
    """ASGI middleware: read a request body of at most ``limit`` bytes (413 beyond, before anything
    parses it), then hand it to the application in one piece."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def _reject(self, send, text: str) -> None:
        body = dumps({"error": text}, indent=None).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send, f"request body: {int(declared)} bytes exceeds the limit of {self.limit} (--max-body-bytes)")
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._reject(send, f"request body: more than {self.limit} bytes (--max-body-bytes)")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)


def jsonable(obj: Any) -> Any:
    """Pydantic error entries → JSON (their ``ctx`` may hold exceptions)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if k != "url"}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _check_port(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, *_rest, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise UserError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror})") from None


def serve(model_dir: str | Path, cfg: ServeConfig | None = None) -> None:
    """Run the server of ``model_dir`` with the ``serve`` section ``cfg`` until interrupted."""
    _require()
    import uvicorn

    cfg = cfg or ServeConfig()
    app = create_app(model_dir, cfg)
    _check_port(cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", access_log=False)
