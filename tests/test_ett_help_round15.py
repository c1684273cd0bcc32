"""`hftraining bench ett --help` answers without importing torch, as every other `--help` does, and says what
the benchmark runs with: the datasets, models and defaults of hftraining.workflows.ett."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys

from hftraining import cli

from test_cli_round15 import HELP_SCRIPT as SCRIPT  # noqa: E402


def _parsers(parser, words=()):
    """(words, parser) of every command and subcommand under ``parser``."""
    yield list(words), parser
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*words, name))


def _help(commands: list[list[str]]) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_bench_ett_help_imports_no_torch():
    """`bench ett --help` imported the benchmark's training code for its dataset list and defaults: 5 to 9 s on
    this machine where every other `--help` takes about 1 s."""
    out = _help([["bench", "ett"]])["bench ett"]
    assert out["code"] == 0 and out["stdout"].startswith("usage: hftraining bench ett"), out
    assert "--dataset" in out["stdout"] and "ETTm2" in out["stdout"] and "--epochs" in out["stdout"]
    assert out["torch"] is False


def test_help_of_every_command_bench_ett_included_imports_no_torch():
    commands = [w for w, _ in _parsers(cli.build_parser())]
    assert ["bench", "ett"] in commands and ["data", "check"] in commands
    out = _help(commands)
    assert all(r["code"] == 0 and r["stdout"].startswith("usage: hftraining") for r in out.values()), out
    assert [name for name, r in out.items() if r["torch"]] == []


def test_bench_ett_flags_default_to_what_the_benchmark_runs_with():
    """The parser's description, choices and defaults are the benchmark's own: its module docstring, its
    datasets, the defaults of its TrainSettings and of run_suite."""
    from hftraining.workflows import ett

    p = dict((" ".join(w), s) for w, s in _parsers(cli.build_parser()))["bench ett"]
    assert p.description == ett.__doc__.split("\n\n")[0]
    args = cli.build_parser().parse_args(["bench", "ett", "--data", "d"])
    assert tuple(next(a for a in p._actions if a.dest == "dataset").choices) == ett.DATASETS
    assert ett.TrainSettings(args.epochs, args.batch_size, args.lr, args.weight_decay, args.patience,
                             args.evals_per_epoch, args.bf16, args.seed) == ett.TrainSettings()
    assert [f.name for f in dataclasses.fields(ett.TrainSettings)] == [
        "epochs", "batch_size", "lr", "weight_decay", "patience", "evals_per_epoch", "bf16", "seed"]
    suite = inspect.signature(ett.run_suite).parameters
    for flag, name in (("seq_len", "seq_len"), ("ridge", "ridge"), ("run_dir", "run_dir"), ("model", "model")):
        assert getattr(args, flag) == suite[name].default, flag
    single = inspect.signature(ett.run_ett).parameters
    assert (args.dataset, args.horizon) == ([single["dataset"].default], [single["horizon"].default])
    assert set(next(a for a in p._actions if a.dest == "model").choices) == {"patchtst", "dlinear", "linear"}
