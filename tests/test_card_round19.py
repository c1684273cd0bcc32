"""The model card's test metrics as eval.json holds them, names from the data shown as literal text."""

import html
import re

import numpy as np
import pytest

from hftraining.core.config import Config, ModelConfig
from hftraining.eval.forecasts import Forecasts, score
from hftraining.eval.intervals import interval_report
from hftraining.eval.model_card import model_card
from hftraining.models import build_model

markdown = pytest.importorskip("markdown")  # a renderer to read the Markdown as a reader sees it

NAMES = ["A|B <b>x</b> & *y*", "G<i>o</i> `z` ~~s~~", "P3", "P4"]


def _scored_with_intervals() -> dict:
    """A test split of 4 symbols over 60 dates scored with 90% intervals that miss most of the first
    symbol's returns: the intervals' sentence names that symbol, as eval.json holds it."""
    rng = np.random.default_rng(0)
    D, S, H = 60, len(NAMES), 2
    dates = np.repeat(np.arange(D, dtype=np.int64) * 86_400_000_000_000 + 10**18, S)
    sid = np.tile(np.arange(S), D)
    true = rng.normal(0, 0.01, (D * S, H))
    pred = {"model": rng.normal(0, 0.01, (D * S, H)), "zero": np.zeros((D * S, H)),
            "drift": rng.normal(0, 0.002, (D * S, H))}
    fc = Forecasts(pred=pred, true=true, dates=dates, symbol_ids=sid, symbols=NAMES, last_return=true[:, 0],
                   past_vol=np.full(D * S, 0.01), last_close=np.full(D * S, 100.0))
    half = np.where(sid == 0, 0.001, 0.03)[:, None] * np.ones((1, H))
    bounds = {0.9: (pred["model"] - half, pred["model"] + half)}
    return {"split": "test", **score(fc),
            "intervals": interval_report(bounds, true, dates, sid, "split", symbols=NAMES)}


def test_card_states_the_interval_sentence_with_symbol_names_as_literal_text(tmp_path):
    """The intervals' sentence names the symbols whose own coverage is lowest and highest; the card put it
    into its Markdown as it was, so a symbol holding markup rendered as markup (an italic, a code span,
    a strikethrough) where the data table and the front matter give its name literally."""
    result = _scored_with_intervals()
    said = result["intervals"]["sentence"]
    assert NAMES[0] in said  # the symbol the intervals miss most is named
    folder = tmp_path / "run" / "final"
    model = build_model(ModelConfig(type="drift"), 3, 2, 20)
    card = model_card(folder, Config(), {"symbols": NAMES}, {"horizon": 2, "seq_len": 20}, model, 0, result)
    body = card.split("\n---\n", 1)[1]
    para = next(p for p in body.split("\n\n") if p.startswith("Forecast intervals"))
    shown = markdown.markdown(para, extensions=["tables"])  # GFM-like: a backslash escapes a `|` too
    for tag in ("<b>", "<i>", "<em>", "<strong>", "<del>", "<s>"):
        assert tag not in shown, shown
    text = html.unescape(re.sub(r"<[^>]+>", "", shown.replace("<code>", "`").replace("</code>", "`")))
    assert " ".join(said.split()) in " ".join(text.split())  # the sentence as eval.json holds it, word for word


def test_report_states_the_interval_sentence_with_symbol_names_as_literal_text(tmp_path):
    """report.md's interval section gives the same sentence as literal text, as its data table gives the
    symbols (it was put into the Markdown as it was, a symbol's markup rendered)."""
    from hftraining.eval.report import _Doc, _interval_section

    result = _scored_with_intervals()
    said = result["intervals"]["sentence"]
    doc = _Doc("report", tmp_path)
    _interval_section(doc, result["intervals"], None)
    para = next(p for p in "\n".join(doc.md).split("\n\n") if "marginal over the panel" in p)
    shown = markdown.markdown(para, extensions=["tables"])
    for tag in ("<b>", "<i>", "<em>", "<strong>", "<del>", "<s>"):
        assert tag not in shown, shown
    text = html.unescape(re.sub(r"<[^>]+>", "", shown.replace("<code>", "`").replace("</code>", "`")))
    assert " ".join(said.split()) in " ".join(text.split())
