"""Trainer behaviour users rely on: non-finite recovery, early stopping, TensorBoard, precision."""

import json

import numpy as np
import pytest
import torch

from hftraining.core.config import load_config
from hftraining.data.pipeline import prepare
from hftraining.core.errors import ConfigError
from hftraining.train.checkpoint import list_checkpoints
from hftraining.train.trainer import NonFiniteError
from hftraining.workflows.train_run import train
from conftest import one_and_two_processes, tiny  # noqa: E402


def _inject_nan(data, bad_calls):
    """Make the training batches drawn on call numbers in ``bad_calls`` contain a NaN."""
    original = data.train.batch
    calls = {"n": 0}

    def batch(idx):
        out = original(idx)
        calls["n"] += 1
        if calls["n"] in bad_calls:
            out["x"] = out["x"].clone()
            out["x"][0, -1, 0] = float("nan")
        return out

    data.train.batch = batch
    return calls


def test_nan_batches_skip_their_step_and_training_goes_on(tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides + ["training.gradient_accumulation_steps=2"])
    data = prepare(cfg.data)
    _inject_nan(data, bad_calls={3, 10, 11})  # micro-batches of steps 2, 5 and 6 (two per step)
    train(cfg, data)
    run = cfg.run_dir()
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in recs if "nonfinite_skipped" in r]
    assert [r["nonfinite_skipped"] for r in skipped] == [1, 2, 3]
    state = json.loads((run / "checkpoints" / "step-00000030" / "trainer_state.json").read_text())
    assert state["skipped_steps"] == 3 and state["global_step"] == 30
    from safetensors.torch import load_file

    weights = load_file(str(run / "final" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_too_many_nonfinite_steps_stop_with_last_good_checkpoint(tiny_overrides):
    cfg = load_config(None, tiny_overrides + ["training.max_consecutive_nonfinite=3"])
    data = prepare(cfg.data)
    _inject_nan(data, bad_calls=set(range(13, 1000)))  # every batch after step 12 is poisoned
    with pytest.raises(NonFiniteError, match=r"3 optimizer steps in a row .*training.max_consecutive_nonfinite=3"):
        train(cfg, data)
    ckpts = list_checkpoints(cfg.run_dir() / "checkpoints")
    assert [s for s, _ in ckpts] == [10]
    from safetensors.torch import load_file

    weights = load_file(str(ckpts[-1][1] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_early_stopping_stops_and_checkpoints(tiny_overrides):
    cfg = load_config(None, tiny_overrides + [
        "training.max_steps=100", "evaluation.eval_steps=5", "training.save_steps=0",
        "training.early_stopping_patience=2", "training.early_stopping_threshold=1000.0",
    ])
    train(cfg)
    run = cfg.run_dir()
    evals = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if "eval_mse" in l]
    assert evals == [5, 10, 15]  # first eval sets the best; two without a 1000-unit improvement stop it
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [15]
    assert json.loads((run / "eval.json").read_text())["step"] == 15


def test_early_stopping_between_logging_steps_logs_its_last_steps(tiny_overrides):
    """A run stopped early at a step that is not a logging step still writes the training record of
    the steps since the last one (they were left out of metrics.jsonl and every tracker)."""
    cfg = load_config(None, tiny_overrides + [
        "training.max_steps=100", "training.logging_steps=4", "evaluation.eval_steps=5", "training.save_steps=0",
        "training.early_stopping_patience=1", "training.early_stopping_threshold=1000.0",
    ])
    train(cfg)
    recs = [json.loads(l) for l in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "learning_rate" in r] == [4, 8, 10]
    assert [r["step"] for r in recs if "eval_mse" in r] == [5, 10]


def test_tensorboard_events_open_with_tensorboard_reader(tiny_overrides):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, [o for o in tiny_overrides if not o.startswith("output.tensorboard")])
    train(cfg)
    acc = EventAccumulator(str(cfg.run_dir() / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/samples_per_second",
            "eval/mse", "eval/loss", "eval/directional_accuracy"} <= tags
    recs = [json.loads(l) for l in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    jsonl_loss = [r["loss"] for r in recs if "learning_rate" in r]
    tb_loss = [e.value for e in acc.Scalars("train/loss")]
    np.testing.assert_allclose(tb_loss, jsonl_loss, rtol=1e-6)


def test_fp16_on_cpu_is_a_config_error(tiny_overrides):
    cfg = load_config(None, tiny_overrides + ["training.precision=fp16", "training.device=cpu"])
    with pytest.raises(ConfigError, match="training.precision: fp16 needs CUDA"):
        train(cfg)


def _training_linear_dtypes(monkeypatch) -> list[torch.dtype]:
    """The output dtypes of the model's nn.Linear layers in every forward pass made in training mode
    (the training steps; validation and prediction run in eval mode), recorded by forward hooks on
    the model the Trainer builds."""
    import hftraining.train.trainer as trainer_mod

    seen: list[torch.dtype] = []
    build = trainer_mod.build_model

    def hook(module, args, out):
        if module.training and torch.is_grad_enabled():
            seen.append(out.dtype)

    def spy(*args, **kwargs):
        model = build(*args, **kwargs)
        # the encoder's layers: the output heads forecast in fp32 under any autocast (ForecastModel.fp32_heads)
        linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                   and not n.split(".")[0].endswith("head")]
        assert linears, "the model has no nn.Linear layer to observe"
        for m in linears:
            m.register_forward_hook(hook)
        return model

    monkeypatch.setattr(trainer_mod, "build_model", spy)
    return seen


@pytest.mark.parametrize("overrides, dtype", [
    (["training.use_mixed_precision=true"], torch.bfloat16),
    (["training.precision=bf16"], torch.bfloat16),
    (["training.precision=fp32"], torch.float32),
    (["training.use_mixed_precision=false"], torch.float32),
], ids=["use_mixed_precision", "precision_bf16", "precision_fp32", "no_mixed_precision"])
def test_bf16_autocast_trains(tiny_overrides, monkeypatch, overrides, dtype):
    """Training steps run under the precision's autocast: a Linear layer's output in a training
    step is bfloat16 with bf16 (use_mixed_precision=true), float32 with fp32."""
    seen = _training_linear_dtypes(monkeypatch)
    cfg = load_config(None, tiny_overrides + ["training.max_steps=4", "training.save_steps=0",
                                              "evaluation.eval_steps=0", *overrides])
    result = train(cfg)
    assert np.isfinite(result["model"]["mse"])
    assert len(seen) >= 4, seen  # at least one Linear output per training step was observed
    assert set(seen) == {dtype}, set(seen)
    if dtype == torch.bfloat16:
        assert "bf16" in (cfg.run_dir() / "train.log").read_text()


def test_validation_is_capped_to_the_same_evenly_spaced_windows(tiny_overrides):
    """evaluation.max_val_windows: every validation scores the same evenly spaced subset of the split."""
    from hftraining.train.runner import build_trainer

    cfg = load_config(None, tiny_overrides + ["evaluation.max_val_windows=50"])
    data = prepare(cfg.data)
    trainer = build_trainer(cfg, data)
    try:
        assert len(data.val) > 50
        idx = np.unique(np.linspace(0, len(data.val) - 1, 50).round().astype(np.int64))
        np.testing.assert_array_equal(trainer.val_windows.ends, data.val.ends[idx])
        logged = trainer._validate(0, None)
        assert logged == trainer.evaluate(data.val.subset(idx))
        assert logged != trainer.evaluate(data.val)  # the cap changed what was scored
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match="evaluation.max_val_windows: must be >= 1"):
        load_config(None, tiny_overrides + ["evaluation.max_val_windows=0"])


@pytest.mark.parametrize("optimizer", ["adamw", "schedulefreeadamw"])
def test_load_best_model_at_end_keeps_the_weights_that_scored_best(tiny_overrides, monkeypatch, optimizer):
    # The best evaluation (step 6) falls between save steps (4, 8), and a schedule-free optimizer
    # scores its averaged weights, not the training weights a checkpoint holds: the final model must
    # still be exactly the weights validation scored best.
    import hftraining.train.trainer as trainer_mod
    from hftraining.train.runner import build_trainer

    scores, scored, weights = {2: 0.9, 4: 0.8, 6: 0.5, 8: 0.7}, {}, {}
    evaluate, predict = trainer_mod.Trainer.evaluate, trainer_mod.predict_scaled

    def spy(model, *args, **kwargs):  # the weights validation scores, as it scores them
        weights.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return predict(model, *args, **kwargs)

    def scripted(self, ws, max_batches=None):
        out = evaluate(self, ws, max_batches)
        if ws is self.val_windows:
            scored[self.state.global_step] = dict(weights)
            out["mse"] = scores[self.state.global_step]
        return out

    monkeypatch.setattr(trainer_mod, "predict_scaled", spy)
    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", scripted)
    cfg = load_config(None, [*tiny_overrides, "training.max_steps=8", "evaluation.eval_steps=2", "training.save_steps=4",
                             f"training.optimizer={optimizer}", "training.load_best_model_at_end=true"])
    tr = build_trainer(cfg)
    tr.fit()
    tr.final_weights()
    assert tr.state.best_step == 6 and tr.state.best_checkpoint.endswith("step-00000006")
    assert [s for s, _ in list_checkpoints(tr.ckpt_root)] == [4, 6, 8]  # 6 saved because it scored best
    final = tr.model.state_dict()
    for k, v in scored[6].items():
        if optimizer == "adamw":
            assert torch.equal(final[k], v), k
        else:  # evaluation weights rebuilt from the checkpoint's training weights and optimizer state:
            assert torch.equal(final[k], v), k  # the same, since evaluating puts the training weights back exactly
    assert any((final[k] - v).abs().max() > 1e-5 for k, v in scored[8].items())
    assert tr.weights_step() == 6  # what the model card says the folder's weights are (trained 8 steps)


def test_resumed_run_logs_the_same_training_records(tmp_path):
    # A killed run's half-written last metrics line is dropped, not a JSONDecodeError.
    # A checkpoint (step 3) inside a logging window (steps 1-5): the resumed run's step-5 record
    # must average steps 4-5 together with the steps 1-3 before the checkpoint, as the
    # uninterrupted run's does (so a tracker sees the same values again).
    import shutil

    from hftraining.train.runner import training_run

    common = ["training.max_steps=10", "training.logging_steps=5", "training.save_steps=3", "evaluation.eval_steps=0",
              "training.save_total_limit=10"]
    with training_run(load_config(None, tiny(tmp_path / "full", *common))):
        pass
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    for step in (6, 9, 10):
        shutil.rmtree(tmp_path / "resumed" / "checkpoints" / f"step-{step:08d}")
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "loss": 0.9')  # a run killed mid-write leaves its last line half-written
    with training_run(load_config(None, tiny(tmp_path / "resumed", *common, "training.resume_from_checkpoint=auto",
                                            "output.overwrite=true"))):
        pass

    def records(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(l).items() if k != "samples_per_second"} for l in lines if '"loss"' in l]

    assert [r["step"] for r in records("full")] == [5, 10]
    assert records("resumed") == records("full")


def test_a_nan_score_is_never_the_best(tiny_overrides, monkeypatch):
    # The first evaluation scored NaN (a model emitting NaN, an IC with no cross-section to measure):
    # it became the best, no later score could beat it (x < NaN is false), early stopping stopped a
    # run that was improving and load_best_model_at_end kept the NaN-scored weights.
    import hftraining.train.trainer as trainer_mod
    from hftraining.train.runner import build_trainer

    scores = {2: float("nan"), 4: 0.8, 6: 0.5, 8: 0.7}
    evaluate = trainer_mod.Trainer.evaluate

    def scripted(self, ws, max_batches=None):
        return {**evaluate(self, ws, max_batches), "mse": scores[self.state.global_step]}

    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", scripted)
    cfg = load_config(None, [*tiny_overrides, "training.max_steps=8", "evaluation.eval_steps=2", "training.save_steps=4",
                             "training.early_stopping_patience=2", "training.load_best_model_at_end=true"])
    tr = build_trainer(cfg)
    tr.fit()
    assert tr.state.global_step == 8 and not tr.state.stopped_early
    assert tr.state.best_step == 6 and tr.state.best_metric == 0.5 and tr.state.best_checkpoint.endswith("step-00000006")
    tr.close()


def test_capped_cross_sectional_validation_keeps_whole_dates(tiny_overrides, monkeypatch):
    # evaluation.max_eval_batches cut the date-ordered validation windows at a batch boundary, so the
    # last date was scored on part of its symbols.
    import hftraining.train.trainer as trainer_mod
    from hftraining.train.runner import build_trainer

    cfg = load_config(None, [*tiny_overrides, "data.target=cs_rank", "data.eval_batch_size=3"])
    tr = build_trainer(cfg)
    seen = []
    ic = trainer_mod.metrics.mean_cross_sectional_ic
    monkeypatch.setattr(trainer_mod.metrics, "mean_cross_sectional_ic",
                        lambda pred, true, dates, rank=False: seen.append(dates.copy()) or ic(pred, true, dates, rank=rank))
    times = tr.val_windows.times
    per_date = dict(zip(*np.unique(times, return_counts=True)))
    assert max(per_date.values()) == 2  # two symbols: 3 windows end inside a date
    for batches in (1, 2, 5):
        seen.clear()
        tr.evaluate(tr.val_windows, max_batches=batches)
        dates, counts = np.unique(seen[0], return_counts=True)
        assert 0 < len(seen[0]) <= 3 * batches or len(dates) == 1
        assert all(per_date[d] == c for d, c in zip(dates, counts)), (batches, dates, counts)
    tr.close()


def test_accumulated_date_batches_of_unequal_size_equal_one_big_batch(tmp_path):
    # data.batching=dates holds every symbol of a date, so the micro-batches of a step differ in size
    # when symbols come and go; with model.loss=mse each micro-batch's mean counted 1/accum, and a date
    # of 2 windows weighed as much as one of 6: the update differed from one big batch's by 5.6x.
    import copy

    from hftraining.train.runner import build_trainer

    folder = _uneven_panel(tmp_path / "data")
    base = ["model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.0",
            "data.sequence_length=5", "data.prediction_horizon=1", "data.features=[log_return_1]", f"data.data_dir={folder}",
            "data.batching=dates", "training.optimizer=sgd", "training.optimizer_kwargs={momentum: 0.0}",
            "training.learning_rate=0.1", "training.lr_scheduler=constant", "training.warmup_steps=0",
            "training.max_grad_norm=0", "training.max_steps=1", "training.save_steps=0", "evaluation.eval_steps=0",
            "evaluation.report=false", "output.tensorboard=false", "output.progress_bar=never", "training.seed=1"]

    def update(name, *extra):
        tr = build_trainer(load_config(None, [*base, f"output.output_dir={tmp_path / name}", *extra]))
        peek = copy.deepcopy(tr.sampler)
        sizes = [len(peek.next_batch()) for _ in range(tr.cfg.training.gradient_accumulation_steps)]
        before = [p.detach().clone() for p in tr.model.parameters()]
        tr.model.train()
        tr.opt.train()
        tr.train_step()
        tr.read_back()
        loss = tr._window.losses[-1]
        tr.close()
        return sizes, [p.detach() - b for p, b in zip(tr.model.parameters(), before)], loss

    sizes, accumulated, loss_a = update("accum", "training.gradient_accumulation_steps=2", "data.dates_per_batch=1")
    assert sizes == [2, 6]  # the same two dates as the big batch below, of 2 and 6 symbols
    sizes, big, loss_b = update("big", "training.gradient_accumulation_steps=1", "data.dates_per_batch=2")
    assert sizes == [8]
    for a, b in zip(accumulated, big):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)  # float32 rounding of p - p0
    assert loss_a == pytest.approx(loss_b, rel=1e-5)  # and the logged loss is the big batch's


