"""The buy/hold/sell head is scored: its log loss, Brier score and accuracy on the test windows beside the
constant forecast of those windows' own class shares, with a Diebold–Mariano test of the log losses, in
eval.json, on the console, in the report and through ``evaluate RUN``. Before, its probabilities were
forecast, exported and served, and never scored: a head that had no skill was never said to have none."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402

from hftraining.eval import metrics as M  # noqa: E402
from hftraining.eval.forecasts import class_verdict  # noqa: E402


def _reference(probs, true, threshold):
    """Log loss, Brier score and accuracy written out window by window, step by step."""
    ll, brier, hits, counts = [], [], [], [0, 0, 0]
    for w in range(true.shape[0]):
        for h in range(true.shape[1]):
            y = 2 if true[w, h] > threshold else 0 if true[w, h] < -threshold else 1
            counts[y] += 1
            p = probs[w, h]
            ll.append(-math.log(max(p[y], 1e-15)))
            brier.append(sum((p[k] - (k == y)) ** 2 for k in range(3)))
            hits.append(int(np.argmax(p)) == y)
    shares = np.array(counts) / sum(counts)
    return float(np.mean(ll)), float(np.mean(brier)), float(np.mean(hits)), shares


def _panel(rng, W=600, H=2, symbols=3):
    dates = np.repeat(np.arange(W // symbols), symbols).astype(np.int64)
    true = rng.normal(0, 0.02, size=(W, H))
    return true, dates


def test_class_scores_match_a_reference_written_out_by_hand():
    rng = np.random.default_rng(0)
    true, dates = _panel(rng)
    true[0, 0], true[1, 1] = 0.01, -0.01  # on the boundaries: hold, as the training labels cut them
    probs = rng.dirichlet([1, 1, 1], size=true.shape)
    probs[2, 0] = [0.0, 1.0, 0.0]  # a class given probability 0 that happens: the floor, not inf
    c = M.class_scores(probs, true, dates, 0.01)
    ll, brier, acc, shares = _reference(probs, true, 0.01)
    assert c["log_loss"] == pytest.approx(ll, rel=1e-12) and c["brier"] == pytest.approx(brier, rel=1e-12)
    assert c["accuracy"] == pytest.approx(acc) and list(c["shares"].values()) == pytest.approx(shares)
    const = np.broadcast_to(shares, probs.shape)
    ll_s, brier_s, _, _ = _reference(const, true, 0.01)
    assert c["log_loss_shares"] == pytest.approx(ll_s, rel=1e-12) and c["brier_shares"] == pytest.approx(brier_s)
    assert c["accuracy_shares"] == pytest.approx(shares.max())
    assert c["n"] == true.size and c["not_finite"] == 0 and c["dm"]["lag"] == 1


def test_the_verdict_says_skill_only_when_the_dm_test_finds_it():
    rng = np.random.default_rng(1)
    true, dates = _panel(rng, W=900)
    labels = np.where(true > 0.01, 2, np.where(true < -0.01, 0, 1))
    knows = np.full(true.shape + (3,), 0.1)
    np.put_along_axis(knows, labels[..., None], 0.8, axis=-1)  # 0.8 on the class that happens
    c = M.class_scores(knows, true, dates, 0.01)
    assert c["log_loss"] < c["log_loss_shares"] and c["dm"]["p_value"] < 0.05
    assert "the head beats the class shares (significant at 0.05)" in class_verdict(c)

    uniform = np.full(true.shape + (3,), 1 / 3)  # no skill: worse than the shares, which are not a third each
    c = M.class_scores(uniform, true, dates, 0.01)
    assert c["log_loss"] > c["log_loss_shares"]
    text = class_verdict(c)
    assert "beats" not in text and ("WORSE" in text or "not shown to have skill" in text)

    noise = rng.dirichlet([50, 50, 50], size=true.shape)  # near a third each, at random: nothing to find
    text = class_verdict(M.class_scores(noise, true, dates, 0.01))
    assert "beats" not in text

    broken = knows.copy()
    broken[5, 1] = np.nan  # a probability that is not finite: undefined, never a hit
    c = M.class_scores(broken, true, dates, 0.01)
    assert math.isnan(c["log_loss"]) and c["not_finite"] == 1
    assert "undefined" in class_verdict(c) and "beats" not in class_verdict(c)


@pytest.mark.slow  # trains whole runs; the default suite keeps under ten minutes on 2 cores
def test_a_run_with_the_head_scores_it_everywhere_the_evaluation_is_said(tmp_path, capsys):
    from hftraining.cli import main

    run = tmp_path / "run"
    args = tiny(run, "training.max_steps=20", "training.save_steps=0", "evaluation.eval_steps=20",
                "evaluation.intervals=[]", "evaluation.report=true", "model.classification_threshold=0.01",
                "data.symbols=[AEM, WPM, NIO]")
    assert main(["train", *args]) == 0
    seen = capsys.readouterr()
    out = seen.out + seen.err
    ev = json.loads((run / "eval.json").read_text())
    c = ev["model"]["classes"]
    assert c["threshold"] == 0.01 and c["n"] == ev["n_windows"] * ev["horizon"] and math.isfinite(c["log_loss"])
    assert c["verdict"].startswith("buy/hold/sell head (classes cut at ±0.01): log loss ") and c["verdict"] in out
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "| buy/hold/sell head | model | the windows' class shares |" in md and c["verdict"] in md

    assert main(["evaluate", str(run), "--json", "--no-report"]) == 0  # the folder's own evaluation: the same
    again = json.loads(capsys.readouterr().out)["model"]["classes"]
    for key in ("log_loss", "log_loss_shares", "brier", "brier_shares", "accuracy", "accuracy_shares"):
        assert again[key] == pytest.approx(c[key], rel=1e-6), key
    assert again["shares"] == c["shares"] and again["dm"]["p_value"] == pytest.approx(c["dm"]["p_value"], rel=1e-4)

    plain = tmp_path / "plain"  # no head: nothing said of one
    assert main(["train", *tiny(plain, "training.max_steps=2", "training.save_steps=0", "evaluation.eval_steps=2",
                                "evaluation.intervals=[]", "evaluation.report=false")]) == 0
    assert "classes" not in json.loads((plain / "eval.json").read_text())["model"]
    seen = capsys.readouterr()
    assert "buy/hold/sell" not in seen.out + seen.err


def test_walkforward_folds_pool_their_class_probabilities():
    from hftraining.eval.forecasts import Forecasts

    rng = np.random.default_rng(2)

    def part(W, probs=True, threshold=0.01):
        return Forecasts(pred={"model": rng.normal(size=(W, 1))}, true=rng.normal(size=(W, 1)),
                         dates=np.arange(W, dtype=np.int64), symbol_ids=np.zeros(W, dtype=np.int64), symbols=["A"],
                         last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W),
                         class_probs=rng.dirichlet([1, 1, 1], size=(W, 1)) if probs else None,
                         class_threshold=threshold if probs else 0.0)

    a, b = part(4), part(3)
    pooled = Forecasts.concat([a, b])
    assert pooled.class_probs.shape == (7, 1, 3) and pooled.class_threshold == 0.01
    assert np.array_equal(pooled.class_probs[4:], b.class_probs)
    assert Forecasts.concat([part(2, probs=False), part(2, probs=False)]).class_probs is None
    with pytest.raises(ValueError, match="class probabilities differ"):  # never pooled across other classes
        Forecasts.concat([a, part(3, threshold=0.02)])
