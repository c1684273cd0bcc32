"""``bench ett``: every dataset file is checked before the first cell runs, and the table scores ours
on the test windows the published PatchTST figures kept (their loader's ``drop_last``) beside all of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from hftraining.cli import main
from hftraining.workflows import ett

ROWS = 14400  # the end of the ETTh test split (PAPER_TABLES.md §1.1)


def write_ett(path: Path, rows: int, start: str = "2016-07-01T00:00", seed: int = 0) -> None:
    """An hourly ETT-shaped file: a daily cycle plus a random walk in each of the 7 channels."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    values = np.sin(2 * np.pi * t / 24)[:, None] + 0.05 * rng.normal(size=(rows, 7)).cumsum(0)
    dates = np.datetime64(start, "s") + t * np.timedelta64(1, "h")
    lines = [",".join(ett.COLUMNS)]
    lines += [f"{str(d).replace('T', ' ')}," + ",".join(f"{v:.4f}" for v in row) for d, row in zip(dates, values)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("second, message", [
    (None, "ETTh2.csv: no such file"),
    (dict(rows=200), "ETTh2.csv: 200 rows, the protocol needs 14400"),
    (dict(rows=ROWS, start="2016-07-01T01:00"), "ETTh2.csv: line 2: date"),
])
def test_a_bad_second_dataset_is_refused_before_the_first_cell_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture, second: dict | None, message: str) -> None:
    write_ett(tmp_path / "ETTh1.csv", ROWS)
    if second is not None:
        write_ett(tmp_path / "ETTh2.csv", **second)
    out = tmp_path / "res" / "ett.json"
    rc = main(["bench", "ett", "--data", str(tmp_path), "--dataset", "ETTh1", "ETTh2", "--horizon", "24",
               "--seq-len", "48", "--model", "linear", "--threads", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert "ETTh1 H=24" not in captured.out  # no cell ran: ETTh1's would have come first
    assert not out.exists()


def test_the_table_scores_ours_on_the_windows_patchtst_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_ett(tmp_path / "ETTh1.csv", ROWS)
    out, preds = tmp_path / "ett.json", tmp_path / "pred.safetensors"
    rc = main(["bench", "ett", "--data", str(tmp_path), "--dataset", "ETTh1", "--horizon", "96", "--seq-len", "48",
               "--model", "linear", "--linear-lookbacks", "24", "48", "--threads", "1", "--out", str(out),
               "--save-predictions", str(preds)])
    assert rc == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())["results"][0]
    # PAPER_TABLES.md §1.3: PatchTST's test loader (batch 128, drop_last) scored 2688 of ETTh's 2785 windows at H=96
    assert r["windows"]["test"] == 2785
    kept = r["ours"]["test_patchtst_windows"]
    assert kept["windows"] == 2688
    # the same forecasts as "ours" (the val-chosen average of the saved members), on the first 2688 windows
    saved = load_file(str(preds))
    w = r["ensemble"]["weights"]
    pred = sum(v * saved[f"{n.replace(' ', '_')}/test"].double() for n, v in w.items())
    Y = ett.prepare(ett.load_ett(tmp_path, "ETTh1"), "ETTh1", 48, 96).splits["test"][1].double()
    assert ett.scores(pred, Y)["mse"] == pytest.approx(r["ours"]["test"]["mse"], rel=1e-9)
    assert kept["mse"] == pytest.approx(float(((pred[:2688] - Y[:2688]) ** 2).mean()), rel=1e-9)
    assert kept["mae"] == pytest.approx(float((pred[:2688] - Y[:2688]).abs().mean()), rel=1e-9)
    assert kept["mse"] != pytest.approx(r["ours"]["test"]["mse"], rel=1e-6)  # the 97 dropped windows count
    # the printed comparison says which windows each column scores
    assert "dropped their test loader's last partial batch" in printed
    assert f"ETTh1 H=96: {kept['mse']:.3f}/{kept['mae']:.3f} on the first 2688 of 2785 windows" in printed


def test_patchtst_windows_of_a_trained_model_are_its_own_forecasts(tmp_path: Path) -> None:
    write_ett(tmp_path / "ETTh1.csv", ROWS)
    s = ett.TrainSettings(epochs=1, batch_size=256, patience=1, evals_per_epoch=1)
    r = ett.run_suite(tmp_path, ["ETTh1"], [24], "dlinear", 48, settings=s, ensemble=False, run_dir=tmp_path / "runs",
                      log=lambda _: None, save_predictions=tmp_path / "p.safetensors")[0]
    pred = load_file(str(tmp_path / "p.safetensors"))["dlinear/test"].double()
    Y = ett.prepare(ett.load_ett(tmp_path, "ETTh1"), "ETTh1", 48, 24).splits["test"][1].double()
    n = 2881 - 24
    kept = r["ours"]["test_patchtst_windows"]
    assert r["ours"]["name"] == "dlinear" and kept["windows"] == n // 128 * 128
    assert kept["mse"] == pytest.approx(float(((pred[: kept["windows"]] - Y[: kept["windows"]]) ** 2).mean()), rel=1e-6)
    assert r["ours"]["test"]["mse"] == pytest.approx(float(((pred - Y) ** 2).mean()), rel=1e-6)
