"""Experiment tracking (``output.report_to``): what MLflow, W&B (offline) and metrics.csv hold after a
run, and that ``--resume`` continues the same tracking runs without duplicated steps.

One tiny sequence is shared by the tests (:func:`tracked`): a fresh 8-step run (checkpoints at 4 and
8), whose state is recorded; then the step-8 checkpoint and final/ are removed, as if the run had been
killed after logging step 8 but before its checkpoint, and ``--resume`` continues it to 16 steps, so
steps 5-8, already logged everywhere, are redone."""

import csv
import json
import math
import shutil
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from hftraining.cli import main
from hftraining.core.config import Config, load_config
from hftraining.core.errors import UserError
from hftraining.train.tracking import INSTALL_HINT, TRACKING_FILE, flat_config
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402
from test_eval_model_card import eval_json_headline  # noqa: E402

needs_mlflow = pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")
needs_track = pytest.mark.skipif(find_spec("mlflow") is None or find_spec("wandb") is None,
                                 reason="the track extra is not installed")

ALL = "output.report_to=[csv, jsonl, mlflow, wandb]"
FAST = "evaluation.baseline_max_windows=200"  # the fitted baselines (LightGBM) fit in a moment
# a constant learning rate: the redone steps 5-8 are bit for bit the first run's although max_steps changes
STEPS = ("training.logging_steps=2", "training.save_steps=4", "training.save_total_limit=10", "evaluation.eval_steps=4",
         "training.lr_scheduler=constant", "training.warmup_steps=0", FAST)
TIMING = "samples_per_second"  # the one logged value a redone step does not repeat


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """W&B offline with every folder under tmp (no network, nothing in ~), MLflow in each run folder."""
    root = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "WANDB_PROJECT", "WANDB_API_KEY"):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(root / var.lower()))
        yield mp


