"""A walk-forward prepares each fold once (its data warnings said once per fold), all folds still
checked before an earlier walk-forward is removed; evaluate and backtest list the fitted baselines
in the order training does; the quickstart config states the README's measured wall time; the
paper's DLinear keeps its forecast level under a bf16 autocast."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
import torch

from hftraining.cli import main
from hftraining.core.config import ModelConfig, load_config
from hftraining.core.errors import DataError
from hftraining.data.io import sample_data_dir
from hftraining.eval.forecasts import FITTED_BASELINES
from hftraining.models.dlinear import DLinear, DLinearMultivariate, decompose, heads_sum
from hftraining.workflows import walkforward as wf
from conftest import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WF = ["model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2", "training.max_steps=2",
      "evaluation.eval_steps=0", "evaluation.report=false", "data.cache_dir=null", "evaluation.baseline_max_windows=200"]
UNUSABLE = "skipped 1 symbol(s) that validation left unusable: NIO"


def _short_symbol_data(tmp_path: Path) -> Path:
    """AEM and WPM of the bundled data, and NIO cut to 14 rows: too few for a window, a data warning."""
    d = tmp_path / "data"
    d.mkdir()
    for sym in ("AEM", "WPM"):
        shutil.copy(Path(sample_data_dir()) / f"{sym}.csv", d / f"{sym}.csv")
    lines = (Path(sample_data_dir()) / "NIO.csv").read_text().splitlines()[:15]
    (d / "NIO.csv").write_text("\n".join(lines) + "\n")
    return d


def _counting_prepare(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = wf.prepare_fold

    def counting(cfg, source, k, *args, **kwargs):
        calls.append(k)
        return real(cfg, source, k, *args, **kwargs)

    monkeypatch.setattr(wf, "prepare_fold", counting)
    return calls


def test_a_walk_forward_prepares_each_fold_once(tmp_path, monkeypatch, caplog):
    """Every fold was prepared twice (once to check all folds' splits, again to train), so each data
    warning was logged twice per fold. Now once per fold, every fold prepared before any trains."""
    trained: list[int] = []
    real_run = wf.training_run
    calls = _counting_prepare(monkeypatch)

    def run(fcfg, data, *args, **kwargs):
        trained.append(len(calls))  # how many folds were prepared when this one started training
        return real_run(fcfg, data, *args, **kwargs)

    monkeypatch.setattr(wf, "training_run", run)
    cfg = load_config(None, tiny(tmp_path / "wf", *WF, f"data.data_dir={_short_symbol_data(tmp_path)}",
                                 "data.symbols=[AEM, WPM, NIO]"))
    with caplog.at_level(logging.WARNING):
        res = wf.walk_forward(cfg, 3, scheme="expanding")
    assert len(res["folds"]) == 3 and all(f["n_windows"] > 0 for f in res["folds"])
    assert calls == [0, 1, 2] and trained == [3, 3, 3]
    assert sum(UNUSABLE in r.getMessage() for r in caplog.records) == 3


def test_a_walk_forward_whose_last_fold_is_refused_leaves_the_earlier_one(tmp_path, monkeypatch, capsys):
    """All folds are checked before output.overwrite removes an earlier walk-forward: a refusal of the
    last fold leaves it as it was, and no fold trains."""
    base = tmp_path / "wf" / "walkforward"
    (base / "fold-1").mkdir(parents=True)
    (base / "walkforward.json").write_text("{}")
    calls = _counting_prepare(monkeypatch)
    real_check = wf.check_fold

    def check(cfg, data, k, scheme):
        if k == 2:
            raise DataError("walkforward fold 3: refused")
        real_check(cfg, data, k, scheme)

    monkeypatch.setattr(wf, "check_fold", check)
    monkeypatch.setattr(wf, "training_run", lambda *a, **k: pytest.fail("a fold trained"))
    rc = main(["walkforward", "--folds", "3", *tiny(tmp_path / "wf", *WF, "output.overwrite=true")])
    assert rc == 2 and capsys.readouterr().err.strip().endswith("walkforward fold 3: refused")
    assert calls == [0, 1, 2]
    assert sorted(p.name for p in base.iterdir()) == ["fold-1", "walkforward.json"]
    assert (base / "walkforward.json").read_text() == "{}"


def _fitted_order(text: str) -> list[str]:
    return [ln.split()[0] for ln in text.splitlines() if ln.startswith("fitted:")]


def test_evaluate_and_backtest_list_the_fitted_baselines_in_trainings_order(tmp_path, capsys):
    """train printed fitted:ridge before fitted:lightgbm, evaluate and backtest the other way round
    (the baselines folder read in alphabetical order). All three now follow FITTED_BASELINES."""
    run = tmp_path / "run"
    want = [f"fitted:{n}" for n in FITTED_BASELINES]
    assert main(["train", *tiny(run, "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false",
                                "evaluation.baseline_max_windows=200",
                                "evaluation.intervals=[]")]) == 0
    printed = _fitted_order("".join(capsys.readouterr()))  # the run's log lines: stderr
    assert printed == want * 2  # the forecast table, then the backtest
    assert main(["evaluate", str(run), "--no-report"]) == 0
    assert _fitted_order("".join(capsys.readouterr())) == printed
    assert main(["backtest", str(run)]) == 0
    assert _fitted_order("".join(capsys.readouterr())) == want


def test_the_quickstart_config_states_the_readmes_measured_wall_time():
    """The config's header said 14-25 s while the README's Quickstart section measured 23–24 s for the
    same command; the header now gives the README's figure and the conditions it was measured under."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Quickstart"):]
    m = re.search(r"Wall time: ([\d–-]+) s for the whole\s+`([^`]+)`", section)
    assert m, "README's Quickstart section states no wall time"
    figure, command = m.group(1).replace("–", "-"), m.group(2)
    header = "".join(ln for ln in (ROOT / "configs" / "quickstart.yaml").read_text().splitlines(True)
                      if ln.startswith("#")).replace("–", "-")
    assert command.split("hftraining ", 1)[1] in header
    assert re.search(rf"(?<![\d-]){re.escape(figure)} s\b", header), header
    assert "feature store already built" in section and "feature store already built" in header


def _trained_like(seed: int = 0) -> DLinearMultivariate:
    torch.manual_seed(seed)
    net = DLinearMultivariate(ModelConfig(type="dlinear"), 7, 24, 96).eval()
    with torch.no_grad():  # the window-average start plus a perturbation of its size
        for lin in (net.seasonal, net.trend):
            lin.weight.add_(torch.randn_like(lin.weight) / 96)
            lin.bias.normal_(0, 0.1)
    return net


def test_dlinear_multivariate_keeps_its_level_under_bf16():
    """Without subtract_last the trend map read the raw level in a bf16 matmul: the forecast's error
    against fp32 grew with the level (RMS 1.0e-3, 4.8e-3, 1.8e-2 at offsets 0, 3, 10). Now the trend
    map runs in fp32 and the error is the seasonal map's alone, whatever the level; fp32 is unchanged."""
    net = _trained_like()
    base = torch.randn(128, 96, 7, generator=torch.Generator().manual_seed(1)).cumsum(1) * 0.1
    rms = []
    with torch.no_grad():
        for off in (0.0, 3.0, 10.0):
            x = base + off
            ref = net(x)
            s, t = decompose(x.transpose(1, 2), net.kernel)
            assert torch.equal(ref, heads_sum(net.seasonal(s), net.trend(t)).transpose(1, 2))  # fp32: as it was
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = net(x)
            assert y.dtype == torch.float32
            rms.append((y - ref).pow(2).mean().sqrt().item())
    assert 0 < rms[0] and rms[2] < 1.5 * rms[0] and rms[1] < 1.5 * rms[0], rms


def test_dlinear_keeps_a_features_level_under_bf16():
    """The forecaster's DLinear reads every feature's level through its trend map too: one feature offset
    by 10 read an RMS error against fp32 of 5.2e-3 under bf16 (1.7e-3 at 0). With the trend map in fp32
    the error does not grow with the level; fp32 is unchanged."""
    torch.manual_seed(0)
    net = DLinear(ModelConfig(type="dlinear"), 12, 5, 60).eval()
    with torch.no_grad():
        for lin in (net.seasonal, net.trend):
            lin.weight.normal_(0, 0.02)
    base = torch.randn(128, 60, 12, generator=torch.Generator().manual_seed(2)).cumsum(1) * 0.1
    past = torch.randn(128, 60, generator=torch.Generator().manual_seed(3)) * 0.01
    rms = []
    with torch.no_grad():
        for off in (0.0, 3.0, 10.0):
            x = base.clone()
            x[..., 0] += off
            ref = net(x, past=past).prediction
            h = torch.cat([x, past.unsqueeze(-1)], dim=-1)
            s, t = decompose(h.transpose(1, 2), net.cfg.moving_avg)
            assert torch.equal(ref, heads_sum(net.seasonal(s.flatten(1)), net.trend(t.flatten(1))))  # fp32: as it was
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = net(x, past=past).prediction
            rms.append((y.float() - ref).pow(2).mean().sqrt().item())
    assert 0 < rms[0] and rms[2] < 1.5 * rms[0] and rms[1] < 1.5 * rms[0], rms


def test_a_symbol_missing_from_the_bundled_sample_names_it():
    """``data.symbols=[NOPE]`` with no ``data.data_dir`` said "not found in the data (None)"."""
    from hftraining.data.pipeline import prepare

    with pytest.raises(DataError, match=r"'NOPE' not found in the data \(data.data_dir unset: the bundled sample, .*sample_data\)"):
        prepare(load_config(None, ["data.symbols=[NOPE]"]).data)


def test_a_verdict_of_the_val_split_says_it_is_not_out_of_sample(tmp_path):
    """``evaluate --split val`` gave plain p-values on the split that chose the checkpoint and the fitted
    baselines' settings; its verdict now says so (the test split's does not)."""
    from hftraining.workflows.evaluate_run import IN_SAMPLE, evaluate_model_dir

    run = tmp_path / "run"
    assert main(["train", *tiny(run, "training.max_steps=2", "evaluation.report=false")]) == 0
    val, _ = evaluate_model_dir(run, split="val")
    test, _ = evaluate_model_dir(run, split="test")
    assert val["verdict"].endswith(IN_SAMPLE["val"]) and "out-of-sample" not in test["verdict"]
