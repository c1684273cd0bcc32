"""What the server and a forecast tell a user about an upload: CSV text is read as CSV whatever its first
bytes spell, and a file whose rows the model's validation rules dropped below the minimum says which."""

import gzip

import numpy as np
import pandas as pd
import pytest

from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.inference.forecaster import Forecaster
from test_inference_round14 import _tail, client  # noqa: F401  (client: a fixture)
from test_inference_settled_rows import model_dir  # noqa: F401  (an untrained seeded AEM model: every input shows)


@pytest.mark.parametrize("first", ["PAR1", "BZh_flag"])
def test_csv_text_whose_first_column_spells_a_file_signature_is_forecast(client, model_dir, first):  # noqa: F811
    """An upload is refused as Parquet or bzip2 data by its first bytes only when it is not text, as a data
    file is (the readers look at the signature when the bytes do not decode as UTF-8): a CSV whose first
    column is named "PAR1" is CSV text, forecast as the same rows without that column are; it was a 422
    saying it was a Parquet file. A real compressed upload is still refused."""
    df = _tail("AEM", 200)
    want = Forecaster.from_pretrained(model_dir).predict({"AEM": df})
    body = df.assign(**{first: 1})[[first, *df.columns]].to_csv(index=False).encode()
    assert body.startswith(first.encode())
    r = client.post("/predict/csv", files={"file": ("AEM.csv", body, "text/csv")})
    assert r.status_code == 200, r.text
    got = pd.DataFrame(r.json()["forecasts"])
    assert list(got["forecast_return"]) == pytest.approx(list(want["forecast_return"]), rel=1e-6)
    r = client.post("/predict/csv", files={"file": ("AEM.csv", gzip.compress(body), "text/csv")})
    assert r.status_code == 422 and r.json()["error"].startswith("file AEM.csv: gzip-compressed data"), r.text


def _short_file(tmp_path, symbol: str = "WPM"):
    """A one-symbol CSV file of 200 rows whose first 160 closes are missing: 40 usable rows."""
    df = _tail(symbol, 200)
    df.loc[:159, "close"] = np.nan
    path = tmp_path / f"{symbol}.csv"
    df.to_csv(path, index=False)
    return path, df


def test_a_file_whose_rows_were_dropped_below_the_minimum_says_which_rules_dropped_which_lines(
        tmp_path, client, model_dir):  # noqa: F811
    """A CSV file (or upload) of 200 rows whose closes are missing in 160 of them said "40 usable rows, the
    model needs 53": not that rows were dropped, nor which, nor why, as a frame or a JSON request of the
    same rows now says. The error names the rule and the lines of the file, as ``data check`` does."""
    path, df = _short_file(tmp_path)
    with pytest.raises(DataError) as e:
        Forecaster.from_pretrained(model_dir).predict(str(path))
    text = str(e.value)
    assert text.startswith(f"WPM: 40 usable rows of the 200 in {path}, the model needs "), text
    assert "160 row(s) dropped" in text and "nan_or_inf: lines 2, 3, 4" in text and "\n" not in text, text
    # the server reads an upload strictly (a missing close is refused by its line): dates that cannot be read
    # are dropped there, and the upload was "40 usable rows, the model needs 53"
    up = _tail("AEM", 200).astype({"Date": object})
    up.loc[:159, "Date"] = "2024-13-45"
    r = client.post("/predict/csv", files={"file": ("AEM.csv", up.to_csv(index=False).encode(), "text/csv")})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith("AEM: 40 usable rows of the 200 in file AEM.csv, the model needs "), error
    assert "160 row(s) dropped" in error and "bad_timestamp: lines 2, 3, 4" in error, error
    assert "hftraining-upload" not in error and "\n" not in error, error
    # a frame of the same rows names their positions, as before
    with pytest.raises(DataError, match=r"WPM: 40 usable rows of the 200 given, .*nan_or_inf: positions 0, 1, 2"):
        Forecaster.from_pretrained(model_dir).predict({"WPM": df})


def test_a_midnight_stamp_without_an_offset_among_zoned_hourly_bars_is_refused_as_in_a_file(
        client, model_dir):  # noqa: F811
    """Two-hourly bars around the clock stamped with New York's offset, but for the midnight bars, sent
    without one: JSON reads ``2024-01-02T00:00:00`` as it reads ``2024-01-02``, and a zone-less midnight
    was taken for a date, read as UTC: that bar landed five hours early (19:00 of the day before, between
    its 18:00 and 20:00 neighbours) and the request was forecast. A file or frame of the same stamps is
    refused; so is the request now, naming the first such bar. Daily bars of plain dates beside midnight
    stamps with an offset are still forecast."""
    df = _tail("AEM", 200)
    start = pd.Timestamp("2024-01-01T02:00:00")
    stamps = [start + pd.Timedelta(hours=2 * i) for i in range(len(df))]
    text = [t.isoformat() if t.hour == 0 else f"{t.isoformat()}-05:00" for t in stamps]
    first = next(i for i, t in enumerate(stamps) if t.hour == 0)
    hourly = df.assign(Date=text)
    with pytest.raises(Exception, match="has no zone or UTC offset"):
        Forecaster.from_pretrained(model_dir).predict({"AEM": hourly})
    bars = [{"timestamp": t, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for t, r in zip(text, df.itertuples())]
    r = client.post("/predict", json={"symbols": {"AEM": bars}})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith(f"symbols.AEM[{first}].timestamp: 2024-01-02T00:00:00 has no zone or UTC offset"), error
    for b in bars:  # every bar with its offset: forecast
        b["timestamp"] = b["timestamp"] if b["timestamp"].endswith("-05:00") else b["timestamp"] + "-05:00"
    assert client.post("/predict", json={"symbols": {"AEM": bars}}).status_code == 200
    daily = [{"timestamp": d if i % 2 else f"{d}T00:00:00-05:00", "open": r.open, "high": r.high, "low": r.low,
              "close": r.close, "volume": r.volume} for i, (d, r) in enumerate(zip(df["Date"], df.itertuples()))]
    r = client.post("/predict", json={"symbols": {"AEM": daily}})
    assert r.status_code == 200, r.text