def _jsonl(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _csv(run: Path) -> tuple[list[str], list[dict]]:
    with open(run / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _client(run: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{run / 'mlruns.db'}")


def _offline_runs(wandb_dir: Path) -> list[Path]:
    return sorted((wandb_dir / "wandb").glob("offline-run-*"))


@dataclass
class Stage:
    """What one stage of the sequence left: its config, eval.json, tracking.json, metrics.jsonl and
    .csv, and what its MLflow run holds (read right away: the resumed run changes it)."""

    cfg: Config
    result: dict[str, Any]
    tracking: dict[str, Any]
    records: list[dict]
    csv_header: list[str]
    csv_rows: list[dict]
    mlflow_run: Any
    history: dict[str, list[tuple[int, float]]]  # metric → sorted (step, value)
    n_mlflow_runs: int
    artifacts: set[str]  # top-level artifact names
    downloaded: Path  # final/ and report.html as downloaded from MLflow
    local: Path  # final/ and report.html of the run folder, copied
    wandb_runs: list[Path]


def _stage(env, run: Path, wdir: Path, dest: Path, *extra: str) -> Stage:
    env.setenv("WANDB_DIR", str(wdir))
    cfg = load_config(None, tiny(run, ALL, *STEPS, *extra))
    train(cfg)
    result = json.loads((run / "eval.json").read_text())
    tracking = json.loads((run / TRACKING_FILE).read_text())
    client, run_id = _client(run), tracking["mlflow"]["run_id"]
    r = client.get_run(run_id)
    history = {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in r.data.metrics}
    (dest / "mlflow").mkdir(parents=True)
    client.download_artifacts(run_id, "final", str(dest / "mlflow"))
    if cfg.evaluation.report:
        client.download_artifacts(run_id, "report.html", str(dest / "mlflow"))
    shutil.copytree(run / "final", dest / "local" / "final")
    if cfg.evaluation.report:
        shutil.copy(run / "report.html", dest / "local" / "report.html")
    return Stage(cfg, result, tracking, _jsonl(run), *_csv(run), r, history,
                 len(client.search_runs([tracking["mlflow"]["experiment_id"]])),
                 {a.path for a in client.list_artifacts(run_id)}, dest / "mlflow", dest / "local", _offline_runs(wdir))


@pytest.fixture(scope="module")
def tracked(env, tmp_path_factory):
    """(run folder, W&B dir, the fresh stage, the resumed stage)."""
    if find_spec("mlflow") is None or find_spec("wandb") is None:
        pytest.skip("the track extra is not installed")
    tmp = tmp_path_factory.mktemp("tracked")
    run, wdir = tmp / "run", tmp / "wandb"
    fresh = _stage(env, run, wdir, tmp / "fresh_artifacts", "training.max_steps=8")
    shutil.rmtree(run / "checkpoints" / "step-00000008")
    shutil.rmtree(run / "final")
    resumed = _stage(env, run, wdir, tmp / "resumed_artifacts", "training.max_steps=16",
                     "training.resume_from_checkpoint=auto", "evaluation.report=false")
    return run, wdir, fresh, resumed


# ------------------------------------------------------------------------------------------ MLflow


@needs_track
def test_mlflow_run_holds_params_metrics_verdict_and_artifacts(tracked):
    run, _, fresh, _ = tracked
    r = fresh.mlflow_run
    assert r.info.status == "FINISHED"
    assert r.info.run_name == run.name
    # params: the flattened resolved config, every key; device, precision and compile as used, the `auto`
    # asked for as requested.<key>
    flat = flat_config(fresh.cfg)
    requested = {k for k in r.data.params if k.startswith("requested.")}
    assert set(r.data.params) - requested == set(flat)
    assert requested == {"requested.training.device", "requested.training.precision", "requested.training.compile"}
    assert r.data.params["training.precision"] == "fp32" and r.data.params["training.device"] == "cpu"
    assert r.data.params["training.learning_rate"] == str(fresh.cfg.training.learning_rate)
    assert r.data.params["training.max_steps"] == "8"
    assert r.data.params["data.symbols"] == json.dumps(flat["data.symbols"]) == '["AEM", "WPM"]'
    # per-step metrics: one value per logging step, the values of metrics.jsonl
    train_steps = [(rec["step"], rec["loss"]) for rec in fresh.records if "loss" in rec]
    assert [s for s, _ in train_steps] == [2, 4, 6, 8]
    assert fresh.history["loss"] == train_steps
    assert fresh.history["eval_mse"] == [(rec["step"], rec["eval_mse"]) for rec in fresh.records if "eval_mse" in rec]
    assert [s for s, _ in fresh.history["eval_mse"]] == [4, 8]
    # the test split's headline numbers, each read from its own field of eval.json, at the run's last step
    headline = eval_json_headline(fresh.result)
    expected = {k: v for k, v in headline.items() if v is not None}
    assert {"mse", "mae", "mse_vs_zero", "zero_mse", "strongest_baseline_mse", "mse_vs_strongest_baseline",
            "dm_p_vs_zero", "dm_p_vs_strongest_baseline"} <= set(expected)
    assert {k for k in fresh.history if k.startswith("test_")} <= {f"test_{k}" for k in headline}
    for k, v in expected.items():
        assert fresh.history[f"test_{k}"] == [(8, pytest.approx(v, rel=1e-12))], k
    for k in set(headline) - set(expected):  # null in eval.json (the rank IC of 2 symbols): not logged
        assert f"test_{k}" not in fresh.history, (k, fresh.history[f"test_{k}"])
    assert r.data.tags["verdict"] == fresh.result["verdict"]
    assert r.data.tags["hftraining.run_dir"] == str(run.resolve())
    # artifacts: final/ (with the evaluated model card) and report.html, byte for byte
    assert {"final", "report.html"} <= fresh.artifacts
    for rel in ("final/model.safetensors", "final/README.md", "final/config.json", "final/preprocessing.json",
                "report.html"):
        assert (fresh.downloaded / rel).read_bytes() == (fresh.local / rel).read_bytes(), rel
    assert "verdict: " in (fresh.downloaded / "final" / "README.md").read_text()  # the card after evaluation


@needs_track
def test_resume_continues_the_same_mlflow_run_without_duplicated_steps(tracked):
    run, _, fresh, resumed = tracked
    assert resumed.tracking["mlflow"] == fresh.tracking["mlflow"]
    assert resumed.n_mlflow_runs == 1  # no second MLflow run
    r = resumed.mlflow_run
    assert r.info.status == "FINISHED"
    for key, every in (("loss", 2), ("eval_mse", 4)):
        hist = resumed.history[key]
        assert [s for s, _ in hist] == list(range(every, 17, every)), key  # each once: redone 5-8 not twice
        assert hist == [(rec["step"], rec[key]) for rec in resumed.records if key in rec], key
        assert hist[: len(fresh.history[key])] == fresh.history[key], key
    # a param cannot change: the values the resumed run changed are tags
    assert r.data.params["training.max_steps"] == "8"
    assert r.data.tags["resumed.training.max_steps"] == "16"
    assert r.data.tags["resumed.training.resume_from_checkpoint"] == "auto"
    # the latest test numbers, verdict and artifacts are the resumed run's
    assert resumed.history["test_mse"][-1] == (16, pytest.approx(resumed.result["model"]["mse"], rel=1e-12))
    assert r.data.metrics["test_mse"] == pytest.approx(resumed.result["model"]["mse"], rel=1e-12)
    assert r.data.tags["verdict"] == resumed.result["verdict"]
    for rel in ("final/model.safetensors", "final/README.md"):
        assert (resumed.downloaded / rel).read_bytes() == (resumed.local / rel).read_bytes(), rel
    assert (resumed.local / "final" / "model.safetensors").read_bytes() != (fresh.local / "final" / "model.safetensors").read_bytes()


@needs_track
def test_mlflow_tracking_uri_is_honoured_and_a_run_that_raises_ends_failed(tracked, env, tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI (here the store of the shared run) holds the run, not the run folder."""
    store = tracked[0] / "mlruns.db"
    uri = f"sqlite:///{store}"

    def stop(step, metrics):
        raise RuntimeError("stopped by the test")

    run = tmp_path / "run"
    cfg = load_config(None, tiny(run, "output.report_to=[mlflow]", "training.max_steps=4", "training.logging_steps=1",
                                 "evaluation.eval_steps=2", "evaluation.report=false"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(cfg, on_evaluate=stop)
    entry = json.loads((run / TRACKING_FILE).read_text())["mlflow"]
    assert entry["tracking_uri"] == uri
    assert not (run / "mlruns.db").exists() and not (run / "mlartifacts").exists()
    client = _client(tracked[0])
    r = client.get_run(entry["run_id"])
    assert r.info.status == "FAILED"
    assert r.info.run_name == run.name and r.data.tags["hftraining.run_dir"] == str(run.resolve())
    assert [m.step for m in client.get_metric_history(entry["run_id"], "loss")] == [1, 2]
    assert "verdict" not in r.data.tags and not client.list_artifacts(entry["run_id"])


@needs_mlflow
def test_an_unusable_tracking_uri_is_a_one_line_error(env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    code = main(["train", *tiny(tmp_path / "run", "output.report_to=[mlflow]", "training.max_steps=2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("hftraining: error: output.report_to: mlflow cannot start a run in bogus-scheme://nowhere")
    assert "MLFLOW_TRACKING_URI" in err[-1]


# ------------------------------------------------------------------------------------- W&B offline


@needs_track
def test_wandb_offline_run_folder_has_the_recorded_id(tracked):
    run, wdir, fresh, _ = tracked
    entry = fresh.tracking["wandb"]
    assert entry["dir"] == str(wdir) and entry["project"] == "default"
    assert [f.name.rsplit("-", 1)[-1] for f in fresh.wandb_runs] == [entry["id"]]
    log = (fresh.wandb_runs[0] / f"run-{entry['id']}.wandb").read_bytes()
    # the run's records: the config, the per-step history and the summary with the verdict
    for key in (b"training.learning_rate", b"train/loss", b"eval/mse", b"test/mse", b"verdict"):
        assert key in log, key
    assert not (run / "wandb").exists()  # WANDB_DIR wins over the run folder


@needs_track
def test_resume_reuses_the_wandb_run_id(tracked):
    _, wdir, fresh, resumed = tracked
    entry = resumed.tracking["wandb"]
    assert entry == fresh.tracking["wandb"]
    assert len(resumed.wandb_runs) == 2  # offline, each start writes its own folder, both with the one id
    assert {f.name.rsplit("-", 1)[-1] for f in resumed.wandb_runs} == {entry["id"]}
    assert all((f / f"run-{entry['id']}.wandb").stat().st_size > 0 for f in resumed.wandb_runs)


@needs_track
def test_wandb_online_without_an_api_key_is_a_one_line_error(env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    import wandb

    wandb.teardown()  # W&B reads WANDB_MODE once per process, at its first run: start afresh
    try:
        code = main(["train", *tiny(tmp_path / "run", "output.report_to=[wandb]", "training.max_steps=2")])
    finally:
        wandb.teardown()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("hftraining: error: output.report_to: wandb cannot start a run ("), err[-1]
    assert "WANDB_MODE=offline" in err[-1]
    assert not (tmp_path / "run" / TRACKING_FILE).exists()


# --------------------------------------------------------------------------------------------- csv


def _rows_hold_the_records(rows: list[dict], records: list[dict]) -> None:
    """Every logged value is in its step's row; a step's eval values are joined to its training row."""
    by_step = {int(r["step"]): r for r in rows}
    assert len(by_step) == len(rows)
    assert sorted(by_step) == sorted({rec["step"] for rec in records})
    for rec in records:
        for k, v in rec.items():
            assert float(by_step[rec["step"]][k]) == v, (rec["step"], k)


@needs_track
def test_csv_has_one_row_per_logged_step_with_eval_columns_joined(tracked):
    _, _, fresh, _ = tracked
    header, rows = fresh.csv_header, fresh.csv_rows
    assert header[0] == "step"
    assert {"loss", "learning_rate", "eval_mse", "eval_loss"} <= set(header)
    assert header.index("loss") < header.index("eval_mse")  # columns in the order first logged
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    _rows_hold_the_records(rows, fresh.records)
    assert rows[0]["eval_mse"] == "" and rows[1]["eval_mse"] != "" and rows[1]["loss"] != ""


@needs_track
def test_resume_drops_the_csv_rows_after_the_checkpoint(tracked):
    _, _, fresh, resumed = tracked
    assert resumed.csv_header == fresh.csv_header
    assert [int(r["step"]) for r in resumed.csv_rows] == list(range(2, 17, 2))  # 6 and 8 once: redone
    # the rows up to the checkpoint kept, the redone ones equal to those dropped (constant lr)
    assert [{k: v for k, v in r.items() if k != TIMING} for r in resumed.csv_rows[:4]] == \
        [{k: v for k, v in r.items() if k != TIMING} for r in fresh.csv_rows]
    assert resumed.csv_rows[:2] == fresh.csv_rows[:2]
    _rows_hold_the_records(resumed.csv_rows, resumed.records)


def test_csv_alone_writes_no_other_tracking_files(env, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, tiny(run, "output.report_to=[csv]", "training.max_steps=3", "training.logging_steps=1",
                                 "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false", FAST)))
    header, rows = _csv(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and "loss" in header
    for name in ("metrics.jsonl", "tensorboard", "mlruns.db", "wandb", TRACKING_FILE):
        assert not (run / name).exists(), name


# ----------------------------------------------------------------------------------------- errors


def test_unknown_report_to_name_is_a_one_line_config_error(tmp_path, capsys):
    code = main(["train", *tiny(tmp_path / "run", "output.report_to=[csv, neptune]")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("hftraining: error: output.report_to") and "neptune" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["mlflow", "wandb"])
def test_missing_tracking_package_is_a_one_line_user_error(tmp_path, capsys, monkeypatch, backend):
    monkeypatch.setitem(sys.modules, backend, None)  # as if not installed: `import mlflow` raises ImportError
    code = main(["train", *tiny(tmp_path / "run", f"output.report_to=[jsonl, {backend}]", "training.max_steps=2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (f"hftraining: error: output.report_to: {backend} needs the {backend} package, "
                       f"which is not installed: {INSTALL_HINT}")
    assert not any(line.startswith("Traceback") for line in err), err
    for name in ("train.log", "metrics.jsonl", "config.json"):  # it fails before the run writes anything
        assert not (tmp_path / "run" / name).exists(), name


def test_missing_package_raises_user_error_from_the_library(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[track\]'"):
        train(load_config(None, tiny(tmp_path / "run", "output.report_to=[mlflow]", "training.max_steps=2")))


@needs_mlflow
def test_non_finite_values_are_left_out_of_every_backend_as_they_are_null_in_metrics_jsonl(env, tmp_path):
    """A NaN (the rank IC of one symbol per date) or infinite value is null in metrics.jsonl and
    eval.json; MLflow stored NaN as NaN and +Inf as 1.8e308, TensorBoard plotted both and metrics.csv
    wrote 'nan'/'inf'. Now each backend leaves the value out (an empty cell in the CSV)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hftraining.train.tracking import CsvTracker, JsonlTracker, MlflowTracker, TensorBoardTracker

    nan, inf = float("nan"), float("inf")
    trackers = [JsonlTracker(), CsvTracker(), TensorBoardTracker(), MlflowTracker()]
    for t in trackers:
        t.on_start(tmp_path, Config(), None)
        t.on_log(2, {"loss": nan, "grad_norm": inf, "learning_rate": 0.1})
        t.on_eval(2, {"rank_ic": nan, "mse_vs_zero": -inf, "mse": 1.5})
    for t in trackers:
        t.on_end(None, [], False)
    assert _jsonl(tmp_path) == [{"step": 2, "loss": None, "grad_norm": None, "learning_rate": 0.1}]
    header, rows = _csv(tmp_path)
    assert rows == [{"step": "2", "loss": "", "grad_norm": "", "learning_rate": "0.1"}]
    ml = trackers[-1]
    assert ml.client.get_run(ml.run_id).data.metrics == {"learning_rate": 0.1, "test_mse": 1.5}
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["test/mse", "train/learning_rate"]
