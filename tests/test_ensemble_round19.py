"""Ensemble members trained on other splits are refused naming the split setting (the dates one member trained
on would be another's validation or test dates); members of other embargoes combine, and the ensemble is scored
on the windows after the largest of their embargoes, whatever the order the members are given in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_inference_ensemble_audit import model_dir  # noqa: E402  (a model folder of real preprocessing)

from hftraining.cli import main  # noqa: E402
from hftraining.data.pipeline import apply  # noqa: E402
from hftraining.inference.ensemble import build_ensemble  # noqa: E402
from hftraining.workflows.evaluate_run import trained_preprocessing  # noqa: E402

PAIR = ("data.symbols=[AEM, WPM]",)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return model_dir(tmp_path_factory.mktemp("base") / "base", 0, PAIR)


@pytest.mark.parametrize("other, key", [
    (("data.train_ratio=0.5",), "data.split_dates"),
    (("data.split=per_symbol",), "data.split"),
])
def test_members_of_another_split_are_refused_naming_the_split(base, tmp_path, capsys, other, key):
    """A member trained with other cut dates (its training rows reach into the first member's validation and
    test period) was refused for its 'scaler', with "train them on the same data": nothing said that the
    split differed, nor that its training dates were the ensemble's test dates."""
    m = model_dir(tmp_path / "other", 1, (*PAIR, *other))
    capsys.readouterr()
    assert main(["ensemble", str(base), str(m), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"key {key} differs" in err and str(m) in err and str(base) in err, err
    assert "validation or test period" in err and "'scaler'" not in err, err
    assert not (tmp_path / "ens").exists()


def test_members_of_per_symbol_splits_are_refused_naming_the_symbol(tmp_path, capsys):
    """Per-symbol cuts of other ratios: the symbol whose cut dates differ is named."""
    a = model_dir(tmp_path / "a", 0, (*PAIR, "data.split=per_symbol"))
    b = model_dir(tmp_path / "b", 1, (*PAIR, "data.split=per_symbol", "data.train_ratio=0.6"))
    capsys.readouterr()
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "key symbol_split_dates.AEM differs" in err, err


def _evaluated(folder: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(folder), "--json", "--no-report"]) == 0
    return json.loads(capsys.readouterr().out)


def test_members_of_other_embargoes_are_scored_after_the_widest_in_either_order(base, tmp_path, capsys):
    """The ensemble was scored on its first member's test windows: with a member of data.embargo=0 first, on
    the rows the other member (embargo 20) left out after the cut; given in the other order, the same members
    were scored on other windows, with other figures. Now both orders score the windows after the largest
    embargo, those of the member that set it, and say so in the README."""
    wide = model_dir(tmp_path / "wide", 1, (*PAIR, "data.embargo=20", "data.stride=3"))
    own = apply(trained_preprocessing(wide), None, "test")
    narrow = apply(trained_preprocessing(base), None, "test")
    assert len(narrow) > len(own)  # the embargo leaves rows out
    results = []
    for name, members in (("ab", [base, wide]), ("ba", [wide, base])):
        ens = build_ensemble(members, tmp_path / name)
        pre = trained_preprocessing(ens)
        assert pre.data["embargo"] == 20
        test = apply(pre, None, "test")
        assert len(test) == len(own) and (test.times == own.times).all()
        assert "start 20 row(s) after each cut" in (ens / "README.md").read_text()
        results.append(_evaluated(ens, capsys))
    a, b = results
    assert a["n_windows"] == b["n_windows"] == len(own)
    assert a["model"]["mse"] == pytest.approx(b["model"]["mse"], rel=1e-5)
