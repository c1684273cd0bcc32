"""Start-up of the commands that forecast, and what they read the same way as training.

A forecast from a saved model (``predict``, ``serve``) imports neither Numba (only a training-mode dropout
on CPU draws its mask with the Numba kernel, and training still does) nor ``torch._dynamo`` (the model
folder's shape check builds the model on the meta device, where torch's Python references of ``arange``,
``exp`` and ``sin`` import it); ``list optimizers`` lists what the registry holds; and a bar stamped at UTC
midnight is read as a date or an instant by the spacing of the model's bars, not by the few rows sent.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig

FORECAST = """
import json, sys
import torch
from hftraining.models.base import ForecastModel
import hftraining.inference.forecaster  # noqa: F401  (what predict and serve import)

out = {"numba_at_import": "numba" in sys.modules}
model = ForecastModel.from_pretrained(sys.argv[1])  # the folder check builds it on the meta device first
model.eval()
with torch.no_grad():
    y = model(torch.randn(2, model.seq_len, model.n_features)).prediction
out.update(numba=("numba" in sys.modules), dynamo=("torch._dynamo" in sys.modules), finite=bool(torch.isfinite(y).all()))
model.train()
model(torch.randn(2, model.seq_len, model.n_features)).prediction.sum().backward()
out["numba_after_training_step"] = "numba" in sys.modules
print(json.dumps(out))
"""


def _transformer(dropout: float = 0.1):
    from hftraining.models import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(type="transformer", hidden_size=16, num_heads=2, num_layers=1, dropout=dropout),
                       4, 3, 12)


def test_forecast_from_a_folder_imports_neither_numba_nor_dynamo(tmp_path):
    _transformer().save_pretrained(tmp_path / "model")
    done = subprocess.run([sys.executable, "-c", FORECAST, str(tmp_path / "model")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["finite"], out
    assert not out["numba_at_import"] and not out["numba"], out  # eval mode draws no dropout mask
    assert not out["dynamo"], out
    assert out["numba_after_training_step"], out  # a training step still imports it for its kernel


def test_training_mode_dropout_draws_its_mask_with_the_numba_kernel(monkeypatch):
    """The kernel imported on first use is still the one a training forward on CPU calls (every dropout,
    the attention weights' included), and an eval forward calls it never."""
    from hftraining.models import _mask_numba

    calls = []
    kernel = _mask_numba.keep_words

    def counted(seed, dropped, out):
        calls.append(out.size)
        return kernel(seed, dropped, out)

    monkeypatch.setattr(_mask_numba, "keep_words", counted)
    model = _transformer(dropout=0.2)
    x = torch.randn(3, 12, 4)
    model.eval()
    with torch.no_grad():
        model(x)
    assert calls == []
    model.train()
    model(x).prediction.sum().backward()
    # the embedding's dropout, the encoder layer's three and its attention weights', the head's
    assert len(calls) >= 5, calls


def test_the_meta_build_has_the_shapes_of_the_real_one():
    """The position table built shape-only on the meta device has the real one's shape and dtype, so the
    folder check counts the same buffer values; the real table is unchanged."""
    from hftraining.models.transformer import sinusoidal_positions

    real = sinusoidal_positions(12, 16)
    with torch.device("meta"):
        meta = sinusoidal_positions(12, 16)
    assert meta.is_meta and meta.shape == real.shape and meta.dtype == real.dtype
    assert torch.allclose(real[:, 0::2], torch.sin(torch.arange(12.0)[:, None] * real.new_tensor(
        [10000 ** (-i / 16) for i in range(0, 16, 2)])), atol=1e-6)


def test_list_optimizers_lists_a_newly_registered_optimizer(capsys, monkeypatch):
    """The listing is the registry's: an optimizer registered under a new name is listed, and usable."""
    from hftraining import optim
    from hftraining.cli import main

    monkeypatch.setattr(optim.OPTIMIZERS, "_items", dict(optim.OPTIMIZERS._items))
    optim.OPTIMIZERS.register("probe_sgd")(optim.Spec(torch.optim.SGD, lambda t: {"momentum": 0.5}))
    assert main(["list", "optimizers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "probe_sgd" in lines
    assert [line.split()[0] for line in lines] == optim.optimizer_names()


def _frame(stamps) -> pd.DataFrame:
    ts = pd.DatetimeIndex(stamps)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts
    c = 100 + np.arange(len(ts), dtype=float)
    return pd.DataFrame({"timestamp": ts, "open": c, "high": c + 1, "low": c - 1, "close": c,
                         "volume": np.ones(len(ts))})


TOKYO = [d + pd.Timedelta(hours=h) for d in pd.bdate_range("2024-03-04", periods=10) for h in range(6)]
"""Hourly bars of Tokyo's session, 00:00-05:00 UTC (09:00-14:00 in Tokyo), two weeks."""


@pytest.mark.parametrize("case", ["tokyo_monday", "crypto_one_row", "daily"])
def test_time_features_of_a_bar_are_those_of_training_whatever_the_frame_length(case):
    """The time features of the last bar of a short frame (a forecast from a few rows) equal those the
    full frame gave it, when the spacing of the model's bars is given: the Tokyo model's Monday open
    (67 hours after Friday's last bar) is 09:00 in Tokyo, not the date Monday; a 24-hour market's bar at
    00:00 UTC is 19:00 of the day before in New York; a daily bar at UTC midnight is still its date."""
    from hftraining.data.features import compute_features

    specs = ["hour", "calendar"]
    if case == "tokyo_monday":
        full, tz, bar, end, short = _frame(TOKYO), "Asia/Tokyo", 3600.0, pd.Timestamp("2024-03-11", tz="UTC"), 2
    elif case == "crypto_one_row":
        full, tz, bar = _frame(pd.date_range("2024-03-01", periods=24 * 14, freq="h")), "America/New_York", 3600.0
        end, short = pd.Timestamp("2024-03-10", tz="UTC"), 1
    else:
        full, tz, bar, end, short = _frame(pd.bdate_range("2024-01-01", periods=60)), "America/New_York", 86400.0, None, 1
    i = len(full) - 1 if end is None else int(np.flatnonzero(full["timestamp"] == end)[0])
    trained = compute_features(full, specs, tz).iloc[i].to_numpy()
    few = full.iloc[i - short + 1 : i + 1].reset_index(drop=True)
    sent = compute_features(few, specs, tz, bar_seconds=bar).iloc[-1].to_numpy()
    np.testing.assert_allclose(sent, trained, atol=1e-12)
    # given the training frame's own spacing, the full frame reads as it did; but its first row, with no gap
    # before it, which training reads alone (a date at UTC midnight) and never feeds a model (no previous close)
    np.testing.assert_allclose(compute_features(full, specs, tz, bar_seconds=bar).to_numpy()[1:],
                               compute_features(full, specs, tz).to_numpy()[1:], atol=0)


def test_a_seasonal_naive_folder_loads_without_dynamo(tmp_path):
    """Its offsets were a torch.arange, run on the meta device by the folder's shape check."""
    from hftraining.models import build_model

    build_model(ModelConfig(type="seasonal_naive", season_length=5), 4, 7, 12).save_pretrained(tmp_path / "model")
    code = ("import sys, torch; from hftraining.models.base import ForecastModel; "
            "m = ForecastModel.from_pretrained(sys.argv[1]); print(m.offsets.tolist(), 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("]")[-1].strip() == "False"
    assert done.stdout.startswith("[-4, -3, -2, -1, 0, -4, -3]")
