"""``hftraining train --seeds N`` and a single ``hftraining train`` never share a run folder: the
seeds' ``seed-<k>/`` folders and a single run's files (config.json, final/, eval.json, ...) would
otherwise lie mixed in one folder, which ``evaluate <run>/ensemble`` then reads as one run."""

from hftraining.cli import main
from conftest import tiny  # noqa: E402


def _args(root, *extra):
    return tiny(root, "model.hidden_size=8", "training.max_steps=2", "evaluation.eval_steps=0",
                "evaluation.report=false", "evaluation.baseline_max_windows=200", *extra)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_single_run_is_not_mixed_into_a_seeds_run(tmp_path, capsys):
    """A single run into the folder of a --seeds run wrote its config.json, final/ and eval.json beside
    seed-0/, seed-1/ and ensemble/. Now: one line naming the folder and output.overwrite, exit 2,
    nothing touched; with output.overwrite=true the seeds go and the single run stands alone."""
    root = tmp_path / "run"
    assert main(["train", "--seeds", "2", *_args(root)]) == 0
    before = _listing(root)
    capsys.readouterr()
    for extra in ([], ["training.resume_from_checkpoint=auto"]):  # --resume: nothing at the top to resume
        assert main(["train", *_args(root, *extra)]) == 2
        assert capsys.readouterr().err == (
            f"hftraining: error: {root}: holds a train --seeds run (seed-0, seed-1, ensemble); a single run would be "
            "mixed into it: start over with output.overwrite=true, or give another output.output_dir\n")
        assert _listing(root) == before
    assert main(["train", *_args(root, "output.overwrite=true")]) == 0
    names = sorted(p.name for p in root.iterdir())
    assert not any(n.startswith("seed-") or n == "ensemble" for n in names) and {"config.json", "final"} <= set(names)
    # what output.overwrite removes is said, never silent (the quickstart config sets it)
    assert f"output.overwrite: removing the earlier run in {root} (seed-0, seed-1, ensemble)" in capsys.readouterr().err
    assert main(["train", *_args(root, "output.overwrite=true")]) == 0
    assert f"output.overwrite: starting over in {root}; the earlier run's checkpoints" in capsys.readouterr().err


