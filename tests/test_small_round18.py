"""``data synth`` writes its set whole or not at all and replaces an earlier set whole; ``export`` names
``--out`` when it cannot write there; a checkpoint written before checksums without its sampler state is a
one-line error naming the file; ``predict --out -`` writes the CSV to standard output."""

from __future__ import annotations

import errno
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny
from hftraining.cli import main
from hftraining.core.errors import DataError
from hftraining.data.io import resolve_paths, sample_data_dir
from hftraining.data.synth import write_synth
from hftraining.data.windows import EpochSampler
from hftraining.train.logging import log

SAMPLE = sample_data_dir() / "AEM.csv"


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (hidden ones too) → its bytes (None: a folder)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _fails_at(method: str, n: int, exc: BaseException, monkeypatch) -> None:
    """``DataFrame.<method>`` writes as before, until its ``n``-th call: that one writes a few bytes to its path and
    raises ``exc`` (a disk that filled up, Ctrl-C)."""
    real = getattr(pd.DataFrame, method)
    calls = [0]

    def write(self, path, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            with open(path, "wb") as f:
                f.write(b"timestamp,op")
            raise exc
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, method, write)


# --- data synth: the set whole or not at all ------------------------------------------------------------------


@pytest.mark.parametrize("fmt,method", [("csv", "to_csv"), ("parquet", "to_parquet"), ("parquet-dataset", "to_parquet")])
@pytest.mark.parametrize("earlier", [False, True], ids=["new-folder", "earlier-set"])
def test_synth_on_a_full_disk_leaves_the_folder_as_it_was(tmp_path, monkeypatch, capsys, fmt, method, earlier):
    """A disk that fills at the third of 5 files: exit 2, but SYN000 and SYN001 of the new set stayed (beside the
    earlier set's SYN002..), a partial or mixed data set that a later ``train`` read without a word. Now the
    folder holds what it held before: nothing new, an earlier set and the user's other files untouched."""
    out = tmp_path / "d"
    if earlier:
        write_synth(out, 3, 40, seed=1, fmt=fmt)
        (out / "notes.txt").write_text("mine")
    before = _tree(out) if earlier else None
    _fails_at(method, 3, OSError(errno.ENOSPC, "No space left on device"), monkeypatch)
    rc = main(["data", "synth", "--symbols", "5", "--rows", "60", "--format", fmt, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    third = {"csv": "SYN002.csv", "parquet": "SYN002.parquet", "parquet-dataset": "symbol=SYN002/part-0.parquet"}[fmt]
    assert err.startswith(f"hftraining: error: {out / third}: cannot write (No space left on device)"), err
    if earlier:
        assert _tree(out) == before
    else:
        assert not out.exists() or _tree(out) == {}


@pytest.mark.parametrize("fmt,method", [("csv", "to_csv"), ("parquet-dataset", "to_parquet")])
def test_synth_interrupted_at_a_later_file_leaves_the_earlier_set_as_it_was(tmp_path, monkeypatch, fmt, method):
    """Ctrl-C at the third symbol: SYN000 and SYN001 were already the new ones, SYN002 the earlier one's."""
    out = tmp_path / "d"
    write_synth(out, 3, 40, seed=1, fmt=fmt)
    before = _tree(out)
    _fails_at(method, 3, KeyboardInterrupt(), monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write_synth(out, 3, 60, seed=2, fmt=fmt)
    assert _tree(out) == before


@pytest.mark.parametrize("first,second", [("csv", "csv"), ("parquet-dataset", "csv"), ("csv", "parquet-dataset"),
                                          ("csv", "parquet")])
def test_synth_replaces_an_earlier_set_whole(tmp_path, capsys, first, second):
    """``data synth --symbols 3`` then ``--symbols 2 --freq 1h`` into one folder said "wrote 2 file(s) of 2
    symbol(s)", but the folder held 3: SYN002 of the first set (another seed, daily bars) was read with the new
    ones; a csv set written over a Parquet dataset was not read at all (a folder of symbol= folders is read by
    those). Now the folder holds the new set alone, and the user's file that is no data."""
    out = tmp_path / "d"
    assert main(["data", "synth", "--symbols", "3", "--rows", "40", "--format", first, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["data", "synth", "--symbols", "2", "--rows", "50", "--freq", "1h", "--seed", "5", "--format", second,
                 "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    new = {"csv": ["SYN000.csv", "SYN001.csv"], "parquet": ["SYN000.parquet", "SYN001.parquet"],
           "parquet-dataset": ["symbol=SYN000", "symbol=SYN001"]}[second]
    assert names == sorted([*new, "notes.txt"])
    assert (out / "notes.txt").read_text() == "mine"
    if second != "parquet-dataset":
        files = resolve_paths(str(out))
        assert [f.name for f in files] == new
        frames = [pd.read_csv(f) if second == "csv" else pd.read_parquet(f) for f in files]
        assert all(len(f) == 50 for f in frames)


def test_synth_removes_what_a_killed_synth_left_in_the_folder(tmp_path):
    """A synth killed while writing leaves its hidden folder in --out; the next one removes it (a live one's
    is kept: another synth writing into the same folder now)."""
    out = tmp_path / "d"
    write_synth(out, 1, 30)
    dead = out / ".synth-tmp-999999999"
    (dead / "symbol=SYN000").mkdir(parents=True)
    (dead / "SYN000.csv").write_text("half")
    write_synth(out, 2, 30)
    assert sorted(p.name for p in out.iterdir()) == ["SYN000.csv", "SYN001.csv"]


# --- export / predict: a model folder ------------------------------------------------------------------------------


from test_export_round17 import model_dir  # noqa: E402,F401  (a model folder with random weights)


def test_export_that_cannot_write_names_out_not_its_temporary_file(model_dir, tmp_path, monkeypatch, capsys):
    """A folder made read-only: the error named the hidden file the graph is first written to
    (``ro/.m.onnx.tmp-3204.onnx: cannot write``), a name the user never gave. Now it names --out."""
    pytest.importorskip("onnxscript")
    import hftraining.inference.export as export

    def read_only(w, fc, path, out, check, evaluated):  # as the exporter's open of the file it writes fails
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(export, "_write_checked", read_only)
    out = tmp_path / "ro" / "m.onnx"
    out.parent.mkdir()
    rc = main(["export", str(model_dir), "--format", "onnx", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.strip() == f"hftraining: error: --out {out}: cannot write (Read-only file system)", err
    assert list(out.parent.iterdir()) == []


def test_export_under_a_file_names_out_and_the_file(model_dir, tmp_path, capsys):
    """``--out notes/m.onnx`` where notes is a file: the error said ``notes: File exists`` and named no --out."""
    pytest.importorskip("onnxscript")
    (tmp_path / "notes").write_text("mine")
    out = tmp_path / "notes" / "m.onnx"
    rc = main(["export", str(model_dir), "--format", "onnx", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"hftraining: error: --out {out}: cannot write ({tmp_path / 'notes'}: "), err
    assert (tmp_path / "notes").read_text() == "mine"


def test_predict_out_dash_writes_the_csv_to_standard_output(model_dir, tmp_path, monkeypatch, capsys):
    """``predict --out -`` wrote a file named ``-`` in the working folder and printed "wrote 4 forecasts ... to -"
    on standard output; a pipe reading it (``--out - | consumer``) got that line, not the forecasts."""
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(model_dir), "--data", str(SAMPLE)]) == 0
    default = capsys.readouterr().out
    assert main(["predict", str(model_dir), "--data", str(SAMPLE), "--out", "-"]) == 0
    got = capsys.readouterr().out
    assert got == default
    table = pd.read_csv(io.StringIO(got))
    assert len(table) == 4 and list(table["symbol"].unique()) == ["AEM"]
    assert not (tmp_path / "-").exists()
    # a file named - is still written when named as a path
    assert main(["predict", str(model_dir), "--data", str(SAMPLE), "--out", "./-"]) == 0
    assert pd.read_csv(tmp_path / "-").equals(table)


# --- a checkpoint written before checksums without its sampler state ------------------------------------------------

COMMON = ("training.save_steps=4", "evaluation.eval_steps=4", "training.logging_steps=4", "output.report_to=[jsonl]",
          "evaluation.report=false", "training.use_mixed_precision=false")


def test_sampler_state_without_its_numbers_is_a_data_error():
    s = EpochSampler(100, 8, seed=3)
    for bad, says in [({}, "sampler has no seed"), ({"seed": 3, "epoch": 0}, "sampler has no position"),
                      ({"seed": "3", "epoch": 0, "position": 8}, "sampler's seed must be a whole number"),
                      ({"seed": 3, "epoch": -1, "position": 8}, "sampler's epoch must be a whole number"),
                      ({"seed": 3, "epoch": 0, "position": 8.0}, "sampler's position must be a whole number"),
                      ([3, 0, 8], "sampler must be an object")]:
        with pytest.raises(DataError, match=says):
            s.load_state_dict(bad)
    s.next_batch()
    state = s.state_dict()
    t = EpochSampler(100, 8, seed=9)
    t.load_state_dict(state)
    assert t.state_dict() == state and (t.next_batch() == s.next_batch()).all()


from test_review_checkpoint_round18 import legacy_run  # noqa: E402,F401  (a run whose checkpoint has no checksums)


@pytest.mark.parametrize("edit,says", [(lambda s: s.pop("sampler"), "sampler has no seed"),
                                       (lambda s: s["sampler"].pop("seed"), "sampler has no seed"),
                                       (lambda s: s["sampler"].update(position="8"), "sampler's position must be")],
                         ids=["no-sampler", "no-seed", "position-a-string"])
def test_resume_of_a_checkpoint_without_its_sampler_state_is_one_line_naming_the_file(legacy_run, tmp_path, monkeypatch,
                                                                                       capsys, edit, says):
    """A trainer_state.json without ``sampler`` (or its ``seed``): a ``KeyError: 'seed'`` traceback from the
    sampler, naming no file. Now one line naming trainer_state.json, exit 2."""
    resume_with_edited_state(legacy_run, tmp_path, monkeypatch, capsys, edit, says)


def resume_with_edited_state(legacy_run, tmp_path, monkeypatch, capsys, edit, says) -> None:
    """``train --resume`` of a copy of ``legacy_run`` whose trainer_state.json ``edit`` changed: exit 2 and one
    line naming that file, then ``says``."""
    run = tmp_path / "run"
    shutil.copytree(legacy_run, run)
    f = run / "checkpoints" / "step-00000004" / "trainer_state.json"
    state = json.loads(f.read_text(encoding="utf-8"))
    edit(state)
    f.write_text(json.dumps(state), encoding="utf-8")
    monkeypatch.setattr(log, "handlers", [h for h in log.handlers if not getattr(h, "_hft_console", False)])
    capsys.readouterr()
    rc = main(["train", "--resume", *tiny(run, *COMMON, "training.max_steps=8")])
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}: {err[-3000:]}"
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith(f"hftraining: error: {f}: {says}"), err[-3000:]
