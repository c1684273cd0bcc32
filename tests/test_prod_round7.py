"""Shipping a model: an ONNX file that fails its check never lies at --out, and ensemble members that
keep other rows of the same data are refused, not combined."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import ModelConfig, load_config
from hftraining.core.errors import DataError, UserError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare
from hftraining.inference.ensemble import build_ensemble
from hftraining.inference.forecaster import Forecaster
from hftraining.models import build_model


def make_model_dir(path, *data, seed=0, model=None):
    """A model folder with real preprocessing (AEM and WPM, 24 rows in, 4 steps out, ``data`` overrides)
    and random weights: what the parity and the combination are checked on needs no training."""
    cfg = load_config(None, ["data.symbols=[AEM, WPM]", "data.sequence_length=24", "data.prediction_horizon=4", *data])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(seed)
    m = build_model(ModelConfig(**(model or dict(hidden_size=8, num_heads=2, num_layers=1))), len(pre.feature_columns),
                    pre.horizon, pre.seq_len)
    if m.cfg.type == "ridge":  # fitted in closed form: random weights stand for a fit
        m.weight.normal_()
    m.save_pretrained(path, preprocessing=pre.to_dict())
    return path


def test_an_export_that_fails_its_check_leaves_the_earlier_file_and_nothing_beside_it(tmp_path, monkeypatch):
    """The graph was written to --out and checked there: a graph ONNX Runtime disagreed on stayed at
    --out (replacing the file there) although export exited 2. Now it is written beside --out and renamed
    onto it once checked."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hftraining.inference import export as E

    d = make_model_dir(tmp_path / "model", model=dict(type="ridge", ridge_lags=10))  # the quickest graph to export
    out = tmp_path / "shipped" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(b"the earlier, checked graph")
    monkeypatch.setattr(E, "TOLERANCE", -1.0)  # every graph now "differs": the check fails
    with pytest.raises(UserError, match=f"{out}: ONNX Runtime differs from PyTorch"):
        E.export_onnx(d, out)
    assert out.read_bytes() == b"the earlier, checked graph"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]
    monkeypatch.setattr(E, "TOLERANCE", 1e-4)
    E.export_onnx(d, out)  # a graph that passes replaces it
    assert out.read_bytes() != b"the earlier, checked graph"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]
    assert [i.name for i in E.onnx_session(out).get_inputs()] == ["x", "past"]
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(DataError, match="dir.onnx: is a folder"):
        E.export_onnx(d, tmp_path / "dir.onnx")


@pytest.mark.parametrize("rule", ["data.invalid_values=ffill", "data.duplicate_timestamps=last",
                                  "data.jumps=drop", "data.ohlc_violations=drop"])
def test_members_trained_with_other_validation_rules_are_refused_naming_the_key(tmp_path, rule):
    """The ensemble reads new data with its first member's validation rules: a member trained with
    ``invalid_values=ffill`` forecasts alone from today's row (its close filled from yesterday's), in the
    ensemble from yesterday's (the row dropped), so the ensemble was not the mean of its members' own
    forecasts (0.0024 apart in log return on AEM with a NaN last close) and nothing said so."""
    a = make_model_dir(tmp_path / "a")
    b = make_model_dir(tmp_path / "b", rule, seed=1)
    key = rule.split("=")[0]
    with pytest.raises(DataError, match=f"{b}: preprocessing.json key {key} differs from {a}'s") as e:
        build_ensemble([a, b], tmp_path / "ens")
    assert "\n" not in str(e.value) and not (tmp_path / "ens").exists()


def test_members_with_the_same_rules_forecast_the_mean_of_their_own_forecasts(tmp_path):
    """Members whose rules agree (a folder of an older version without a rule's key reads it at its
    default) still build, and the ensemble forecasts the mean of what each forecasts alone, here from
    data whose last close is missing."""
    import json

    a = make_model_dir(tmp_path / "a")
    b = make_model_dir(tmp_path / "b", seed=1)
    pre = json.loads((b / "preprocessing.json").read_text())
    del pre["data"]["invalid_values"], pre["data"]["jumps"]  # written before these keys were kept
    (b / "preprocessing.json").write_text(json.dumps(pre))
    ens = build_ensemble([a, b], tmp_path / "ens")
    frame = pd.read_csv(sample_data_dir() / "AEM.csv")
    frame.loc[frame.index[-1], "close"] = np.nan
    data = {"AEM": frame}
    alone = [Forecaster.from_pretrained(m).predict(data, warnings=[]) for m in (a, b)]
    both = Forecaster.from_pretrained(ens).predict(data, warnings=[])
    assert (both["as_of"] == alone[0]["as_of"]).all() and (both["as_of"] == alone[1]["as_of"]).all()
    want = (alone[0]["forecast_return"].to_numpy() + alone[1]["forecast_return"].to_numpy()) / 2
    np.testing.assert_allclose(both["forecast_return"], want, rtol=1e-6, atol=1e-9)


