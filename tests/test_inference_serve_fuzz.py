"""Schema fuzz of ``POST /predict`` and ``POST /predict/csv`` (hypothesis, bounded and derandomized):
requests drawn from the server's own ``/openapi.json`` and mutations of a valid request (wrong types,
NaN/Inf, huge numbers, timestamps in year 9999, empty lists, unicode symbols, missing fields, broken
JSON and CSV). No request may get a 5xx, every 4xx names its error, and ``/health`` still answers.
Each test prints its counts (``pytest -s``)."""

import collections
import json
import math
import os

import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hftraining.core.config import ServeConfig  # noqa: E402
from hftraining.data.io import sample_data_dir  # noqa: E402
from hftraining.inference.serve import create_app  # noqa: E402
from test_inference_serve import make_model  # noqa: E402

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    d = make_model(tmp_path_factory.mktemp("fuzz") / "model")
    with TestClient(create_app(d, ServeConfig(max_body_bytes=1 << 20)), raise_server_exceptions=False) as c:
        yield c
        assert c.get("/health").json() == {"status": "ok"}


@pytest.fixture(scope="module")
def spec(client):
    return client.get("/openapi.json").json()


BASE = pd.read_csv(sample_data_dir() / "AEM.csv").tail(80)
ROWS = [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
        for r in BASE.itertuples()]
FIELDS = ["timestamp", "open", "high", "low", "close", "volume"]

nasty_numbers = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-320, 0.0, -0.0, -1.0, 10**40, -(10**40),
                                 2**63, 2**64 + 1]) | st.floats() | st.integers()
nasty_timestamps = st.sampled_from([
    "9999-12-31T23:59:59", "0001-01-01", "2262-04-12", "1677-09-21", "2020-13-45", "2020-02-30", "", "now", "２０２０-01-01",
    "2020-01-01T00:00:00+25:00", 253402300800, -62135596800, 10**20, -(10**20), 1e300, math.nan, math.inf, 0, 20200101, 99999999,
    1.5e12, True, None, [], {}]) | st.datetimes().map(lambda t: t.isoformat())
nasty_values = nasty_numbers | nasty_timestamps | st.text(max_size=20) | st.none() | st.booleans() | st.just([]) | st.just({})
valid_symbols = st.sampled_from(["AEM", "BRK.B", "^GSPC", "EURUSD=X", "A" * 64]) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-^=]{0,12}", fullmatch=True)
symbols = valid_symbols | st.text(max_size=70) | st.sampled_from(["", " ", "A" * 65, "AEM\n", "../etc/passwd", "a/b", "ÆØÅ", "😀"])


class Counts:
    def __init__(self, name: str):
        self.name, self.by_class = name, collections.Counter()

    def record(self, r) -> None:
        self.by_class[f"{r.status_code // 100}xx"] += 1
        if os.environ.get("FUZZ_SHOW_ERRORS") and r.status_code >= 400:
            print(r.status_code, r.text[:160])
        assert r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
        if r.status_code >= 400:
            assert isinstance(r.json().get("error"), str) and r.json()["error"], r.text[:500]

    def report(self) -> str:
        n = sum(self.by_class.values())
        line = (f"fuzz {self.name}: {n} examples, 2xx {self.by_class['2xx']}, 4xx {self.by_class['4xx']}, "
                f"5xx {self.by_class['5xx']}")
        print(line)
        return line


def from_schema(schema: dict, spec: dict, rows=(0, 4)) -> st.SearchStrategy:
    """A hypothesis strategy of JSON values conforming to an OpenAPI ``schema`` (the subset FastAPI writes)."""
    if "$ref" in schema:
        return from_schema(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], spec, rows)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, spec, rows) for s in schema["anyOf"]])
    t = schema.get("type")
    if t == "object":
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", ()))
            return st.fixed_dictionaries({k: from_schema(v, spec, rows) for k, v in props.items() if k in required},
                                         optional={k: from_schema(v, spec, rows) for k, v in props.items() if k not in required})
        values = from_schema(schema.get("additionalProperties", {}), spec, rows)
        return st.dictionaries(symbols, values, min_size=schema.get("minProperties", 0),
                               max_size=min(schema.get("maxProperties", 3), 3))
    if t == "array":
        return st.lists(from_schema(schema["items"], spec, rows), min_size=rows[0], max_size=rows[1])
    if t == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6) | st.floats(0.01, 1e4)
    if t == "integer":
        return st.integers()
    if t == "string":
        if schema.get("format") == "date-time":
            return st.datetimes().map(lambda t: t.isoformat())
        return st.text(max_size=30)
    if t == "null":
        return st.none()
    return st.nothing()


def _post_json(client, body, raw: bytes | None = None):
    content = raw if raw is not None else json.dumps(body).encode()  # json.dumps writes NaN/Infinity as such
    return client.post("/predict", content=content, headers={"content-type": "application/json"})


def test_predict_fuzzed_from_the_openapi_schema(client, spec):
    counts = Counts("/predict from /openapi.json")
    req = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    short = from_schema(req, spec)  # whole requests from the schema: too few rows for the model, so validation
    bar = from_schema({"$ref": "#/components/schemas/Bar"}, spec)  # schema-valid rows, arbitrary values

    @st.composite
    def long(draw):  # the valid request with a few of its rows drawn from the schema: validation, features, model
        rows = list(ROWS)
        for _ in range(draw(st.integers(1, 4))):
            rows[draw(st.integers(0, len(rows) - 1))] = draw(bar)
        return {"symbols": {draw(valid_symbols): rows}}

    @FUZZ
    @given(body=short | long())
    def run(body):
        counts.record(_post_json(client, body))

    run()
    counts.report()
    assert client.get("/health").status_code == 200


