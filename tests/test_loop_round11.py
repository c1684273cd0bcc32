"""Settings of the training loop as users combine them: a loss whose every part weighs 0 is refused
before any data is read (it trained nothing and exited 0 with the untrained model scored as trained)."""

import pytest

from hftraining.cli import main
from hftraining.core.config import ModelConfig
from hftraining.models.losses import check_loss_weights
from conftest import tiny  # noqa: E402

QUICK = ["evaluation.report=false", "training.save_steps=0", "evaluation.eval_steps=0", "training.max_steps=2"]


@pytest.mark.parametrize("settings", [
    ["model.loss_weights={mse: 0.0}"],
    ["model.quantiles=[0.1, 0.9]", "model.classification_threshold=0.01",
     "model.loss_weights={mse: 0.0, quantile: 0.0, classification: 0.0}"],
    ["data.batching=dates", "data.symbols=[AEM, WPM, ARM]", "model.loss=rank", "model.loss_weights={rank: 0.0}"],
], ids=["mse", "every-head", "rank"])
def test_a_loss_whose_every_part_weighs_zero_is_one_line_before_the_data(tmp_path, capsys, settings):
    # loss 0 and gradient norm 0 at every step, exit 0: weight decay alone moved the weights
    run = tmp_path / "run"
    assert main(["train", *tiny(run, *QUICK, *settings)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.loss_weights: every loss part" in err and "weight 0" in err, err
    assert not run.exists()


def test_a_part_at_weight_zero_beside_a_weighted_one_is_accepted():
    # training the quantile head alone, or the forecast without its heads' losses, is a choice
    check_loss_weights(ModelConfig(quantiles=[0.5], loss_weights={"mse": 0.0, "quantile": 1.0}))
    check_loss_weights(ModelConfig(classification_threshold=0.01, loss_weights={"classification": 0.0}))