def _copies(tmp_path, n=3):
    """A model folder and ``n - 1`` copies of it."""
    import shutil

    copies = [make_model_dir(tmp_path / "m")]
    for k in range(1, n):
        copies.append(tmp_path / f"copy-{k}")
        shutil.copytree(copies[0], copies[-1])
    return copies


@pytest.mark.parametrize("method", ["mean", "weighted"])
def test_an_ensemble_of_copies_of_one_model_forecasts_exactly_what_it_does(tmp_path, method):
    """The members' forecasts were combined in float32 with weights 1/M: three copies of one model came
    back up to an ulp off its own forecasts (7e-10 in log return). Combined in float64 and rounded once,
    M copies forecast exactly what the model does."""
    copies = _copies(tmp_path)
    data = {s: pd.read_csv(sample_data_dir() / f"{s}.csv") for s in ("AEM", "WPM")}
    alone = Forecaster.from_pretrained(copies[0]).predict(data, warnings=[])
    ens = build_ensemble(copies, tmp_path / "ens", method=method)
    got = Forecaster.from_pretrained(ens).predict(data, warnings=[])
    for col in ("forecast_return", "forecast_price"):
        np.testing.assert_array_equal(got[col], alone[col], err_msg=col)


@pytest.mark.slow  # a guard (passes before and after), 15 s of the exporter
def test_the_onnx_graph_of_a_mean_ensemble_of_copies_is_the_model_s_own(tmp_path):
    """The graph of the float64 combination exports, passes its check, and forecasts what the model's
    own graph does."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hftraining.inference.export import export_onnx, onnx_session

    copies = _copies(tmp_path)
    ens = build_ensemble(copies, tmp_path / "ens")
    n_features = len(Forecaster.from_pretrained(copies[0]).preprocessing.feature_columns)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((5, 24, n_features)).astype(np.float32),
             "past": rng.standard_normal((5, 24)).astype(np.float32)}
    one = onnx_session(export_onnx(copies[0], tmp_path / "m.onnx")).run(None, feeds)[0]
    three = onnx_session(export_onnx(ens, tmp_path / "ens.onnx")).run(None, feeds)[0]
    np.testing.assert_allclose(three, one, rtol=0, atol=1e-7)


def test_an_export_leaves_the_file_of_another_export_to_the_same_out_running(tmp_path):
    """Each export swept every ``.NAME.tmp-*.onnx`` beside --out, another export's to the same --out
    still being written and checked too: that export then failed (onnxruntime's NoSuchFile traceback,
    or a WriteError) though nothing was wrong with it. Only a file of a process that no longer runs
    is swept."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hftraining.inference import export as E

    d = make_model_dir(tmp_path / "model", model=dict(type="ridge", ridge_lags=10))
    out = tmp_path / "model.onnx"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
        running = tmp_path / f".model.onnx.tmp-{other.pid}.onnx"
        running.write_bytes(b"another export's graph")
        killed = tmp_path / f".model.onnx.tmp-{gone}.onnx"
        killed.write_bytes(b"a killed export's graph")
        E.export_onnx(d, out)
        assert running.read_bytes() == b"another export's graph"
        assert not killed.exists()
        assert [i.name for i in E.onnx_session(out).get_inputs()] == ["x", "past"]
    finally:
        other.kill()
        other.wait()


def test_members_whose_jump_rule_checks_nothing_are_not_refused(tmp_path):
    """``data.jump_threshold=0`` checks no jump, so ``jumps=drop`` keeps every row as ``flag`` does: such
    members read the same rows and build an ensemble."""
    a = make_model_dir(tmp_path / "a")
    b = make_model_dir(tmp_path / "b", "data.jumps=drop", "data.jump_threshold=0", seed=1)
    build_ensemble([a, b], tmp_path / "ens")


def test_an_export_through_a_link_replaces_the_file_it_names(tmp_path):
    """``--out current.onnx`` where current.onnx links to v3.onnx: the link stays and v3.onnx gets the new
    graph, as a write through the link did (renaming onto the link replaced it by a file)."""
    pytest.importorskip("onnxscript")
    from hftraining.inference import export as E

    d = make_model_dir(tmp_path / "model", model=dict(type="ridge", ridge_lags=10))
    (tmp_path / "v3.onnx").write_bytes(b"an older graph")
    link = tmp_path / "current.onnx"
    link.symlink_to("v3.onnx")
    E.export_onnx(d, link, check=False)
    assert link.is_symlink() and (tmp_path / "v3.onnx").read_bytes() != b"an older graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.onnx", "model", "v3.onnx"]
