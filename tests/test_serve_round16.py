"""Serving an ensemble and its edges: ``GET /model`` gives an ensemble's members' run figures once; a
``POST /predict`` body that gives a JSON key twice is refused naming it; a model path that is a link loop
and a full disk as ``train --seeds`` finishes the ensemble's card are one-line errors."""

from __future__ import annotations

import builtins
import errno
import io
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny  # noqa: E402
from test_inference_round12 import SYMBOLS, pre  # noqa: E402,F401 (a fixture)

from hftraining.cli import main  # noqa: E402
from hftraining.core.config import ModelConfig  # noqa: E402
from hftraining.data.io import sample_data_dir  # noqa: E402
from hftraining.models import build_model  # noqa: E402

def _run(pre: dict, root: Path, seed: int) -> Path:
    """A run folder as training leaves one (config.json, final/, eval.json, metrics.jsonl) around a seeded
    untrained model."""
    torch.manual_seed(seed)
    build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1, dropout=0.0), len(pre["feature_columns"]),
                pre["horizon"], pre["seq_len"]).save_pretrained(root / "final", preprocessing=pre)
    (root / "config.json").write_text("{}")
    (root / "eval.json").write_text(json.dumps({"split": "test", "n_windows": 416, "mse_vs_zero": 1.0 + seed,
                                                "model": {"mse": 0.001}, "verdict": f"verdict {seed}"}))
    (root / "metrics.jsonl").write_text(json.dumps({"step": 2, "eval_mse": 1.5 + seed}) + "\n")
    return root


def _one_line_error(capsys, *words: str) -> None:
    err = capsys.readouterr().err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("hftraining: error: ") and "Traceback" not in err, err
    assert all(w in last for w in words), err


def test_get_model_of_an_ensemble_gives_its_members_run_figures_once(pre, tmp_path):
    """``GET /model`` of an ensemble carried each member's run figures twice: in ``ensemble`` (the whole
    ensemble.json, its ``member_metrics``) and in ``training_metrics.members``. Now only the latter has them;
    ``ensemble`` keeps every other key of ensemble.json."""
    from fastapi.testclient import TestClient

    from hftraining.inference.ensemble import build_ensemble
    from hftraining.inference.serve import create_app

    ens = build_ensemble([_run(pre, tmp_path / "a", 0), _run(pre, tmp_path / "b", 1)], tmp_path / "ens")
    meta = json.loads((ens / "ensemble.json").read_text())
    assert len(meta["member_metrics"]) == 2
    with TestClient(create_app(ens)) as client:
        info = client.get("/model").json()
    assert "member_metrics" not in info["ensemble"]
    assert info["ensemble"] == {k: v for k, v in meta.items() if k != "member_metrics"}
    members = info["training_metrics"]["members"]
    assert [m["test"]["mse_vs_zero"] for m in members] == [1.0, 2.0]
    assert [m["validation"]["eval_mse"] for m in members] == [1.5, 2.5]
    assert json.dumps(info).count('"verdict 0"') == 1  # each figure once in the answer


def _body_text(symbols: list[tuple[str, pd.DataFrame]]) -> str:
    """A POST /predict body whose ``symbols`` object holds the pairs ``symbols`` in order (a name may repeat)."""
    def rows(f: pd.DataFrame) -> str:
        return json.dumps([{"timestamp": r.Date, "open": r.open, "high": r.high, "low": r.low, "close": r.close,
                            "volume": r.volume} for r in f.itertuples()])
    return '{"symbols": {' + ", ".join(f"{json.dumps(s)}: {rows(f)}" for s, f in symbols) + "}}"


