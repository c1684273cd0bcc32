"""Files read in reverse, Investing.com's localised downloads and twin columns, at their edges:
rows of one timestamp that a newest-first file lists apart, prices with three decimals after a
decimal comma, and a volume column beside an empty one of another name. Built by hand from the
bundled sample (no network)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from hftraining.core.errors import DataError
from hftraining.data import io
from test_data_round11 import _load  # noqa: E402

N = 120


def _bars(sym: str = "AEM") -> pd.DataFrame:
    """The last ``N`` daily bars of a bundled file (Date, close, high, low, open, volume), oldest first."""
    return pd.read_csv(io.sample_data_dir() / f"{sym}.csv").tail(N).reset_index(drop=True)


@pytest.mark.parametrize("keep", ["first", "last"])
def test_first_and_last_of_a_timestamp_are_the_file_s_in_a_newest_first_file(tmp_path, keep):
    """``duplicate_timestamps=first`` keeps the row of a timestamp that comes first in the file, as it
    does in a file listed oldest first, also when the file is read in reverse and the two rows are not
    neighbours (a corrected bar listed again at the top). The later line was kept instead: the
    reversal put it first."""
    new = _bars().iloc[::-1].reset_index(drop=True)
    again = new.iloc[[10]].assign(close=new["close"].iloc[10] * 1.01)  # line 2: the date of line 13, another close
    pd.concat([again, new]).to_csv(tmp_path / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "AEM.csv", duplicate_timestamps=keep)
    assert rep["newest_first"] == ["AEM"] and rep["rows_kept"] == N
    assert rep["rules"]["duplicate_timestamp"]["rows"] == [13 if keep == "first" else 2]
    day = pd.Timestamp(new["Date"].iloc[10], tz="UTC")
    (close,) = frame.loc[frame["timestamp"] == day, "close"]
    assert close == pytest.approx(new["close"].iloc[10] * (1.01 if keep == "first" else 1.0), rel=1e-12)


def _comma(x: float, decimals: int) -> str:
    """A number as German and Spanish pages write it: 17.936,65 (151,234 at three decimals)."""
    return f"{x:,.{decimals}f}".replace(",", " ").replace(".", ",").replace(" ", ".")


@pytest.mark.parametrize("names", [
    ["Datum", "Zuletzt", "Eröffn.", "Hoch", "Tief", "Vol.", "+/- %"],
    ["Fecha", "Último", "Apertura", "Máximo", "Mínimo", "Vol.", "% var."],
])
def test_three_decimals_after_a_decimal_comma_are_no_thousands(tmp_path, names):
    """Investing.com's German and Spanish downloads of a quote at three decimals (USD/JPY's
    ``"151,234"``, no volume: ``"-"``): every price looks like an English thousands group, and was
    read a thousand times too large without a word. Beside German or Spanish price names it is a
    decimal comma; an English download's ``"1,234"`` is still one thousand two hundred and thirty-four."""
    raw = _bars()
    new = raw.iloc[::-1].reset_index(drop=True)
    rows = [[pd.Timestamp(d).strftime("%d.%m.%Y"), *(_comma(new[c][i], 3) for c in ("close", "open", "high", "low")),
             "-", "0,12%"] for i, d in enumerate(new["Date"])]
    with open(tmp_path / "AEM.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        w.writerow(names)
        w.writerows(rows)
    assert all(len(c) == 7 and c[3] == "," for r in rows for c in r[1:5])  # 168,498: one comma group of three digits
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 0 and rep["volume_empty"] == ["AEM"], rep["rules"]
    for col in ("open", "high", "low", "close"):
        np.testing.assert_allclose(frame[col], raw[col].round(3), rtol=1e-12)

    whole = {c: (raw[c] * 10).round(0).astype(int) for c in ("close", "open", "high", "low")}
    english = pd.DataFrame({"Date": raw["Date"], "Price": whole["close"].map("{:,}".format),
                            "Open": whole["open"].map("{:,}".format), "High": (whole["high"] + 1).map("{:,}".format),
                            "Low": (whole["low"] - 1).map("{:,}".format), "Vol.": "-"})
    english.to_csv(tmp_path / "AEM.csv", index=False, quoting=csv.QUOTE_ALL)
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 0
    np.testing.assert_array_equal(frame["close"], whole["close"])


@pytest.mark.parametrize("empty", ["Volume", "Vol."])
def test_an_empty_twin_of_the_volume_column_is_not_a_second_volume(tmp_path, empty):
    """``Volume`` beside a ``Vol.`` column that holds nothing (or an empty ``Volume`` beside ``Vol.``):
    there is nothing to tell apart. The file was refused as two volume columns; the one with values
    is the volume, and a ``Vol.`` with values beside ``Volume`` is still refused."""
    raw = _bars()
    df = pd.DataFrame({"Date": raw["Date"], **{c.title(): raw[c] for c in ("open", "high", "low", "close")},
                       "Volume": raw["volume"], "Vol.": raw["volume"]})
    df[empty] = np.where(np.arange(N) % 2, "", "-")
    df.to_csv(tmp_path / "AEM.csv", index=False)
    frame, rep = _load(tmp_path / "AEM.csv")
    assert rep["rows_dropped"] == 0 and rep["volume_empty"] == []
    np.testing.assert_array_equal(frame["volume"], raw["volume"])
    df.assign(**{empty: raw["volume"] + 1}).to_csv(tmp_path / "AEM.csv", index=False)
    with pytest.raises(DataError, match="columns 'Volume' and 'Vol.' would both be read as the volume"):
        _load(tmp_path / "AEM.csv")
