"""The ETT benchmark's inputs that used to run silently or late: dates off the protocol's grid, a
horizon no val/test window can hold, and the correction on the linear map with ``--subtract-last``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hftraining.cli import main
from hftraining.core.errors import DataError
from hftraining.models.patchtst import PatchTSTMultivariate
from hftraining.workflows import ett


def write_ett(path: Path, dates: list[str]) -> None:
    rows = [f"{d},{i},{i + 1},{i + 2},{i + 3},{i + 4},{i + 5},{i + 6}" for i, d in enumerate(dates)]
    path.write_text("\n".join([",".join(ett.COLUMNS), *rows]) + "\n")


def test_rows_on_the_datasets_grid_load(tmp_path: Path) -> None:
    write_ett(tmp_path / "ETTh1.csv", [f"2016-07-01 {h:02d}:00:00" for h in range(5)])
    write_ett(tmp_path / "ETTm2.csv", [f"2016-07-01 00:{m:02d}:00" for m in (0, 15, 30, 45)])
    assert ett.load_ett(tmp_path, "ETTh1").shape == (5, 7)
    assert ett.load_ett(tmp_path, "ETTm2").shape == (4, 7)


@pytest.mark.parametrize("dataset, dates, line", [
    # 15-minute rows under an hourly name: every border and phase would be 4× off
    ("ETTh1", ["2016-07-01 00:00:00", "2016-07-01 00:15:00", "2016-07-01 00:30:00"], 3),
    # a missing row moves every later row into another split and phase
    ("ETTh2", ["2016-07-01 00:00:00", "2016-07-01 01:00:00", "2016-07-01 03:00:00"], 4),
    # hourly rows under a 15-minute name
    ("ETTm1", ["2016-07-01 00:00:00", "2016-07-01 01:00:00"], 3),
    # another start: the phases of the time-of-day members count from midnight of 2016-07-01
    ("ETTh1", ["2016-07-01 05:00:00", "2016-07-01 06:00:00"], 2),
])
def test_dates_off_the_protocols_grid_name_the_file_and_line(tmp_path: Path, dataset: str, dates: list, line: int) -> None:
    write_ett(tmp_path / f"{dataset}.csv", dates)
    with pytest.raises(DataError, match=rf"{dataset}\.csv: line {line}: date .* without gaps"):
        ett.load_ett(tmp_path, dataset)


def test_a_horizon_longer_than_the_val_and_test_splits_is_an_error_before_any_cell_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the first cell (H=96) would run, and the second find no val window only then
    args = ["bench", "ett", "--data", str(tmp_path), "--model", "linear", "--horizon", "96", "2881"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        "hftraining: error: --horizon: 2881 is longer than the ETTh1 val and test splits (2880 rows): they would have no window")
    # ETTm's splits are 4× longer: 2881 is a valid horizon there, the missing CSV is the error
    assert main(["bench", "ett", "--data", str(tmp_path), "--model", "linear", "--dataset", "ETTm1", "--horizon", "2881"]) == 2
    assert "ETTm1.csv: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("subtract_last", [False, True])
def test_untrained_correction_on_the_linear_map_is_the_map(subtract_last: bool) -> None:
    torch.manual_seed(5)
    X, Y = torch.randn(60, 32, 3).cumsum(1), torch.randn(60, 8, 3)  # a level: the last value is not the mean
    lin = ett.LinearMap().fit(X, Y)
    cfg = ett.ModelConfig(type="patchtst", hidden_size=16, num_heads=2, num_layers=1, patch_len=8, patch_stride=4)
    net = PatchTSTMultivariate(cfg, 3, 8, 32, subtract_last=subtract_last)
    model = ett.OnLinearMap(lin, net).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X), lin(X), rtol=1e-4, atol=1e-4)
