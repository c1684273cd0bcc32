"""LightGBM model folders a user saves and loads: every booster LightGBM trains for a one-output regression,
whatever its tree shapes (two leaves, 255 leaves, depth-limited, trees of one leaf, early-stopped, with
missing values), passes the folder's load check and forecasts exactly as the booster it was saved from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hftraining.core.config import ModelConfig
from hftraining.models import build_model
from hftraining.models.base import ForecastModel
from hftraining.models.gbm import FIXED, check_booster_text

N_FEATURES, LAGS, SEQ_LEN, HORIZON = 4, 2, 3, 2
WIDTH = N_FEATURES + LAGS  # the design matrix the boosters read: last row's features, then the lags


def _data(seed: int, n: int):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, WIDTH))
    a[rng.random(a.shape) < 0.05] = np.nan  # missing values: splits with a default direction
    a[:, 3] = np.round(a[:, 3])  # few distinct values
    y = np.sin(2 * np.nan_to_num(a[:, 0])) + np.nan_to_num(a[:, 1]) ** 2 + rng.normal(scale=0.3, size=n)
    return a, y


@pytest.mark.parametrize("settings, stop", [
    ({"num_leaves": 2}, False),
    pytest.param({"num_leaves": 255, "min_data_in_leaf": 1}, False, marks=pytest.mark.slow),  # many splits, deep one-sided branches (slow)
    ({"num_leaves": 31, "max_depth": 2}, False),
    ({"num_leaves": 31, "min_data_in_leaf": 1000}, False),  # every tree one leaf
    ({"num_leaves": 7, "min_gain_to_split": 3.0}, False),  # one-leaf trees between split trees
    ({"num_leaves": 63, "min_data_in_leaf": 2, "learning_rate": 0.5, "extra_trees": True}, True),  # early-stopped
])
def test_every_trained_lightgbm_booster_loads_from_its_folder_and_forecasts_the_same(tmp_path, settings, stop):
    import lightgbm as lgb

    a, y = _data(0, 1200)
    av, yv = _data(1, 300)
    params = {**FIXED, "learning_rate": 0.1, "bagging_fraction": 0.8, "min_data_in_leaf": 20, **settings}
    model = build_model(ModelConfig(type="lightgbm", ridge_lags=LAGS), N_FEATURES, HORIZON, SEQ_LEN)
    texts = []
    for h in range(HORIZON):
        target = y if h == 0 else -y
        dtrain = lgb.Dataset(a, target, params=params)
        if stop:
            bst = lgb.train(params, dtrain, num_boost_round=300, valid_sets=[lgb.Dataset(av, yv if h == 0 else -yv,
                            reference=dtrain, params=params)], callbacks=[lgb.early_stopping(3, verbose=False)])
            assert bst.best_iteration < 300  # the booster kept is an early-stopped one
        else:
            bst = lgb.train(params, dtrain, num_boost_round=40)
        texts.append(bst.model_to_string(num_iteration=bst.best_iteration or None))
        check_booster_text(texts[-1], WIDTH)  # raises on a refusal, naming the tree
        setattr(model, f"booster_{h}", torch.frombuffer(bytearray(texts[-1].encode("utf-8")), dtype=torch.uint8))
    model.boosters = [lgb.Booster(model_str=t) for t in texts]
    model.save_pretrained(tmp_path / "m")
    loaded = ForecastModel.from_pretrained(tmp_path / "m")

    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(256, SEQ_LEN, N_FEATURES)).astype(np.float32))
    past = torch.from_numpy(rng.normal(size=(256, SEQ_LEN)).astype(np.float32))
    want = model(x, None, past).prediction
    assert torch.equal(loaded(x, None, past).prediction, want)
    design = model.design(x, None, past)[:, :-1].double().numpy()
    direct = np.stack([lgb.Booster(model_str=t).predict(design) for t in texts], axis=1)
    assert np.array_equal(want.numpy(), direct.astype(np.float32))  # the saved boosters, not some stand-in


def _fitted_folder(path):
    """A model folder of two real boosters (4 leaves each tree) over the design matrix, saved as a user saves one."""
    import lightgbm as lgb

    a, y = _data(0, 1200)
    params = {**FIXED, "num_leaves": 4, "learning_rate": 0.1, "bagging_fraction": 0.8, "min_data_in_leaf": 20}
    model = build_model(ModelConfig(type="lightgbm", ridge_lags=LAGS), N_FEATURES, HORIZON, SEQ_LEN)
    texts = [lgb.train(params, lgb.Dataset(a, y * (h + 1), params=params), num_boost_round=3).model_to_string()
             for h in range(HORIZON)]
    for h, text in enumerate(texts):
        setattr(model, f"booster_{h}", torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8))
    model.boosters = [lgb.Booster(model_str=t) for t in texts]
    model.save_pretrained(path)
    return path


def _rewrite_booster_0(folder, change) -> str:
    """``change`` the text of ``booster_0`` (its ``tree_sizes`` kept consistent); the text written."""
    import re

    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    text = change(bytes(state["booster_0"].numpy()).decode("utf-8"))
    start, end = text.index("\nTree="), text.index("\nend of trees")
    sizes = [len(b.encode()) for b in re.split(r"(?<=\n)(?=Tree=)", text[start + 1:end + 1])]
    text = re.sub(r"tree_sizes=[0-9 ]*", "tree_sizes=" + " ".join(map(str, sizes)), text, count=1)
    state["booster_0"] = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return text


def _first_line(key, new):
    """Replace the first ``key=`` line (the first tree's) by ``key=new(old values)``."""
    def change(text):
        i = text.index(f"\n{key}=") + len(key) + 2
        j = text.index("\n", i)
        return text[:i] + new(text[i:j]) + text[j:]
    return change


# each text is one LightGBM reads otherwise than Python's int()/float()/split(): the tree it walks is not the tree
# the load check saw. Before, the folder loaded, and the first forecast looped for ever (a root whose left child
# LightGBM reads as 0), crashed the process (SIGABRT, SIGSEGV) or forecast from another tree than the one checked.
HOSTILE = {
    # "0_1" is 1 to float(), 0 to LightGBM: the root's left child is the root
    "underscore_in_a_child": _first_line("left_child", lambda v: "0_1 " + v.split(" ", 1)[1]),
    "exponent_in_a_child": _first_line("left_child", lambda v: "0.1e1 " + v.split(" ", 1)[1]),
    "arabic_digit_in_a_child": _first_line("left_child", lambda v: "\u0661 " + v.split(" ", 1)[1]),
    "tab_between_children": _first_line("left_child", lambda v: v.replace(" ", "\t", 1)),
    "nbsp_between_children": _first_line("left_child", lambda v: v.replace(" ", "\u00a0", 1)),
    # a line break Python splits on and LightGBM does not: LightGBM keeps the looping line, Python the one after
    "line_separator_hides_a_loop": _first_line("left_child", lambda v: "0 " + v.split(" ", 1)[1] + "\nx=1\u2028left_child=" + v),
    "underscore_in_num_leaves": _first_line("num_leaves", lambda v: "0_" + v),  # SIGSEGV
    "shrinkage_not_a_number": _first_line("shrinkage", lambda v: "x"),  # SIGABRT: "Unknown token x"
    "no_num_cat": lambda t: t.replace("\nnum_cat=0", "", 1),  # SIGABRT: "Tree model should contain num_cat field"
}


# loaded in a child process: before, LightGBM's parser ended the loading process (SIGABRT) or its first forecast
# never returned
LOAD = """
import sys, torch
from hftraining.core.errors import DataError
from hftraining.models.base import ForecastModel
try:
    m = ForecastModel.from_pretrained(sys.argv[1])
except DataError as e:
    print("refused:", e)
else:
    print("forecast:", m(torch.zeros(4, m.seq_len, m.n_features), None, torch.zeros(4, m.seq_len)).prediction.tolist())
"""


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_booster_lightgbm_reads_otherwise_than_the_check_is_refused_as_the_folder_loads(tmp_path, name):
    import subprocess
    import sys

    folder = _fitted_folder(tmp_path / "m")
    ForecastModel.from_pretrained(folder)  # the intact folder loads
    _rewrite_booster_0(folder, HOSTILE[name])
    try:
        proc = subprocess.run([sys.executable, "-c", LOAD, str(folder)], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("loading the folder and one forecast never returned")
    assert proc.returncode == 0, f"the loading process ended with {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.startswith("refused: ") and "booster_0: " in proc.stdout, proc.stdout[-500:]
    assert proc.stdout.count("\n") == 1, proc.stdout  # one line


def test_predict_of_a_folder_whose_child_lightgbm_reads_as_the_root_is_a_one_line_error(tmp_path):
    """On the command line: exit 2 with one line naming the booster, where `predict` never returned."""
    import subprocess
    import sys

    from hftraining.core.config import load_config
    from hftraining.data.io import sample_data_dir
    from hftraining.data.pipeline import prepare

    cfg = load_config(None, ["data.symbols=[AEM]", "data.sequence_length=20", "data.prediction_horizon=2"])
    data = prepare(cfg.data)
    pre = data.preprocessing
    m = build_model(ModelConfig(type="lightgbm", lightgbm_rounds=10, lightgbm_min_data_in_leaf=20),
                    len(pre.feature_columns), pre.horizon, pre.seq_len)
    m.fit_windows(data.train, data.val)
    m.save_pretrained(tmp_path / "m", preprocessing=pre.to_dict())
    text = _rewrite_booster_0(tmp_path / "m", HOSTILE["underscore_in_a_child"])
    assert "\nleft_child=0_1 " in text  # the first tree has a split: its root now leads back to itself for LightGBM
    try:
        proc = subprocess.run([sys.executable, "-m", "hftraining", "predict", str(tmp_path / "m"), "--data",
                               str(sample_data_dir() / "AEM.csv"), "--out", str(tmp_path / "f.csv")],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("predict of a booster whose root LightGBM reads as its own child never returned")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hftraining: error: "), proc.stderr[-2000:]
    assert "booster_0" in proc.stderr and "left_child" in proc.stderr, proc.stderr
