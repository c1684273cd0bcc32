"""Walk-forward's figures recomputed from the folds' own forecasts, its fine-tuning chain, and a
fine-tuning that could not act refused."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

import hftraining.train.trainer as trainer_mod
from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError
from hftraining.workflows import walkforward as wf
from conftest import tiny  # noqa: E402


@pytest.mark.parametrize("model_type", ["ridge", "lightgbm"])
def test_finetune_of_a_model_fitted_without_gradient_steps_is_refused(tmp_path, capsys, model_type):
    """Ridge and LightGBM are fitted anew on each fold's windows: the previous fold's weights were
    loaded and then replaced, and walkforward.json said "finetune" of what was a retrain."""
    args = tiny(tmp_path / "wf", f"model.type={model_type}", "evaluation.report=false")
    assert main(["walkforward", "--folds", "2", "--mode", "finetune", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mode finetune" in err and repr(model_type) in err and "--mode retrain" in err
    assert not (tmp_path / "wf" / "walkforward").exists()  # refused before any fold was prepared
    with pytest.raises(ConfigError, match=r"^--mode finetune: model\.type"):
        wf.walk_forward(load_config(None, args), 2, mode="finetune")


def test_pooled_figures_and_finetune_chain_recomputed_from_the_folds(tmp_path, monkeypatch):
    """Each fold's test block follows the previous one's with no date in two blocks and none left
    out; the pooled MSE, MSE vs zero and directional accuracy are those of the folds' forecasts
    concatenated; the per-fold aggregate is the folds' mean and Student-t interval; with
    ``--mode finetune`` fold k starts from fold k − 1's final weights, with a fresh optimizer."""
    parts, starts, tests = [], [], []
    real_eval, real_fit, real_prep = wf.evaluate_test, trainer_mod.Trainer.fit, wf.prepare_fold

    def evaluate(run):
        out = real_eval(run)
        parts.append(out[1])
        return out

    def fit(self, *a, **k):
        starts.append(({n: t.detach().clone().cpu() for n, t in self.model.state_dict().items()},
                       len(self.opt.optimizer.state) if getattr(self.opt, "optimizer", None) is not None else 0))
        return real_fit(self, *a, **k)

    def prepare(*a, **k):
        data = real_prep(*a, **k)
        tests.append(data.test)
        return data

    monkeypatch.setattr(wf, "evaluate_test", evaluate)
    monkeypatch.setattr(wf, "prepare_fold", prepare)
    monkeypatch.setattr(trainer_mod.Trainer, "fit", fit)
    cfg = load_config(None, tiny(tmp_path / "wf", "model.hidden_size=8", "data.sequence_length=16",
                                 "data.prediction_horizon=2", "data.embargo=2", "training.max_steps=2",
                                 "evaluation.eval_steps=0", "evaluation.report=false"))
    res = wf.walk_forward(cfg, 3, scheme="expanding", mode="finetune")
    saved = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text())
    H = cfg.data.prediction_horizon

    # test blocks: per symbol, the target rows of consecutive folds follow one another exactly
    for sym in tests[0].symbols:
        blocks = []
        for ws in tests:
            ends = np.sort(ws.ends[ws.symbol_ids == ws.symbols.index(sym)].astype(np.int64))
            assert len(ends) and np.all(np.diff(ends) == 1)  # contiguous origins
            blocks.append((ends[0] + 1, ends[-1] + H))  # first and last target row
        for (_, last), (first, _) in zip(blocks, blocks[1:]):
            assert first == last + 1

    # pooled figures: the folds' forecasts concatenated, recomputed here
    true = np.concatenate([p.true for p in parts])
    model = np.concatenate([p.pred["model"] for p in parts])
    zero = np.concatenate([p.pred["zero"] for p in parts])
    pooled = saved["pooled"]
    assert pooled["n_windows"] == len(true) == sum(f["n_windows"] for f in saved["folds"])
    assert pooled["model"]["mse"] == pytest.approx(np.mean((model - true) ** 2), rel=1e-9)
    assert pooled["mse_vs_zero"] == pytest.approx(np.mean((model - true) ** 2) / np.mean((zero - true) ** 2), rel=1e-9)
    keep = true != 0
    hit = np.where(np.sign(model) == 0, 0.5, np.sign(model) == np.sign(true))[keep].mean()
    assert pooled["model"]["directional_accuracy"] == pytest.approx(hit, rel=1e-9)
    pairs = set(zip(np.concatenate([p.dates for p in parts]).tolist(),
                    np.concatenate([[p.symbols[i] for i in p.symbol_ids] for p in parts]).tolist()))
    assert len(pairs) == len(true)  # no (date, symbol) forecast twice

    # the aggregate over folds: mean, sample std and the 95% Student-t interval of the folds' rows
    for key, agg in saved["aggregate"].items():
        v = np.array([f[key] for f in saved["folds"]], dtype=float)
        v = v[np.isfinite(v)]
        assert agg["n"] == len(v)
        if len(v) >= 2:
            half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
            assert [agg["mean"], agg["ci_low"], agg["ci_high"]] == pytest.approx([v.mean(), v.mean() - half, v.mean() + half])
    assert res["aggregate"]["mse_vs_zero"]["mean"] == pytest.approx(np.mean([f["mse_vs_zero"] for f in res["folds"]]))

    # finetune: fold k's training starts from fold k − 1's final weights, and from no optimizer state
    assert len(starts) == 3 and all(n_state == 0 for _, n_state in starts)
    for k in (1, 2):
        final = load_file(str(tmp_path / "wf" / "walkforward" / f"fold-{k}" / "final" / "model.safetensors"))
        start = starts[k][0]
        assert set(final) <= set(start) and all(torch.equal(final[n], start[n]) for n in final)


def test_a_cut_test_block_is_said_beside_the_pooled_backtest(tmp_path, capsys):
    """evaluation.max_test_windows cuts each fold to its last dates: the pooled backtest then booked the
    months between a cut fold's last scored date and the next fold's first as one period (buy-and-hold
    at 128% annual volatility instead of 37%), without a word. It is said in walkforward.json and the table."""
    from hftraining.workflows.walkforward import format_walkforward

    args = tiny(tmp_path / "wf", "model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=3",
                "data.symbols=[AEM, WPM]", "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false",
                "evaluation.max_test_windows=20")
    res = wf.walk_forward(load_config(None, args), 2)
    assert [f["test_cut"] for f in res["folds"]] == [True, True]
    assert "fold(s) 1:" in res["pooled"]["backtest_note"] and res["pooled"]["backtest_note"] in format_walkforward(res)
    assert "cut the test block of fold(s) 1" not in capsys.readouterr().err  # said once: in the table
