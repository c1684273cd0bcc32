"""The model card is complete and true to the run: the optional heads' scores as eval.json holds them, a head
the run has off said to be off (in the card and the report alike), and where the metrics of the split it shows
can be found."""

import json

import numpy as np

from hftraining.core.config import load_config
from hftraining.core.fmt import fmt_p
from hftraining.eval.forecasts import SIGNIFICANCE, Forecasts, score
from hftraining.eval.model_card import card_meta, model_card
from hftraining.eval.report import write_report
from hftraining.models import build_model
from conftest import tiny  # noqa: E402
from test_eval_report_consistency import tables  # noqa: E402

NAMES = ["P1", "P2", "P3", "P4"]
LEVELS = [0.1, 0.5, 0.9]


def _scored(heads: bool = True, split: str = "test") -> dict:
    """A split of 4 symbols over 60 dates scored as eval.json holds it, with the model's quantile head (levels
    0.1, 0.5, 0.9) and buy/hold/sell head (classes cut at ±0.004) when ``heads``."""
    rng = np.random.default_rng(3)
    D, S, H = 60, len(NAMES), 2
    dates = np.repeat(np.arange(D, dtype=np.int64) * 86_400_000_000_000 + 10**18, S)
    sid = np.tile(np.arange(S), D)
    true = rng.normal(0, 0.01, (D * S, H))
    pred = {"model": rng.normal(0, 0.01, (D * S, H)), "zero": np.zeros((D * S, H)),
            "drift": rng.normal(0, 0.002, (D * S, H))}
    extra = {}
    if heads:
        q = pred["model"][..., None] + np.array([-0.012, 0.0, 0.012])  # (W, H, 3)
        probs = rng.dirichlet(np.ones(3), size=(D * S, H))
        extra = {"quantiles": q, "levels": LEVELS, "class_probs": probs, "class_threshold": 0.004}
    fc = Forecasts(pred=pred, true=true, dates=dates, symbol_ids=sid, symbols=NAMES, last_return=true[:, 0],
                   past_vol=np.full(D * S, 0.01), last_close=np.full(D * S, 100.0), **extra)
    return json.loads(json.dumps({"split": split, **score(fc)}, default=float).replace("NaN", "null"))


def _card(tmp_path, result, *overrides: str) -> str:
    cfg = load_config(None, tiny(None, *overrides))
    model = build_model(cfg.model, 3, 2, 20)
    return model_card(tmp_path / "run" / "final", cfg, {"symbols": NAMES}, {"horizon": 2, "seq_len": 20}, model, 7, result)


def _body(card: str) -> str:
    return " ".join(card.split("\n---\n", 1)[1].split())


def _key_config(md: str) -> dict[str, str]:
    found = [rows for header, rows in tables(md) if header == ["key", "value"]]
    assert len(found) == 1
    return {r[0].strip("`"): r[1] for r in found[0]}


def test_the_card_gives_the_quantile_and_buy_hold_sell_heads_scores_of_eval_json(tmp_path):
    """The card left out the buy/hold/sell head's verdict and the quantile head's pinball loss and coverage,
    which the console and report.html give: a reader of the model folder saw neither head judged. The card
    gives them under eval.json's names, the p-value as the verdict formats it, and the front matter the
    unrounded numbers."""
    result = _scored()
    m = result["model"]
    card = _card(tmp_path, result, "model.quantiles=[0.1, 0.5, 0.9]", "model.classification_threshold=0.004")
    body = _body(card)
    assert f"mean pinball loss {m['pinball_mean']:.6g}" in body, body
    for key, v in m["pinball"].items():
        assert f"`{key}` {v:.6g}" in body
    assert set(m["coverage"]) == {"below_q0.1", "below_q0.5", "below_q0.9", "interval_80%"}
    for key, v in m["coverage"].items():
        assert f"`{key}` {v:.3f}" in body
    verdict = m["classes"]["verdict"]
    assert f"DM p = {fmt_p(m['classes']['dm']['p_value'], SIGNIFICANCE)}" in verdict
    assert verdict[1:] in body  # the verdict word for word, a sentence of its own
    meta = card_meta_of(tmp_path, card)
    assert meta["quantile_head"]["pinball_mean"] == m["pinball_mean"]
    assert meta["quantile_head"]["coverage"] == m["coverage"]
    assert meta["buy_hold_sell_head"]["verdict"] == verdict
    assert meta["buy_hold_sell_head"]["dm_p"] == m["classes"]["dm"]["p_value"]


