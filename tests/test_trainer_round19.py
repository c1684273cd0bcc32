"""The validation score that picks the best step and stops a run early: an IC metric that no validation date
can score (fewer symbols on every date than an IC counts) is refused before anything trains, and a score of
+inf (forecasts that overflowed) is never the best step."""

import json

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError
from hftraining.train.trainer import NonFiniteError
from conftest import tiny  # noqa: E402

COMMON = ["training.max_steps=40", "training.logging_steps=10", "evaluation.eval_steps=5", "training.save_steps=100",
          "training.early_stopping_patience=2", "training.load_best_model_at_end=true", "evaluation.report=false",
          "evaluation.intervals=[]"]


@pytest.mark.parametrize("extra", [
    ["data.target=cs_rank", "evaluation.metric=neg_rank_ic"],
    ["data.target=cs_zscore", "evaluation.metric=neg_ic"],
    ["model.loss=rank", "data.batching=dates", "evaluation.metric=loss"],  # the rank loss is scored as neg_rank_ic
])
def test_an_ic_metric_no_validation_date_can_score_is_refused_before_training(tmp_path, capsys, extra):
    # Two symbols: an IC counts dates with at least 3, so every validation scored NaN; early stopping then
    # stopped the run at step 10 of 40 ("has not improved for 2 evaluations") and exited 0, the final model
    # "the last step's: no validation score".
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')  # an earlier run's: left as it was
    rc = main(["train", *tiny(run, *COMMON, *extra, "output.overwrite=true")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert err[-1].startswith("hftraining: error: evaluation.metric: "), err[-1]
    assert "no validation date scored has more than 2" in err[-1] and "every evaluation would score NaN" in err[-1]
    assert not (run / "checkpoints").exists() and not (run / "final").exists()
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_an_ic_metric_with_dates_of_three_symbols_trains(tmp_path):
    from hftraining.data.pipeline import prepare
    from hftraining.train.trainer import check_cross_section

    cfg = load_config(None, tiny(tmp_path / "run", *COMMON, "data.symbols=[AEM, WPM, ARM]", "data.target=cs_rank",
                                 "evaluation.metric=neg_rank_ic"))
    data = prepare(cfg.data)
    check_cross_section(cfg, data.train, data.val, data.test)  # dates with 3 symbols: scored, not refused
    two = load_config(None, tiny(tmp_path / "run", *COMMON, "data.target=cs_rank", "evaluation.metric=neg_rank_ic"))
    with pytest.raises(ConfigError, match="evaluation.metric"):
        check_cross_section(two, *(lambda d: (d.train, d.val, d.test))(prepare(two.data)))


def test_an_infinite_validation_score_is_never_the_best(tiny_overrides, monkeypatch):
    # Forecasts that overflow to inf score an MSE of +inf. The first such evaluation became the best step
    # (nothing to compare it with), so early stopping kept it and load_best_model_at_end made those weights the
    # final model with a warning and exit 0; a NaN score was never the best and the same run was an error.
    import hftraining.train.trainer as trainer_mod
    from hftraining.train.runner import build_trainer

    predict = trainer_mod.predict_scaled

    def overflowing(model, ws, *args, **kwargs):  # every validation forecast overflowed
        out = predict(model, ws, *args, **kwargs)
        return np.full_like(out, np.inf)

    monkeypatch.setattr(trainer_mod, "predict_scaled", overflowing)
    cfg = load_config(None, [*tiny_overrides, "training.max_steps=8", "evaluation.eval_steps=2", "training.save_steps=4",
                             "training.early_stopping_patience=2", "training.load_best_model_at_end=true"])
    tr = build_trainer(cfg)
    try:
        with pytest.raises(NonFiniteError, match="forecast NaN/Inf on the validation windows"):
            tr.fit()
        assert tr.state.best_step is None and tr.state.best_metric is None and tr.state.best_checkpoint is None
        assert tr.weights_step() is None
        evals = [json.loads(l) for l in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines() if "eval_mse" in l]
        assert [r["step"] for r in evals] == [2, 4] and tr.state.stopped_early  # patience 2: no eval was better
    finally:
        tr.close()


def test_a_finite_score_after_infinite_ones_is_the_best(tiny_overrides, monkeypatch):
    import hftraining.train.trainer as trainer_mod
    from hftraining.train.runner import build_trainer

    scores = {2: float("inf"), 4: 0.8, 6: 0.9, 8: float("inf")}
    evaluate = trainer_mod.Trainer.evaluate

    def scripted(self, ws, max_batches=None):
        return {**evaluate(self, ws, max_batches), "mse": scores[self.state.global_step]}

    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", scripted)
    cfg = load_config(None, [*tiny_overrides, "training.max_steps=8", "evaluation.eval_steps=2", "training.save_steps=4",
                             "training.early_stopping_patience=3", "training.load_best_model_at_end=true"])
    tr = build_trainer(cfg)
    try:
        tr.fit()
        assert tr.state.best_step == 4 and tr.state.best_metric == 0.8
        assert tr.state.best_checkpoint.endswith("step-00000004") and tr.weights_step() == 4
    finally:
        tr.close()
