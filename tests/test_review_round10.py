"""Edge cases of the readers of Nasdaq.com, Investing.com and IBKR downloads: a header line whose
first name starts with ``{`` or ``[`` is a table, not a JSON reply; a date ending in a zone's name is
that day, as a plain date is; UTC offsets among zone-named stamps are read as they say; ``$`` prices
in a decimal-comma file are numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.data import io
from hftraining.data.sources import load_and_validate

from test_data_round10 import N, _bars, _dates, _load  # noqa: E402  (N bundled bars, the reader, their dates)


def _same_bars(frame: pd.DataFrame, raw: pd.DataFrame, rtol: float = 1e-12) -> None:
    for col in io.OHLCV:
        np.testing.assert_allclose(frame[col], raw[col], rtol=rtol)


@pytest.mark.parametrize("first", ["{id}", "[1]", "[row]"])
def test_a_first_column_named_in_braces_or_brackets_is_read_as_a_table(tmp_path, first):
    """A CSV file whose first column is named ``{id}`` or ``[1]`` (a row counter) was read; it became
    "a JSON document, not CSV text ... fetch the data again" and could not be read at all."""
    raw = _bars()
    raw.insert(0, first, range(N))
    raw.to_csv(tmp_path / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_kept"] == N and rep["rows_dropped"] == 0
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    _same_bars(frame, raw)


@pytest.mark.parametrize("body", ['{"results": [{"t": 1704067200000, "o": 1.1}]}\n', '{\n  "Note": "rate limit"\n}\n',
                                  '[{"t": 1704067200000, "o": 1.1}]\n', '[[1704067200000, "42000.1", "42100.0"]]\n',
                                  "[1704067200000, 1704153600000]\n", "[]\n"])
def test_a_json_reply_under_a_csv_name_is_still_named(tmp_path, capsys, body):
    path = tmp_path / "AEM.csv"
    path.write_text(body)
    code = cli.main(["data", "check", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"hftraining: error: {path}: a JSON document, not CSV text")


@pytest.mark.parametrize(("fmt", "zone"), [("%Y%m%d", "Asia/Tokyo"), ("%Y-%m-%d", "US/Eastern")])
def test_a_date_ending_in_a_zone_name_is_that_day(tmp_path, fmt, zone):
    """A daily bar stamped ``20240104 Asia/Tokyo`` names a trading day, as ``2024-01-04`` does (its
    UTC midnight). It was read as the instant of its local midnight: Tokyo's Thursday became
    Wednesday 15:00 UTC, New York's dates 05:00 or 04:00 UTC by the season, so such a file did not
    line up with the plain dates of the other files of a panel."""
    raw = _bars()
    day = pd.to_datetime(raw["Date"])
    (tmp_path / "z").mkdir()
    raw.assign(Date=day.dt.strftime(fmt) + f" {zone}").to_csv(tmp_path / "z" / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "z")
    assert rep["rows_kept"] == N and rep["rows_dropped"] == 0
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    (tmp_path / "plain").mkdir()
    raw.to_csv(tmp_path / "plain" / "AEM.csv", index=False)
    plain, _ = _load(tmp_path / "plain")
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, plain["timestamp"].array.asi8)


def test_utc_offsets_among_zone_named_stamps_are_read_as_they_say(tmp_path):
    """A column of ``2024-01-02 09:30:00 US/Eastern`` stamps with some written
    ``2024-01-02T09:30:00-05:00`` (the same instants): the stamps with an offset were each a
    ``bad_timestamp``, their rows dropped."""
    raw = _bars()
    local = pd.to_datetime(raw["Date"]) + pd.Timedelta(hours=9, minutes=30)
    want = local.dt.tz_localize("America/New_York")
    stamps = (local.dt.strftime("%Y-%m-%d %H:%M:%S") + " US/Eastern").to_numpy(object)
    stamps[::4] = [t.isoformat() for t in want.iloc[::4]]
    raw.assign(Date=stamps).to_csv(tmp_path / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_kept"] == N and rep["rows_dropped"] == 0, rep["rules"]
    np.testing.assert_array_equal(frame["timestamp"].array.asi8,
                                  want.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").array.asi8)
    _same_bars(frame, raw)


def test_dollar_prices_in_a_decimal_comma_file(tmp_path):
    """``$53,84`` in a ``;``-delimited file is 53.84, as ``53,84`` is: the ``$`` cells cast no vote
    for the decimal mark, the file was taken as decimal-point and every price was ``non_numeric``
    (no usable rows)."""
    raw = _bars()
    out = raw[["Date"]].copy()
    for col in ("open", "high", "low", "close"):
        out[col] = [f"${x:.4f}".replace(".", ",") for x in raw[col]]
    out["volume"] = raw["volume"].astype(np.int64)
    out.to_csv(tmp_path / "AEM.csv", index=False, sep=";")
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_kept"] == N and rep["rows_dropped"] == 0, rep["rules"]
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    for col in ("open", "high", "low", "close"):
        np.testing.assert_allclose(frame[col], raw[col].round(4), rtol=1e-12)
    np.testing.assert_allclose(frame["volume"], raw["volume"], rtol=1e-12)
