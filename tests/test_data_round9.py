"""Price files as users have them: one symbol in two files whose names differ in case only, and a Yahoo
table's dividend and split rows beside the day's bar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data import io
from hftraining.data.rows import ANY_ROWS
from hftraining.data.sources import load_and_validate
from hftraining.data.store import load_rows


def _bars(n: int = 150) -> pd.DataFrame:
    """The first ``n`` daily bars of the bundled AEM file."""
    return pd.read_csv(io.sample_data_dir() / "AEM.csv").head(n)


def test_symbols_that_differ_only_in_case_are_one_symbol_twice(tmp_path):
    """``AEM.csv`` and ``aem.CSV`` were read as two symbols, AEM and aem: the same history twice in the
    panel (its cross-sections, the backtest's portfolio), with a clean report."""
    raw = _bars()
    raw.to_csv(tmp_path / "AEM.csv", index=False)
    raw.to_csv(tmp_path / "aem.CSV", index=False)
    with pytest.raises(DataError) as e:
        load_and_validate(DataConfig(data_dir=str(tmp_path), cache_dir=None))
    msg = str(e.value)
    assert "aem.CSV" in msg and str(tmp_path / "AEM.csv") in msg and "another case" in msg and "\n" not in msg
    # the feature store's build (what train reads) applies the same rule
    with pytest.raises(DataError, match="another case"):
        load_rows(DataConfig(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache")), ANY_ROWS)
    # in one long file too
    pd.concat([raw.assign(symbol="BRK.B"), raw.assign(symbol="brk.b")]).to_csv(tmp_path / "long.csv", index=False)
    with pytest.raises(DataError, match="another case"):
        load_and_validate(DataConfig(data_dir=str(tmp_path / "long.csv"), cache_dir=None))
    # symbols with dots and dashes, of different letters, are symbols of their own
    for name in ("BRK.B", "BTC-USD"):
        raw.to_csv(tmp_path / f"{name}.csv", index=False)
    frames, _ = load_and_validate(DataConfig(data_dir=[str(tmp_path / "BRK.B.csv"), str(tmp_path / "BTC-USD.csv"),
                                                       str(tmp_path / "AEM.csv")], cache_dir=None))
    assert list(frames) == ["AEM", "BRK.B", "BTC-USD"]


@pytest.mark.parametrize("invalid_values", ["drop", "ffill"])
@pytest.mark.parametrize("keep", ["first", "last"])
def test_a_dividend_or_split_row_beside_the_days_bar_leaves_the_bar(tmp_path, invalid_values, keep):
    """A Yahoo history table (copied from the page) lists ``0.175 Dividend`` and ``2:1 Stock Split``
    rows on the dates of bars. The duplicate rule kept the event row (the first of the date) and dropped
    the day's bar; under ``invalid_values: ffill`` the event row then took the day before's prices, so
    the day's bar was silently replaced by the previous one. The bar is kept; the event row is dropped
    and reported on its line."""
    raw = _bars()
    lines = raw.to_csv(index=False).splitlines()
    div, split = raw["Date"].iloc[40], raw["Date"].iloc[90]
    # before the bar (the page's order, newest first, read top-down) and after it
    lines.insert(41, f"{div},0.175 Dividend")
    lines.insert(93, f"{split},2:1 Stock Split,2:1 Stock Split,2:1 Stock Split,2:1 Stock Split,")
    path = tmp_path / "AEM.csv"
    path.write_text("\n".join(lines) + "\n")
    cfg = DataConfig(data_dir=str(path), cache_dir=None, invalid_values=invalid_values, duplicate_timestamps=keep)
    frames, rep = load_and_validate(cfg)
    got = frames["AEM"].set_index(frames["AEM"]["timestamp"].dt.strftime("%Y-%m-%d"))
    assert len(got) == len(raw)
    for day in (div, split):
        bar = raw[raw["Date"] == day].iloc[0]
        np.testing.assert_allclose(got.loc[day, ["open", "high", "low", "close", "volume"]].to_numpy(float),
                                   bar[["open", "high", "low", "close", "volume"]].to_numpy(float))
    file = rep["files"][0]
    assert file["rules"]["duplicate_timestamp"]["rows"] == [42, 94]  # the event rows' lines, nothing else
    assert set(file["rules"]) == {"duplicate_timestamp"}
    # two clean rows of one date: the policy decides, as before
    lines = raw.to_csv(index=False).splitlines()
    lines.insert(41, lines[41].replace(f"{raw['close'].iloc[40]}", "99.5"))
    path.write_text("\n".join(lines) + "\n")
    frames, rep = load_and_validate(cfg)
    close = frames["AEM"]["close"].to_numpy()[40]
    assert close == (99.5 if keep == "first" else raw["close"].iloc[40])
    assert rep["files"][0]["rules"]["duplicate_timestamp"]["rows"] == [43 if keep == "first" else 42]


@pytest.mark.parametrize("fmt", ["%d.%m.%Y", "%m/%d/%Y", "%d-%b-%Y", "%d/%m/%y"])
def test_a_file_that_turns_from_iso_dates_to_another_format_keeps_its_larger_part(tmp_path, fmt):
    """The first 40 dates ISO 8601, the next 110 in a vendor's format (an export appended to by another
    tool): the column is read the way that reads more of it, as documented, yet the readings were
    guessed from its first cell (ISO 8601), so the 110 rows were all dropped as bad_timestamp and the
    40 kept. Now the 110 are read, on their dates, and the 40 ISO rows are the ones reported."""
    raw = _bars()
    day = pd.to_datetime(raw["Date"])
    raw["Date"] = [d.strftime("%Y-%m-%d") if i < 40 else d.strftime(fmt) for i, d in enumerate(day)]
    path = tmp_path / "AEM.csv"
    raw.to_csv(path, index=False)
    frames, rep = load_and_validate(DataConfig(data_dir=str(path), cache_dir=None))
    got = frames["AEM"]
    assert list(got["timestamp"]) == list(day.iloc[40:].dt.tz_localize("UTC"))
    np.testing.assert_array_equal(got["close"].to_numpy(), raw["close"].to_numpy()[40:])
    assert rep["files"][0]["rules"]["bad_timestamp"]["rows"] == list(range(2, 42))


def test_too_few_rows_names_the_rules_that_dropped_the_others(tmp_path, capsys):
    """A 150-row file whose first 60 dates are "n/a" was refused as "90 rows kept, 98 needed", without
    a word on the 60 rows dropped or why (``data check`` prints no report for it)."""
    from hftraining import cli

    raw = _bars()
    raw.loc[:59, "Date"] = "n/a"
    path = tmp_path / "AEM.csv"
    raw.to_csv(path, index=False)
    assert cli.main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]
    assert "90 rows kept (60 dropped: bad_timestamp 60), 98 needed for one window" in err[0]


def test_data_check_refuses_one_symbol_in_two_files_as_training_does(tmp_path, capsys):
    """``data check`` on a folder holding ``AEM.csv`` and ``AEM.csv.gz`` (or ``aem.CSV``) printed two
    clean reports and exited 0 while ``train`` on it stops: the later file is now an error line naming
    both, exit 2, and the first file's report is still printed."""
    from hftraining.cli import main

    raw = _bars()
    raw.to_csv(tmp_path / "AEM.csv", index=False)
    for other in ("AEM.csv.gz", "aem.CSV"):
        folder = tmp_path / other.replace(".", "_")
        folder.mkdir()
        raw.to_csv(folder / "AEM.csv", index=False)
        raw.to_csv(folder / other, index=False)
        assert main(["data", "check", str(folder)]) == 2
        out, err = capsys.readouterr()
        assert out.count("rows in") == 1, out
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "AEM" in lines[0] and str(folder) in lines[0], err
