"""What README.md tells a user they will find, checked against the code: every config key and every
command-line flag it names exists, the run folder holds the files and fields its table and text
name under those names, and `predict` gives the columns the Python API section lists."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import typing
from pathlib import Path

import pytest

from hftraining.cli import build_parser, main
from hftraining.core.config import Config, load_config
from hftraining.data.io import sample_data_dir
from hftraining.inference.forecaster import Forecaster
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
SECTIONS = tuple(f.name for f in dataclasses.fields(Config))
FILE_NAMES = {"safetensors", "onnx", "json", "yaml", "csv", "journal"}  # `model.safetensors`: a file, not a key


def _subparsers(parser):
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def _command_parser(words: list[str]):
    """The parser of `hftraining <words...>` (`data check`, `bench ett`), and how many words it took."""
    p, used = build_parser(), 0
    for w in words:
        try:
            subs = _subparsers(p)
        except StopIteration:
            break
        if w not in subs:
            break
        p, used = subs[w], used + 1
    return p, used


def _readme_command_lines() -> list[str]:
    """Every command line the README shows: lines of its code blocks and `inline spans` that run
    `hftraining`, from that word on (torchrun's own flags before `-m hftraining` are not ours)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`([^`\n]*hftraining [^`\n]*)`", README)
    out = []
    for line in lines:
        line = line.split("#")[0]
        i = line.find("hftraining ")
        if i >= 0 and "pip install" not in line:
            out.append(line[i + len("hftraining "):])
    return out


def _values(section) -> set[str]:
    """The literal values a section's keys take (`per_symbol` of `data.split`), which the config
    table names beside its keys."""
    hints, out = typing.get_type_hints(type(section)), set()
    stack = list(hints.values())
    while stack:
        t = stack.pop()
        args = typing.get_args(t)
        if typing.get_origin(t) is typing.Literal:
            out |= {a for a in args if isinstance(a, str)}
        else:
            stack += args
    return out


def _is_key(section, name: str, prefixes: list[str]) -> bool:
    keys = {f.name for f in dataclasses.fields(section)}
    return (name in keys or name in _values(section) or any(k.startswith(name) for k in keys if name.endswith("_"))
            or any(p + name in keys for p in prefixes))


def test_every_config_key_the_readme_names_exists():
    """`section.key` in the text and each key of the config table are keys of the typed tree (a
    README key that was renamed would be an 'unknown key' error for the user who copies it);
    `lightgbm_*` (`learning_rate`, ...) names the keys `lightgbm_learning_rate`, ..."""
    cfg = Config()
    text = README.replace("training.max_stepz", "")  # the README's example of an unknown key
    named = set(re.findall(r"\b((?:%s)\.[a-z][a-z0-9_]*\*?)" % "|".join(SECTIONS), text))
    missing = sorted(k for k in named if k.split(".")[1] not in FILE_NAMES
                     and not _is_key(getattr(cfg, k.split(".")[0]), k.split(".")[1].rstrip("*"), []))
    for sec, row in re.findall(r"^\| `(%s)` \| (.*)$" % "|".join(SECTIONS), text, flags=re.M):
        section = getattr(cfg, sec)
        prefixes = re.findall(r"`([a-z][a-z0-9]*_)\*`", row)
        for key in re.findall(r"`([a-z][a-z0-9_]*)\*?`", row):
            if "_" in key and not _is_key(section, key, prefixes):  # other values (`calendar`, `raw`): one word
                missing.append(f"{sec}.{key}")
    assert not missing, f"README names config keys that do not exist: {missing}"


def test_every_flag_the_readme_shows_exists():
    """Each `--flag` of a README command line is an option of that subcommand."""
    unknown, checked = [], 0
    for line in _readme_command_lines():
        words = line.replace("[", " ").replace("]", " ").replace("|", " ").split()
        parser, used = _command_parser(words)
        if used == 0:
            continue
        options = {s for a in parser._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", " ".join(words[used:])):
            checked += 1
            if flag not in options:
                unknown.append(f"hftraining {' '.join(words[:used])} {flag}")
    assert checked > 40, "the README's command lines were not found"
    assert not unknown, f"README shows flags the commands do not take: {sorted(set(unknown))}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run with checkpoints, TensorBoard, intervals and a report, as `train` leaves it."""
    root = tmp_path_factory.mktemp("readme")
    data = root / "data"
    data.mkdir()
    for sym in ("AEM", "WPM"):
        shutil.copy(sample_data_dir() / f"{sym}.csv", data / f"{sym}.csv")
    overrides = tiny(root / "run", "training.max_steps=4", "training.save_steps=2", "training.logging_steps=2",
                     "evaluation.eval_steps=2", "output.tensorboard=true", f"data.data_dir={data}",
                     f"data.cache_dir={root / 'cache'}")
    train(load_config(None, overrides))
    return root / "run", data, overrides


def test_the_run_folder_holds_what_the_readme_table_lists(run):
    """The paths of README's run-folder table (less those written only by optional tracking
    backends or by `evaluate`) and the files it lists inside `final/`."""
    run_dir = run[0]
    table = README.split("### The run folder", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (`[^|]*`) \| (.*)$", table, flags=re.M)
    assert rows, "README's run-folder table was not found"
    missing = []
    for paths, what in rows:
        if "backends" in what or "hftraining evaluate" in what:
            continue  # metrics.csv, mlruns.db, ... (output.report_to); evaluations/<name>/
        for path in re.findall(r"`([^`]+)`", paths):
            pattern = path.rstrip("/").replace("NNNNNNNN", "[0-9]" * 8)
            if not list(run_dir.glob(pattern)):
                missing.append(path)
    final_row = next(what for paths, what in rows if paths == "`final/`")
    top = {path for paths, _ in rows for path in re.findall(r"`([^`]+)`", paths)}
    for name in re.findall(r"`([a-zA-Z_]+\.(?:json|safetensors|md))`", final_row):
        if name not in top and not (run_dir / "final" / name).is_file():  # not "the verdict as in `eval.json`"
            missing.append(f"final/{name}")
    assert not missing, f"README's run-folder table names paths the run does not write: {missing}"


def test_the_fields_the_readme_names_are_written_under_those_names(run):
    run_dir = run[0]
    ev = json.loads((run_dir / "eval.json").read_text())
    # "Beside every directional accuracy (console, eval.json `directional_p`, ...)"; cross-section IC and rank IC
    assert "directional_p" in ev["model"] and {"ic", "rank_ic"} <= set(ev["model"]["cross_section"])
    assert {"dm", "dm_vs_zero", "per_step", "per_symbol", "strongest_baseline", "verdict", "backtest"} <= set(ev)
    # "eval.json's `unbounded` gives its share of the intervals"
    assert all("unbounded" in level for level in ev["intervals"]["levels"].values())
    # metrics.jsonl: `step`, `loss`, `learning_rate`, `grad_norm`, `samples_per_second`, and `eval_*`
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any({"step", "loss", "learning_rate", "grad_norm", "samples_per_second"} <= set(r) for r in records)
    assert any(k.startswith("eval_") for r in records for k in r)
    # data_report.json: rows per file and rule, skipped symbols, the split, windows per split, volume, close
    report = json.loads((run_dir / "data_report.json").read_text())
    assert {"skipped_symbols", "dropped_features", "split", "windows"} <= set(report)
    assert {"mode", "val_from", "test_from", "symbols"} <= set(report["split"])
    assert set(report["windows"]) == {"train", "val", "test"}
    for f in report["files"]:
        assert {"rows_in", "rows_kept", "rows_dropped", "rules", "volume_empty", "close_column"} <= set(f)
    # preprocessing.json: `source_rows` (each symbol's count, last date, digest), `label_version`
    prep = json.loads((run_dir / "final" / "preprocessing.json").read_text())
    assert "label_version" in prep
    assert all({"rows", "last", "digest"} <= set(v) for v in prep["source_rows"].values())


def test_predict_gives_the_columns_the_python_api_section_lists(run):
    """`fc.predict(...)  # symbol, as_of, step, forecast_return, ..., lower_80 ... upper_90` ."""
    run_dir, data, _ = run
    listed = re.search(r"table = fc\.predict\(\"my_prices/\"\)\s+#\s*(.*)", README).group(1)
    names = [n.strip() for n in listed.split(",") if re.fullmatch(r"[a-z_0-9]+", n.strip())]
    assert "forecast_return" in names
    table = Forecaster.from_pretrained(run_dir).predict(str(data))
    assert list(table.columns)[: len(names)] == names


def test_resume_of_a_finished_run_copied_without_its_file_times_scores_nothing(run, tmp_path, capsys):
    """README: `--resume` of a finished run "checks the config and data as any resume does, then trains
    and scores nothing and says so (exit 0)"; a run folder copied as `cp -r` copies it is still finished."""
    run_dir, _, overrides = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, copy_function=shutil.copyfile)
    card, scored = copy / "final" / "README.md", copy / "eval.json"
    t = card.stat().st_mtime_ns
    os.utime(scored, ns=(t + 10**9, t + 10**9))  # cp -r wrote final/ before eval.json
    before = scored.read_bytes()
    assert main(["train", "--resume", *overrides, f"output.output_dir={copy}"]) == 0
    assert "scores nothing" in capsys.readouterr().err
    assert scored.read_bytes() == before and scored.stat().st_mtime_ns == t + 10**9


def test_overrides_on_both_sides_of_a_flag_are_overrides(capsys):
    """`hftraining train --config q.yaml training.max_steps=3 --resume output.output_dir=x` is a
    README-style command line; its last override is read as one (here, an unknown key, named)."""
    with _returns() as rc:
        rc.value = main(["train", "training.max_steps=3", "--resume", "training.max_stepz=1"])
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err and "training.max_stepz: unknown key" in err


class _returns:
    """Catch argparse's SystemExit as the exit code `main` would have returned."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is SystemExit:
            self.value = exc.code
            return True
        return False


def test_report_dir_with_report_off_by_set_names_the_set(run, capsys):
    """`--report-dir` with `evaluation.report=false` is an error (README); when the false came from
    `--set`, the line says so rather than calling it the run's setting."""
    rc = main(["evaluate", str(run[0]), "--set", "evaluation.report=false", "--report-dir", "x"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "the run's setting" not in err and "--set" in err
