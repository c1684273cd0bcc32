"""``train --seeds N --resume`` compares a finished seed with the seeds it trains now by what their settings
do: one precision or portfolio spelled two ways resumes, and another batch or augmentation is refused."""

import json
import shutil

from hftraining.cli import main
from conftest import tiny  # noqa: E402


def _args(root, *extra):
    return tiny(root, "model.hidden_size=8", "training.max_steps=2", "evaluation.eval_steps=0",
                "evaluation.report=false", "evaluation.baseline_max_windows=200", *extra)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _stop_after_seed_0(root):
    """As a --seeds 2 run stopped before its second seed began: seed-0 finished and scored, no seed-1 or ensemble."""
    shutil.rmtree(root / "seed-1")
    shutil.rmtree(root / "ensemble")


def test_a_resume_spelling_the_same_precision_or_portfolio_otherwise_trains_the_missing_seed(tmp_path, capsys):
    """seed-0 trained in bf16 by training.use_mixed_precision=true; a resume given training.precision=bf16 (the
    same precision) was refused as if seed-1 would train in another one, and so was
    evaluation.backtest_portfolio=per_symbol beside seeds scored under auto (per_symbol for a return label).
    Now both resume; a precision that does differ is still refused, named as the precision each trains in."""
    root = tmp_path / "run"
    assert main(["train", "--seeds", "2", *_args(root, "training.use_mixed_precision=true")]) == 0
    _stop_after_seed_0(root)
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *_args(root, "training.precision=bf16"), "--resume"]) == 0, \
        capsys.readouterr().err
    saved = json.loads((root / "seed-1" / "config.json").read_text())["training"]
    assert saved["precision"] == "bf16" and (root / "ensemble" / "seeds.json").is_file()
    _stop_after_seed_0(root)
    assert main(["train", "--seeds", "2", *_args(root, "training.precision=bf16", "evaluation.backtest_portfolio=per_symbol"),
                 "--resume"]) == 0, capsys.readouterr().err
    evals = [json.loads((root / f"seed-{k}" / "eval.json").read_text()) for k in range(2)]
    assert evals[0]["n_windows"] == evals[1]["n_windows"] and (root / "ensemble" / "seeds.json").is_file()
    _stop_after_seed_0(root)
    before = _listing(root)
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *_args(root), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "finished with training.precision='bf16'" in err[0] \
        and "seed-1 would be trained with training.precision='fp32'" in err[0], err
    assert _listing(root) == before


def test_a_resume_that_trains_a_seed_on_another_batch_or_augmentation_is_refused(tmp_path, capsys):
    """seed-0 finished with 32 windows a step; a resume given data.batch_size=16 trained seed-1 on batches of
    16 and put both in one ensemble and one seeds.json, exit 0 (data.augment_noise_std alike): the members
    differed in more than the seed. Now: one line naming the batch of a step of each and the setting to resume
    with, exit 2, nothing trained; then the finished seed's batch resumes."""
    root = tmp_path / "run"
    assert main(["train", "--seeds", "2", *_args(root)]) == 0
    _stop_after_seed_0(root)
    before = _listing(root)
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *_args(root, "data.batch_size=16"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (f"hftraining: error: --seeds 2: {root / 'seed-0'} is finished with the batch of an optimizer step "
                   "(32 windows per optimizer step: 32 per micro-batch × 1 accumulation step × 1 process), which a resume "
                   "leaves as it is, while seed-1 would be trained with the batch of an optimizer step (16 windows per "
                   "optimizer step: 16 per micro-batch × 1 accumulation step × 1 process): the seeds would differ in more "
                   "than training.seed (seeds.json would spread figures of unlike runs); resume with data.batch_size=32, "
                   "or start over with output.overwrite=true\n"), err
    assert main(["train", "--seeds", "2", *_args(root, "data.batch_size=16", "training.gradient_accumulation_steps=2"),
                 "--resume"]) == 0, capsys.readouterr().err  # 16 × 2: the same 32 windows a step
    _stop_after_seed_0(root)
    before = _listing(root)
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *_args(root, "data.augment_noise_std=0.1"), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "finished with data.augment_noise_std=0.0" in err[0] \
        and "seed-1 would be trained with data.augment_noise_std=0.1" in err[0], err
    assert _listing(root) == before
