"""The same rows give the same forecasts and name the same rows wherever they are sent: `hftraining
predict` (a CSV file), ``Forecaster.predict`` (a DataFrame, long or per symbol) and the server (a JSON
body, a CSV upload). A row is named where the user can find it (a file's line, a frame's position, a
request's ``symbols.SYM[i]``), and an input the model cannot read is an error naming the symbol, never
a "broken model folder"."""

import json

import numpy as np
import pandas as pd
import pytest

from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.inference.forecaster import Forecaster
from test_inference_settled_rows import model_dir  # noqa: F401  (an untrained seeded AEM model: every input shows)


def _tail(symbol: str, n: int) -> pd.DataFrame:
    return pd.read_csv(sample_data_dir() / f"{symbol}.csv").tail(n).reset_index(drop=True).astype({"volume": float})


def _bars(df: pd.DataFrame) -> list[dict]:
    return [{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
            for r in df.itertuples()]


def _long_panel() -> pd.DataFrame:
    """AEM and WPM in one long frame, interleaved by date (as a panel is usually held)."""
    both = [_tail(s, 100).assign(symbol=s) for s in ("AEM", "WPM")]
    return pd.concat(both).sort_values(["Date", "symbol"], kind="stable").reset_index(drop=True)


def test_a_row_of_a_long_frame_is_named_by_its_position_in_the_frame(model_dir):
    """A long frame's dropped row is named by its position in the frame given (its 0-based row, as
    the frame's own ``iloc`` and the warning's "position" say), not by its rank among its symbol's rows."""
    fc = Forecaster.from_pretrained(model_dir)
    panel = _long_panel()
    bad = int(panel.index[panel["symbol"] == "WPM"][-3])  # a WPM row near the end: half the frame's rows are AEM's
    panel.loc[bad, "volume"] = np.nan
    said: list[str] = []
    table = fc.predict(panel, warnings=said)
    dropped = [w for w in said if "dropped" in w]
    assert len(dropped) == 1 and dropped[0].startswith("WPM: 1 row(s) dropped"), said
    assert f"nan_or_inf: position {bad}" in dropped[0], (bad, dropped[0])
    # the same rows as a CSV file: the line of that row, and the same forecasts
    per_file: list[str] = []
    path = model_dir.parent / "panel.csv"
    panel.to_csv(path, index=False)
    from_file = fc.predict(str(path), warnings=per_file)
    assert f"nan_or_inf: line {bad + 2}" in next(w for w in per_file if "dropped" in w)  # the header is line 1
    np.testing.assert_array_equal(table["forecast_return"], from_file["forecast_return"])
    # an error names the frame's position too (strict: a row training would drop is an error)
    with pytest.raises(DataError, match=rf"^WPM: row {bad}: nan or inf"):
        fc.predict(panel, strict=True)


def test_a_price_that_overflows_the_model_s_float32_input_is_an_error_naming_the_symbol(model_dir):
    """Prices finite in float64 whose features overflow float32 (every other close 1e-300): an error
    naming the symbol and the feature, not a NaN forecast blamed on the model's weights."""
    fc = Forecaster.from_pretrained(model_dir)
    df = _tail("AEM", 80)
    df.loc[::2, ["open", "high", "low", "close"]] = 1e-300
    with pytest.raises(DataError) as e:
        with np.errstate(all="ignore"):
            fc.predict({"AEM": df})
    msg = str(e.value)
    assert msg.startswith("AEM: ") and "float32" in msg and "\n" not in msg, msg
    assert "weights" not in msg and str(model_dir) not in msg, msg
    assert fc.predict({"AEM": _tail("AEM", 80)})["forecast_return"].notna().all()  # the model itself is fine


def test_the_same_rows_give_the_same_forecasts_and_name_the_same_row_on_every_path(model_dir, tmp_path, capsys):
    """Rows a little out of order, a bar whose high is below its close (clipped, as in training) and a
    typo'd year on the last row (dropped): the CLI, the Python API and both server endpoints forecast
    the same numbers from the same as_of and each names the dropped row where its user finds it."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.cli import main
    from hftraining.inference.serve import create_app

    rows = _tail("AEM", 120)
    rows.iloc[[50, 51]] = rows.iloc[[51, 50]].to_numpy()  # two rows swapped: sorted as training sorts
    rows.loc[100, "high"] = rows.loc[100, "close"] * 0.98  # high below the close: clipped
    late = rows.iloc[[-1]].assign(Date="2031-01-02")  # far beyond the others: dropped as outlier_timestamp
    sent = pd.concat([rows, late], ignore_index=True)
    last = len(sent) - 1
    path = tmp_path / "AEM.csv"
    sent.to_csv(path, index=False)

    assert main(["predict", str(model_dir), "--data", str(path), "--out", str(tmp_path / "cli.csv")]) == 0
    cli_said = [w for w in capsys.readouterr().err.splitlines() if "dropped" in w]
    cli = pd.read_csv(tmp_path / "cli.csv")
    fc = Forecaster.from_pretrained(model_dir)
    api_said: list[str] = []
    api = fc.predict(sent.assign(symbol="AEM"), warnings=api_said)
    with TestClient(create_app(model_dir)) as client:
        body = client.post("/predict", json={"symbols": {"AEM": _bars(sent)}})
        upload = client.post("/predict/csv", files={"file": ("AEM.csv", sent.to_csv(index=False).encode(), "text/csv")})
    assert body.status_code == 200 and upload.status_code == 200, (body.text, upload.text)
    body, upload = body.json(), upload.json()

    want = api["forecast_return"].to_numpy()
    for got in (cli["forecast_return"], [f["forecast_return"] for f in body["forecasts"]],
                [f["forecast_return"] for f in upload["forecasts"]]):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float64), want)
    as_of = api["as_of"][0].isoformat()
    assert as_of.startswith(rows["Date"].iloc[-1])
    assert cli["as_of"][0] == as_of and body["forecasts"][0]["as_of"] == upload["forecasts"][0]["as_of"] == as_of
    # one line each naming the dropped row: line (the header is line 1) or 0-based position
    named = {"cli": (cli_said, f"line {last + 2}"), "api": ([w for w in api_said if "dropped" in w], f"position {last}"),
             "json": ([w for w in body["warnings"] if "dropped" in w], f"position {last}"),
             "upload": ([w for w in upload["warnings"] if "dropped" in w], f"line {last + 2}")}
    for where, (said, row) in named.items():
        assert len(said) == 1 and f"outlier_timestamp: {row})" in said[0], (where, said)
    # the rows the server refuses outright (strict: the README's NaN and duplicate rows) predict drops, naming them
    dup = pd.concat([rows, rows.iloc[[-1]]], ignore_index=True)
    with TestClient(create_app(model_dir)) as client:
        r = client.post("/predict", json={"symbols": {"AEM": _bars(dup)}})
    stamp = pd.Timestamp(rows["Date"].iloc[-1], tz="UTC").isoformat()  # the row, the row it repeats and their timestamp
    assert r.status_code == 422 and r.json()["error"] == (f"AEM: row {len(rows)}: duplicate timestamp {stamp} of row "
                                                          f"{len(rows) - 1} (data.duplicate_timestamps=error)")
    said = []
    fc.predict({"AEM": dup}, warnings=said)
    assert any(f"duplicate_timestamp: position {len(rows)})" in w for w in said), said


def test_an_upload_over_the_symbol_limit_is_a_413_as_a_request_body_is(model_dir):
    """``serve.max_symbols`` holds for a CSV upload of a long file as for a JSON body (both 413 naming
    the key), and an upload's ``symbol`` field that is not the file's one symbol is a 422, not ignored."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.core.config import ServeConfig
    from hftraining.inference.serve import create_app

    one = _tail("AEM", 100)
    panel = pd.concat([one.assign(symbol=f"S{i}") for i in range(3)], ignore_index=True)
    with TestClient(create_app(model_dir, ServeConfig(max_symbols=2))) as client:
        r = client.post("/predict", json={"symbols": {f"S{i}": _bars(one) for i in range(3)}})
        assert r.status_code == 413 and "(serve.max_symbols, --max-symbols)" in r.json()["error"]
        r = client.post("/predict/csv", files={"file": ("panel.csv", panel.to_csv(index=False).encode(), "text/csv")})
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "file panel.csv: 3 symbols exceeds the limit of 2 (serve.max_symbols, --max-symbols)"
        two = panel[panel["symbol"] != "S2"].to_csv(index=False).encode()
        r = client.post("/predict/csv", files={"file": ("panel.csv", two, "text/csv")})
        assert r.status_code == 200 and {f["symbol"] for f in r.json()["forecasts"]} == {"S0", "S1"}, r.text
        r = client.post("/predict/csv", files={"file": ("panel.csv", two, "text/csv")}, data={"symbol": "XYZ"})
        assert r.status_code == 422 and r.json()["error"].startswith("symbol: XYZ, but the 'symbol' column of file panel.csv"), r.text
        r = client.post("/predict/csv", files={"file": ("upload.csv", one.to_csv(index=False).encode(), "text/csv")},
                        data={"symbol": "XYZ"})  # a file of one symbol: the field names it
        assert r.status_code == 200 and {f["symbol"] for f in r.json()["forecasts"]} == {"XYZ"}, r.text
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("value, words", [("NaN", "NaN values not permitted"), ("Infinity", "after 9999"), ('"abc"', "valid datetime")])
def test_a_timestamp_that_is_not_a_finite_number_is_a_422_naming_the_field_as_a_price_is(model_dir, value, words):
    """JSON's NaN and Infinity where a timestamp goes are refused as they are where a price goes (a 422
    naming ``symbols.SYM[i].timestamp``), not read as a row with a bad timestamp and dropped."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    bars = _bars(_tail("AEM", 100))
    for b in bars:
        b["timestamp"] = int(pd.Timestamp(b["timestamp"], tz="UTC").timestamp())  # epoch seconds: numbers
    text = json.dumps({"symbols": {"AEM": bars}}).replace(f'"timestamp": {bars[50]["timestamp"]},', f'"timestamp": {value},')
    with TestClient(create_app(model_dir)) as client:
        r = client.post("/predict", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("symbols.AEM[50].timestamp: ") and words in r.json()["error"], r.json()["error"]
