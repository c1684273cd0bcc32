"""Ensembles weighted by validation MSE: a member whose forecasts of the validation windows are not finite
numbers (finite weights that overflow: an MSE of inf or NaN) is refused naming that member and the windows, in
one line, exit 2, and no ensemble folder is left behind."""

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
        "evaluation.baseline_max_windows=300"]


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


OVERFLOWS = {
    # the output head alone: every forecast +-inf, a validation MSE of inf
    "inf": ("head.",),
    # the attention's output too: inf meets -inf inside the head, every forecast NaN
    "nan": ("head.", "layers.0.self_attn.out_proj"),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    good = tmp_path_factory.mktemp("ens17") / "good"
    assert main(["train", *tiny(good, *ARGS)]) == 0
    return good


def _overflowing(good: Path, out: Path, prefixes: tuple[str, ...]) -> Path:
    """A copy of the run ``good`` whose weights named by ``prefixes`` are finite but so large that its
    forecasts overflow float32: the same preprocessing, so the two pass every check of shared inputs."""
    shutil.copytree(good, out)
    weights = load_file(out / "final" / "model.safetensors")
    for name, t in weights.items():
        if name.startswith(prefixes) and name.endswith("weight"):
            weights[name] = t * (1e37 / float(t.abs().max()))
    save_file(weights, out / "final" / "model.safetensors")
    return out


@pytest.mark.parametrize("kind", sorted(OVERFLOWS))
def test_a_weighted_ensemble_refuses_a_member_whose_validation_forecasts_are_not_finite(good_run, tmp_path, kind):
    """inf: its validation MSE was inf, its weight 1 / inf = 0, and the ensemble was written ("wrote an ensemble
    (weighted)", validation_mse [0.00041, null], weights [1.0, 0.0], intervals of unbounded radius) whose every
    forecast was NaN (0 x inf), refused only at predict, naming the ensemble. NaN: every weight 1 / MSE was NaN,
    and the build failed checking the ensemble.json it had just written in a temporary folder
    ("<dir>/.ens.tmp-1234/ensemble.json: weights must be 2 finite numbers >= 0, not all 0; got [None, None]"),
    naming a file that no longer exists and no member. Now the member is named, and nothing is written."""
    good, bad = good_run, _overflowing(good_run, tmp_path / "overflowing", OVERFLOWS[kind])
    out = tmp_path / "ens"
    with pytest.raises(DataError) as e:
        build_ensemble([good, bad], out, "weighted")
    msg = str(e.value)
    assert "\n" not in msg and ".tmp-" not in msg
    assert re.match(rf"^{re.escape(str(bad / 'final'))}: the model's forecasts are not finite numbers for (\d+) of "
                    r"the (\d+) validation window\(s\)", msg), msg
    n_bad, n_val = map(int, re.search(r"for (\d+) of the (\d+) validation", msg).groups())
    assert 0 < n_bad <= n_val
    assert not out.exists() and not list(tmp_path.glob(".ens*"))
    # the command line: one line naming the member, exit 2; the member order does not matter
    rc, _, err = _run("ensemble", str(bad), str(good), "--out", str(out), "--method", "weighted")
    last = err.rstrip("\n").splitlines()[-1]
    assert rc == 2 and "Traceback" not in err
    assert last.startswith(f"hftraining: error: {bad / 'final'}: the model's forecasts are not finite numbers"), last
    assert not out.exists()


def test_a_weighted_ensemble_of_finite_members_is_built(good_run, tmp_path):
    """The check refuses only what is not finite: a run and its own copy build, weighted equally."""
    good = good_run
    copy = tmp_path / "copy"
    shutil.copytree(good, copy)
    out = build_ensemble([good, copy], tmp_path / "ens", "weighted")
    meta = json.loads((out / "ensemble.json").read_text())
    assert meta["weights"] == pytest.approx([0.5, 0.5])
    assert meta["validation_mse"][0] == meta["validation_mse"][1] > 0
