"""A member folder of an ensemble (``ens/members/member-0``) is the model of the run it was copied from: alone
(``predict``, ``serve``, ``export``) it forecasts in the precision that ensemble recorded for it, as the ensemble
and the run forecast it; given to ``hftraining ensemble`` by any path that names it (from inside ``members/``,
``.``, ``../member-1``, a link to it) it brings that ensemble's precision, evaluation settings and fitted
baselines; and building an ensemble of such members reads and hashes each member's weights once, not once per
thing asked of it."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

import hftraining.inference.ensemble as ensemble  # noqa: E402
from hftraining.cli import main  # noqa: E402
from hftraining.data.io import sample_data_dir  # noqa: E402
from hftraining.inference.ensemble import build_ensemble  # noqa: E402
from hftraining.inference.forecaster import Forecaster  # noqa: E402

ARGS = ["model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2", "training.max_steps=3",
        "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false",
        "evaluation.baseline_max_windows=300", "training.precision=bf16", "evaluation.max_test_windows=300"]


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    """Two bf16 runs that score at most 300 test windows, and their weighted ensemble."""
    root = tmp_path_factory.mktemp("rev_ens18")
    for seed in (0, 1):
        assert main(["train", *tiny(root / f"run{seed}", *ARGS, f"training.seed={seed}")]) == 0
    return root, build_ensemble([root / "run0", root / "run1"], root / "ens", "weighted")


def _meta(folder: Path) -> dict:
    return json.loads((folder / "ensemble.json").read_text())


def _forecasts(fc: Forecaster) -> np.ndarray:
    table = fc.predict(str(sample_data_dir() / "AEM.csv"))
    return table[[c for c in table.columns if c.startswith("forecast_")]].to_numpy()


def test_a_member_alone_forecasts_in_the_precision_its_ensemble_recorded(ens, tmp_path):
    """``predict ens/members/member-0`` of a bf16 ensemble forecast in fp32: not the forecasts its run scored
    nor the part the ensemble combined. A member whose files were replaced since is a bare folder: fp32."""
    root, first = ens
    member = Forecaster.from_pretrained(first / "members" / "member-0")
    run = Forecaster.from_pretrained(root / "run0")
    assert run.precision == "bf16"
    assert member.precision == "bf16"
    np.testing.assert_array_equal(_forecasts(member), _forecasts(run))
    copy = tmp_path / "ens"
    shutil.copytree(first, copy)
    shutil.rmtree(copy / "members" / "member-0")
    shutil.copytree(root / "run1" / "final", copy / "members" / "member-0")  # another model's files
    assert Forecaster.from_pretrained(copy / "members" / "member-0").precision == "fp32"


@pytest.mark.parametrize("how", ["inside members/", "dot and ../", "links"])
def test_members_named_by_any_path_bring_their_ensembles_settings(ens, tmp_path, monkeypatch, how):
    """From inside ``members/`` (``hftraining ensemble member-0 member-1``), as ``.`` and ``../member-1``, or
    through links to them, the members were read as bare fp32 folders: the rebuilt ensemble recorded fp32, no
    evaluation settings and no fitted baselines, and fit other weights than the ensemble it was built from."""
    _, first = ens
    members = first / "members"
    if how == "inside members/":
        monkeypatch.chdir(members)
        given = ["member-0", "member-1"]
    elif how == "dot and ../":
        monkeypatch.chdir(members / "member-0")
        given = [".", "../member-1"]
    else:
        for k in (0, 1):
            (tmp_path / f"m{k}").symlink_to(members / f"member-{k}", target_is_directory=True)
        given = [tmp_path / "m0", tmp_path / "m1"]
    out = build_ensemble(given, tmp_path / "again", "weighted")
    a, b = _meta(first), _meta(out)
    assert b["precision"] == a["precision"] == "bf16"
    assert b["evaluation"] == a["evaluation"] and b["evaluation"]["max_test_windows"] == 300
    assert (out / "baselines").is_dir()
    assert b["weights"] == a["weights"] and b["validation_mse"] == a["validation_mse"]


def test_each_members_weights_are_hashed_once_per_build(ens, tmp_path, monkeypatch):
    """Each member of an ensemble folder given to ``ensemble`` was hashed (all of its weights read) for its
    precision, again for its evaluation settings, validation MSE, figures, data report and fitted baselines:
    five to six times a member, each the size of its model.safetensors. Now once, and each copy once as written."""
    _, first = ens
    hashed: Counter = Counter()
    digest = ensemble.member_digest

    def counted(member):
        hashed[Path(member).resolve()] += 1
        return digest(member)

    monkeypatch.setattr(ensemble, "member_digest", counted)
    out = build_ensemble([first / "members" / "member-0", first / "members" / "member-1"], tmp_path / "again",
                         "weighted")
    assert _meta(out)["precision"] == "bf16"
    sources = {(first / "members" / f"member-{k}").resolve() for k in (0, 1)}
    assert {p: n for p, n in hashed.items() if p in sources} == {p: 1 for p in sources}
    assert sum(hashed.values()) == 4, hashed  # two sources, two copies
    # loading the folder later still reads every member (a member replaced since is refused as it loads)
    hashed.clear()
    Forecaster.from_pretrained(out)
    assert sum(hashed.values()) == 2
