"""Every mistake a user can make on the command line, for every subcommand: exactly one line on
stderr naming the path, key or flag, exit code 2, no traceback, and every file that was there before
(run folders, model folders, ensembles, checkpoints, data, caches) left byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from hftraining import cli
from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.data.io import sample_data_dir
from hftraining.inference.ensemble import build_ensemble
from hftraining.train.logging import log
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402
from test_inference_serve import make_model  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Everything a user points commands at: a trained run (with checkpoints), two model folders, an
    ensemble, data, a feature cache, a random folder, an empty folder, a plain file, damaged copies."""
    root = tmp_path_factory.mktemp("cli")
    train(load_config(None, tiny(root / "run", "training.max_steps=6", "training.save_steps=3",
                                 "evaluation.eval_steps=0", "evaluation.report=false", f"data.cache_dir={root / 'cache'}")))
    make_model(root / "m1")
    make_model(root / "m2")
    build_ensemble([root / "m1", root / "m2"], root / "ens")
    (root / "data").mkdir()
    for sym in ("AEM", "WPM"):
        shutil.copy(sample_data_dir() / f"{sym}.csv", root / "data" / f"{sym}.csv")
    (root / "random").mkdir()
    (root / "random" / "notes.txt").write_text("not a run\n")
    (root / "random" / "sub").mkdir()
    (root / "random" / "sub" / "x.json").write_text('{"a": 1}')
    (root / "empty").mkdir()
    (root / "file.txt").write_text("a plain file\n")
    (root / "truncated.json").write_text('{"model": {"hidden_size": 1')
    (root / "notune.yaml").write_text("training:\n  max_steps: 2\n")
    (root / "tune.yaml").write_text(json.dumps({"model": {"type": "seasonal_naive"}, "training": {"max_steps": 2},
                                                "data": {"sequence_length": 16, "prediction_horizon": 2, "symbols": ["AEM"]},
                                                "tune": {"search_space": {"model.season_length": {"choices": [2, 5]}}}}))
    shutil.copytree(root / "run", root / "run_nockpt")  # a finished run trained with training.save_steps=0
    shutil.rmtree(root / "run_nockpt" / "checkpoints")
    shutil.copytree(root / "run", root / "seeds" / "seed-0")  # what `train --seeds` leaves
    shutil.copytree(root / "ens", root / "seeds" / "ensemble")
    shutil.copytree(root / "run", root / "run_truncated")
    cfg = root / "run_truncated" / "config.json"
    cfg.write_text(cfg.read_text()[: len(cfg.read_text()) // 2])
    shutil.copytree(root / "run", root / "run_wrongtype")
    cfg = root / "run_wrongtype" / "config.json"
    obj = json.loads(cfg.read_text())
    obj["evaluation"]["backtest_cost_bps"] = "ten"
    cfg.write_text(json.dumps(obj))
    shutil.copytree(root / "m1", root / "m1_truncated")
    (root / "m1_truncated" / "config.json").write_text('{"model": {')
    shutil.copytree(root / "m1", root / "m1_wrongtype")
    cfg = root / "m1_wrongtype" / "config.json"
    obj = json.loads(cfg.read_text())
    obj["model"]["hidden_size"] = "sixteen"
    cfg.write_text(json.dumps(obj))
    return root


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: its path and the hash of its bytes (folders: 'dir'). The
    feature store's ``verified.json`` is left out: a read stamps it by design."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.name == "verified.json" and rel.startswith("cache/"):
            continue
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


T = tiny(None, "training.max_steps=2", "evaluation.eval_steps=0", "evaluation.report=false")
"""A run that would take seconds, should a mistake go unnoticed."""

# id → (argv with {r} = the world's folder, text the one error line must contain)
CASES = {
    # train
    "train_config_missing": (["train", *T, "--config", "{r}/nope.yaml"], "nope.yaml"),
    "train_config_folder": (["train", *T, "--config", "{r}/random"], "random"),
    "train_config_truncated": (["train", *T, "--config", "{r}/truncated.json"], "truncated.json"),
    "train_unknown_key": (["train", *T, "model.no_such_key=1"], "model.no_such_key"),
    "train_wrong_type": (["train", *T, "model.hidden_size=abc"], "model.hidden_size"),
    "train_out_of_range": (["train", *T, "model.dropout=5"], "model.dropout"),
    "train_other_section": (["train", *T, "data.learning_rate=0.1"], "data.learning_rate"),
    "train_no_equals": (["train", *T, "model.hidden_size"], "model.hidden_size"),
    "train_seeds_zero": (["train", *T, "--seeds", "0"], "--seeds"),
    "train_unknown_flag": (["train", *T, "--bogus"], "--bogus"),
    "train_data_missing": (["train", *T, "data.data_dir={r}/nodata", "output.output_dir={r}/new"], "nodata"),
    "train_data_empty": (["train", *T, "data.data_dir={r}/empty", "output.output_dir={r}/new"], "empty"),
    "train_out_is_file": (["train", *T, "output.output_dir={r}/file.txt"], "file.txt"),
    "train_out_parent_file": (["train", *T, "output.output_dir={r}/file.txt/run"], "file.txt"),
    "train_out_is_model": (["train", *T, "output.output_dir={r}/m1"], "m1"),
    "train_out_is_ensemble": (["train", *T, "output.output_dir={r}/ens"], "ens"),
    "train_finished_run": (["train", *T, "output.output_dir={r}/run_nockpt"], "holds a finished run (final/)"),
    "train_resume_finished_run": (["train", "--resume", *T, "output.output_dir={r}/run_nockpt"], "no checkpoint to resume"),
    "train_finished_run_overwrite_bad_data": (["train", *T, "data.data_dir={r}/empty", "output.output_dir={r}/run_nockpt",
                                               "output.overwrite=true"], "empty"),
    "train_overwrite_bad_data": (["train", *T, "output.overwrite=true", "data.data_dir={r}/empty", "output.output_dir={r}/run"], "empty"),
    "train_overwrite_seeds_bad_data": (["train", *T, "output.overwrite=true", "data.data_dir={r}/empty", "output.output_dir={r}/seeds"], "empty"),
    "seeds_overwrite_run_bad_data": (["train", "--seeds", "2", *T, "output.overwrite=true", "data.data_dir={r}/empty", "output.output_dir={r}/run"], "empty"),
    "seeds_overwrite_seeds_bad_data": (["train", "--seeds", "2", *T, "output.overwrite=true", "data.data_dir={r}/empty", "output.output_dir={r}/seeds"], "empty"),
    "train_resume_bad_data": (["train", "--resume", *T, "data.data_dir={r}/empty", "output.output_dir={r}/run"], "empty"),
    "train_resume_model": (["train", "--resume", *T, "output.output_dir={r}/m1"], "m1"),
    "train_resume_and_resume_from": (["train", "--resume", *T, "output.output_dir={r}/run",
                                      "training.resume_from_checkpoint={r}/run/checkpoints/step-00000003"], "--resume"),
    # ensemble
    "ensemble_one_member": (["ensemble", "{r}/m1", "--out", "{r}/new"], "two"),
    "ensemble_missing_member": (["ensemble", "{r}/m1", "{r}/nope", "--out", "{r}/new"], "nope"),
    "ensemble_random_member": (["ensemble", "{r}/m1", "{r}/random", "--out", "{r}/new"], "random"),
    "ensemble_empty_member": (["ensemble", "{r}/m1", "{r}/empty", "--out", "{r}/new"], "empty"),
    "ensemble_file_member": (["ensemble", "{r}/m1", "{r}/file.txt", "--out", "{r}/new"], "file.txt"),
    "ensemble_truncated_member": (["ensemble", "{r}/m1", "{r}/m1_truncated", "--out", "{r}/new"], "config.json"),
    "ensemble_wrongtype_member": (["ensemble", "{r}/m1", "{r}/m1_wrongtype", "--out", "{r}/new"], "hidden_size"),
    "ensemble_out_exists": (["ensemble", "{r}/m1", "{r}/m2", "--out", "{r}/ens"], "ens"),
    "ensemble_out_is_file": (["ensemble", "{r}/m1", "{r}/m2", "--out", "{r}/file.txt"], "file.txt"),
    "ensemble_out_parent_file": (["ensemble", "{r}/m1", "{r}/m2", "--out", "{r}/file.txt/ens"], "file.txt"),
    "ensemble_out_inside_member": (["ensemble", "{r}/m1", "{r}/m2", "--out", "{r}/m1/ens"], "m1"),
    "ensemble_overwrite_member": (["ensemble", "{r}/m1", "{r}/m2", "--out", "{r}/m1", "--overwrite"], "m1"),
    "ensemble_overwrite_run": (["ensemble", "{r}/m1", "{r}/m2", "--out", "{r}/run", "--overwrite"], "run"),
    "ensemble_overwrite_random": (["ensemble", "{r}/m1", "{r}/m2", "--out", "{r}/random", "--overwrite"], "random"),
    "ensemble_bad_method": (["ensemble", "{r}/m1", "{r}/m2", "--out", "{r}/new", "--method", "max"], "--method"),
    # tune
    "tune_config_missing": (["tune", "--config", "{r}/nope.yaml", "--trials", "1", "--out", "{r}/t"], "nope.yaml"),
    "tune_config_folder": (["tune", "--config", "{r}/random", "--trials", "1", "--out", "{r}/t"], "random"),
    "tune_no_search_space": (["tune", "--config", "{r}/notune.yaml", "--trials", "1", "--out", "{r}/t"], "search_space"),
    "tune_trials_negative": (["tune", "--config", "{r}/tune.yaml", "--trials", "-1", "--out", "{r}/t"], "--trials"),
    "tune_workers_zero": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--workers", "0", "--out", "{r}/t"], "--workers"),
    "tune_out_is_file": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--out", "{r}/file.txt"], "file.txt"),
    "tune_unknown_key": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--out", "{r}/t", "model.nokey=1"], "model.nokey"),
    "tune_bad_storage": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--storage", "bogus://x"], "bogus"),
    # a bad --storage, or a study that is not there, leaves no --out folder (nor a journal) behind
    "tune_bad_storage_out": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--storage", "bogus://x", "--out", "{r}/t"], "bogus"),
    "tune_relative_journal_out": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--storage", "journal://rel.log", "--out", "{r}/t"], "absolute path"),
    "tune_journal_folder_missing_out": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--storage", "journal://{r}/nope/j.log", "--out", "{r}/t"], "nope"),
    "tune_sqlite_folder_missing_out": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--storage", "sqlite:///{r}/nope/t.db", "--out", "{r}/t"], "nope"),
    "tune_sqlite_workers_out": (["tune", "--config", "{r}/tune.yaml", "--trials", "2", "--workers", "2", "--storage", "sqlite:///{r}/t.db", "--out", "{r}/t"], "SQLite"),
    "tune_report_no_study_out": (["tune", "--config", "{r}/tune.yaml", "--trials", "0", "--out", "{r}/t"], "no study"),
    "tune_report_no_journal": (["tune", "--config", "{r}/tune.yaml", "--trials", "0", "--storage", "journal://{r}/j.log", "--out", "{r}/t"], "no study"),
    "tune_report_no_journal_in_out": (["tune", "--config", "{r}/tune.yaml", "--trials", "0", "--storage", "journal://{r}/empty/j.log", "--out", "{r}/empty"], "no study"),
    "tune_study_twice": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--study", "a", "--out", "{r}/t", "tune.study_name=b"], "--study"),
    "tune_output_dir_override": (["tune", "--config", "{r}/tune.yaml", "--trials", "1", "--out", "{r}/t", "output.output_dir={r}/o"], "output.output_dir"),
    # export
    "export_missing": (["export", "{r}/nope", "--out", "{r}/m.onnx"], "nope"),
    "export_random": (["export", "{r}/random", "--out", "{r}/m.onnx"], "random"),
    "export_empty": (["export", "{r}/empty", "--out", "{r}/m.onnx"], "empty"),
    "export_file": (["export", "{r}/file.txt", "--out", "{r}/m.onnx"], "file.txt"),
    "export_truncated": (["export", "{r}/m1_truncated", "--out", "{r}/m.onnx"], "config.json"),
    "export_out_is_folder": (["export", "{r}/m1", "--out", "{r}/random"], "random"),
    "export_out_parent_file": (["export", "{r}/m1", "--out", "{r}/file.txt/m.onnx"], "file.txt"),
    "export_out_over_weights": (["export", "{r}/m1", "--out", "{r}/m1/model.safetensors"], "model.safetensors"),
    "export_out_over_config": (["export", "{r}/m1", "--out", "{r}/m1/config.json"], "config.json"),
    # serve (every case fails before a server starts)
    "serve_missing": (["serve", "{r}/nope"], "nope"),
    "serve_random": (["serve", "{r}/random"], "random"),
    "serve_empty": (["serve", "{r}/empty"], "empty"),
    "serve_truncated": (["serve", "{r}/m1_truncated"], "config.json"),
    "serve_port_zero": (["serve", "{r}/m1", "--port", "0"], "serve.port"),
    "serve_open_host_no_key": (["serve", "{r}/m1", "--host", "0.0.0.0"], "--host"),
    "serve_unknown_flag": (["serve", "{r}/m1", "--workers", "3"], "--workers"),
    # evaluate
    "evaluate_missing": (["evaluate", "{r}/nope"], "nope"),
    "evaluate_empty": (["evaluate", "{r}/empty"], "empty"),
    "evaluate_random": (["evaluate", "{r}/random"], "random"),
    "evaluate_file": (["evaluate", "{r}/file.txt"], "file.txt"),
    "evaluate_truncated": (["evaluate", "{r}/run_truncated"], "config.json"),
    "evaluate_wrongtype": (["evaluate", "{r}/run_wrongtype"], "backtest_cost_bps"),
    "backtest_wrongtype": (["backtest", "{r}/run_wrongtype"], "config.json"),
    "evaluate_unknown_key": (["evaluate", "{r}/run", "--set", "evaluation.nokey=1"], "evaluation.nokey"),
    "evaluate_other_section": (["evaluate", "{r}/run", "--set", "model.hidden_size=8"], "model.hidden_size"),
    "evaluate_wrong_type": (["evaluate", "{r}/run", "--set", "evaluation.backtest_cost_bps=abc"], "evaluation.backtest_cost_bps"),
    "evaluate_out_of_range": (["evaluate", "{r}/run", "--set", "evaluation.backtest_cost_bps=-5"], "evaluation.backtest_cost_bps"),
    "evaluate_no_equals": (["evaluate", "{r}/run", "--set", "evaluation.backtest_cost_bps"], "evaluation.backtest_cost_bps"),
    "evaluate_conflict": (["evaluate", "{r}/run", "--no-report", "--report-dir", "{r}/rep"], "--report-dir"),
    "evaluate_report_dir_file": (["evaluate", "{r}/run", "--set", "evaluation.report=true", "--report-dir", "{r}/file.txt"], "file.txt"),
    "evaluate_report_parent_file": (["evaluate", "{r}/run", "--set", "evaluation.report=true", "--report-dir", "{r}/file.txt/rep"], "file.txt"),
    "evaluate_data_missing": (["evaluate", "{r}/run", "--data", "{r}/nodata"], "nodata"),
    "evaluate_data_empty": (["evaluate", "{r}/run", "--data", "{r}/empty"], "empty"),
    "evaluate_bad_split": (["evaluate", "{r}/run", "--split", "holdout"], "--split"),
    "evaluate_no_report_report_true": (["evaluate", "{r}/run", "--no-report", "--set", "evaluation.report=true"], "--no-report"),
    # backtest
    "backtest_missing": (["backtest", "{r}/nope"], "nope"),
    "backtest_random": (["backtest", "{r}/random"], "random"),
    "backtest_ensemble_checkpoints": (["backtest", "{r}/run/checkpoints"], "checkpoints"),
    "backtest_truncated": (["backtest", "{r}/run_truncated"], "config.json"),
    "backtest_topk_zero": (["backtest", "{r}/run", "--topk", "0"], "backtest_topk"),
    "backtest_negative_cost": (["backtest", "{r}/run", "--cost-bps", "-1"], "backtest_cost_bps"),
    "backtest_gross_zero": (["backtest", "{r}/run", "--max-gross", "0"], "backtest_max_gross"),
    "backtest_rebalance_zero": (["backtest", "{r}/run", "--rebalance", "0"], "backtest_rebalance"),
    "backtest_unknown_key": (["backtest", "{r}/run", "--set", "evaluation.nokey=1"], "evaluation.nokey"),
    "backtest_cost_not_a_number": (["backtest", "{r}/run", "--cost-bps", "abc"], "--cost-bps"),
    # two values for one setting: an error, never the last one silently winning
    "backtest_long_only_long_short": (["backtest", "{r}/run", "--long-only", "--long-short"], "--long-short"),
    "backtest_long_short_long_only": (["backtest", "{r}/run", "--long-short", "--long-only"], "--long-only"),
    "backtest_flag_and_set": (["backtest", "{r}/run", "--cost-bps", "10", "--set", "evaluation.backtest_cost_bps=20"], "--cost-bps"),
    "backtest_long_short_and_set": (["backtest", "{r}/run", "--long-short", "--set", "evaluation.backtest_long_only=true"], "--long-short"),
    "backtest_topk_and_set": (["backtest", "{r}/run", "--set", "evaluation.backtest_topk=2", "--topk", "3"], "--topk"),
    # walkforward
    "walkforward_folds_zero": (["walkforward", "--folds", "0", *T, "output.output_dir={r}/wf"], "--folds"),
    "walkforward_unknown_key": (["walkforward", "--folds", "2", *T, "training.nokey=1"], "training.nokey"),
    "walkforward_config_missing": (["walkforward", "--folds", "2", "--config", "{r}/nope.yaml", *T], "nope.yaml"),
    "walkforward_out_is_file": (["walkforward", "--folds", "2", *T, "output.output_dir={r}/file.txt"], "file.txt"),
    "walkforward_bad_scheme": (["walkforward", "--folds", "2", "--scheme", "sliding", *T], "--scheme"),
    # predict
    "predict_missing": (["predict", "{r}/nope", "--data", "{r}/data/AEM.csv"], "nope"),
    "predict_random": (["predict", "{r}/random", "--data", "{r}/data/AEM.csv"], "random"),
    "predict_empty": (["predict", "{r}/empty", "--data", "{r}/data/AEM.csv"], "empty"),
    "predict_truncated": (["predict", "{r}/m1_truncated", "--data", "{r}/data/AEM.csv"], "config.json"),
    "predict_run_truncated": (["predict", "{r}/run_truncated", "--data", "{r}/data/AEM.csv"], "config.json"),
    "predict_data_missing": (["predict", "{r}/m1", "--data", "{r}/nodata.csv"], "nodata.csv"),
    "predict_data_empty": (["predict", "{r}/m1", "--data", "{r}/empty"], "empty"),
    "predict_data_not_csv": (["predict", "{r}/m1", "--data", "{r}/file.txt"], "file.txt"),
    "predict_out_is_folder": (["predict", "{r}/m1", "--data", "{r}/data/AEM.csv", "--out", "{r}/random"], "random"),
    "predict_out_parent_file": (["predict", "{r}/m1", "--data", "{r}/data/AEM.csv", "--out", "{r}/file.txt/f.csv"], "file.txt"),
    "predict_out_over_data": (["predict", "{r}/m1", "--data", "{r}/data/AEM.csv", "--out", "{r}/data/AEM.csv"], "AEM.csv"),
    "predict_out_inside_data": (["predict", "{r}/m1", "--data", "{r}/data", "--out", "{r}/data/f.csv"], "data"),
    "predict_out_matches_glob": (["predict", "{r}/m1", "--data", "{r}/data/*.csv", "--out", "{r}/data/new.csv"], "data"),
    "predict_out_inside_model": (["predict", "{r}/m1", "--data", "{r}/data/AEM.csv", "--out", "{r}/m1/config.json"], "m1"),
    "predict_no_data_flag": (["predict", "{r}/m1"], "--data"),
    # list
    "list_unknown": (["list", "widgets"], "widgets"),
    # bench ett
    "bench_data_missing": (["bench", "ett", "--data", "{r}/nope"], "nope"),
    "bench_data_empty": (["bench", "ett", "--data", "{r}/empty"], "empty"),
    "bench_data_file": (["bench", "ett", "--data", "{r}/file.txt"], "file.txt"),
    "bench_threads_zero": (["bench", "ett", "--data", "{r}/empty", "--threads", "0"], "--threads"),
    "bench_linear_hidden": (["bench", "ett", "--data", "{r}/empty", "--model", "linear", "--hidden-size", "8"], "--hidden-size"),
    "bench_horizon_zero": (["bench", "ett", "--data", "{r}/empty", "--horizon", "0"], "horizon"),
    "bench_seq_len_zero": (["bench", "ett", "--data", "{r}/empty", "--seq-len", "0"], "seq-len"),
    "bench_unknown_dataset": (["bench", "ett", "--data", "{r}/empty", "--dataset", "ETTx9"], "--dataset"),
    "bench_no_suite": (["bench"], "suite"),
    # data check
    "check_missing": (["data", "check", "{r}/nope.csv"], "nope.csv"),
    "check_empty_folder": (["data", "check", "{r}/empty"], "empty"),
    "check_unknown_key": (["data", "check", "{r}/data", "--set", "nokey=1"], "data.nokey"),
    "check_wrong_type": (["data", "check", "{r}/data", "--set", "sequence_length=abc"], "data.sequence_length"),
    "check_config_missing": (["data", "check", "{r}/data", "--config", "{r}/nope.yaml"], "nope.yaml"),
    # data features
    "features_missing": (["data", "features", "{r}/nope.csv", "--out", "{r}/f.csv"], "nope.csv"),
    "features_empty": (["data", "features", "{r}/empty", "--out", "{r}/f.csv"], "empty"),
    "features_bad_extension": (["data", "features", "{r}/data", "--out", "{r}/f.txt"], "f.txt"),
    "features_out_is_folder": (["data", "features", "{r}/data", "--out", "{r}/random"], "random"),
    "features_out_parent_file": (["data", "features", "{r}/data", "--out", "{r}/file.txt/f.csv"], "file.txt"),
    "features_out_over_input": (["data", "features", "{r}/data/AEM.csv", "--out", "{r}/data/AEM.csv"], "AEM.csv"),
    "features_out_inside_input": (["data", "features", "{r}/data", "--out", "{r}/data/features.csv"], "data"),
    "features_unknown_key": (["data", "features", "{r}/data", "--out", "{r}/f.csv", "--set", "nokey=1"], "data.nokey"),
    # data synth
    "synth_symbols_zero": (["data", "synth", "--symbols", "0", "--rows", "100", "--out", "{r}/s"], "symbols"),
    "synth_rows_negative": (["data", "synth", "--symbols", "1", "--rows", "-5", "--out", "{r}/s"], "rows"),
    "synth_out_is_file": (["data", "synth", "--symbols", "1", "--rows", "100", "--out", "{r}/file.txt"], "file.txt"),
    "synth_out_parent_file": (["data", "synth", "--symbols", "1", "--rows", "100", "--out", "{r}/file.txt/s"], "file.txt"),
    "synth_bad_freq": (["data", "synth", "--symbols", "1", "--rows", "100", "--out", "{r}/s", "--freq", "fortnightly"], "fortnightly"),
    "synth_bad_session": (["data", "synth", "--symbols", "1", "--rows", "100", "--out", "{r}/s", "--freq", "1min", "--session", "25:00-26:00"], "--session"),
    "synth_bad_tz": (["data", "synth", "--symbols", "1", "--rows", "100", "--out", "{r}/s", "--freq", "1min", "--tz", "Mars/Olympus"], "Mars/Olympus"),
    "synth_bad_format": (["data", "synth", "--symbols", "1", "--rows", "100", "--out", "{r}/s", "--format", "xlsx"], "--format"),
    # the top level
    "no_command": ([], "command"),
    "unknown_command": (["fit"], "fit"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_mistake_is_one_line_exit_2_and_changes_nothing(world, name, tmp_path, monkeypatch, capsys):
    argv, names = CASES[name]
    root = tmp_path / "w"  # each case gets its own copy: one that damages it cannot spoil another
    shutil.copytree(world, root, symlinks=True)
    argv = [a.replace("{r}", str(root)) for a in argv]
    monkeypatch.chdir(tmp_path)  # relative defaults (runs/, .cache/) land beside the copy, not in it
    # as in a fresh process: no console logging left on by an earlier test, and no server may start
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    monkeypatch.setattr(cli, "run_server", lambda prepared: pytest.fail("a server started"))
    before = _tree(root)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse ends the process on a flag it does not know
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}: {err[-2000:]}"
    assert err.count("\n") == 1 and err.startswith("hftraining"), err[-2000:]
    assert "Traceback" not in err
    assert names in err, err
    assert _tree(root) == before
