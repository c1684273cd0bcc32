"""README figures that the code decides alone (no training, no timing): each is read out of README.md
and compared with what the code gives now, so a change to the config tree, the production model or
the hostile-folder corpus that leaves the README's figure behind fails here."""

import dataclasses
import re
import sys
import typing
from pathlib import Path

from hftraining.core import config as C
from hftraining.core.config import load_config
from hftraining.data.features import compute_features
from hftraining.data.synth import synth_ohlcv
from hftraining.models.registry import model_size

ROOT = Path(__file__).parents[1]


def _readme() -> str:
    """README.md with every run of whitespace (line breaks included) read as one space."""
    return " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())


def _number(pattern: str) -> int:
    found = re.findall(pattern, _readme())
    assert len(found) == 1, f"README.md: expected one match of {pattern!r}, found {found}"
    return int(found[0].replace(",", ""))


def test_the_config_key_count_the_readme_gives_is_the_config_tree_s():
    keys = sum(len(dataclasses.fields(cls)) for cls in typing.get_type_hints(C.Config).values())
    assert _number(r"hostile values over the ([\d,]+) keys") == keys


def test_the_production_model_size_the_readme_gives_is_the_model_s():
    cfg = load_config(ROOT / "configs" / "production.json", [])
    columns = compute_features(synth_ohlcv(200), cfg.data.features).shape[1]
    params, _ = model_size(cfg.model, columns, cfg.data.prediction_horizon, cfg.data.sequence_length)
    assert _number(r"— ([\d,]+) parameters with the \d+ default feature columns") == params
    assert _number(r"parameters with the (\d+) default feature columns") == columns
    assert re.search(rf"`transformer` \(the production forecaster, {params / 1e6:.1f}M parameters", _readme())


def test_the_hostile_folder_counts_the_readme_gives_are_the_corpus_s():
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import test_inference_hostile_folders as h
    finally:
        sys.path.remove(str(ROOT / "tests"))
    kinds = [what for table in (h.VARIANTS, h.BOOSTERS, h.ENSEMBLES) for what, _ in table.values()]
    assert _number(r"hostile model folders: (\d+) variants of a valid folder") == len(kinds)
    assert _number(r"\| (\d+) one-line errors naming the file") == sum(what != "ok" for what in kinds)