def test_a_card_of_an_eval_json_without_heads_renders_without_them(tmp_path):
    """An eval.json of a model without heads (or written before they were scored) gives a card without
    their sentences, as before."""
    card = _card(tmp_path, _scored(heads=False))
    assert "## Test metrics" in card
    assert "pinball" not in card and "buy/hold/sell" not in card.lower()
    meta = card_meta_of(tmp_path, card)
    assert "quantile_head" not in meta and "buy_hold_sell_head" not in meta


def card_meta_of(tmp_path, card: str) -> dict:
    path = tmp_path / "card" / "README.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(card, encoding="utf-8")
    meta = card_meta(path)
    assert meta is not None
    return meta


def test_a_head_the_run_has_off_reads_off_in_the_card_and_the_report(tmp_path):
    """A transformer without a buy/hold/sell head (model.classification_threshold 0 turns it off) listed
    `model.classification_threshold: 0.0` in the card's key config and the report's configuration table: a
    reader took it for a threshold in use. Both tables say the head is off, the quantile head's key too; a
    head that is on gives its setting."""
    off = _key_config(_card(tmp_path, None))
    cfg = load_config(None, tiny(None))
    assert cfg.model.classification_threshold == 0 and cfg.model.quantiles == []
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    _, md_path = write_report(tmp_path, run_dir=tmp_path)
    report = _key_config(md_path.read_text(encoding="utf-8"))
    for rows in (off, report):
        assert rows["model.classification_threshold"] == "off", rows
        assert rows["model.quantiles"] == "off", rows
    on = _key_config(_card(tmp_path, None, "model.classification_threshold=0.004", "model.quantiles=[0.1, 0.5, 0.9]"))
    assert on["model.classification_threshold"] == "0.004" and on["model.quantiles"] == "0.1, 0.5, 0.9"


def test_a_card_of_another_split_does_not_send_the_reader_to_eval_json_for_it(tmp_path):
    """A card given the val split's result said "`eval.json` in the run folder has every metric", where
    eval.json holds the test split's: it names the command that gives that split's metrics instead."""
    val = _body(_card(tmp_path, _scored(heads=False, split="val")))
    assert "Metrics on the val split" in val
    assert "has every metric" not in val
    assert f"`hftraining evaluate {tmp_path / 'run'} --split val --json` prints every metric of the val split" in val
    assert "the run folder's `eval.json` holds the test split's" in val
    test = _body(_card(tmp_path, _scored(heads=False)))
    assert "`eval.json` in the run folder has every metric, per step and per symbol, and the backtest" in test



def test_the_feed_forward_width_a_null_intermediate_size_stands_for_is_shown(tmp_path):
    """model.intermediate_size: null builds a feed-forward layer 4 × model.hidden_size wide; the card and the
    report showed a dash, as if the layer had no width or it was unknown. Both give the width the model has."""
    cfg = load_config(None, tiny(None, "model.hidden_size=16"))
    assert cfg.model.intermediate_size is None
    card = _key_config(_card(tmp_path, None, "model.hidden_size=16"))
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    _, md_path = write_report(tmp_path, run_dir=tmp_path)
    report = _key_config(md_path.read_text(encoding="utf-8"))
    model = build_model(cfg.model, 3, 2, 20)
    widths = {m.out_features for m in model.modules() if hasattr(m, "out_features")}
    assert 64 in widths  # the model's feed-forward layer is 4 × 16 wide
    for rows in (card, report):
        assert rows["model.intermediate_size"] == "64 (4 × model.hidden_size)", rows
    set_ = _key_config(_card(tmp_path, None, "model.hidden_size=16", "model.intermediate_size=24"))
    assert set_["model.intermediate_size"] == "24"
