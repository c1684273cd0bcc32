"""The ETT protocol (PAPER_TABLES.md §1): borders, window counts, train-only scaling, the Repeat
baseline reproducing the published column, the closed-form linear map, and the benchmark's output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hftraining.cli import main
from hftraining.core.errors import DataError
from hftraining.models.dlinear import DLinearMultivariate
from hftraining.models.patchtst import PatchTSTMultivariate
from hftraining.workflows import ett

ETT_DIR = Path(os.environ.get("HFTRAINING_ETT_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "ett"))
needs_data = pytest.mark.skipif(not (ETT_DIR / "ETTh1.csv").exists(), reason=f"ETT CSVs not in {ETT_DIR}")


@pytest.fixture(scope="module")
def etth1() -> np.ndarray:
    if not (ETT_DIR / "ETTh1.csv").exists():
        pytest.skip(f"ETT CSVs not in {ETT_DIR}")
    return ett.load_ett(ETT_DIR, "ETTh1")


# PAPER_TABLES.md §1.1: ETTh val/test windows = 2881 − H; train windows by L
TRAIN_WINDOWS = {
    336: {96: 8209, 192: 8113, 336: 7969, 720: 7585},
    96: {96: 8449, 192: 8353, 336: 8209, 720: 7825},
    512: {96: 8033, 192: 7937, 336: 7793, 720: 7409},
}


@needs_data
@pytest.mark.parametrize("seq_len", [96, 336, 512])
@pytest.mark.parametrize("horizon", [96, 192, 336, 720])
def test_etth_window_counts(etth1: np.ndarray, seq_len: int, horizon: int) -> None:
    data = ett.prepare(etth1, "ETTh1", seq_len, horizon)
    assert data.count("test") == 2881 - horizon
    assert data.count("val") == 2881 - horizon
    assert data.count("train") == TRAIN_WINDOWS[seq_len][horizon]


@pytest.mark.parametrize("horizon, val, train", [(96, 11425, 34129), (720, 10801, 33505)])
def test_ettm_window_counts(horizon: int, val: int, train: int) -> None:
    # ETTm borders are 4× the hourly ones; counts from PAPER_TABLES.md §1.1 (L=336)
    values = np.random.default_rng(0).normal(size=(69680, 7))
    data = ett.prepare(values, "ETTm1", 336, horizon)
    assert (data.count("train"), data.count("val"), data.count("test")) == (train, val, val)


@needs_data
def test_split_rows_and_first_test_target(etth1: np.ndarray) -> None:
    L, H = 336, 96
    data = ett.prepare(etth1, "ETTh1", L, H)
    z = torch.from_numpy(data.scaler.transform(etth1, ett.SERIES).astype(np.float32))
    Xte, Yte = data.splits["test"]
    assert torch.equal(Yte[0, 0], z[11520])  # first forecast step is the split's first row
    assert torch.equal(Xte[0, -1], z[11519])  # the input lies entirely before it
    assert torch.equal(Yte[-1, -1], z[14399])  # the last target is the split's last row
    Xva, Yva = data.splits["val"]
    assert torch.equal(Yva[0, 0], z[8640]) and torch.equal(Yva[-1, -1], z[11519])
    assert torch.equal(data.splits["train"][1][-1, -1], z[8639])  # train never reaches val rows


def test_scaler_is_fit_on_train_rows_only() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(17420, 7))
    base_mean, base_std = ett.prepare(values, "ETTh1", 96, 96).scaler.stats(ett.SERIES)
    shifted = values.copy()
    shifted[8640:] = shifted[8640:] * 100 + 50  # rows outside train must not move the scaler
    moved_mean, moved_std = ett.prepare(shifted, "ETTh1", 96, 96).scaler.stats(ett.SERIES)
    np.testing.assert_array_equal(base_mean, moved_mean)
    np.testing.assert_array_equal(base_std, moved_std)
    np.testing.assert_allclose(base_mean, values[:8640].mean(0))
    np.testing.assert_allclose(base_std, values[:8640].std(0, ddof=0))  # population std, as sklearn


def test_the_splits_windows_are_the_protocols_windows_gathered_by_the_window_sets() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(17420, 7))
    L, H = 48, 24
    data = ett.prepare(values, "ETTh1", L, H)
    z = data.z.numpy()
    for split in ("train", "val", "test"):
        X, Y = data.splits[split]  # the closed-form maps' windows, gathered by the split's WindowSet
        a, b = data.borders[split]
        assert len(data.windows[split]) == X.shape[0] == data.count(split) == b - a - L - H + 1
        for i in (0, 1, X.shape[0] // 2, X.shape[0] - 1):  # the protocol: stride 1 from the split's first row
            np.testing.assert_array_equal(X[i].numpy(), z[a + i : a + i + L])
            np.testing.assert_array_equal(Y[i].numpy(), z[a + i + L : a + i + L + H])
        assert "mask" not in data.windows[split].batch(np.arange(4))  # no window reaches before its segment


@needs_data
@pytest.mark.parametrize(
    "horizon, all_windows, bs32_drop_last",
    # PAPER_TABLES.md §1.3: the Repeat baseline recomputed under each test-loader setting
    [(336, (1.330, 0.746), (1.323, 0.744)), (720, (1.335, 0.755), (1.339, 0.756))],
)
def test_repeat_baseline_reproduces_published(etth1: np.ndarray, horizon: int, all_windows: tuple, bs32_drop_last: tuple) -> None:
    data = ett.prepare(etth1, "ETTh1", 336, horizon)
    X, Y = data.splits["test"]
    err = (Y - X[:, -1:, :]).double()  # (n, H, C): repeat the last observed value
    assert (round(float((err**2).mean()), 3), round(float(err.abs().mean()), 3)) == all_windows
    k = (err.shape[0] // 32) * 32
    assert (round(float((err[:k] ** 2).mean()), 3), round(float(err[:k].abs().mean()), 3)) == bs32_drop_last


def test_linear_map_equals_least_squares_across_chunks() -> None:
    rng = np.random.default_rng(2)
    X = torch.from_numpy(rng.normal(size=(50, 12, 3)).astype(np.float32))
    Y = torch.from_numpy(rng.normal(size=(50, 4, 3)).astype(np.float32))
    lin = ett.LinearMap(ridge=0.0).fit(X, Y, chunk=7)  # several chunks, the last one short
    A = np.c_[X.numpy().transpose(0, 2, 1).reshape(-1, 12), np.ones(150)]
    B = Y.numpy().transpose(0, 2, 1).reshape(-1, 4)
    W = np.linalg.lstsq(A.astype(np.float64), B.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(lin.weight.numpy(), W, atol=1e-8)
    expected = (A @ W).reshape(50, 3, 4).transpose(0, 2, 1)
    np.testing.assert_allclose(lin(X).numpy(), expected, atol=1e-5)


@needs_data
def test_linear_map_beats_zero_forecast_on_a_slice(etth1: np.ndarray) -> None:
    data = ett.prepare(etth1, "ETTh1", 96, 24)
    Xtr, Ytr = data.splits["train"]
    Xva, Yva = data.splits["val"]
    lin = ett.LinearMap().fit(Xtr[:2000], Ytr[:2000])
    ours = ett.metrics(lin, Xva[:500], Yva[:500])
    zeros = ett.metrics(lambda x: torch.zeros(x.shape[0], 24, x.shape[2]), Xva[:500], Yva[:500])
    assert ours["mse"] < 0.5 * zeros["mse"]


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ETTh1.csv: no such file"):
        ett.load_ett(tmp_path, "ETTh1")
    (tmp_path / "ETTh2.csv").write_text("date,a,b\n2016-07-01 00:00:00,1,2\n")
    with pytest.raises(DataError, match="ETTh2.csv: header"):
        ett.load_ett(tmp_path, "ETTh2")
    (tmp_path / "ETTm1.csv").write_text(",".join(ett.COLUMNS) + "\n2016-07-01 00:00:00,1,2,3,x,5,6,7\n")
    with pytest.raises(DataError, match="ETTm1.csv: unreadable value"):
        ett.load_ett(tmp_path, "ETTm1")
    with pytest.raises(DataError, match="ETTh1: 100 rows"):
        ett.prepare(np.zeros((100, 7)), "ETTh1", 96, 96)


@needs_data
def test_main_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ett.json"
    rc = main(["bench", "ett", "--data", str(ETT_DIR), "--model", "linear", "--seq-len", "96", "--horizon", "96", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "PatchTST/64" in printed and "0.370/0.400" in printed  # the published column is shown
    r = json.loads(out.read_text())["results"][0]
    assert r["windows"] == {"train": 8449, "val": 2785, "test": 2785}
    assert r["linear_map"]["test"]["mse"] < 0.5  # Repeat scores 1.29 on these windows
    assert main(["bench", "ett", "--data", str(tmp_path), "--model", "linear"]) == 2  # a missing CSV: one line, exit 2
    assert "ETTh1.csv: no such file" in capsys.readouterr().err


@needs_data
def test_training_keeps_the_weights_with_the_lowest_val_mse(etth1: np.ndarray, tmp_path: Path) -> None:
    data = ett.prepare(etth1, "ETTh1", 96, 24)
    data.windows = {k: ws.subset(slice(None, None, 8)) for k, ws in data.windows.items()}  # a slice keeps it fast
    torch.manual_seed(0)
    net = DLinearMultivariate(ett.ModelConfig(type="dlinear"), 7, 24, 96)
    s = ett.TrainSettings(epochs=3, batch_size=32, lr=0.005, patience=10, evals_per_epoch=2)
    out = ett.train_model(net, data, s, tmp_path / "run", ett.ModelConfig(type="dlinear"), log=lambda _: None)
    vals = [h["val_mse"] for h in out["history"]]
    assert len(vals) == 6 and out["best_val_mse"] == min(vals)
    assert vals[-1] < vals[0]  # it learned
    # the model holds the best weights: scored again through the batched forward and the metrics
    again = ett.scores(ett.forecasts(out["model"], data, "val"), data.windows["val"].targets())["mse"]
    assert again == pytest.approx(out["best_val_mse"], rel=1e-6)
    assert list((tmp_path / "run" / "checkpoints").iterdir())  # the package's checkpoints, not a copy in memory


def test_average_is_chosen_on_val_only() -> None:
    g = torch.Generator().manual_seed(3)
    Yva, Yte = torch.randn(40, 5, 2, generator=g), torch.randn(40, 5, 2, generator=g)
    noise = lambda: torch.randn(40, 5, 2, generator=g)  # noqa: E731
    # a and b carry independent errors of equal size on val: their average halves the error
    members = {"a": (Yva + noise(), Yte), "b": (Yva + noise(), Yte + 5), "c": (Yva + 3 * noise(), Yte)}
    out = ett.select_average(members, Yva, Yte)
    assert set(out["weights"]) == {"a", "b"} and sum(out["weights"].values()) == pytest.approx(1.0)
    assert out["val"]["mse"] < min(out["member_val_mse"].values())
    b = out["weights"]["b"]
    assert out["test"]["mse"] == pytest.approx((5 * b) ** 2, rel=1e-6)  # test is only scored, never consulted


def test_centred_map_follows_a_level_shift() -> None:
    # train on series around 0, test on the same dynamics shifted by +10: only the centred map follows
    g = torch.Generator().manual_seed(4)
    walk = lambda n: torch.randn(n, 40, 1, generator=g).cumsum(1) * 0.1 + torch.sin(torch.arange(40.0) / 3)[None, :, None]  # noqa: E731
    tr, te = walk(300), walk(50) + 10
    plain = ett.LinearMap(1e-2).fit(tr[:, :32], tr[:, 32:])
    centred = ett.LinearMap(1e-2, center=True).fit(tr[:, :32], tr[:, 32:])
    err = lambda m: float(((m(te[:, :32]) - te[:, 32:]) ** 2).mean())  # noqa: E731
    assert err(centred) < 0.1 < err(plain)


def test_correction_on_the_linear_map_starts_at_the_map() -> None:
    torch.manual_seed(5)
    X, Y = torch.randn(60, 32, 3), torch.randn(60, 8, 3)
    lin = ett.LinearMap().fit(X, Y)
    cfg = ett.ModelConfig(type="patchtst", hidden_size=16, num_heads=2, num_layers=1, patch_len=8, patch_stride=4)
    model = ett.OnLinearMap(lin, PatchTSTMultivariate(cfg, 3, 8, 32)).eval()
    torch.testing.assert_close(model(X), lin(X), rtol=1e-4, atol=1e-4)  # untrained: exactly the base forecast
    assert not any(n.startswith("base") for n, _ in model.named_parameters())  # the base map is not trained


def test_time_of_day_map_equals_least_squares_with_one_hot_columns() -> None:
    rng = np.random.default_rng(6)
    n, L, H, C, P, lam = 60, 10, 3, 2, 4, 0.05
    X = torch.from_numpy(rng.normal(size=(n, L, C)).astype(np.float32))
    Y = torch.from_numpy(rng.normal(size=(n, H, C)).astype(np.float32))
    phase = torch.from_numpy(rng.integers(0, 50, size=n))  # reduced mod P inside
    lin = ett.LinearMap(ridge=lam, period=P).fit(X, Y, phase, chunk=7)
    x = X.numpy().transpose(0, 2, 1).reshape(-1, L).astype(np.float64)  # rows: (window, channel)
    group = (np.arange(C)[None, :] * P + (phase.numpy() % P)[:, None]).reshape(-1)
    A = np.c_[x, np.ones(n * C), np.eye(C * P)[group]]
    B = Y.numpy().transpose(0, 2, 1).reshape(-1, H).astype(np.float64)
    xa = A[:, : L + 1]
    pen = np.r_[np.full(L + 1, lam * np.diag(xa.T @ xa).mean()), np.full(C * P, lam * n * C / (C * P))]
    W = np.linalg.solve(A.T @ A + np.diag(pen), A.T @ B)
    np.testing.assert_allclose(np.r_[lin.weight.numpy(), lin.phase_bias.numpy()], W, atol=1e-8)
    expected = (A @ W).reshape(n, C, H).transpose(0, 2, 1)
    np.testing.assert_allclose(lin(X, phase).numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="phase of each"):
        lin(X)


def test_time_of_day_map_learns_a_daily_cycle_the_plain_map_cannot() -> None:
    # noise plus a fixed 24-step profile per channel; the look-back (12 steps) is shorter than a day
    g = torch.Generator().manual_seed(7)
    T, C, L, H = 24 * 200, 3, 12, 6
    profile = torch.randn(24, C, generator=g)
    rows = torch.arange(T)
    z = profile[rows % 24] + 0.3 * torch.randn(T, C, generator=g)
    n = T - L - H + 1
    b = ett.window_set(z.numpy(), np.arange(T, dtype=np.int64), 0, T, L, H).batch(np.arange(n))
    X, Y = b["x"], b["y"]
    phase = (rows[: X.shape[0]] + L) % 24  # the first forecast row's hour
    tr, te = slice(0, 3000), slice(3000, None)
    daily = ett.LinearMap(1e-4, period=24).fit(X[tr], Y[tr], phase[tr])
    plain = ett.LinearMap(1e-4).fit(X[tr], Y[tr])
    err_daily = float(((daily(X[te], phase[te]) - Y[te]) ** 2).mean())
    err_plain = float(((plain(X[te]) - Y[te]) ** 2).mean())
    assert err_daily < 0.1 < err_plain  # 0.09 is the noise floor (0.3²)


@needs_data
def test_phase_is_the_hour_of_the_first_forecast_row(etth1: np.ndarray) -> None:
    dates = np.loadtxt(ETT_DIR / "ETTh1.csv", delimiter=",", skiprows=1, usecols=0, dtype=str)
    data = ett.prepare(etth1, "ETTh1", 336, 96)
    for split in ("train", "val", "test"):
        first = data.borders[split][0] + 336
        ph = ett.phases(data, split, 24)
        for i in (0, 1, 17, data.count(split) - 1):
            assert int(ph[i]) == int(dates[first + i][11:13])  # "YYYY-MM-DD HH:MM:SS"


@needs_data
def test_trained_result_follows_the_seed_not_the_process_rng(tmp_path: Path) -> None:
    s = ett.TrainSettings(epochs=1, batch_size=64, lr=0.005, patience=1, evals_per_epoch=1, seed=11)
    runs = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # stands for a fresh process: torch seeds its generator at random
        r = ett.run_ett(ETT_DIR, "ETTh1", 24, "dlinear", seq_len=48, settings=s, ensemble=False, log=lambda _: None,
                        run_dir=tmp_path / str(noise))
        runs.append(r["trained"]["test"]["mse"])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("args, message", [
    (["--linear-lookbacks", "96", "0"], "--linear-lookbacks: must be > 0, got 0"),
    (["--linear-lookbacks", "-5"], "--linear-lookbacks: must be > 0, got -5"),
    (["--linear-lookbacks", "9000"], "--linear-lookbacks: 9000 leaves no training window with horizon 96"),
    (["--seq-len", "0"], "--seq-len: must be > 0, got 0"),
])
def test_bad_look_backs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture, args: list, message: str) -> None:
    # checked before the data is read: the missing CSV in tmp_path is never reached
    assert main(["bench", "ett", "--data", str(tmp_path), "--model", "linear", "--horizon", "96", *args]) == 2
    assert capsys.readouterr().err.strip() == f"hftraining: error: {message}"


@pytest.mark.parametrize("args, message", [
    # each was a traceback (ZeroDivisionError, TypeError, RuntimeError) or a silently wrong run
    (["--model", "dlinear", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["--model", "dlinear", "--evals-per-epoch", "0"], "--evals-per-epoch: must be >= 1, got 0"),
    (["--model", "dlinear", "--epochs", "0"], "--epochs: must be >= 1, got 0"),
    (["--model", "dlinear", "--lr", "nan"], "--lr: must be > 0, got nan"),
    (["--model", "dlinear", "--patience", "-1"], "--patience: must be >= 0, got -1"),
    (["--model", "dlinear", "--moving-avg", "0"], "model.moving_avg: must be > 0, got 0"),
    (["--model", "patchtst", "--patch-len", "0"], "model.patch_len: must be > 0, got 0"),
    (["--model", "linear", "--threads", "0"], "--threads: must be >= 1, got 0"),
    (["--model", "linear", "--ridge=-1"], "--ridge: must be >= 0 and finite, got -1.0"),
    (["--model", "dlinear", "--on-linear"], "--on-linear: not a setting of --model dlinear (patchtst only)"),
    (["--model", "linear", "--hidden-size", "8"],
     "--hidden-size: not a setting of --model linear (the closed-form map trains nothing)"),
    (["--model", "linear", "--horizon", "96", "720", "--seq-len", "8000"],
     "--seq-len: 8000 leaves no training window with horizon 720"),  # the second cell, before the first runs
    (["--model", "linear", "--horizon", "96", "192", "--save-predictions", "p.safetensors"],
     "--save-predictions: one file holds one dataset × horizon, got 1 dataset(s) × 2 horizon(s); run one cell per file"),
])
def test_bad_training_flags_are_one_line_errors_before_any_cell_runs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                     args: list, message: str) -> None:
    # checked before the data is read: the missing CSV in tmp_path is never reached
    assert main(["bench", "ett", "--data", str(tmp_path), "--run-dir", str(tmp_path / "runs"), *args]) == 2
    assert capsys.readouterr().err.strip() == f"hftraining: error: {message}"
    assert not (tmp_path / "runs").exists()
