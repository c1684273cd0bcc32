"""An ensemble built of another ensemble's members (``hftraining ensemble ens/members/member-0
ens/members/member-1``, the way an ensemble of ensembles is made) is that ensemble again: the members forecast
in the precision that ensemble recorded for them (their runs'), it keeps its evaluation settings and its fitted
baselines, so its weights, intervals, forecasts and verdict are those of the ensemble it was built from. A
member whose files were replaced since is no longer that ensemble's and is read as a bare model folder."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.cli import main  # noqa: E402
from hftraining.data.io import sample_data_dir  # noqa: E402
from hftraining.inference.ensemble import build_ensemble  # noqa: E402
from hftraining.inference.forecaster import Forecaster  # noqa: E402

ARGS = ["model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2", "training.max_steps=3",
        "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false",
        "evaluation.baseline_max_windows=300", "training.precision=bf16", "evaluation.max_test_windows=300"]


from test_review_ensemble_round17 import _run  # noqa: E402  (exit code, stdout, stderr of the CLI)


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    """Two bf16 runs that score at most 300 test windows (not the default), their weighted ensemble, and an
    ensemble built of that ensemble's members."""
    root = tmp_path_factory.mktemp("ens18")
    for seed in (0, 1):
        assert main(["train", *tiny(root / f"run{seed}", *ARGS, f"training.seed={seed}")]) == 0
    first = build_ensemble([root / "run0", root / "run1"], root / "ens", "weighted")
    again = build_ensemble([first / "members" / "member-0", first / "members" / "member-1"], root / "again", "weighted")
    return root, first, again


def _meta(folder: Path) -> dict:
    return json.loads((folder / "ensemble.json").read_text())


def test_rebuilt_members_keep_their_precision_weights_and_intervals(ens):
    """The members of a bf16 ensemble were taken for bare fp32 folders: the rebuilt ensemble recorded fp32,
    forecast about 1e-3 relative off the ensemble it was built from, and fit other weights and intervals."""
    _, first, again = ens
    a, b = _meta(first), _meta(again)
    assert a["precision"] == "bf16"
    assert b["precision"] == "bf16"
    assert b["weights"] == a["weights"] and b["validation_mse"] == a["validation_mse"]
    assert json.loads((again / "intervals.json").read_text()) == json.loads((first / "intervals.json").read_text())
    data = str(sample_data_dir() / "AEM.csv")
    fa, fb = Forecaster.from_pretrained(first), Forecaster.from_pretrained(again)
    assert fb.precision == "bf16"
    ta, tb = fa.predict(data), fb.predict(data)
    cols = [c for c in ta.columns if c.startswith(("forecast_", "lower_", "upper_"))]
    np.testing.assert_array_equal(tb[cols].to_numpy(), ta[cols].to_numpy())


def test_rebuilt_members_keep_their_evaluation_settings_and_fitted_baselines(ens):
    """Without its run's evaluation settings and fitted baselines the rebuilt ensemble scored every test window
    (not the 300 its members' runs scored) and was judged against the naive baselines alone: its verdict named
    naive:zero its strongest baseline where the ensemble it was built from named a fitted one."""
    _, first, again = ens
    assert _meta(again)["evaluation"] == _meta(first)["evaluation"]
    assert _meta(again)["evaluation"]["max_test_windows"] == 300
    assert (again / "baselines").is_dir()
    results = []
    for folder in (first, again):
        rc, out, err = _run("evaluate", str(folder), "--json", "--no-report")
        assert rc == 0, err
        results.append(json.loads(out))
    a, b = results
    assert {"ridge", "lightgbm"} <= set(b["baselines"])
    assert b["n_windows"] == a["n_windows"] <= 300
    assert b["strongest_baseline"]["name"] == a["strongest_baseline"]["name"]
    assert b["verdict"] == a["verdict"]
    assert b["model"]["mse"] == a["model"]["mse"]


def test_a_member_replaced_since_is_read_as_a_bare_folder(ens, tmp_path, caplog):
    """A member folder with another model copied over it is not the model the ensemble recorded settings for:
    it forecasts alone in fp32, as a bare folder does, and the ensemble built with it records no precision or
    evaluation settings, saying why."""
    root, first, _ = ens
    copy = tmp_path / "ens"
    shutil.copytree(first, copy)
    shutil.rmtree(copy / "members" / "member-1")
    shutil.copytree(root / "run0" / "final", copy / "members" / "member-1")  # another model's files
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        out = build_ensemble([copy / "members" / "member-0", copy / "members" / "member-1"], tmp_path / "out")
    meta = _meta(out)
    assert meta["precision"] is None and meta["evaluation"] is None
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "different precisions" in warned and str(copy / "members" / "member-1") in warned, warned