@st.composite
def mutated_request(draw):
    rows = [dict(r) for r in ROWS]
    body: object = {"symbols": {"AEM": rows}}
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["value", "timestamp", "drop_field", "extra_field", "cut_rows", "shuffle",
                                   "symbol", "symbols_value", "top", "mix_timestamps", "empty_rows"]))
        i = draw(st.integers(0, len(rows) - 1)) if rows else 0
        if op == "value" and rows:
            rows[i][draw(st.sampled_from(FIELDS))] = draw(nasty_values)
        elif op == "timestamp" and rows:
            for j in range(i, min(len(rows), i + draw(st.integers(1, 80)))):
                rows[j]["timestamp"] = draw(nasty_timestamps)
        elif op == "drop_field" and rows:
            rows[i].pop(draw(st.sampled_from(FIELDS)), None)
        elif op == "extra_field" and rows:
            rows[i][draw(st.text(max_size=10))] = draw(nasty_values)
        elif op == "cut_rows":
            del rows[draw(st.integers(0, len(rows))):]
        elif op == "shuffle":
            rows[:] = draw(st.permutations(rows))
        elif op == "symbol" and isinstance(body, dict) and isinstance(body.get("symbols"), dict):
            body["symbols"] = {draw(symbols): rows}
        elif op == "symbols_value":
            body = {"symbols": draw(st.sampled_from([{}, [], None, "AEM", 1, {"AEM": None}, {"AEM": {}}, {"AEM": [[]]}]))}
        elif op == "top":
            body = draw(st.sampled_from([[], "x", 1, None, {}, {"symbols": {"AEM": rows}, "extra": 1}]))
        elif op == "mix_timestamps" and rows:
            rows[i]["timestamp"] = 1577836800 + i * 86400
        elif op == "empty_rows":
            rows.clear()
    return body


def test_predict_fuzzed_by_mutating_a_valid_request(client):
    counts = Counts("/predict mutations")

    @FUZZ
    @given(body=mutated_request(), text=st.sampled_from(["as is"] * 8 + ["cut", "junk"]), at=st.integers(0, 20_000),
           junk=st.binary(min_size=1, max_size=20))
    def run(body, text, at, junk):
        raw = json.dumps(body).encode()
        if text == "cut":  # broken JSON text
            raw = raw[:at]
        elif text == "junk":  # bytes that are not JSON, or not UTF-8
            raw = raw[: at % (len(raw) + 1)] + junk + raw[at % (len(raw) + 1):]
        counts.record(_post_json(client, None, raw))

    run()
    counts.report()
    assert _post_json(client, {"symbols": {"AEM": ROWS}}).status_code == 200  # and it still predicts


CSV = BASE.rename(columns={"Date": "timestamp"})


@st.composite
def mutated_csv(draw):
    df = CSV.copy()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cell", "drop_column", "rename_column", "cut_rows", "dates", "symbol_column", "shuffle"]))
        if op == "cell" and len(df):
            col = draw(st.sampled_from(list(df.columns)))
            df[col] = df[col].astype(object)
            df.iloc[draw(st.integers(0, len(df) - 1)), list(df.columns).index(col)] = str(draw(nasty_values))
        elif op == "drop_column" and len(df.columns) > 1:
            df = df.drop(columns=draw(st.sampled_from(list(df.columns))))
        elif op == "rename_column":
            df = df.rename(columns={draw(st.sampled_from(list(df.columns))): draw(st.text(max_size=12))})
        elif op == "cut_rows":
            df = df.iloc[: draw(st.integers(0, len(df)))]
        elif op == "dates" and len(df) and "timestamp" in df:
            df["timestamp"] = draw(st.sampled_from(["9999-12-31", "0001-01-01", "x", "", "2020-02-30"]))
        elif op == "symbol_column":
            df["symbol"] = draw(symbols) if draw(st.booleans()) else [f"S{k % 3}" for k in range(len(df))]
        elif op == "shuffle":
            df = df.sample(frac=1.0, random_state=draw(st.integers(0, 1000)))
    return df.to_csv(index=False).encode()


def test_predict_csv_fuzzed(client, spec):
    counts = Counts("/predict/csv")
    form = spec["components"]["schemas"]["Body_predict_csv_predict_csv_post"]["properties"]
    assert set(form) == {"file", "symbol"}  # the fuzz covers every field of the form

    @FUZZ
    @given(data=mutated_csv() | st.binary(max_size=300) | st.sampled_from([b"", b"\xef\xbb\xbf", b"timestamp,close\n", b"\x00" * 50]),
           symbol=st.none() | valid_symbols | symbols, filename=st.sampled_from(["AEM.csv", "", "x.parquet", "😀.csv", "../../a.csv", "a" * 300]))
    def run(data, symbol, filename):  # symbol: the form field; None leaves it out
        form_data = {"symbol": symbol} if symbol is not None else {}
        counts.record(client.post("/predict/csv", files={"file": (filename, data, "text/csv")}, data=form_data))

    run()
    counts.report()
    assert client.get("/health").status_code == 200
