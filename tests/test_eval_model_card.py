"""The model card final/README.md: what it states matches the run (eval.json, data_report.json, the
weights), its YAML front matter parses, and loading the folder ignores it."""

import json
import shutil

import pandas as pd
import pytest
import yaml

from hftraining.core.config import load_config
from hftraining.data.io import sample_data_dir
from hftraining.eval.forecasts import label
from hftraining.eval.model_card import CARD_NAME, headline_metrics
from hftraining.inference.forecaster import Forecaster
from hftraining.train.runner import training_run
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

FAST = ("training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false",
        "evaluation.baseline_max_windows=200")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "run"
    train(load_config(None, tiny(out, "training.max_steps=8", *FAST)))
    return out


def _split(card: str) -> tuple[dict, str]:
    """(the YAML front matter, the Markdown body)."""
    assert card.startswith("---\n"), card[:80]
    front, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def _read(path):
    return json.loads(path.read_text())


def eval_json_headline(ev: dict) -> dict:
    """The test split's headline numbers, each read from its own field of eval.json (None where
    eval.json has no number): what the card's front matter and the trackers must show."""
    best = min(ev["baselines"], key=lambda name: ev["baselines"][name]["mse"])  # the lowest test MSE
    assert ev["strongest_baseline"]["name"] == best
    rank_ic = (ev["model"].get("cross_section") or {}).get("rank_ic") or {}
    return {
        "mse": ev["model"]["mse"],
        "mae": ev["model"]["mae"],
        "directional_accuracy": ev["model"]["directional_accuracy"],
        "directional_p": ev["model"]["directional_p"],
        "rank_ic": rank_ic.get("mean"),
        "mse_vs_zero": ev["mse_vs_zero"],
        "dm_p_vs_zero": ev["dm_vs_zero"]["p_value"],
        "zero_mse": ev["baselines"]["zero"]["mse"],
        "strongest_baseline_mse": ev["baselines"][best]["mse"],
        "mse_vs_strongest_baseline": ev["model"]["mse"] / ev["baselines"][best]["mse"],
        "dm_p_vs_strongest_baseline": ev["dm"][best]["p_value"],
    }


def test_card_states_the_model_the_data_and_the_verdict_of_the_run(run):
    card = (run / "final" / CARD_NAME).read_text(encoding="utf-8")
    meta, body = _split(card)
    ev, rep = _read(run / "eval.json"), _read(run / "data_report.json")
    n_params = Forecaster.from_pretrained(run).model.num_parameters()
    assert meta["model_type"] == "transformer" and meta["library_name"] == "hftraining"
    assert meta["parameters"] == n_params
    assert f"A `transformer` model ({n_params:,} parameters)" in body
    assert meta["trained_steps"] == 8 and meta["horizon"] == 3 and meta["sequence_length"] == 20
    assert meta["symbols"] == rep["symbols"] == ["AEM", "WPM"]
    assert "| symbols | 2: AEM, WPM |" in body
    split = rep["split"]
    assert f"validation from {split['val_from'][:10]}" in body and f"test from {split['test_from'][:10]}" in body
    # the strongest baseline and the verdict exactly as eval.json has them
    sb = ev["strongest_baseline"]["name"]
    assert meta["strongest_baseline"] == sb
    assert f"| {label(sb)} (strongest baseline) |" in body
    assert meta["evaluated"] is True and meta["verdict"] == ev["verdict"]
    assert f"## Verdict\n\n{ev['verdict']}\n" in body
    assert f'Forecaster.from_pretrained("{run / "final"}")' in body


def test_front_matter_test_metrics_are_eval_json_numbers(run):
    meta, _ = _split((run / "final" / CARD_NAME).read_text(encoding="utf-8"))
    ev = _read(run / "eval.json")
    got = meta["test_metrics"]
    expected = eval_json_headline(ev)  # read field by field from eval.json, not through headline_metrics
    assert set(got) == set(expected) and got == expected  # unrounded, exactly; a null in eval.json is null here
    # every number but the rank IC of 2 symbols (no cross-section) is there
    assert {k for k, v in got.items() if v is None} <= {"rank_ic"}
    assert headline_metrics(ev) == {k: v for k, v in expected.items() if v is not None}  # what trackers log too


@pytest.mark.parametrize("variant", ["present", "deleted", "garbage"])
def test_loading_ignores_the_card(run, tmp_path, variant):
    folder = tmp_path / "model"
    shutil.copytree(run / "final", folder)
    if variant == "deleted":
        (folder / CARD_NAME).unlink()
    elif variant == "garbage":
        (folder / CARD_NAME).write_bytes(b"\xff\xfe\x00---\nnot: [yaml\n\x80\x81 garbage")
    files = [str(sample_data_dir() / f"{s}.csv") for s in ("AEM", "WPM")]
    reference = Forecaster.from_pretrained(run / "final", precision="fp32").predict(files)
    got = Forecaster.from_pretrained(folder, precision="fp32").predict(files)
    assert len(got) == 2 * 3
    pd.testing.assert_frame_equal(got, reference)


