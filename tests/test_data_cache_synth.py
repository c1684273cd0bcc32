"""The feature table command and the synthetic generator (the feature store: test_data_store.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining import cli
from hftraining.core.config import DataConfig
from hftraining.data.feature_table import feature_table
from hftraining.data.synth import bar_times, synth_frames, synth_ohlcv, write_synth
from hftraining.data.sources import check_paths
from hftraining.core.errors import DataError


def test_feature_table_command_writes_symbol_timestamp_and_features(tmp_path, capsys):
    write_synth(tmp_path / "d", 2, 150)
    for out in ("f.csv", "f.parquet"):
        code = cli.main(["data", "features", str(tmp_path / "d"), "--out", str(tmp_path / out),
                         "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "features=[rsi_14,atr_14]"])
        assert code == 0
    a = pd.read_csv(tmp_path / "f.csv")
    b = pd.read_parquet(tmp_path / "f.parquet")
    assert list(a.columns) == list(b.columns) == ["symbol", "timestamp", "rsi_14", "atr_14"]
    assert len(a) == len(b) == 2 * (150 - 14) and a["symbol"].nunique() == 2
    np.testing.assert_allclose(a["rsi_14"], b["rsi_14"])
    assert cli.main(["data", "features", str(tmp_path / "d"), "--out", str(tmp_path / "f.xlsx")]) == 2
    assert "use .csv or .parquet" in capsys.readouterr().err


def test_synth_is_seeded_valid_and_clustered():
    a, b = synth_ohlcv(20_000, seed=7), synth_ohlcv(20_000, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert not synth_ohlcv(20_000, seed=8)["close"].equals(a["close"])
    assert (a["high"] >= a[["open", "close"]].max(axis=1)).all() and (a["low"] <= a[["open", "close"]].min(axis=1)).all()
    assert (a["low"] > 0).all() and (a["volume"] >= 0).all()
    r = np.diff(np.log(a["close"].to_numpy()))
    acf = lambda x: np.corrcoef(x[1:], x[:-1])[0, 1]  # noqa: E731
    assert abs(acf(r)) < 0.05 < acf(np.abs(r))  # returns barely autocorrelated, their size clustered
    kurt = ((r - r.mean()) ** 4).mean() / r.var() ** 2
    assert kurt > 4  # fat tails (a normal has 3)


def test_synth_command_and_validator_keeps_every_row(tmp_path, capsys):
    assert cli.main(["data", "synth", "--symbols", "3", "--rows", "120", "--out", str(tmp_path)]) == 0
    reports, errors, _ = check_paths([str(tmp_path)], DataConfig())
    assert errors == [] and [r["rows_kept"] for r in reports] == [120] * 3
    assert all(r["rules"] == {} for r in reports)
    assert cli.main(["data", "synth", "--symbols", "0", "--rows", "10", "--out", str(tmp_path)]) == 2
    assert "symbols must be >= 1" in capsys.readouterr().err
    with pytest.raises(DataError, match="use a finer --freq"):
        write_synth(tmp_path / "x", 1, 10_000_000, freq="B")
    capsys.readouterr()  # a frequency pandas does not know was told to be "finer" (read as a size problem)
    assert cli.main(["data", "synth", "--symbols", "1", "--rows", "100", "--freq", "xyz", "--out", str(tmp_path / "y")]) == 2
    assert capsys.readouterr().err == ("hftraining: error: synth: --freq 'xyz' is not a pandas frequency "
                                       "(e.g. 1min, 5min, 1h, B, D)\n")


def test_synth_frames_are_independent_symbols():
    frames = synth_frames(3, 500, seed=2)
    assert list(frames) == ["SYN000", "SYN001", "SYN002"]
    assert not np.allclose(frames["SYN000"]["close"], frames["SYN001"]["close"])
    table, report = feature_table(DataConfig(data_dir=None, cache_dir=None))
    assert report["rows_in"] > 0 and table["symbol"].nunique() == 10


def test_synth_intraday_sessions_and_parquet_dataset(tmp_path, capsys):
    """``data synth --freq 1min`` trades 09:30-16:00 New York time on business days (390 bars a day,
    13:30 or 14:30 UTC at the open by daylight saving) and ``--format parquet-dataset`` writes hive
    folders that the readers take as one symbol each."""
    out = tmp_path / "ds"
    assert cli.main(["data", "synth", "--symbols", "2", "--rows", "1200", "--freq", "1min",
                     "--format", "parquet-dataset", "--out", str(out)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "symbol=SYN000/part-0.parquet", "symbol=SYN001/part-0.parquet"]
    t = pd.read_parquet(out / "symbol=SYN000" / "part-0.parquet")["timestamp"]
    local = t.dt.tz_convert("America/New_York")
    assert local.dt.strftime("%H:%M").between("09:30", "15:59").all() and (local.dt.day_of_week < 5).all()
    assert local.dt.date.value_counts().max() == 390
    march = pd.Series(bar_times(390 * 10, "1min", "2024-03-06"))
    assert set(march.dt.strftime("%H:%M")) >= {"14:30", "13:30"}  # the open in UTC before and after 10 March
    capsys.readouterr()
    assert cli.main(["data", "check", str(out)]) == 0
    checked = capsys.readouterr().out
    assert checked.splitlines() == [f"{out / f'symbol={s}'}: 1200 rows in, 1200 kept, 0 dropped" for s in ("SYN000", "SYN001")]
    assert cli.main(["data", "synth", "--symbols", "1", "--rows", "10", "--freq", "B", "--session", "09:30-16:00",
                     "--out", str(tmp_path / "x")]) == 2
    assert "--session applies to bars shorter than a day" in capsys.readouterr().err



@pytest.mark.slow  # over 10 s here; `make test-all` runs it
def test_the_readme_synth_example_runs(tmp_path):
    """Every ``hftraining data synth`` command of the README's command list works as written (its
    --out pointed at a temporary folder)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    commands = [line.split("#")[0].split()[1:] for line in readme.splitlines() if line.startswith("hftraining data synth")]
    assert commands
    for k, argv in enumerate(commands):
        out = tmp_path / f"synth-{k}"
        argv[argv.index("--out") + 1] = str(out)
        assert cli.main(argv) == 0, argv
        assert len(list(out.iterdir())) == int(argv[argv.index("--symbols") + 1])
