"""ONNX export: ONNX Runtime matches PyTorch to 1e-4, with a dynamic batch axis."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from hftraining.core.config import ModelConfig, load_config  # noqa: E402
from hftraining.data.pipeline import prepare  # noqa: E402
from hftraining.inference.export import onnx_session, wrapper_for  # noqa: E402
from hftraining.models import build_model  # noqa: E402


def make_model_dir(path, **model):
    """A model folder with real preprocessing and random weights (no training needed for parity)."""
    cfg = load_config(None, ["data.symbols=[AEM]", "data.sequence_length=24", "data.prediction_horizon=4"])
    pre = prepare(cfg.data).preprocessing
    torch.manual_seed(0)
    m = build_model(ModelConfig(**model), len(pre.feature_columns), pre.horizon, pre.seq_len)
    if model.get("type") == "ridge":  # a closed-form map: any weights show whether the graph computes it
        m.weight.normal_()
    m.save_pretrained(path, preprocessing=pre.to_dict())
    return path


@pytest.mark.parametrize("model", [
    dict(hidden_size=16, num_heads=2, num_layers=2, quantiles=[0.1, 0.5, 0.9], classification_threshold=0.01),
    dict(type="ridge", ridge_lags=10),
    pytest.param(dict(type="patchtst", hidden_size=16, num_heads=2, num_layers=1, patch_len=8, patch_stride=4),
                 marks=pytest.mark.slow),
])
def test_onnx_runtime_matches_pytorch(tmp_path, model):
    d = make_model_dir(tmp_path / "model", **model)
    from hftraining.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export", str(d), "--format", "onnx", "--out", str(out), "--no-check"]) == 0
    w, fc = wrapper_for(d)
    sess = onnx_session(out)
    names = [o.name for o in sess.get_outputs()]
    assert names == w.output_names()
    for batch in (1, 7, 64):  # the batch axis is dynamic
        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, 24, len(fc.preprocessing.feature_columns), generator=g)
        past = torch.randn(batch, 24, generator=g)
        with torch.no_grad():
            ref = [t.numpy() for t in w(x, past)]
        got = sess.run(None, {"x": x.numpy(), "past": past.numpy()})
        for name, g_, r in zip(names, got, ref):
            assert g_.shape == r.shape, name
            np.testing.assert_allclose(g_, r, atol=1e-4, rtol=0, err_msg=name)
    meta = {p.key: p.value for p in __import__("onnx").load(str(out)).metadata_props}
    assert json.loads(meta["hftraining.preprocessing"])["seq_len"] == 24
    assert meta["hftraining.precision"].startswith("fp32 (the run evaluated in ")  # predict may run in bf16


def test_export_rejects_a_non_onnx_name(tmp_path, capsys):
    from hftraining.cli import main

    d = make_model_dir(tmp_path / "model", hidden_size=8, num_heads=2, num_layers=1)
    assert main(["export", str(d), "--out", str(tmp_path / "m.bin")]) == 2
    assert "m.bin" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "m.onnx")]) == 2


def test_a_median_ensemble_of_three_exports_and_equals_the_median_of_its_members(tmp_path):
    """``train --seeds 3 --method median``'s ensemble: the graph is the median of its members (an odd
    count: torch.median over members has no ONNX graph, so it must not be what the ensemble computes)."""
    from hftraining.inference.ensemble import build_ensemble
    from hftraining.inference.export import export_onnx

    dirs = []
    for k in range(3):
        d = make_model_dir(tmp_path / f"m{k}", hidden_size=8, num_heads=2, num_layers=1, quantiles=[0.1, 0.9])
        _reseed(d, k)
        dirs.append(d)
    ens = build_ensemble(dirs, tmp_path / "ens", method="median")
    out = export_onnx(ens, tmp_path / "ens.onnx")  # checked against PyTorch at batch 1 and 3
    w, fc = wrapper_for(ens)
    g = torch.Generator().manual_seed(5)
    x, past = torch.randn(4, 24, len(fc.preprocessing.feature_columns), generator=g), torch.randn(4, 24, generator=g)
    with torch.no_grad():
        members = np.stack([m(x, None, past).prediction.numpy() for m in fc.model.members]) * fc.preprocessing.target_scale
    got = onnx_session(out).run(None, {"x": x.numpy(), "past": past.numpy()})[0]
    assert np.ptp(members, axis=0).min() > 0  # distinct members: the median is not any one by accident
    np.testing.assert_allclose(got, np.median(members, axis=0), atol=1e-5, rtol=0)


def _reseed(d, seed):
    """Give the model folder ``d`` other random weights (seed ``seed``), its config unchanged."""
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(100 + seed)
    state = load_file(str(d / "model.safetensors"))
    state = {k: (torch.randn(v.shape, generator=g) * 0.2 if v.is_floating_point() and v.dim() > 1 else v) for k, v in state.items()}
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})


def test_parity_check_fails_on_nan_missing_outputs_and_other_shapes(monkeypatch):
    """The export's check compared ``max |ONNX − PyTorch|`` with ``>``: a NaN output passed (``nan > 1e-4``
    is False, and Python's ``max`` drops a NaN after the first output), a missing output passed (``zip``
    stops at the shorter list), and an output of another shape passed when it broadcast."""
    from hftraining.inference import export as E

    class Two(torch.nn.Module):
        def forward(self, x, past):
            return x.sum(-1), x.mean(-1)

    x, past = torch.ones(2, 3, 4), torch.ones(2, 3)
    ref = [t.numpy() for t in Two()(x, past)]

    class Session:
        def __init__(self, outs):
            self.outs = outs

        def run(self, names, feeds):
            return self.outs

    assert E.TOLERANCE > 0
    monkeypatch.setattr(E, "onnx_session", lambda path, threads=None: Session(list(ref)))
    assert E.max_abs_difference(Two(), "m.onnx", x, past) == 0.0  # the same outputs: no difference
    for bad in ([ref[0], ref[1] * np.nan], [ref[0]], [ref[0], ref[1][:, :1]]):
        monkeypatch.setattr(E, "onnx_session", lambda path, threads=None, bad=bad: Session(bad))
        err = E.max_abs_difference(Two(), "m.onnx", x, past)
        assert not err <= E.TOLERANCE, [b.shape for b in bad]
