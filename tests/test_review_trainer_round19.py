"""The validation score that picks the best step, as a run resumes and as its figures are read back: an IC metric
no validation date can score names the way out a resumed run can take (and the keys that cut its dates away); a
checkpoint whose best score is +inf (written before such a score was refused as the best) keeps no best step; a run
whose every score was NaN or inf says so; the figures served of a run (``GET /model``, an ensemble's
``member_metrics``) are those of the step whose weights it kept."""

import json
import logging
import math

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError
from conftest import tiny  # noqa: E402

QUIET = ["evaluation.report=false", "evaluation.intervals=[]", "output.progress_bar=never"]


def test_an_ic_metric_refused_on_resume_names_a_way_out_a_resume_can_take(tmp_path, capsys, monkeypatch):
    # A run started before an IC metric of two symbols was refused (every evaluation NaN) resumes into the
    # refusal. Its advice was "use evaluation.metric=mse, or more symbols", and the resume with either was then
    # refused too (the checkpoint keeps its metric and data): the refusal now says to start over.
    import hftraining.train.trainer as trainer_mod

    run = tmp_path / "run"
    common = ["training.logging_steps=5", "evaluation.eval_steps=5", "training.save_steps=5", *QUIET,
              "data.target=cs_rank", "evaluation.metric=neg_rank_ic"]
    with monkeypatch.context() as m:
        m.setattr(trainer_mod, "ic_metric", lambda cfg: None)  # the run as it started, before the refusal
        assert main(["train", *tiny(run, *common, "training.max_steps=10")]) == 0
    capsys.readouterr()
    state = (run / "checkpoints" / "step-00000010" / "trainer_state.json").read_text()
    rc = main(["train", *tiny(run, *common, "training.max_steps=20"), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    line = err[-1]
    assert line.startswith("hftraining: error: evaluation.metric: 'neg_rank_ic'") and "score NaN" in line, line
    assert "start over (output.overwrite=true) with evaluation.metric=mse" in line, line
    assert "resumed run keeps its checkpoint's metric" in line, line
    # the run is left as it was
    assert (run / "checkpoints" / "step-00000010" / "trainer_state.json").read_text() == state
    assert not (run / "checkpoints" / "step-00000015").exists()


def test_an_ic_metric_whose_dates_are_cut_away_by_max_val_windows_names_that_key(tmp_path):
    # Three symbols, the last validation dates without one of them: evaluation.max_val_windows keeps the last
    # dates, of two symbols, so every evaluation scores NaN. The fix is a larger max_val_windows (or none), not
    # "more symbols", which the refusal used to say: the run already had them.
    from hftraining.data.pipeline import prepare
    from hftraining.train.trainer import check_cross_section

    base = tiny(tmp_path / "run", "data.symbols=[AEM, WPM, ARM]", "data.target=cs_rank", "evaluation.metric=neg_rank_ic")
    data = prepare(load_config(None, base).data)
    val = data.val
    dates = np.unique(val.times)
    last = dates[-10:]  # the last 10 validation dates lose one symbol
    arm = val.symbols.index("ARM")
    keep = np.flatnonzero(~(np.isin(val.times, last) & (val.symbol_ids == arm)))
    cut = val.subset(keep)
    full = load_config(None, base)
    check_cross_section(full, data.train, cut, data.test)  # every date kept: the earlier dates hold 3 symbols
    few = load_config(None, [*base, "evaluation.max_val_windows=20"])  # the last 10 dates of 2 symbols
    with pytest.raises(ConfigError) as e:
        check_cross_section(few, data.train, cut, data.test)
    msg = str(e.value)
    assert msg.startswith("evaluation.metric: 'neg_rank_ic'") and "no validation date scored has more than 2" in msg
    assert "evaluation.max_val_windows/max_eval_batches (null)" in msg, msg
    assert "more symbols" not in msg, msg


def _took_inf_for_best(self, metrics):
    """How a run tracked its best step before a score of +inf was refused as the best: a first +inf became it."""
    value, best = metrics[self.cfg.evaluation.metric], self.state.best_metric
    if not math.isnan(value) and (best is None or value < best - self.cfg.training.early_stopping_threshold):
        self.state.best_metric, self.state.best_step = value, self.state.global_step
        self.state.evals_without_improvement = 0
    else:
        self.state.evals_without_improvement += 1


def test_a_checkpoint_whose_best_score_is_inf_keeps_no_best_step_on_resume(tmp_path, capsys, monkeypatch):
    # A run whose forecasts overflowed, checkpointed with its first score (+inf) as the best, resumed on with the
    # same overflowing forecasts: load_best_model_at_end made the step-2 weights (scored inf) the final model, with
    # a warning and exit 0, eval.json naming weights_step 2. Now the resumed run has no best step, and its last
    # weights forecasting inf are the error a fresh run of the same course is.
    import hftraining.train.trainer as trainer_mod

    predict = trainer_mod.predict_scaled
    monkeypatch.setattr(trainer_mod, "predict_scaled",
                        lambda *a, **k: np.full_like(predict(*a, **k), np.inf))  # every validation forecast overflowed
    run = tmp_path / "run"
    common = ["training.logging_steps=2", "evaluation.eval_steps=2", "training.save_steps=2",
              "training.load_best_model_at_end=true", *QUIET]
    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "_after_eval", _took_inf_for_best)
        assert main(["train", *tiny(run, *common, "training.max_steps=4")]) == 0
    state = json.loads((run / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert state["best_metric"] == math.inf and state["best_step"] == 2  # the precondition: such a checkpoint
    capsys.readouterr()
    rc = main(["train", *tiny(run, *common, "training.max_steps=8"), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert err[-1].startswith("hftraining: error: training diverged: the final weights forecast NaN/Inf"), err[-1]
    resumed = json.loads((run / "checkpoints" / "step-00000008" / "trainer_state.json").read_text())
    assert resumed["best_step"] is None and resumed["best_metric"] is None and resumed["best_checkpoint"] is None


def test_a_run_whose_every_score_was_not_finite_says_so_as_it_keeps_the_last_weights(tiny_overrides, monkeypatch,
                                                                                     caplog):
    # evaluation.metric=mse_vs_zero is +inf when the zero forecast is exact: no score is the best, and
    # load_best_model_at_end keeps the last step's weights. It said "no validation score", as if none was made.
    import hftraining.train.trainer as trainer_mod
    from hftraining.train.runner import build_trainer

    evaluate = trainer_mod.Trainer.evaluate
    monkeypatch.setattr(trainer_mod.Trainer, "evaluate",
                        lambda self, ws, max_batches=None: {**evaluate(self, ws, max_batches), "mse_vs_zero": math.inf})
    cfg = load_config(None, [*tiny_overrides, "training.max_steps=6", "evaluation.eval_steps=2", "training.save_steps=6",
                             "training.load_best_model_at_end=true", "evaluation.metric=mse_vs_zero"])
    tr = build_trainer(cfg)
    try:
        tr.fit()
        with caplog.at_level(logging.INFO, logger="hftraining"):
            tr.final_weights()
        assert tr.state.best_step is None and tr.weights_step() is None
        said = [r.getMessage() for r in caplog.records if "load_best_model_at_end" in r.getMessage()]
        assert said == ["training.load_best_model_at_end: none of the 3 validation scores (eval_mse_vs_zero) was "
                        "finite, the final model is the last step's"], said
    finally:
        tr.close()


def test_the_figures_served_of_a_run_are_those_of_the_step_whose_weights_it_kept(tiny_overrides):
    # GET /model and an ensemble's member_metrics read a run's eval.json and metrics.jsonl. Under
    # load_best_model_at_end they gave its last step and that step's validation record, while the weights
    # served (and scored in eval.json) were the best step's: eval.json's weights_step was left out.
    from hftraining.inference.ensemble import run_metrics
    from hftraining.workflows.train_run import train

    cfg = load_config(None, [*tiny_overrides, *QUIET, "training.load_best_model_at_end=true", "training.max_steps=30",
                             "training.save_steps=5", "evaluation.eval_steps=5", "training.learning_rate=0.03",
                             "training.lr_scheduler=constant", "training.warmup_steps=0"])
    train(cfg)
    run = cfg.run_dir()
    evals = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval_mse" in r}
    best = min(evals, key=lambda s: evals[s]["eval_mse"])
    assert best != 30  # the precondition: the last step is not the best
    scored = json.loads((run / "eval.json").read_text())
    assert (scored["step"], scored["weights_step"]) == (30, best)
    served = run_metrics(run)
    assert (served["test"]["step"], served["test"]["weights_step"]) == (30, best)
    assert served["validation"] == evals[best]
    assert served["test"]["model"] == scored["model"]
