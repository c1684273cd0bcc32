"""The command line as a script sees it: `bench --help` (and `bench` alone) answers without importing torch,
as every other `--help` does; a flag where a command is awaited (`hftraining --version`) is named, not said
as a missing command; an error quoting a name that holds a line break is still one line on stderr."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from hftraining import cli
from hftraining.data.io import sample_data_dir
from hftraining.train.logging import log

SAMPLE = str(sample_data_dir() / "AEM.csv")

# each command given (JSON argv) → its --help and whether torch was imported (tests/test_ett_help_round15.py)
HELP_SCRIPT = """
import contextlib, io, json, sys
from hftraining.cli import main
out = {}
for words in json.loads(sys.argv[1]):
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            main([*words, "--help"])
        code = None
    except SystemExit as e:
        code = e.code
    out[" ".join(words)] = {"code": code, "stdout": text.getvalue(), "torch": "torch" in sys.modules}
print(json.dumps(out))
"""


def test_bench_alone_says_the_suite_is_missing_without_importing_torch():
    script = ("import sys\nfrom hftraining.cli import main\ntry:\n    main(['bench'])\nexcept SystemExit as e:\n"
              "    print(e.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], (done.stdout, done.stderr[-2000:])
    assert done.stderr == "hftraining bench: error: the following arguments are required: suite (see --help)\n"


def _run(argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``main(argv)`` → (exit code, stdout, stderr), argparse's own exits included."""
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, prog, flag", [
    (["--version"], "hftraining", "--version"),
    (["--bogus"], "hftraining", "--bogus"),
    (["data", "--json"], "hftraining data", "--json"),
    (["bench", "--quick"], "hftraining bench", "--quick"),
    (["evaluate", "--jsn"], "hftraining evaluate", "--jsn"),
])
def test_a_flag_where_a_command_is_awaited_is_named(argv, prog, flag, capsys, monkeypatch):
    """`hftraining --version` said "the following arguments are required: command", naming neither the flag
    nor that it is unknown, where `hftraining train --version` names it."""
    code, out, err = _run(argv, capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert err == f"{prog}: error: unrecognized arguments: {flag} (see --help)\n"


@pytest.mark.parametrize("argv, said", [
    (["evaluate", "--json"], "the following arguments are required: RUN_OR_MODEL_DIR"),  # a known flag
    (["evaluate", "--js"], "the following arguments are required: RUN_OR_MODEL_DIR"),  # --json abbreviated
    (["data"], "the following arguments are required: data_command"),
])
def test_a_missing_command_or_argument_beside_known_flags_is_still_said_so(argv, said, capsys, monkeypatch):
    code, out, err = _run(argv, capsys, monkeypatch)
    assert (code, out) == (2, "") and said in err and err.count("\n") == 1


def test_an_error_quoting_a_line_break_is_one_line(tmp_path, capsys, monkeypatch):
    """A path holding a line break (a name from a script's loop) split the error over two lines on stderr; a
    script reading the one error line read half of it."""
    odd = tmp_path / "prices\nold"
    code, out, err = _run(["data", "features", str(odd), "--out", str(tmp_path / "f.csv")], capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert err == f"hftraining: error: {tmp_path}/prices old: no such file or folder\n"
    # data check: the good file is still checked, each missing one a line of its own (the JSON keeps the name)
    other = tmp_path / "a\nb.csv"
    code, out, err = _run(["data", "check", str(odd), SAMPLE, str(other), "--json"], capsys, monkeypatch)
    assert code == 2 and [f["file"] for f in json.loads(out)["files"]] == [SAMPLE]
    assert json.loads(out)["errors"] == [f"{odd}: no such file or folder", f"{other}: no such file or folder"]
    assert err.splitlines() == [f"hftraining: error: {tmp_path}/prices old: no such file or folder",
                                f"hftraining: error: {tmp_path}/a b.csv: no such file or folder"]
    code, out, err = _run(["list", "features", "--x\ny"], capsys, monkeypatch)
    assert (code, out, err) == (2, "", "hftraining: error: unrecognized arguments: --x y (see --help)\n")


def test_a_command_s_help_still_lists_bench_ett_flags(capsys):
    """`bench ett --help` still builds that suite's parser (its flags come from the ETT protocol)."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit) as e:
        cli.main(["bench", "ett", "--help"])
    assert e.value.code == 0 and "--dataset" in text.getvalue() and "--horizon" in text.getvalue()


@pytest.mark.parametrize("freq", ["0D", "0min", "0B"])
def test_a_synth_frequency_of_no_length_is_one_line(tmp_path, capsys, freq):
    """`data synth --freq 0D` stopped in a ZeroDivisionError (0min, 0B: arrays of other lengths), exit 1."""
    assert cli.main(["data", "synth", "--symbols", "2", "--rows", "50", "--freq", freq, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hftraining: error: synth: --freq {freq!r}: must be a positive frequency (e.g. 1min, 5min, 1h, B, D)"]
    assert not (tmp_path / "s").exists()
