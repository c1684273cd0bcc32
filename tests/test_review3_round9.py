"""A short test split's trading days when the data cut its first session, and ``data check`` of a file
named twice on its command line."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hftraining.data import io
from hftraining.data.synth import bar_times
from hftraining.eval.backtest import infer_periods_per_year


def _globex(days: int) -> np.ndarray:
    """One-minute bars of a market open 23 hours a day (17:00 to 16:00 Chicago time, an hour's break) on
    ``days`` sessions from Sunday 2024-03-03 17:00, as int64 ns UTC."""
    t = pd.date_range("2024-03-03 17:00", periods=days * 1440, freq="1min", tz="America/Chicago")
    t = t[t.hour != 16]
    return t.tz_convert("UTC").as_unit("ns").asi8


def test_a_session_cut_by_the_test_split_is_not_counted_into_the_next_day():
    """A test split of the last bars of a market open 23 hours a day (CME Globex), from 06:00 of one
    session to the end of the next: the cut session's 600 bars opened a "day" with the whole session of
    1380 bars after it (it opens less than 18 hours later), and the longer of the two days gave 1980
    bars a day × 252: every annualised figure × 1.43. The bars of the whole session × 252, as before."""
    bars = _globex(2)
    part = bars[bars >= pd.Timestamp("2024-03-04 06:00", tz="America/Chicago").value]
    warnings: list[str] = []
    ppy, how = infer_periods_per_year(part, warnings)
    assert ppy == 1380 * 252, how
    assert len(warnings) == 1  # two sessions the data may cut: said
    # New York's five-minute bars from 15:35 (the day's last five) and the whole day after: 78 bars × 252,
    # not the 83 of the cut tail and the day after it
    ny = bar_times(78 * 2, "5min", "2024-03-04", session="09:30-16:00", tz="America/New_York").asi8
    assert infer_periods_per_year(ny[73:])[0] == 78 * 252
    # a night session and the day session after it are still one day (21:00-23:00, then 09:00-11:30 and
    # 13:30-15:00 in Shanghai: 120 + 150 + 90 one-minute bars)
    sh = []
    for night, day in (("2024-03-04", "2024-03-05"), ("2024-03-05", "2024-03-06")):
        for a, b in ((f"{night} 21:00", f"{night} 22:59"), (f"{day} 09:00", f"{day} 11:29"),
                     (f"{day} 13:30", f"{day} 14:59")):
            sh.append(pd.date_range(a, b, freq="1min", tz="Asia/Shanghai"))
    sh = np.sort(np.concatenate([x.tz_convert("UTC").as_unit("ns").asi8 for x in sh]))
    assert infer_periods_per_year(sh)[0] == 360 * 252


def test_data_check_of_a_file_named_twice_checks_it_once(tmp_path, capsys, monkeypatch):
    """``data check data data/AEM.csv`` (a folder and a file in it, or two globs that overlap) read
    AEM.csv twice and said "data/AEM.csv: symbol 'AEM' also appears in data/AEM.csv", exit 2: a file
    is not its own duplicate. It is checked once; one symbol in two files is still the error."""
    from hftraining.cli import main

    raw = pd.read_csv(io.sample_data_dir() / "AEM.csv").head(150)
    (tmp_path / "data").mkdir()
    raw.to_csv(tmp_path / "data" / "AEM.csv", index=False)
    raw.to_csv(tmp_path / "data" / "ABX.csv", index=False)
    monkeypatch.chdir(tmp_path)
    for args, files in ((["data", "data/AEM.csv"], 2), (["data/AEM.csv", "./data/AEM.csv"], 1),
                        (["data/*.csv", "data/A*.csv"], 2)):
        assert main(["data", "check", *args]) == 0, args
        out, err = capsys.readouterr()
        assert out.count("AEM.csv: 150 rows in") == 1 and out.count("rows in") == files, (args, out)
        assert "error" not in err, (args, err)
    (tmp_path / "more").mkdir()
    raw.to_csv(tmp_path / "more" / "AEM.csv", index=False)
    assert main(["data", "check", "data", "more/AEM.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more/AEM.csv: symbol 'AEM' also appears in data/AEM.csv" in err[0], err
