"""What a run records of how it was run together with others: MLflow parent runs of `train --seeds`,
walk-forward and tune (each seed, fold or trial a member run nested under one parent, tag
``mlflow.parentRunId``, tagged with the group's kind and the member; the group's aggregates the
parent's metrics and artifacts), and the processes a run trained with (the card's and the report's
batch of an optimizer step)."""

import json
from importlib.util import find_spec

import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from conftest import tiny  # noqa: E402

GROUP_FILE = "tracking_group.json"  # in the group's folder: its parent run
TRACKING_FILE = "tracking.json"  # in each run folder: its own run

pytestmark = pytest.mark.skipif(find_spec("mlflow") is None, reason="the track extra (mlflow) is not installed")

QUICK = ["model.hidden_size=8", "data.sequence_length=16", "data.prediction_horizon=2", "data.symbols=[AEM]",
         "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.report=false", "evaluation.intervals=[]",
         "evaluation.baseline_max_windows=200", "evaluation.max_test_windows=200", "output.report_to=[jsonl, mlflow]"]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One MLflow database for the module (creating one takes MLflow seconds); each test has its own
    experiment in it (:func:`runs`)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    for name in ("seeds", "walkforward", "tune"):  # artifacts under the test's folder, not ./mlruns
        client.create_experiment(name, artifact_location=(root / name).as_uri())
    return uri, client


@pytest.fixture
def store(shared_store, monkeypatch):
    """The store as MLFLOW_TRACKING_URI, and a client of it."""
    uri, client = shared_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("RANK", raising=False)
    return client


def runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def parents(client, kind: str) -> list:
    """The parent runs of groups of ``kind`` (each test's experiment is named after the kind)."""
    return [r for r in runs(client, kind) if r.data.tags.get("hftraining.group") == kind
            and "mlflow.parentRunId" not in r.data.tags]


def member_id(folder) -> str:
    return json.loads((folder / TRACKING_FILE).read_text())["mlflow"]["run_id"]


def test_a_group_is_inactive_without_mlflow_and_off_the_main_rank(tmp_path, monkeypatch):
    """Nothing changes unless output.report_to names mlflow; under torchrun only rank 0 talks to MLflow."""
    from hftraining.train import tracking
    from hftraining.train.tracking import start_group

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    for report_to, rank in (("[jsonl]", "0"), ("[jsonl, mlflow]", "1")):
        monkeypatch.setenv("RANK", rank)
        cfg = load_config(None, tiny(tmp_path / "run", f"output.report_to={report_to}"))
        group = start_group(cfg, tmp_path / "run", "seeds", "run", {"seeds": 2}, resume=False)
        with group.member(seed=0):
            assert tracking._member is None
        group.finish({"n_seeds": 2})
        assert not group.active
    assert not (tmp_path / "run" / GROUP_FILE).exists() and not (tmp_path / "never.db").exists()


def test_seeds_nest_under_one_parent_that_holds_their_spread_and_resume_keeps_every_run(tmp_path, store):
    root = tmp_path / "run"
    args = ["train", "--seeds", "2", *tiny(root, *QUICK, "training.max_steps=2", "training.save_steps=2",
                                           "output.experiment_name=seeds")]
    assert main(args) == 0
    [parent] = parents(store, "seeds")
    pid = parent.info.run_id
    assert json.loads((root / GROUP_FILE).read_text())["mlflow"]["run_id"] == pid
    assert parent.info.status == "FINISHED" and parent.data.params["seeds"] == "2"
    members = {k: store.get_run(member_id(root / f"seed-{k}")) for k in range(2)}
    for k, r in members.items():
        assert r.data.tags["mlflow.parentRunId"] == pid
        assert r.data.tags["hftraining.group"] == "seeds" and r.data.tags["hftraining.member"] == f"seed={k}"
    summary = json.loads((root / "ensemble" / "seeds.json").read_text())
    spread = summary["spread"]["mse_vs_strongest"]
    assert parent.data.metrics["mse_vs_strongest_mean"] == pytest.approx(spread["mean"])
    assert parent.data.metrics["mse_vs_strongest_std"] == pytest.approx(spread["std"])
    assert parent.data.metrics["n_seeds"] == 2
    assert "seeds.json" in {a.path for a in store.list_artifacts(pid)}

    # --resume (two more steps): the same parent, each seed continues its own run under it
    assert main([*args, "training.max_steps=4", "--resume"]) == 0
    [again] = parents(store, "seeds")
    assert again.info.run_id == pid and again.info.status == "FINISHED"
    for k in range(2):
        assert member_id(root / f"seed-{k}") == members[k].info.run_id
        r = store.get_run(members[k].info.run_id)
        assert r.data.tags["mlflow.parentRunId"] == pid and r.info.status == "FINISHED"
        assert max(m.step for m in store.get_metric_history(r.info.run_id, "loss")) == 4

    # output.overwrite: a new parent of new seed runs; the earlier parent says which one replaced it
    assert main([*args, "output.overwrite=true"]) == 0
    new = [p for p in parents(store, "seeds") if p.info.run_id != pid]
    assert len(new) == 1
    assert store.get_run(pid).data.tags["hftraining.superseded_by"] == new[0].info.run_id
    for k in range(2):
        assert member_id(root / f"seed-{k}") != members[k].info.run_id
        assert store.get_run(member_id(root / f"seed-{k}")).data.tags["mlflow.parentRunId"] == new[0].info.run_id
    claimed = [r for r in runs(store, "seeds") if r.data.tags.get("mlflow.parentRunId") == pid]
    assert {r.info.run_id for r in claimed} == {r.info.run_id for r in members.values()}  # the earlier seeds only