def test_a_predict_body_that_gives_a_key_twice_is_refused_naming_it(pre, tmp_path):
    """``{"symbols": {"AEM": [...], "AEM": [...]}}`` was forecast from the second list alone, the first dropped
    with no word said (JSON parsers keep a repeated key's last value). Now it is a 422 naming the key, as is a
    row that gives a field twice; the body without the repetition is forecast."""
    from fastapi.testclient import TestClient

    from hftraining.inference.serve import create_app

    frames = {s: pd.read_csv(sample_data_dir() / f"{s}.csv").tail(250).reset_index(drop=True) for s in SYMBOLS}
    model = _run(pre, tmp_path / "run", 0)
    head = {"Content-Type": "application/json"}
    with TestClient(create_app(model)) as client:
        ok = client.post("/predict", content=_body_text([("AEM", frames["AEM"]), ("WPM", frames["WPM"])]),
                         headers=head)
        assert ok.status_code == 200, ok.text
        r = client.post("/predict", content=_body_text([("AEM", frames["AEM"].head(200)), ("WPM", frames["WPM"]),
                                                        ("AEM", frames["AEM"])]), headers=head)
        assert r.status_code == 422, r.text
        assert r.json()["error"].startswith("symbols.AEM: given twice in one JSON object")

        # a field twice in a row, beside a row that fails validation: the repetition is said
        text = _body_text([("AEM", frames["AEM"]), ("WPM", frames["WPM"])])
        text = text.replace('"close":', '"close": 1.0, "close":', 1).replace('"volume": ', '"volume": "x", "v": ', 1)
        r = client.post("/predict", content=text, headers=head)
        assert r.status_code == 422, r.text
        assert r.json()["error"].startswith("symbols.AEM[0].close: given twice")


def test_a_model_path_that_is_a_link_loop_is_a_one_line_error(tmp_path, capsys):
    """``hftraining evaluate LINK`` of a link that leads back into itself was a traceback (``RuntimeError:
    Symlink loop``, Python before 3.13); ``serve`` said "no such run or model folder". Both now name the loop."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "self").symlink_to("self")
    for path, chain in ((tmp_path / "a", f"{tmp_path / 'a'} -> {tmp_path / 'b'} -> {tmp_path / 'a'}"),
                        (tmp_path / "self", f"{tmp_path / 'self'} -> {tmp_path / 'self'}")):
        assert main(["evaluate", str(path), "--no-report"]) == 2
        _one_line_error(capsys, f"{path}: a link loop ({chain})")
        assert main(["serve", str(path)]) == 2
        _one_line_error(capsys, f"{path}: a link loop ({chain})")


class _FillsUp:
    """A text file on a disk that fills as it is written: half of what is written lands, then ENOSPC."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, text: str) -> int:
        self.fh.write(text[: len(text) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device", self.fh.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()

    def __getattr__(self, name):
        return getattr(self.fh, name)


@pytest.mark.slow
def test_train_seeds_on_a_full_disk_leaves_the_ensemble_card_whole(tmp_path, capsys, monkeypatch):
    """``train --seeds 2`` adds a line on its seeds to the ensemble folder's README.md, appended in place: a disk
    that filled as it was written left the card ending in half a line. Now the card is rewritten whole or not
    at all, and the one-line error names it and the cause."""
    import hftraining.workflows.seeds as seeds

    built = seeds.build_ensemble
    real_open = builtins.open

    def full(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        # the disk fills once the ensemble is built: writing its card (or a sibling renamed over it) fails
        if any(m in mode for m in "wax+") and Path(str(file)).name.lstrip(".").startswith("README.md"):
            return _FillsUp(fh)
        return fh

    def build_then_fill(*args, **kwargs):
        out = built(*args, **kwargs)
        monkeypatch.setattr(builtins, "open", full)
        monkeypatch.setattr(io, "open", full)
        return out

    monkeypatch.setattr(seeds, "build_ensemble", build_then_fill)
    run = tmp_path / "run"
    fast = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=0", "evaluation.eval_steps=2",
            "evaluation.max_eval_batches=1", "evaluation.intervals=[]", "evaluation.baseline_max_windows=300",
            "evaluation.max_test_windows=60", "evaluation.report=false"]
    assert main(["train", "--seeds", "2", *tiny(run, *fast)]) == 2
    monkeypatch.undo()
    _one_line_error(capsys, "README.md", "No space left on device")
    card = (run / "ensemble" / "README.md").read_text(encoding="utf-8")
    assert "# An ensemble of 2 models (mean)" in card and card.endswith("\n") and "- Seeds" not in card, card[-300:]
    assert [p.name for p in (run / "ensemble").iterdir() if p.name.startswith(".")] == []  # no sibling left
