"""Members of other embargoes are judged against the fitted baselines of a member of the largest embargo, whose
windows the ensemble is scored on, whatever the order the members are given in; a member folder written before
calendar splits (no ``data.split``: cut by each symbol's rows) is compared as such, not as a calendar split."""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_inference_ensemble_audit import model_dir  # noqa: E402  (a model folder of real preprocessing)

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import ModelConfig, load_config  # noqa: E402
from hftraining.core.errors import DataError  # noqa: E402
from hftraining.data.pipeline import apply, prepare  # noqa: E402
from hftraining.data.splits import Fold  # noqa: E402
from hftraining.inference.ensemble import build_ensemble  # noqa: E402
from hftraining.models import build_model  # noqa: E402
from hftraining.workflows.evaluate_run import trained_preprocessing  # noqa: E402

ARGS = ["training.max_steps=3", "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false",
        "evaluation.baseline_max_windows=300", "evaluation.max_test_windows=300", "training.seed=0"]
PER_SYMBOL = ("data.symbols=[AEM]", "data.split=per_symbol")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs (ridge and LightGBM fitted beside each) that differ in data.embargo alone: 0 and 5."""
    root = tmp_path_factory.mktemp("embargo")
    for name, embargo in (("e0", 0), ("e5", 5)):
        assert main(["train", *tiny(root / name, *ARGS, f"data.embargo={embargo}")]) == 0
    return root


def _evaluated(folder: Path) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["evaluate", str(folder), "--json", "--no-report"]) == 0
    return json.loads(out.getvalue())


def test_members_of_other_embargoes_are_judged_against_the_widest_member_s_baselines(runs):
    """The ensemble is scored on the test windows of the largest embargo, but carried the fitted baselines of its
    first member's run: with the member of embargo 0 first, LightGBM fitted on that run's validation windows, and
    the same two members in the other order were judged against another LightGBM, with another MSE and another
    Diebold-Mariano p-value of the verdict. Both orders now carry the baselines of the run of embargo 5, and are
    judged as that run judged its baselines on the same test windows."""
    wide = json.loads((runs / "e5" / "eval.json").read_text())
    results = [_evaluated(build_ensemble([runs / a, runs / b], runs / f"ens-{a}-{b}"))
               for a, b in (("e0", "e5"), ("e5", "e0"))]
    for res in results:
        assert res["n_windows"] == wide["n_windows"]
        for name in ("ridge", "lightgbm"):
            assert res["baselines"][name]["mse"] == pytest.approx(wide["baselines"][name]["mse"], rel=1e-9), name
    a, b = results
    assert a["strongest_baseline"]["name"] == b["strongest_baseline"]["name"]
    assert a["strongest_baseline"]["mse"] == pytest.approx(b["strongest_baseline"]["mse"], rel=1e-9)
    assert a["strongest_baseline"]["dm"]["p_value"] == pytest.approx(b["strongest_baseline"]["dm"]["p_value"], rel=1e-6)
    assert a["verdict"] == b["verdict"]
    assert "largest `data.embargo` first" in (runs / "ens-e0-e5" / "README.md").read_text()


def _without(folder: Path, *keys: str, data: tuple[str, ...] = ()) -> Path:
    """``folder`` with its preprocessing.json written as a folder of an older version: without ``keys``, and
    without the data keys ``data``."""
    path = folder / "preprocessing.json"
    pre = json.loads(path.read_text())
    for key in keys:
        pre.pop(key, None)
    for key in data:
        pre["data"].pop(key, None)
    path.write_text(json.dumps(pre))
    return folder


def test_a_member_written_before_calendar_splits_combines_with_one_cut_by_the_same_rows(tmp_path):
    """A folder written before calendar splits has no data.split: it was cut by each symbol's rows, as a
    per_symbol folder is (its preprocessing reads so). Compared as a calendar split (the default since), it and
    a per_symbol folder of the same rows and ratios (written before the per-symbol cut dates were kept) were
    refused with "key data.split differs ('calendar' vs 'per_symbol')", which they combined under before."""
    old = _without(model_dir(tmp_path / "old", 0, PER_SYMBOL), "symbol_split_dates", data=("split",))
    newer = _without(model_dir(tmp_path / "newer", 1, PER_SYMBOL), "symbol_split_dates")
    ens = build_ensemble([old, newer], tmp_path / "ens")
    assert json.loads((ens / "preprocessing.json").read_text())["data"].get("split", "per_symbol") == "per_symbol"
    build_ensemble([newer, old], tmp_path / "ens-ba")


def test_a_member_written_before_calendar_splits_is_named_per_symbol_beside_a_calendar_one(tmp_path):
    """Beside a calendar member the older folder is refused naming its split as it was cut: by each symbol's
    rows, where the error said it was a calendar split whose cut dates were null."""
    old = _without(model_dir(tmp_path / "old", 0, PER_SYMBOL), "symbol_split_dates", data=("split",))
    cal = model_dir(tmp_path / "cal", 1)
    with pytest.raises(DataError, match=r"cal: preprocessing\.json key data\.split differs .*\('calendar' vs 'per_symbol'\)"):
        build_ensemble([old, cal], tmp_path / "ens")


def _fold_member(path: Path, seed: int, scheme: str, embargo: int) -> Path:
    """A model folder of walk-forward fold 2 of 3 (``scheme``) with real preprocessing and random weights."""
    cfg = load_config(None, ["data.sequence_length=16", "data.prediction_horizon=2", "data.cache_dir=null",
                             "data.symbols=[AEM]", f"data.embargo={embargo}"])
    pre = prepare(cfg.data, fold=Fold(1, 3, scheme)).preprocessing
    torch.manual_seed(seed)
    m = build_model(ModelConfig(hidden_size=8, num_heads=2, num_layers=1), len(pre.feature_columns), pre.horizon,
                    pre.seq_len)
    m.save_pretrained(path, preprocessing=pre.to_dict())
    return path


def test_fold_members_of_other_embargoes_combine_under_purged_kfold_and_the_card_says_where(tmp_path):
    """Purged k-fold leaves its embargo out after the test block: members of other embargoes combine, scored on
    the fold's test block, and the ensemble's README said its test windows started that many rows after the cut,
    as of a split; it now says where the fold leaves them out."""
    a, b = (_fold_member(tmp_path / f"m{k}", k, "purged_kfold", embargo) for k, embargo in ((0, 0), (1, 4)))
    test = apply(trained_preprocessing(b), None, "test")
    readme = (build_ensemble([a, b], tmp_path / "ens") / "README.md").read_text()
    assert "fold 2 of 3 (purged_kfold" in readme and "4 row(s) are left out after its test block" in readme, readme
    assert "windows start 4 row(s) after each cut" not in readme
    ens = apply(trained_preprocessing(tmp_path / "ens"), None, "test")
    assert len(ens) == len(test) and (ens.times == test.times).all()  # the fold's test block, as the member's


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_fold_members_of_other_embargoes_are_refused_naming_the_embargo(tmp_path, capsys, scheme):
    """An expanding or rolling fold's training rows end data.embargo rows before its validation rows: members of
    other embargoes were trained on other rows, and were refused for their 'scaler' ("train them on the same
    data", which they were). The key that cut them is named."""
    a, b = (_fold_member(tmp_path / f"m{k}", k, scheme, embargo) for k, embargo in ((0, 0), (1, 4)))
    capsys.readouterr()
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "key data.embargo differs" in err and "(4 vs 0)" in err and str(b) in err and "'scaler'" not in err, err
    assert not (tmp_path / "ens").exists()
