import numpy as np
import pytest
import torch

from hftraining.core.config import DataConfig, load_config
from hftraining.data import augment
from hftraining.data.pipeline import prepare
from hftraining.train.runner import build_trainer


@pytest.fixture(scope="module")
def data():
    return prepare(DataConfig(symbols=["AEM"], sequence_length=20, prediction_horizon=3))


def test_off_by_default_and_identity_when_off(data):
    d = DataConfig()
    assert not augment.enabled(d)
    idx = np.arange(8)
    torch.testing.assert_close(augment.training_batch(data.train, idx, d)["x"], data.train.batch(idx)["x"])


def test_noise_and_scaling_change_inputs_not_targets(data):
    idx = np.arange(8)
    plain = data.train.batch(idx)
    aug = augment.training_batch(data.train, idx, DataConfig(augment_noise_std=0.1, augment_scale_std=0.1))
    diff = (aug["x"] - plain["x"]).std().item()
    assert 0.05 < diff < 0.5
    torch.testing.assert_close(aug["y"], plain["y"])
    torch.testing.assert_close(aug["past"], plain["past"])


def test_jitter_stays_inside_the_split(data):
    ws = data.train
    idx = np.arange(len(ws))
    d = DataConfig(augment_jitter=5, sequence_length=20)
    torch.manual_seed(0)
    b = augment.training_batch(ws, idx, d)
    assert "mask" not in b  # never reaches before the segment
    plain = ws.batch(idx)
    moved = (b["y"] != plain["y"]).any(dim=1)
    assert 0.6 < moved.float().mean().item() < 0.95  # 5 of 6 shifts move the window
    # a jittered window equals the plain window that ends that many rows earlier
    k = int(np.flatnonzero(moved.numpy())[-1])
    matches = [s for s in range(1, 6) if k - s >= 0 and torch.equal(b["x"][k], plain["x"][k - s])]
    assert len(matches) == 1


def test_trainer_applies_augmentation_to_training_batches_only(tiny_overrides):
    from hftraining.data.windows import EpochSampler

    cfg = load_config(None, tiny_overrides + ["data.augment_noise_std=0.5", "training.max_steps=2"])
    trainer = build_trainer(cfg)
    seen = []
    original = trainer.model.forward

    def spy(x, mask=None, past=None):
        seen.append((trainer.model.training, x.detach().clone()))
        return original(x, mask, past)

    trainer.model.forward = spy
    trainer.train_step()
    trainer.evaluate(trainer.data.val, max_batches=1)
    trainer.close()
    (train_mode, x_train), (eval_mode, x_val) = seen[0], seen[-1]
    assert train_mode and not eval_mode
    # the windows the sampler drew, without augmentation: the model saw them plus N(0, 0.5) noise
    idx = EpochSampler(len(trainer.data.train), cfg.data.batch_size, cfg.training.seed).next_batch()
    plain = trainer.data.train.batch(idx)["x"]
    assert (x_train - plain).std().item() == pytest.approx(0.5, rel=0.1)
    val_plain = trainer.data.val.batch(np.arange(x_val.shape[0]))["x"]
    torch.testing.assert_close(x_val, val_plain)


@pytest.fixture
def jittered_ends(monkeypatch):
    """The window ends of every batch gathered while the fixture is active (what the model reads)."""
    from hftraining.data.windows import WindowSet

    seen: list[np.ndarray] = []
    real = WindowSet.batch

    def spy(self, idx):
        seen.append(np.asarray(self.ends)[np.asarray(idx)].copy())
        return real(self, idx)

    monkeypatch.setattr(WindowSet, "batch", spy)
    return seen


def test_jitter_keeps_a_purged_folds_training_windows_out_of_its_test_block(jittered_ends):
    """Purged k-fold trains on the windows before and after the test block; a window after it is
    never jittered back so far that a target lands in the block."""
    from hftraining.data.pipeline import read_frames
    from hftraining.workflows.walkforward import prepare_fold

    cfg = load_config(None, ["data.symbols=[AEM]", "data.cache_dir=null", "data.sequence_length=30",
                             "data.prediction_horizon=5", "data.augment_jitter=10", "data.embargo=2"])
    data = prepare_fold(cfg, read_frames(cfg.data)[0], 1, 4, "purged_kfold")
    tr, H = data.train, cfg.data.prediction_horizon
    block = (data.test.ends.min() + 1, data.test.ends.max() + H)  # the test targets' rows
    torch.manual_seed(0)
    for _ in range(5):
        augment.training_batch(tr, np.arange(len(tr)), cfg.data)
    ends = np.concatenate(jittered_ends)
    targets = ends[:, None] + np.arange(1, H + 1)
    assert not ((targets >= block[0]) & (targets <= block[1])).any()
    assert (ends > block[1]).any() and (ends != np.tile(tr.ends, 5)).mean() > 0.5  # windows after it, jittered


def test_jitter_never_moves_a_window_across_a_gap(jittered_ends):
    """With data.max_gap, a jittered window stays between two gaps, as every unjittered one does."""
    d = DataConfig(symbols=["AEM"], sequence_length=10, prediction_horizon=2, augment_jitter=5, max_gap="3D")
    tr = prepare(d).train
    gap = 3 * 86400 * 10**9

    def spans_gap(ends):
        t = tr.row_times[ends[:, None] + np.arange(-d.sequence_length + 1, d.prediction_horizon + 1)]
        return (np.diff(t, axis=1) > gap).any(axis=1)

    assert not spans_gap(tr.ends).any() and (np.diff(tr.row_times) > gap).sum() > 10  # the data has gaps
    torch.manual_seed(0)
    augment.training_batch(tr, np.arange(len(tr)), d)
    (ends,) = jittered_ends
    assert not spans_gap(ends).any() and (ends != tr.ends).mean() > 0.5
