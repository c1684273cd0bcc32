"""An ensemble is not written with a member whose forecasts of the validation windows are not finite numbers,
whatever its method: a mean (and a median of two) would be NaN at every forecast, with unbounded intervals, a
median of more would silently leave that member out, and a member's quantiles or buy/hold/sell probabilities
that are not finite make the ensemble's not finite either. The build names the member, in one line, exit 2,
and leaves no folder behind."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.cli import main  # noqa: E402
from hftraining.core.errors import DataError  # noqa: E402
from hftraining.inference.ensemble import build_ensemble  # noqa: E402

ARGS = ["model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2", "training.max_steps=3",
        "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false",
        "evaluation.baseline_max_windows=300", "model.quantiles=[0.1, 0.9]", "model.classification_threshold=0.005"]

OVERFLOWS = {
    # the point head alone: every point forecast +-inf
    "inf": {"head.": 1e37},
    # the attention's output too: inf meets -inf, every forecast NaN
    "nan": {"head.": 1e37, "layers.0.self_attn.out_proj": 1e37},
    # finite point forecasts; the final norm's outputs a thousandfold make the quantile head's overflow
    "quantiles": {"norm.": 1e3, "quantile_head.": 1e37},
    # the same for the buy/hold/sell head: logits of +-inf, probabilities NaN
    "class_probs": {"norm.": 1e3, "class_head.": 1e37},
}


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run, its copy, and copies whose weights are finite but make the forecasts named by OVERFLOWS overflow
    float32: the same preprocessing, so they pass every check of shared inputs."""
    root = tmp_path_factory.mktemp("ensrev17")
    good = root / "good"
    assert main(["train", *tiny(good, *ARGS)]) == 0
    assert (good / "final" / "intervals.json").exists()  # the ensemble calibrates its own intervals
    shutil.copytree(good, root / "copy")
    for kind, scales in OVERFLOWS.items():
        out = root / kind
        shutil.copytree(good, out)
        weights = load_file(out / "final" / "model.safetensors")
        for name, t in weights.items():
            for prefix, size in scales.items():
                if name.startswith(prefix) and name.endswith("weight"):
                    weights[name] = t * (size / float(t.abs().max())) if size > 1e30 else t * size
        save_file(weights, out / "final" / "model.safetensors")
    return root


def _refused(members: list[Path], out: Path, method: str, bad: Path, outputs: str) -> str:
    with pytest.raises(DataError) as e:
        build_ensemble(members, out, method)
    msg = str(e.value)
    assert "\n" not in msg and ".tmp-" not in msg and "member-" not in msg, msg
    m = re.match(rf"^{re.escape(str(bad / 'final'))}: the model's forecasts are not finite numbers for (\d+) of the "
                 rf"(\d+) validation window\(s\) \(its ([a-z_, ]+)\)", msg)
    assert m, msg
    assert 0 < int(m.group(1)) <= int(m.group(2))
    assert outputs in m.group(3).split(", "), msg
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return msg


@pytest.mark.parametrize("method", ["mean", "median"])
@pytest.mark.parametrize("kind", ["inf", "nan"])
def test_a_mean_or_median_ensemble_refuses_a_member_whose_validation_forecasts_are_not_finite(runs, tmp_path, method, kind):
    """Before, the ensemble was written ("wrote an ensemble"), its intervals.json with radii of null (unbounded)
    and every forecast NaN; predict and evaluate then failed naming the ensemble folder, not the member."""
    good, bad = runs / "good", runs / kind
    out = tmp_path / "ens"
    msg = _refused([good, bad], out, method, bad, "prediction")
    assert ("mean of the members' forecasts is not finite" if method == "mean" else "median") in msg
    # the command line: one line naming the member, exit 2, whichever member comes first
    rc, _, err = _run("ensemble", str(bad), str(good), "--out", str(out), "--method", method)
    assert rc == 2 and "Traceback" not in err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"hftraining: error: {bad / 'final'}: the model's forecasts are not finite numbers"), last
    assert not out.exists()


def test_a_median_of_three_refuses_a_member_it_would_silently_leave_out(runs, tmp_path):
    """Before, a median of two good members and one forecasting +-inf was written with finite intervals: an
    "ensemble of 3" whose every forecast was the larger or smaller of the other two, the broken member unnamed."""
    members = [runs / "good", runs / "copy", runs / "inf"]
    msg = _refused(members, tmp_path / "ens", "median", runs / "inf", "prediction")
    assert "silently leaves it out" in msg


@pytest.mark.parametrize("method", ["weighted", "mean"])
@pytest.mark.parametrize("kind", ["quantiles", "class_probs"])
def test_a_member_whose_quantiles_or_class_probabilities_are_not_finite_is_refused(runs, tmp_path, method, kind):
    """Its point forecasts finite, a weighted ensemble (which checked the points only) and a mean one were
    written; their quantiles or buy/hold/sell probabilities were not finite, and every predict failed naming
    the ensemble ("<ensemble>: the model's quantiles are not finite numbers ...")."""
    msg = _refused([runs / "good", runs / kind], tmp_path / "ens", method, runs / kind, kind)
    assert "prediction" not in msg.split("(its ", 1)[1].split(")", 1)[0]  # the points were finite
    # not "its validation MSE ... undefined": the member's MSE is a number
    assert "validation MSE" not in msg


@pytest.mark.parametrize("method", ["mean", "median"])
def test_a_mean_or_median_ensemble_of_finite_members_is_built_with_bounded_intervals(runs, tmp_path, method):
    """The check refuses only what is not finite: a run and its own copy build, their intervals bounded."""
    out = build_ensemble([runs / "good", runs / "copy"], tmp_path / "ens", method)
    cal = json.loads((out / "intervals.json").read_text())
    assert cal["radius"] and all(r is not None and r > 0 for row in cal["radius"] for r in row)
    assert json.loads((out / "ensemble.json").read_text())["method"] == method
