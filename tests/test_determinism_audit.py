"""Reproducibility: the same data gives the same windows, batches and results however it is laid out
or listed (the order of ``data.symbols``, file names, rows, CSV or Parquet, the feature store on, cold
or warm), and the same command run twice writes the same weights and figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig, load_config
from hftraining.core.errors import UserError
from hftraining.data.io import sample_data_dir
from hftraining.data.pipeline import prepare

SMALL = dict(sequence_length=20, prediction_horizon=3)


def _windows(p) -> dict[str, object]:
    """What training, validation and evaluation read of prepared data, by symbol name: every split's
    windows in order (symbol, target date) and their batches, and the fitted statistics."""
    out: dict[str, object] = {"scaler": p.preprocessing.scaler.to_dict(), "target_scale": p.preprocessing.target_scale}
    for name in ("train", "val", "test"):
        ws = p.split(name)
        out[name] = [(ws.symbols[int(s)], int(t)) for s, t in zip(ws.symbol_ids, ws.times)]
        out[name + "_batch"] = {k: v.numpy() for k, v in ws.batch(np.arange(len(ws))).items()}
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a["scaler"] == b["scaler"] and a["target_scale"] == b["target_scale"]
    for name in ("train", "val", "test"):
        assert a[name] == b[name], f"{name}: the windows differ in order or content"
        assert a[name + "_batch"].keys() == b[name + "_batch"].keys()
        for k in a[name + "_batch"]:
            np.testing.assert_array_equal(a[name + "_batch"][k], b[name + "_batch"][k], err_msg=f"{name} {k}")


def _sample(sym: str) -> pd.DataFrame:
    return pd.read_csv(sample_data_dir() / f"{sym}.csv")


def test_the_order_of_data_symbols_changes_no_window():
    """``data.symbols: [WPM, AEM]`` selects the panel ``[AEM, WPM]`` does: the same windows in the same
    order, so the same batches (the order of windows is the order training draws them in)."""
    a = prepare(DataConfig(symbols=["AEM", "WPM"], cache_dir=None, **SMALL))
    b = prepare(DataConfig(symbols=["WPM", "AEM"], cache_dir=None, **SMALL))
    assert a.train.symbols == b.train.symbols
    _assert_same(_windows(a), _windows(b))


def test_one_file_per_symbol_and_one_long_file_give_the_same_windows(tmp_path):
    """``X-B.csv`` sorts before ``X.csv`` (``-`` before ``.``) while the symbol ``X`` sorts before
    ``X-B``: a folder of one file per symbol and a long file of the same rows still give one order."""
    frames = {"AEM": _sample("AEM"), "AEM-B": _sample("WPM")}
    (tmp_path / "dir").mkdir()
    for sym, f in frames.items():
        f.to_csv(tmp_path / "dir" / f"{sym}.csv", index=False)
    pd.concat([f.assign(symbol=s) for s, f in frames.items()]).to_csv(tmp_path / "long.csv", index=False)
    a = prepare(DataConfig(data_dir=str(tmp_path / "dir"), cache_dir=None, **SMALL))
    b = prepare(DataConfig(data_dir=str(tmp_path / "long.csv"), cache_dir=None, **SMALL))
    assert a.train.symbols == b.train.symbols
    _assert_same(_windows(a), _windows(b))


def test_a_symbol_listed_twice_is_not_trained_on_twice():
    """``data.symbols: [AEM, AEM, WPM]``: either a one-line error naming data.symbols, or the panel of
    ``[AEM, WPM]`` (never AEM's windows twice, which would weigh it double in training and scoring)."""
    try:
        cfg = load_config(None, ["data.symbols=[AEM, AEM, WPM]", "data.cache_dir=null",
                                 "data.sequence_length=20", "data.prediction_horizon=3"])
        twice = prepare(cfg.data)
    except UserError as e:
        assert "data.symbols" in str(e) and "\n" not in str(e)
        return
    once = prepare(DataConfig(symbols=["AEM", "WPM"], cache_dir=None, **SMALL))
    assert twice.train.symbols == once.train.symbols
    _assert_same(_windows(twice), _windows(once))


def test_row_order_csv_or_parquet_and_the_feature_store_change_no_window(tmp_path):
    """The same rows as CSV, as CSV with its rows shuffled (the loader sorts them), and as Parquet;
    without the feature store, with a cold one and a warm one: identical windows and statistics."""
    for folder in ("csv", "shuffled", "parquet"):
        (tmp_path / folder).mkdir()
    for sym in ("AEM", "WPM"):
        f = _sample(sym)
        f.to_csv(tmp_path / "csv" / f"{sym}.csv", index=False)
        f.sample(frac=1.0, random_state=0).to_csv(tmp_path / "shuffled" / f"{sym}.csv", index=False)
        f.to_parquet(tmp_path / "parquet" / f"{sym}.parquet", index=False)
    ref = _windows(prepare(DataConfig(data_dir=str(tmp_path / "csv"), cache_dir=None, **SMALL)))
    for folder in ("shuffled", "parquet"):
        _assert_same(ref, _windows(prepare(DataConfig(data_dir=str(tmp_path / folder), cache_dir=None, **SMALL))))
    stored = DataConfig(data_dir=str(tmp_path / "csv"), cache_dir=str(tmp_path / "store"), **SMALL)
    cold = prepare(stored)
    warm = prepare(stored)
    assert (cold.report["cache"], warm.report["cache"]) == ("miss", "hit")
    _assert_same(ref, _windows(cold))
    _assert_same(ref, _windows(warm))


RUN = ["model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.1",
       "data.sequence_length=20", "data.prediction_horizon=3", "data.batch_size=32", "data.symbols=[AEM, WPM]",
       "training.max_steps=12", "training.save_steps=0", "training.logging_steps=4", "evaluation.eval_steps=6",
       "evaluation.report=false", "output.tensorboard=false", "output.progress_bar=never"]


def _figures(run: Path) -> tuple[bytes, dict, list]:
    """(final weights, eval.json, metrics.jsonl without its throughput) of a run folder."""
    metrics = [{k: v for k, v in json.loads(line).items() if k != "samples_per_second"}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    return (run / "final" / "model.safetensors").read_bytes(), json.loads((run / "eval.json").read_text()), metrics


@pytest.mark.slow
def test_train_twice_store_off_cold_and_warm_writes_the_same_run(tmp_path):
    """``hftraining train`` three times into fresh folders, without the feature store, with a cold one
    and with it warm: byte-identical final weights, and eval.json and metrics.jsonl equal."""
    from hftraining.cli import main

    runs = []
    for name, cache in (("off", "null"), ("cold", str(tmp_path / "store")), ("warm", str(tmp_path / "store"))):
        assert main(["train", *RUN, f"data.cache_dir={cache}", f"output.output_dir={tmp_path / name}"]) == 0
        runs.append(_figures(tmp_path / name))
    assert json.loads((tmp_path / "warm" / "data_report.json").read_text())["cache"] == "hit"
    for other in runs[1:]:
        assert other[0] == runs[0][0], "final weights differ"
        assert other[1] == runs[0][1] and other[2] == runs[0][2]
    shutil.rmtree(tmp_path / "store")


def test_a_run_resumes_with_its_symbols_listed_in_another_order():
    """A run takes its symbols in name order whatever data.symbols' order, so the config keeps them
    in that order and a resume with the same symbols listed otherwise is the same run (only another
    set of symbols is a conflict)."""
    from hftraining.core.config import resume_conflicts

    assert load_config(None, ["data.symbols=[WPM, NIO, AEM]"]).data.symbols == ["AEM", "NIO", "WPM"]
    saved = json.loads(json.dumps(load_config(None, ["data.symbols=[AEM, WPM]"]).to_dict()))
    saved["data"]["symbols"] = ["WPM", "AEM"]  # written before the config kept name order
    assert resume_conflicts(saved, load_config(None, ["data.symbols=[WPM, AEM]"])) == []
    assert [k for k, *_ in resume_conflicts(saved, load_config(None, ["data.symbols=[AEM, NIO]"]))] == ["data.symbols"]


def test_the_duplicate_check_of_a_long_symbol_list_is_fast():
    """Every command validates its config, some several times: a universe of 50,000 listed symbols
    is checked in one pass (counting each symbol in the list took about a minute)."""
    import time

    from hftraining.core.config import Config, validate

    start = time.perf_counter()
    validate(Config(data=DataConfig(symbols=[f"S{i:05d}" for i in range(50_000)])))
    assert time.perf_counter() - start < 2.0
