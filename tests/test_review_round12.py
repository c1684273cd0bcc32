"""A diverging run under fp16's loss scaler: the scaler skips the first steps after the overflowing update
(their loss is finite, their scaled gradients are not) until its scale has come down to 1, and only then
do the steps count as non-finite. The abort must still name the update that made the weights overflow
and a checkpoint from before it, not the step before the counted run (a step the scaler skipped, which
changed no weight) and a checkpoint saved after the overflow."""

import pytest
import torch

from hftraining.core.config import load_config
from hftraining.train import checkpoint as ckpt
from hftraining.train.runner import build_trainer
from hftraining.train.trainer import NonFiniteError
from conftest import tiny  # noqa: E402
from test_diverge_round11 import QUICK, _finite_step  # noqa: E402


def test_a_diverging_run_under_the_loss_scaler_names_the_overflowing_update_and_a_checkpoint_from_before_it(tmp_path):
    # SGD at rate 100: steps 1 and 2 are applied; after step 2's update every gradient overflows on finite
    # windows. The scaler (a CPU GradScaler stands in for fp16's CUDA one: fp16 needs CUDA), at scale 4,
    # skips steps 3 and 4 as its own overflows (scale 4, then 2), and steps 5 to 7 count. The error said
    # "the weights diverged at step 4's update" and named step 3's checkpoint, which holds step 2's weights.
    cfg = load_config(None, tiny(tmp_path / "run", *QUICK, "training.optimizer=sgd", "training.learning_rate=100", "training.weight_decay=0",
                                 "training.max_grad_norm=0", "training.max_steps=12", "training.save_steps=1",
                                 "training.save_total_limit=10", "training.max_consecutive_nonfinite=3"))
    tr = build_trainer(cfg)
    tr.scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    try:
        with pytest.raises(NonFiniteError) as err:
            tr.fit()
        msg = str(err.value)
        assert tr.state.skipped_steps == 5 and tr.state.consecutive_nonfinite == 3  # 2 of the scaler's, 3 counted
        assert "last at step 7" in msg and "every window since step 5 is finite" in msg, msg
        assert "the weights diverged at step 2's update" in msg and "window 1" not in msg, msg
        run = cfg.run_dir() / "checkpoints"
        assert [s for s, _ in ckpt.list_checkpoints(run)] == [1, 2, 3, 4, 5, 6]
        assert f"the last checkpoint with weights from before step 2: {run / 'step-00000001'}" in msg, msg
        # the claim is true: step 1's weights train, those saved after step 2's update (the scaler's steps too) do not
        assert _finite_step(tr, run / "step-00000001")
        assert not any(_finite_step(tr, run / f"step-0000000{s}") for s in (2, 3, 4))
    finally:
        tr.close()
