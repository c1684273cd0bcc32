"""The path to production: what a user gets from the server, predict and export is what evaluation scored,
and input the server cannot read is a one-line 4xx naming it."""

import gzip

import pandas as pd
import pytest

from hftraining.data.io import sample_data_dir
from hftraining.inference.forecaster import Forecaster
from test_inference_settled_rows import model_dir  # noqa: F401  (an untrained seeded AEM model: every input shows)


def _tail(symbol: str, n: int) -> pd.DataFrame:
    return pd.read_csv(sample_data_dir() / f"{symbol}.csv").tail(n).reset_index(drop=True)


@pytest.fixture(scope="module")
def client(model_dir):  # noqa: F811
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.core.config import ServeConfig
    from hftraining.inference.serve import create_app

    with TestClient(create_app(model_dir, ServeConfig()), raise_server_exceptions=False) as c:
        yield c


def test_an_upload_named_like_a_compressed_file_is_forecast_under_its_symbol(client, model_dir):  # noqa: F811
    """An upload's symbol is its file name without its extensions, as a data folder's file's is:
    AEM.csv.gz is AEM (it was "AEM.csv", a symbol the user never named)."""
    df = _tail("AEM", 200)
    want = Forecaster.from_pretrained(model_dir).predict({"AEM": df})
    for name in ("AEM.csv.gz", "AEM.csv.zst", "AEM.csv"):
        r = client.post("/predict/csv", files={"file": (name, df.to_csv(index=False).encode(), "text/csv")})
        assert r.status_code == 200, r.text
        got = pd.DataFrame(r.json()["forecasts"])
        assert set(got["symbol"]) == {"AEM"}, (name, set(got["symbol"]))
        assert list(got["forecast_return"]) == pytest.approx(list(want["forecast_return"]), rel=1e-6)


@pytest.mark.parametrize("name", ["AEM.csv", "AEM.csv.gz"])
def test_a_compressed_upload_is_a_422_saying_to_upload_it_uncompressed(client, name):
    """A gzip-compressed upload is read as CSV text whatever its name: the reader's advice ("name it
    .csv.gz") sent the user round in a circle, as an upload named so got the same answer. The 422 names
    the upload and says what to send; the server keeps serving."""
    data = gzip.compress(_tail("AEM", 200).to_csv(index=False).encode())
    r = client.post("/predict/csv", files={"file": (name, data, "text/csv")})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith(f"file {name}: gzip-compressed data") and "uncompressed" in error, error
    assert "name it" not in error and "\n" not in error, error
    assert client.get("/health").status_code == 200


def _bars(df: pd.DataFrame) -> list[dict]:
    return [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for r in df.itertuples()]


def test_stamps_with_and_without_an_offset_are_refused_in_a_request_as_in_an_upload(client, model_dir):  # noqa: F811
    """Bars whose times of day are written with a UTC offset and without, mixed in one symbol's rows, are
    refused by the CSV upload, a file and a frame (a zone-less 09:30 beside New York offsets would be
    read as UTC, five hours before its neighbours); a JSON body of the same rows was forecast, reading them
    so. Now a 422 naming the field, as the other paths; plain dates beside zoned stamps still forecast."""
    df = _tail("AEM", 200)
    mixed = df.assign(Date=[f"{d}T14:30:00-05:00" if i % 2 else f"{d}T09:30:00" for i, d in enumerate(df["Date"])])
    with pytest.raises(Exception, match="has no zone or UTC offset"):
        Forecaster.from_pretrained(model_dir).predict({"AEM": mixed})
    r = client.post("/predict/csv", files={"file": ("AEM.csv", mixed.to_csv(index=False).encode(), "text/csv")})
    assert r.status_code == 422 and "has no zone or UTC offset" in r.json()["error"], r.text
    r = client.post("/predict", json={"symbols": {"AEM": _bars(mixed)}})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith("symbols.AEM[0].timestamp: 2025-") and "symbols.AEM[1].timestamp" in error, error
    assert "has no zone or UTC offset" in error and "\n" not in error, error
    dates = df.assign(Date=[f"{d}T00:00:00+00:00" if i % 2 else d for i, d in enumerate(df["Date"])])
    r = client.post("/predict", json={"symbols": {"AEM": _bars(dates)}})
    assert r.status_code == 200, r.text
    want = Forecaster.from_pretrained(model_dir).predict({"AEM": df})
    assert list(pd.DataFrame(r.json()["forecasts"])["forecast_return"]) == pytest.approx(list(want["forecast_return"]), rel=1e-6)


def test_a_request_whose_rows_were_dropped_below_the_minimum_says_which_rules_dropped_which(client, model_dir):  # noqa: F811
    """A request of 200 rows whose timestamps cannot be dates (epoch numbers past the year 2262) was a 422
    saying "0 usable rows, the model needs 53": the rows sent, and why none was usable, went unsaid (a
    file's symbol says both). Now the error names the rule and the positions, for a frame as for a request."""
    df = _tail("AEM", 200)
    bars = _bars(df)
    for i, bar in enumerate(bars):
        bar["timestamp"] = 10**25 + i if i < 160 else 1_600_000_000 + i * 86400
    r = client.post("/predict", json={"symbols": {"AEM": bars}})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith("AEM: 40 usable rows of the 200 given, the model needs "), error
    assert "160 row(s) dropped" in error and "bad_timestamp: positions 0, 1, 2" in error, error
    with pytest.raises(Exception, match=r"AEM: 0 usable rows of the 200 given.*nan_or_inf: positions 0, 1"):
        Forecaster.from_pretrained(model_dir).predict({"AEM": df.assign(close=float("nan"))})
    r = client.post("/predict", json={"symbols": {"AEM": _bars(df.tail(10))}})  # nothing dropped: as before
    assert r.status_code == 422 and r.json()["error"].startswith("AEM: 10 usable rows, the model needs "), r.text


def test_a_timestamp_of_another_kind_than_the_others_is_named_by_its_row(client):
    """One timestamp sent as a number among dates was "symbols.AEM: timestamps mix text and numbers",
    leaving the user to search every row; the 422 names the row."""
    bars = _bars(_tail("AEM", 200))
    bars[137]["timestamp"] = 1_700_000_000
    r = client.post("/predict", json={"symbols": {"AEM": bars}})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("symbols.AEM[137].timestamp: a number, but symbols.AEM[0].timestamp is a date"), r.text
