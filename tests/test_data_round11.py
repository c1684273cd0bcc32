"""Price files as users' tools write them, built by hand from the bundled sample (no network): a file
listed newest first under every ``data.unsorted_timestamps`` policy, column names in square brackets,
stamps with AM/PM and a zone's abbreviation, two columns that would both be the close, and
Investing.com's German and Spanish downloads. Each is read to the bars it holds with every row it
moved or dropped in the report, or is a one-line error naming the file and the column or cell."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data import io
from hftraining.data.sources import load_and_validate

N = 300


def _bars(sym: str = "AEM") -> pd.DataFrame:
    """The last ``N`` daily bars of a bundled file (Date, close, high, low, open, volume), oldest first."""
    return pd.read_csv(io.sample_data_dir() / f"{sym}.csv").tail(N).reset_index(drop=True)


def _load(path, **data):
    frames, report = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None, **data))
    (frame,) = frames.values()
    (rep,) = report["files"]
    return frame, rep


def _dates(raw: pd.DataFrame) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(raw["Date"])).tz_localize("UTC").as_unit("ns").asi8


def _one_line_error(capsys, path, *args) -> str:
    code = cli.main(["data", "check", str(path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("policy", ["error", "drop", "sort"])
def test_a_newest_first_file_is_read_in_reverse_whatever_the_order_policy(tmp_path, capsys, policy):
    """Broker statements and Investing.com's or Nasdaq.com's downloads list the newest bar first.
    Under ``unsorted_timestamps=error`` such a file was refused at its second row, and under ``drop``
    all its rows but the first were dropped. It is read from its end, the report says so (every row
    moved listed as repaired, ``newest_first`` naming the symbol), and of two rows of one date the
    first in the file is still the first."""
    raw = _bars()
    new = raw.iloc[::-1].reset_index(drop=True)
    twin = new.iloc[[9]].assign(close=new["close"].iloc[9] * 1.01)  # line 11: line 12's date, another close
    pd.concat([new.iloc[:9], twin, new.iloc[9:]]).to_csv(tmp_path / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "AEM.csv", unsorted_timestamps=policy)
    assert rep["rows_in"] == N + 1 and rep["rows_kept"] == N and rep["rows_dropped"] == 1, rep["rules"]
    assert rep["newest_first"] == ["AEM"]
    assert rep["rules"]["duplicate_timestamp"]["rows"] == [12]  # the file's second row of the date
    assert rep["rules"]["unsorted_timestamp"]["repaired"] == N
    assert rep["rules"]["unsorted_timestamp"]["rows"] == list(range(3, N + 3))
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    want = raw["close"].to_numpy().copy()
    want[N - 10] *= 1.01  # the date of lines 11 and 12 keeps line 11's close
    np.testing.assert_allclose(frame["close"], want, rtol=1e-12)
    assert cli.main(["data", "check", str(tmp_path), "--set", f"unsorted_timestamps={policy}"]) == 0
    assert "rows listed newest first: read in reverse" in capsys.readouterr().out


@pytest.mark.parametrize("policy", ["error", "drop", "sort"])
def test_a_row_out_of_place_in_a_newest_first_file_follows_the_order_policy(tmp_path, capsys, policy):
    """The policy judges the rows out of place in the file's own order: a newest-first file with an
    older row moved up (line 52, ten days older than its neighbours) is refused naming that line
    (``error``), loses that row (``drop``) or has it put back in place (``sort``), the other rows
    listed as the reversal moved them."""
    new = _bars().iloc[::-1].reset_index(drop=True)
    pd.concat([new.iloc[:50], new.iloc[[60]], new.iloc[50:60], new.iloc[61:]]).to_csv(tmp_path / "AEM.csv", index=False)
    if policy == "error":
        assert _one_line_error(capsys, tmp_path / "AEM.csv", "--set", "unsorted_timestamps=error") == (
            f"hftraining: error: {tmp_path / 'AEM.csv'}: line 52: timestamp earlier than a row below it "
            "(the file lists its rows newest first) (data.unsorted_timestamps=error)")
        return
    frame, rep = _load(tmp_path / "AEM.csv", unsorted_timestamps=policy)
    assert rep["newest_first"] == ["AEM"]
    entry = rep["rules"]["unsorted_timestamp"]
    assert entry["rows"] == list(range(3, N + 2))
    if policy == "drop":
        assert (entry["dropped"], entry["repaired"]) == (1, N - 2) and rep["rows_kept"] == N - 1
        np.testing.assert_array_equal(frame["timestamp"].array.asi8, np.delete(np.sort(_dates(new)), N - 61))
    else:
        assert (entry["dropped"], entry["repaired"]) == (0, N - 1) and rep["rows_kept"] == N
        np.testing.assert_array_equal(frame["timestamp"].array.asi8, np.sort(_dates(new)))


def test_column_names_in_square_brackets_are_read(tmp_path):
    """SQL Server's and some Excel exports write ``[Date],[Open],...``: the file was "missing column
    'timestamp' (columns: [Date], [close], ...)". Bracketed and plain spellings of one name are two
    columns of one name, an error."""
    raw = _bars()
    raw.rename(columns=lambda c: f"[{c.title()}]").to_csv(tmp_path / "AEM.csv", index=False)
    assert (tmp_path / "AEM.csv").read_text().startswith("[Date],[Close],[High]")
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 0
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    np.testing.assert_allclose(frame["close"], raw["close"], rtol=1e-12)
    np.testing.assert_array_equal(frame["volume"], raw["volume"])
    raw.assign(**{"[Close]": raw["close"]}).to_csv(tmp_path / "AEM.csv", index=False)
    with pytest.raises(DataError, match=r"two columns are named '\[Close\]'"):
        _load(tmp_path / "AEM.csv")


def test_stamps_with_am_pm_and_a_zone_abbreviation_are_that_zone_s_times(tmp_path, capsys):
    """``12/05/2024 03:30 PM EST`` (EST in winter, EDT in summer, as US brokers write them): every row
    was a bad_timestamp and the file "no usable rows". Each is the instant its offset says (15:30 EST
    is 20:30 UTC, 15:30 EDT 19:30 UTC); ``ET`` is New York's local time. An abbreviation several
    zones share (CST without CDT: US Central or China) is a one-line error naming the file and the cell."""
    raw = _bars()
    local = pd.to_datetime(raw["Date"]) + pd.Timedelta(hours=15, minutes=30)
    ny = local.dt.tz_localize("America/New_York")
    abbr = np.where(ny.dt.strftime("%z") == "-0500", "EST", "EDT")
    assert set(abbr) == {"EST", "EDT"}
    bars = {c: raw[c] for c in io.OHLCV}
    want = ny.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").array.asi8
    for zone in (abbr, "ET"):
        pd.DataFrame({"Date": local.dt.strftime("%m/%d/%Y %I:%M %p ") + zone, **bars}).to_csv(
            tmp_path / "AEM.csv", index=False)
        frame, rep = _load(tmp_path / "AEM.csv")
        assert rep["rows_dropped"] == 0, rep["rules"]
        np.testing.assert_array_equal(frame["timestamp"].array.asi8, want)
    assert (tmp_path / "AEM.csv").read_text().splitlines()[1].startswith(f"{local.iloc[0]:%m/%d/%Y} 03:30 PM ET,")
    bad = tmp_path / "bad" / "AEM.csv"
    bad.parent.mkdir()
    pd.DataFrame({"Date": local.dt.strftime("%m/%d/%Y %I:%M %p CST"), **bars}).to_csv(bad, index=False)
    assert _one_line_error(capsys, bad) == (
        f"hftraining: error: {bad}: timestamp '{local.iloc[0]:%m/%d/%Y} 03:30 PM CST': 'CST' names US Central time "
        "(-06:00) and China's (+08:00): write the UTC offset (2024-12-05T15:30:00-05:00) or an IANA name "
        "(2024-12-05 15:30:00 America/New_York)")
    # with a zone-less stamp among them: refused, as stamps with and without an offset are
    mixed = pd.DataFrame({"Date": local.dt.strftime("%m/%d/%Y %I:%M %p ") + abbr, **bars})
    mixed.loc[7, "Date"] = mixed.loc[7, "Date"][:-4]
    mixed.to_csv(bad, index=False)
    assert "line 9: timestamp" in _one_line_error(capsys, bad)


def test_two_columns_that_would_both_be_the_close_are_an_error_naming_both(tmp_path, capsys):
    """``Price`` beside ``Close`` (and Open, High, Low), two ``Price`` columns, ``Close`` beside
    ``Close/Last``, ``Volume`` beside ``Vol.``: one was read and the other ignored without a word."""
    raw = _bars()
    cases = {
        "price_and_close": (raw.assign(Price=raw["close"] * 2), "'close' and 'Price' would both be read as the close"),
        "close_last": (raw.assign(**{"Close/Last": raw["close"]}), "'close' and 'Close/Last' would both be read as the close"),
        "volumes": (raw.assign(**{"Vol.": raw["volume"]}), "'volume' and 'Vol.' would both be read as the volume"),
    }
    for name, (df, msg) in cases.items():
        path = tmp_path / name / "AEM.csv"
        path.parent.mkdir()
        df.to_csv(path, index=False)
        assert _one_line_error(capsys, path) == (f"hftraining: error: {path}: columns {msg}: which one holds it cannot be "
                                                 "told: keep one of them, or rename the other")
    path = tmp_path / "two_prices" / "AEM.csv"
    path.parent.mkdir()
    two = raw.rename(columns={"close": "Price"}).assign(other=raw["close"] * 2)
    path.write_text(two.to_csv(index=False).replace(",other", ",Price", 1))
    assert _one_line_error(capsys, path).startswith(f"hftraining: error: {path}: two columns are named 'Price'")


def _comma(x: float) -> str:
    """A number as German and Spanish pages write it: 17.936,65."""
    return f"{x:,.2f}".replace(",", " ").replace(".", ",").replace(" ", ".")


@pytest.mark.parametrize("names", [
    ["Datum", "Zuletzt", "Eröffn.", "Hoch", "Tief", "Vol.", "+/- %"],
    ["Fecha", "Último", "Apertura", "Máximo", "Mínimo", "Vol.", "% var."],
])
def test_investing_com_s_german_and_spanish_downloads_are_read(tmp_path, names):
    """Investing.com's German and Spanish downloads: every cell quoted, dates DD.MM.YYYY, newest first,
    decimal commas (``"17.936,65"``, volumes ``"2,94M"``): the file was "missing column 'timestamp'
    (columns: Datum, Zuletzt, ...)", and its prices were not numbers. An English download's quoted
    ``"1,234"`` volumes are still thousands."""
    raw = _bars()
    new = raw.iloc[::-1].reset_index(drop=True)
    rows = [[pd.Timestamp(d).strftime("%d.%m.%Y"), *(_comma(new[c][i] * 300) for c in ("close", "open", "high", "low")),
             _comma(new["volume"][i] / 1e6) + "M", "-0,15%"] for i, d in enumerate(new["Date"])]
    with open(tmp_path / "AEM.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        w.writerow(names)
        w.writerows(rows)
    assert '","' in (tmp_path / "AEM.csv").read_text(encoding="utf-8").splitlines()[1]
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 0 and rep["newest_first"] == ["AEM"], rep["rules"]
    np.testing.assert_array_equal(frame["timestamp"].array.asi8, _dates(raw))
    for col in ("open", "high", "low", "close"):
        np.testing.assert_allclose(frame[col], (raw[col] * 300).round(2), rtol=1e-12)
    np.testing.assert_allclose(frame["volume"], (raw["volume"] / 1e6).round(2) * 1e6, rtol=1e-12)

    whole = {c: raw[c].round(0).astype(int) for c in ("close", "open", "high", "low")}
    english = pd.DataFrame({"Date": raw["Date"], "Price": whole["close"], "Open": whole["open"], "High": whole["high"] + 1,
                            "Low": whole["low"] - 1, "Vol.": raw["volume"].map("{:,.0f}".format)})
    english.to_csv(tmp_path / "AEM.csv", index=False, quoting=csv.QUOTE_ALL)
    assert '"1,' in (tmp_path / "AEM.csv").read_text()
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 0
    np.testing.assert_array_equal(frame["volume"], raw["volume"])