def test_seeds_are_not_mixed_into_a_single_run_or_an_earlier_seeds_run(tmp_path, capsys):
    """The reverse: --seeds into a single run's folder wrote seed-<k>/ beside its files; and --seeds 1
    after --seeds 2 (with output.overwrite=true) left seed-1/ and the old ensemble/ beside the new seed-0/."""
    root = tmp_path / "run"
    assert main(["train", *_args(root, "evaluation.report=true")]) == 0  # the report's files are the run's too
    before = _listing(root)
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *_args(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hftraining: error: {root}: holds a single training run (config.json, ") and err.count("\n") == 1
    assert "start over with output.overwrite=true, or give another output.output_dir" in err
    assert _listing(root) == before
    assert main(["train", "--seeds", "2", *_args(root, "output.overwrite=true")]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["ensemble", "seed-0", "seed-1"]
    capsys.readouterr()
    assert main(["train", "--seeds", "1", *_args(root)]) == 2
    assert capsys.readouterr().err == (f"hftraining: error: {root}: holds an earlier train --seeds run (seed-0, "
                                       "seed-1, ensemble); start over with output.overwrite=true, or give another "
                                       "output.output_dir\n")
    assert main(["train", "--seeds", "1", *_args(root, "output.overwrite=true")]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["seed-0"]


def test_a_resumed_seeds_run_keeps_its_seeds_and_rebuilds_its_ensemble(tmp_path, capsys):
    """Resuming --seeds 2 as --seeds 1 left seed-1/ and the earlier 2-member ensemble/ in place, read by
    `evaluate <run>` as this run's. Now: one line naming --seeds and the extra seed, exit 2, nothing
    touched; resumed with its own --seeds, ensemble/ is rebuilt from exactly its seeds, replaced whole."""
    import json

    root = tmp_path / "run"
    assert main(["train", "--seeds", "2", *_args(root)]) == 0
    (root / "ensemble" / "stale.json").write_text("{}")  # a file of an earlier ensemble
    before = _listing(root)
    capsys.readouterr()
    assert main(["train", "--seeds", "1", *_args(root, "training.resume_from_checkpoint=auto")]) == 2
    assert capsys.readouterr().err == (
        f"hftraining: error: --seeds 1: {root} holds seeds of an earlier train --seeds run beyond seed-0 (seed-1), "
        "which a resumed run would leave beside its ensemble: resume with the earlier --seeds, or start over with "
        "output.overwrite=true and without training.resume_from_checkpoint\n")
    assert _listing(root) == before
    assert main(["train", "--seeds", "2", *_args(root), "--resume"]) == 0  # the CLI refused --seeds with --resume
    assert sorted(p.name for p in root.iterdir()) == ["ensemble", "seed-0", "seed-1"]
    assert not (root / "ensemble" / "stale.json").exists()
    meta = json.loads((root / "ensemble" / "ensemble.json").read_text())
    assert meta["sources"] == [str(root / f"seed-{k}" / "final") for k in range(2)]


def test_a_seeds_run_s_config_mistake_is_said_before_any_data_is_read(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    assert main(["train", "--seeds", "2", *_args(tmp_path / "run", f"data.data_dir={missing}",
                                                 "training.optimizer=adamx")]) == 2
    assert "training.optimizer: unknown" in capsys.readouterr().err


def test_the_seeds_test_figures_and_their_spread_are_written_beside_the_ensemble(tmp_path, capsys):
    """How much of a result is the seed's: ensemble/seeds.json holds each seed's test figures, read from
    its eval.json, and their mean, standard deviation, min and max; the ensemble still loads."""
    import json
    import math

    import numpy as np

    from hftraining.inference.forecaster import Forecaster

    root = tmp_path / "run"
    assert main(["train", "--seeds", "3", *_args(root)]) == 0
    summary = json.loads((root / "ensemble" / "seeds.json").read_text())
    evals = [json.loads((root / f"seed-{k}" / "eval.json").read_text()) for k in range(3)]
    ratios = [ev["strongest_baseline"]["mse_ratio"] for ev in evals]
    assert summary["n_seeds"] == 3 and [s["mse_vs_strongest"] for s in summary["seeds"]] == ratios
    assert len(set(ratios)) == 3  # the seeds differ
    spread = summary["spread"]["mse_vs_strongest"]
    assert spread["mean"] == np.mean(ratios) and spread["std"] == np.std(ratios, ddof=1)
    assert (spread["min"], spread["max"]) == (min(ratios), max(ratios))
    assert [s["mse"] for s in summary["seeds"]] == [ev["model"]["mse"] for ev in evals]
    assert summary["strongest_baseline"] == [ev["strongest_baseline"]["name"] for ev in evals]
    better = [k for k, ev in enumerate(evals)
              if ev["strongest_baseline"]["mse_ratio"] < 1 and ev["strongest_baseline"]["dm"]["p_value"] < 0.05
              and ev["strongest_baseline"]["dm"]["statistic"] < 0]
    assert summary["significantly_better"] == better
    assert all(v is None or math.isfinite(v) for s in summary["seeds"] for v in s.values())
    err = capsys.readouterr().err
    assert f"seeds: test MSE / strongest baseline's = {np.mean(ratios):.4f} ± " in err and "of 3 significantly better" in err
    assert len(Forecaster.from_pretrained(root / "ensemble").model.members) == 3


def test_a_seed_counts_as_better_only_where_its_verdict_says_the_model_beats_its_baseline():
    """seeds.json's ``significantly_better`` follows each seed's verdict: an MSE ratio below 1 beside a
    Diebold–Mariano statistic of the other sign is no claim, and a cross-sectional label is judged by
    its paired rank-IC test against the baseline its verdict names, not by MSE."""
    from hftraining.workflows.seeds import seed_summary

    def ev(ratio, p, stat, target="return", cs=None):
        out = {"target": target, "strongest_baseline": {"name": "drift", "mse_ratio": ratio,
                                                         "dm": {"p_value": p, "statistic": stat}}}
        if cs is not None:
            out["cross_section_strongest"] = {"name": "drift", "difference": {"mean": cs[0], "p_value": cs[1]}}
        return out

    evals = [ev(0.9, 0.01, -3.0), ev(0.9, 0.01, 3.0), ev(0.9, 0.2, -1.0), ev(1.1, 0.01, 3.0),
             ev(0.9, 0.01, -3.0, "cs_rank", cs=(-0.01, 0.01)), ev(1.1, 0.5, 1.0, "cs_rank", cs=(0.02, 0.01))]
    assert seed_summary(evals)["significantly_better"] == [0, 5]


def test_seeds_into_a_run_folder_being_trained_are_refused(tmp_path, capsys):
    """A second train --seeds into a folder another process is training (its output.overwrite removed the
    first one's seed-0 while it trained) is a one-line error, exit 2, before anything is read or removed."""
    from hftraining.workflows.train_run import run_folder_lock

    root = tmp_path / "run"
    (root / "seed-0").mkdir(parents=True)
    (root / "seed-0" / "config.json").write_text("{}")
    with run_folder_lock(root):
        assert main(["train", "--seeds", "2", *_args(root), "output.overwrite=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hftraining: error: {root}: another hftraining process is training into this run folder; wait "
                   "for it to end, or give another output.output_dir"], err
    assert (root / "seed-0" / "config.json").read_text() == "{}"
