"""Batches gathered from rows kept on a device (``data.device_cache``) are the batches gathered on
the host, value for value: padded windows, per-symbol scaling and the scaled targets included.
Checked here with the rows "on" the CPU (the same torch code a GPU runs); ``tests/test_devices.py``
repeats it on CUDA, and for the pinned-memory path."""

import dataclasses

import numpy as np
import pytest
import torch

from hftraining.core.config import DataConfig
from hftraining.data.pipeline import prepare
from hftraining.data.windows import DeviceRows


@pytest.fixture(scope="module", params=["return", "cs_rank"])
def data(request):
    # ARM lists late: its first windows are left-padded; per-symbol scaling gives each symbol its own stats;
    # a cross-sectional label (data.target) travels to the device instead of the returns
    d = DataConfig(symbols=["AEM", "ARM", "WPM"], sequence_length=30, prediction_horizon=4, min_history=5,
                   scale_per_symbol=True, target=request.param)
    return prepare(d)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_device_rows_gather_the_host_batches_exactly(data, split):
    ws = data.split(split)
    assert (ws.labels is None) == (ws.target == "return")
    rows = DeviceRows.build(ws, "cpu")
    on_rows = dataclasses.replace(ws, device_rows=rows)
    rng = np.random.default_rng(0)
    padded_seen = False
    for idx in [np.arange(min(64, len(ws))), rng.choice(len(ws), 64), np.arange(len(ws))[-7:]]:
        want, got = ws.batch(idx), on_rows.batch(idx)
        assert want.keys() == got.keys()
        for k in want:
            assert want[k].dtype == got[k].dtype, k
            assert torch.equal(want[k], got[k]), (split, k)
        padded_seen |= "mask" in want
    if split == "train":
        assert padded_seen  # the padded path was compared too


def test_device_rows_count_their_bytes_and_cpu_placement_changes_nothing(data):
    ws = data.train
    n, f = ws.features.shape
    assert DeviceRows.nbytes(ws) == n * f * 4 + n * 4 + 2 * ws.center.size * 4
    assert data.on_device("cpu", DataConfig()) is data  # nothing changes on the CPU
    assert ws.on_device("cpu").device is None
