"""The fitted baselines as model folders a user loads: a LightGBM booster whose trees are not trees is a
one-line error, never a forecast that runs for ever."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from hftraining.core.config import ModelConfig, load_config
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.models import build_model

CSV = str(sample_data_dir() / "AEM.csv")


@pytest.fixture(scope="module")
def gbm_folder(tmp_path_factory):
    """A fitted LightGBM model folder (AEM, 20 rows in, 3 steps out)."""
    d = tmp_path_factory.mktemp("gbm") / "lightgbm"
    cfg = load_config(None, ["data.symbols=[AEM]", "data.sequence_length=20", "data.prediction_horizon=3"])
    data = prepare(cfg.data)
    pre = data.preprocessing
    m = build_model(ModelConfig(type="lightgbm", lightgbm_rounds=20, lightgbm_min_data_in_leaf=20),
                    len(pre.feature_columns), pre.horizon, pre.seq_len)
    m.fit_windows(data.train, data.val)
    m.save_pretrained(d, preprocessing=pre.to_dict())
    rc, err = _predict(d, d.parent)
    assert rc == 0, err[-2000:]  # the intact folder forecasts
    return d


def _rewrite_first_tree(folder, changes: dict) -> None:
    """Change the ``key=`` arrays of the first tree of ``booster_0`` (``changes``: key → a function of
    its values as strings), its ``tree_sizes`` kept consistent."""
    path = folder / "model.safetensors"
    state = load_file(str(path))
    text = bytes(state["booster_0"].numpy()).decode("utf-8")
    for key, change in changes.items():
        head, _, rest = text.partition(f"\n{key}=")
        values, _, tail = rest.partition("\n")
        text = f"{head}\n{key}={' '.join(change(values.split()))}\n{tail}"
    start, end = text.index("\nTree="), text.index("\nend of trees")
    sizes = [len(b.encode()) for b in re.split(r"(?<=\n)(?=Tree=)", text[start + 1:end + 1])]
    text = re.sub(r"tree_sizes=[0-9 ]*", "tree_sizes=" + " ".join(map(str, sizes)), text, count=1)
    state["booster_0"] = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)
    save_file(state, str(path), metadata={"format": "pt"})


def _predict(folder, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hftraining", "predict", str(folder), "--data", CSV,
                           "--out", str(tmp_path / "f.csv")], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("name, changes", [
    # both children of the root are the root itself: LightGBM walked that loop for ever at the first forecast
    ("loop_to_the_root", {"left_child": lambda v: ["0", *v[1:]], "right_child": lambda v: ["0", *v[1:]]}),
    # every left child the same leaf: several splits lead to leaf 0, and leaves are never reached
    ("a_leaf_reached_twice", {"left_child": lambda v: ["-1"] * len(v)}),
])
def test_a_lightgbm_booster_whose_children_make_no_tree_is_a_one_line_error(gbm_folder, tmp_path, name, changes):
    import shutil

    d = tmp_path / name
    shutil.copytree(gbm_folder, d)
    _rewrite_first_tree(d, changes)
    try:
        rc, err = _predict(d, tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("predict of a booster whose child indices loop never returned")
    assert rc == 2, err[-2000:]
    assert err.count("\n") == 1 and err.startswith("hftraining: error: "), err[-2000:]
    assert "booster_0" in err and "make no tree" in err, err