def _uneven_panel(folder):
    """Six symbols on 300 business days, four of them listed from day 150: dates of 2 and of 6 windows."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2015-01-02", periods=300, tz="UTC")
    for s in range(6):
        c = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
        df = pd.DataFrame({"timestamp": days, "open": c, "high": c * 1.002, "low": c * 0.998, "close": c,
                           "volume": rng.integers(1000, 5000, len(days))})
        (df if s < 2 else df.iloc[150:]).to_csv(folder / f"S{s:02d}.csv", index=False)
    return folder


@pytest.mark.slow  # 14 s; date batches of unequal size across two processes are in the default suite by tests/test_train_ddp.py and tests/test_train_cross_section.py
def test_date_batches_of_unequal_size_under_two_processes_equal_one(tmp_path):
    # DDP averages the ranks' gradients: with model.loss=mse a rank holding a date of 2 windows weighed
    # as much as one holding a date of 6, unlike one process holding both dates.
    folder = _uneven_panel(tmp_path / "data")
    common = ["model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.0",
              "data.sequence_length=5", "data.prediction_horizon=1", "data.features=[log_return_1]",
              f"data.data_dir={folder}", "data.batching=dates", "training.optimizer=sgd", "training.learning_rate=0.1",
              "training.max_steps=6", "training.save_steps=0", "training.logging_steps=3", "evaluation.eval_steps=0",
              "evaluation.report=false", "training.device=cpu", "output.tensorboard=false", "output.progress_bar=never"]
    one, two = one_and_two_processes(tmp_path, common)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6, msg=k)


def test_best_checkpoint_is_the_best_step_s_or_none(tiny_overrides, monkeypatch):
    # Without load_best_model_at_end a new best between save steps is not saved; best_checkpoint kept
    # naming the previous best's checkpoint, which rotation then kept forever beyond save_total_limit
    # although it no longer held the best weights (best_step 6, best_checkpoint step 4).
    import hftraining.train.trainer as trainer_mod
    from hftraining.train.runner import build_trainer

    scores = {2: 0.9, 4: 0.8, 6: 0.5, 8: 0.7}
    evaluate = trainer_mod.Trainer.evaluate

    def scripted(self, ws, max_batches=None):
        return {**evaluate(self, ws, max_batches), "mse": scores[self.state.global_step]}

    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", scripted)
    cfg = load_config(None, [*tiny_overrides, "training.max_steps=8", "evaluation.eval_steps=2", "training.save_steps=4",
                             "training.save_total_limit=1"])
    tr = build_trainer(cfg)
    tr.fit()
    assert tr.state.best_step == 6 and tr.state.best_checkpoint is None
    assert [s for s, _ in list_checkpoints(tr.ckpt_root)] == [8]
    tr.close()


@pytest.mark.parametrize("extra,message", [
    (["training.optimizer=adamx"], r"training\.optimizer: unknown"),
    (["model.type=patchtst", "model.quantiles=[0.1, 0.9]"], r"model\.quantiles: model\.type 'patchtst' has no quantile head"),
    (["training.compile=default", "data.batching=dates", "data.target=cs_rank"], r"training\.compile: 'default' needs batches of one shape"),
    (["training.optimizer=sophia", "training.compile=default"], r"training\.compile: 'default' cannot train 'sophia'"),
])
def test_a_config_mistake_is_said_before_any_data_is_read(tmp_path, extra, message):
    # they were found by the trainer, after the data were read and their features built (minutes on a
    # large panel); a data folder that does not exist shows which comes first
    from hftraining.train.distributed import init_distributed
    from hftraining.train.runner import build_trainer

    cfg = load_config(None, tiny(tmp_path / "run", f"data.data_dir={tmp_path / 'no-such-folder'}", *extra))
    with pytest.raises(ConfigError, match=message):
        build_trainer(cfg, None, init_distributed("cpu", 60))
    assert not (tmp_path / "run").exists()  # nor was the run folder touched


@pytest.mark.parametrize("kind", ["ridge", "lightgbm", "drift"])
@pytest.mark.parametrize("key", ["data.augment_noise_std=0.1", "data.augment_scale_std=0.1", "data.augment_jitter=2"])
def test_augmentation_for_a_model_without_gradient_steps_is_an_error(tmp_path, kind, key):
    """Ridge, LightGBM and the naive baselines fit on the training windows as they are: augmentation
    settings would silently do nothing, so they are a one-line error naming the key, before any data."""
    with pytest.raises(ConfigError, match=rf"^data\.{key.split('=')[0].split('.')[1]}: model.type '{kind}' takes no gradient steps"):
        train(load_config(None, tiny(tmp_path / "run", f"model.type={kind}", key)))
    assert not (tmp_path / "run").exists()
