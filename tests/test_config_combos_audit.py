"""Combinations of settings that users put together (model heads × optimizers, models × losses, ...):
each one trains, or is refused in one line naming the key, never a traceback mid-run."""

import torch

from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.train.runner import build_trainer
from conftest import tiny  # noqa: E402


def test_sophia_trains_a_model_with_a_quantile_head(tmp_path):
    """The pinball loss is piecewise linear: the gradient of the quantile head's bias does not depend on
    any parameter, so it carries no graph. Sophia's Hessian refresh must count its Hessian-vector
    product as zero (it was a RuntimeError from torch.autograd.grad on the first step)."""
    cfg = load_config(None, tiny(tmp_path / "run", "training.optimizer=sophia", "model.quantiles=[0.1, 0.5, 0.9]",
                                 "training.max_steps=2", "training.save_steps=0", "evaluation.eval_steps=0"))
    trainer = build_trainer(cfg, prepare(cfg.data))
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train_step()
    trainer.train_step()
    after = dict(trainer.model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    moved = [k for k in before if not torch.equal(before[k], after[k].detach())]
    assert any("quantile" in k for k in moved) and len(moved) > len(before) // 2, moved


def _train(argv, monkeypatch, capsys, tmp_path):
    """Exit code and stderr of ``hftraining train`` with ``argv``, run from ``tmp_path``."""
    from hftraining.cli import main
    from hftraining.train.logging import log

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    capsys.readouterr()
    rc = main(["train", *argv])
    return rc, capsys.readouterr().err


def test_a_fitted_model_refuses_a_cross_sectional_loss(tmp_path, monkeypatch, capsys):
    """Ridge, LightGBM and the naive forecasts are fitted by squared error (or not at all): ``model.loss``
    ic or rank would not act, and the run's validation "loss" would be a metric it was never fitted on."""
    rc, err = _train(tiny(tmp_path / "run", "model.type=ridge", "model.loss=ic", "data.batching=dates"),
                     monkeypatch, capsys, tmp_path)
    assert rc == 2 and err.count("\n") == 1 and "model.loss" in err and "ridge" in err, err[-2000:]
    assert not (tmp_path / "run" / "final").exists()


def test_a_cross_sectional_loss_without_a_cross_section_is_refused(tmp_path, monkeypatch, capsys):
    """``model.loss=ic`` learns from dates with 3 symbols or more: with two symbols every step's loss and
    gradient were 0 and the untrained model was evaluated as if trained (validation loss NaN)."""
    rc, err = _train(tiny(tmp_path / "run", "model.loss=ic", "data.batching=dates", "training.max_steps=2"),
                     monkeypatch, capsys, tmp_path)
    assert rc == 2 and "model.loss: 'ic'" in err and "3 symbols" in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("hftraining: error:") and "Traceback" not in err
    assert not (tmp_path / "run" / "final").exists()


def test_a_run_without_a_validation_split_can_be_used(tmp_path, monkeypatch, capsys):
    """``data.val_ratio=0`` trains (no validation split); the model folder records its cuts as split dates
    with val equal to test, which evaluate, backtest and predict read back as a config mistake: such a
    model could not be used at all."""
    from hftraining.cli import main
    from hftraining.data.io import sample_data_dir

    rc, err = _train(tiny(tmp_path / "run", "data.val_ratio=0", "training.max_steps=2", "evaluation.report=false",
                          "evaluation.intervals=[]"), monkeypatch, capsys, tmp_path)
    assert rc == 0, err[-2000:]
    rc = main(["predict", str(tmp_path / "run"), "--data", str(sample_data_dir() / "AEM.csv"),
               "--out", str(tmp_path / "f.csv")])
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert (tmp_path / "f.csv").read_text().count("\n") > 1


def test_a_booster_of_one_leaf_trees_reads_back():
    """A LightGBM fit whose trees cannot split (``model.lightgbm_min_data_in_leaf`` above the windows, or a
    constant label such as ``cs_zscore`` of one symbol) writes trees of one leaf with an empty
    ``leaf_weight``; the folder's check refused them, so the trained model could not be evaluated or
    used to predict (nor could a run's LightGBM baseline)."""
    import lightgbm as lgb
    import numpy as np

    from hftraining.models.gbm import check_booster_text

    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 3))
    bst = lgb.train({"objective": "regression", "min_data_in_leaf": 1000, "verbose": -1},
                    lgb.Dataset(a, rng.normal(size=40)), num_boost_round=3)
    text = bst.model_to_string()
    assert "num_leaves=1" in text
    check_booster_text(text, 3)  # raises ValueError on the original
    with __import__("pytest").raises(ValueError, match="num_leaves=2 needs"):  # the check still checks
        check_booster_text(text.replace("num_leaves=1", "num_leaves=2", 1), 3)


def test_a_cross_sectional_label_of_one_symbol_is_refused(tmp_path, monkeypatch, capsys):
    """``data.target=cs_zscore`` of a single symbol is 0 on every date: the run trained on nothing and
    its verdict read "model MSE / zero-forecast MSE = inf" (and its LightGBM baseline could not be read back)."""
    rc, err = _train(tiny(tmp_path / "run", "data.symbols=[AEM]", "data.target=cs_zscore", "training.max_steps=2"),
                     monkeypatch, capsys, tmp_path)
    assert rc == 2 and "data.target: cs_zscore" in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("hftraining: error:") and "Traceback" not in err

