"""The model card's key config and the report's configuration table say what the run read: the weight of each
part of the loss the model trains on, and the cut dates of a calendar split rather than ratios they override."""

import json

import torch

from hftraining.core.config import load_config
from hftraining.eval.model_card import model_card
from hftraining.eval.report import write_report
from hftraining.models import build_model
from hftraining.models.losses import compute_loss
from conftest import tiny  # noqa: E402
from test_eval_report_consistency import tables  # noqa: E402

HEADS = ("model.quantiles=[0.1, 0.5, 0.9]", "model.classification_threshold=0.004")


def _key_config(md: str) -> dict[str, str]:
    found = [rows for header, rows in tables(md) if header == ["key", "value"]]
    assert len(found) == 1
    return {r[0].strip("`"): r[1] for r in found[0]}


def _card_and_report(tmp_path, *overrides: str) -> tuple[dict[str, str], dict[str, str]]:
    """The key config of the card and the configuration table of the report of a run of ``overrides``."""
    cfg = load_config(None, tiny(None, *overrides))
    model = build_model(cfg.model, 3, 2, 20)
    card = model_card(tmp_path / "run" / "final", cfg, {"symbols": ["A"]}, {"horizon": 2, "seq_len": 20}, model, 7, None)
    run = tmp_path / "report"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    _, md_path = write_report(run, run_dir=run)
    return _key_config(card), _key_config(md_path.read_text(encoding="utf-8"))


def _weights(text: str) -> dict[str, float]:
    return {k: float(w) for k, w in (part.split(": ") for part in text.split(", "))}


def test_the_loss_weights_shown_are_those_the_loss_applies_to_each_of_its_parts(tmp_path):
    """`model.loss_weights: {quantile: 0.5}` read "quantile: 0.5" in the card and the report, as if the quantile
    part were the whole loss, and the default `{}` a dash, as if no part were weighted: the squared error and the
    buy/hold/sell head's cross-entropy enter the loss at 1. Both tables give every part the loss sums, each at the
    weight it is summed with."""
    cfg = load_config(None, tiny(None, *HEADS, "model.loss_weights={quantile: 0.5}"))
    model = build_model(cfg.model, 3, 2, 20)
    torch.manual_seed(0)
    total, parts = compute_loss(cfg.model, model(torch.randn(8, 20, 3)), torch.randn(8, 2), 0.01)
    card, report = _card_and_report(tmp_path, *HEADS, "model.loss_weights={quantile: 0.5}")
    for rows in (card, report):
        shown = _weights(rows["model.loss_weights"])
        assert set(shown) == set(parts) == {"mse", "classification", "quantile"}, rows
        assert shown["quantile"] == 0.5
        assert torch.isclose(total, sum(shown[k] * v for k, v in parts.items()))
    card, report = _card_and_report(tmp_path)  # no head, no weight given: the squared error alone, at 1
    for rows in (card, report):
        assert _weights(rows["model.loss_weights"]) == {"mse": 1.0}, rows
    card, report = _card_and_report(tmp_path, *HEADS)
    for rows in (card, report):
        assert _weights(rows["model.loss_weights"]) == {"mse": 1.0, "classification": 1.0, "quantile": 1.0}, rows


def test_the_reports_configuration_table_gives_the_cut_dates_not_the_ratios_they_override(tmp_path):
    """A run cut by `data.split_dates` listed `data.train_ratio 0.7` and `data.val_ratio 0.15`, which it does not read
    (its cut dates give other shares), and not the dates: the table gives the dates instead. A run cut at the ratios
    lists them, and no dates."""
    dates = 'data.split_dates={val: "2024-03-01", test: "2024-06-03"}'
    _, report = _card_and_report(tmp_path, dates)
    assert report["data.split_dates"] == "val: 2024-03-01, test: 2024-06-03"
    assert "data.train_ratio" not in report and "data.val_ratio" not in report
    _, report = _card_and_report(tmp_path)
    assert report["data.train_ratio"] == "0.7" and report["data.val_ratio"] == "0.15"
    assert "data.split_dates" not in report