def test_walk_forward_folds_nest_under_a_parent_holding_the_aggregates(tmp_path, store):
    root = tmp_path / "run"
    assert main(["walkforward", "--folds", "2", *tiny(root, *QUICK, "training.max_steps=2",
                                                                 "output.experiment_name=walkforward")]) == 0
    base = root / "walkforward"
    [parent] = parents(store, "walkforward")
    res = json.loads((base / "walkforward.json").read_text())
    for k in (1, 2):
        r = store.get_run(member_id(base / f"fold-{k}"))
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.data.tags["hftraining.member"] == f"fold={k}"
    m = parent.data.metrics
    assert m["mse_vs_zero_mean"] == pytest.approx(res["aggregate"]["mse_vs_zero"]["mean"])
    assert m["pooled_mse"] == pytest.approx(res["pooled"]["model"]["mse"])
    assert parent.info.status == "FINISHED" and "walkforward.json" in {a.path for a in store.list_artifacts(parent.info.run_id)}


@pytest.mark.skipif(find_spec("optuna") is None, reason="the tune extra (optuna) is not installed")
def test_tune_trials_nest_under_the_study_parent_which_names_the_best_trial(tmp_path, store):
    from hftraining.workflows.tune import run_tune

    cfg = tmp_path / "tune.yaml"
    cfg.write_text("tune:\n  search_space:\n    training.learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}\n")
    out = tmp_path / "tune"
    over = tiny(None, *QUICK, "training.max_steps=2", "evaluation.eval_steps=2", "data.val_ratio=0.2",
                "output.experiment_name=tune")
    run_tune(str(cfg), 2, out=out, overrides=over)
    [parent] = parents(store, "tune")
    best = json.loads((out / "best.json").read_text())
    assert parent.data.metrics["best_value"] == pytest.approx(best["value"])
    assert parent.data.tags["best_run_id"] == member_id(out / f"trial-{best['trial']:04d}")
    assert parent.info.status == "FINISHED"
    # a second tune of the study continues its parent: its trial joins the first two
    run_tune(str(cfg), 1, out=out, overrides=over)
    assert [p.info.run_id for p in parents(store, "tune")] == [parent.info.run_id]
    trials = {store.get_run(member_id(out / f"trial-{n:04d}")).data.tags["hftraining.member"] for n in range(3)}
    assert trials == {"trial=0", "trial=1", "trial=2"}
    assert store.get_run(parent.info.run_id).data.metrics["n_trials"] == 3
    # --trials 0 (the report only) writes its report whatever the group file holds when mlflow is not asked for
    (out / "tracking_group.json").write_text('{"mlflow": "x"}')
    written = (out / "best.json").read_text()
    (out / "best.json").unlink()
    run_tune(str(cfg), 0, out=out, overrides=[*over, "output.report_to=[jsonl]"])
    assert json.loads((out / "best.json").read_text())["trial"] == json.loads(written)["trial"]


# ---------------------------------------------------------------------------------- the world size a run trained with


def _card_meta(run):
    from hftraining.eval.model_card import card_meta

    return card_meta(run / "final" / "README.md")


def test_card_and_report_state_the_processes_and_the_batch_of_an_optimizer_step(tmp_path):
    """data.batch_size is per process: the card and the report say how many processes trained and the
    batch one optimizer step averaged over (batch × accumulation × world size), read from the run's
    newest checkpoint, which records its ranks."""
    from hftraining.eval.report import write_report

    run = tmp_path / "run"
    assert main(["train", *tiny(run, *QUICK[:-1], "training.max_steps=2", "training.gradient_accumulation_steps=2")]) == 0
    meta = _card_meta(run)
    assert (meta["world_size"], meta["effective_batch"], meta["effective_batch_unit"]) == (1, 64, "windows")
    card = (run / "final" / "README.md").read_text()
    assert "| effective batch | 64 windows per optimizer step: 32 per micro-batch × 2 accumulation steps × 1 process |" in card
    # a run whose last stretch trained under torchrun with 3 processes (its checkpoint says so)
    [state] = (run / "checkpoints").glob("step-*/trainer_state.json")
    saved = json.loads(state.read_text())
    saved["rng"]["world_size"] = 3
    state.write_text(json.dumps(saved))
    write_report(tmp_path / "again", run_dir=run)
    text = (tmp_path / "again" / "report.md").read_text()
    assert "| processes (world size) | 3 |" in text
    assert "192 windows per optimizer step: 32 per micro-batch × 2 accumulation steps × 3 processes" in text


@pytest.mark.slow
def test_a_torchrun_run_records_its_world_size_in_card_and_report(tmp_path):
    """Two processes under torchrun (gloo, CPU): the card's front matter and key config, and the report,
    give the world size 2 and the batch of an optimizer step (25 s)."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "hftraining", "train", *tiny(run, *QUICK[:-1], "training.max_steps=2",
                                                              "training.gradient_accumulation_steps=2",
                                                              "evaluation.report=true")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = _card_meta(run)
    assert (meta["world_size"], meta["effective_batch"]) == (2, 128)
    for path in (run / "final" / "README.md", run / "report.md"):
        assert "128 windows per optimizer step: 32 per micro-batch × 2 accumulation steps × 2 processes" in path.read_text()