def test_card_before_evaluation_says_it_is_not_evaluated(tmp_path):
    """Runs that never score the test split (tune trials, walk-forward folds) keep the first card."""
    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=2", *FAST))
    with training_run(cfg) as done:
        meta, body = _split((done.run_dir / "final" / CARD_NAME).read_text(encoding="utf-8"))
    assert meta["evaluated"] is False
    assert "verdict" not in meta and "test_metrics" not in meta
    # evaluate refuses a run stopped before its test split was scored (its fitted baselines were never saved):
    # finishing the run scores it (tests/test_review_round14.py)
    assert "Test metrics were not computed" in body and "`--resume`" in body and "hftraining evaluate" not in body
    assert meta["parameters"] == done.model.num_parameters()


def test_card_of_a_cross_sectional_label_names_the_baseline_its_verdict_names_and_its_units():
    """A cs_rank model is judged on its rank IC: the card's strongest baseline is the verdict's (the
    best rank IC, here naive:repeat), not the lowest-MSE one (naive:drift), and it says the model
    forecasts ranks, not log returns."""
    import numpy as np

    from hftraining.core.config import ModelConfig
    from hftraining.eval.forecasts import Forecasts, score
    from hftraining.eval.model_card import model_card
    from hftraining.models import build_model

    rng = np.random.default_rng(0)
    D, S, H = 200, 5, 3
    W = D * S
    true = rng.normal(0, 1, (W, H))
    pred = {"model": 0.05 * true + rng.normal(0, 0.3, (W, H)), "zero": np.zeros((W, H)),
            "repeat": 0.3 * true + rng.normal(0, 1, (W, H)),  # the best rank IC, a high MSE
            "drift": rng.normal(0, 0.01, (W, H)), "seasonal_naive": rng.normal(0, 0.5, (W, H))}
    fc = Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * 86_400 * 10**9, S),
                   symbol_ids=np.tile(np.arange(S), D), symbols=[f"S{i}" for i in range(S)], last_return=np.zeros(W),
                   past_vol=np.ones(W), last_close=np.ones(W), target="cs_rank")
    result = score(fc)
    assert result["strongest_baseline"]["name"] == "drift" and result["cross_section_strongest"]["name"] == "repeat"
    assert "not worth its cost over naive:repeat" in result["verdict"]
    cfg = load_config(None, tiny(None, "data.target=cs_rank"))
    card = model_card("/tmp/run/final", cfg, {"symbols": ["S0"]}, {"horizon": H, "seq_len": 20, "feature_columns": ["a"]},
                      build_model(ModelConfig(type="ridge"), 1, H, 20), 5, result)
    meta, body = _split(card)
    assert meta["strongest_baseline"] == "repeat" and meta["strongest_baseline_by"] == "rank IC"
    assert meta["strongest_baseline_by_mse"] == "drift"
    diff = result["cross_section_strongest"]["difference"]
    assert meta["test_metrics"]["rank_ic_diff_p_vs_strongest_baseline"] == diff["p_value"]
    assert "| naive:repeat (strongest baseline by rank IC) |" in body and "| naive:drift (strongest baseline by MSE) |" in body
    assert "log returns" not in body and "forecast_cs_rank" in body and "ranks of the 1-step log return" in body
    assert "| `data.target` | cs_rank |" in body and "| `model.loss` | mse |" in body  # the label and loss it was trained for


def test_card_of_best_weights_says_which_step_they_are(tmp_path, monkeypatch):
    """With load_best_model_at_end the folder holds the best step's weights, not the last's: the card
    says trained for 6 steps and the weights are step 2's (it said only "trained for 6 steps")."""
    import hftraining.train.trainer as trainer_mod

    evaluate = trainer_mod.Trainer.evaluate

    def scripted(self, ws, max_batches=None):  # validation scores best at step 2
        out = evaluate(self, ws, max_batches)
        if ws is self.val_windows:
            out["mse"] = {2: 0.1, 4: 0.5, 6: 0.6}[self.state.global_step]
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", scripted)
    cfg = load_config(None, tiny(tmp_path / "run", "training.max_steps=6", "evaluation.eval_steps=2", "training.save_steps=0",
                                 "training.load_best_model_at_end=true", "output.tensorboard=false"))
    with training_run(cfg) as done:
        meta, body = _split((done.run_dir / "final" / CARD_NAME).read_text(encoding="utf-8"))
    assert meta["trained_steps"] == 6 and meta["weights_from_step"] == 2
    assert "the weights are step 2's" in body
