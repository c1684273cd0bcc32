"""What the report, the seeds' summary and the walk-forward tell a user: the data's warnings in the report,
the baseline the seeds are compared with, each walk-forward note said once, an ensemble's method and members."""

import html
import json
from pathlib import Path

import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.eval.report import md_text
from hftraining.workflows.seeds import format_seed_summary, seed_summary, train_seeds
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "hftraining" / "sample_data"
QUICK = ("training.max_steps=4", "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.baseline_max_windows=200")



def warned_folder(d: Path, stamped: str = "WPM", holed: str = "NIO") -> Path:
    """Folder ``d`` of price files that draw data_report.json's warnings: AEM as bundled, WPM's daily bars
    stamped at 05:00 UTC under symbol ``stamped`` (mixed_stamps), NIO with a three-month hole under symbol
    ``holed`` (long_gaps; a long file with a symbol column where that is not the file's name) and an
    unreadable ``BIDU.csv.zip`` (unread_files)."""
    d.mkdir()
    pd.read_csv(SAMPLE / "AEM.csv").to_csv(d / "AEM.csv", index=False)
    w = pd.read_csv(SAMPLE / "WPM.csv")
    w["Date"] = w["Date"] + "T05:00:00+00:00"
    w.to_csv(d / f"{stamped}.csv", index=False)
    n = pd.read_csv(SAMPLE / "NIO.csv")
    n = n[(n["Date"] < "2021-02-01") | (n["Date"] > "2021-05-15")]
    if holed != "NIO":
        n.insert(0, "symbol", holed)
    n.to_csv(d / ("NIO.csv" if holed == "NIO" else "long.csv"), index=False)
    (d / "BIDU.csv.zip").write_bytes(b"PK")
    return d


@pytest.fixture(scope="module")
def warned_run(tmp_path_factory):
    """A tiny run on a folder whose data draw every warning of data_report.json: a file the readers do not take
    (``BIDU.csv.zip``: unread_files), daily bars stamped at 05:00 UTC beside others at 00:00 (mixed_stamps) and a
    symbol with a three-month hole (long_gaps); the symbols are named ``a&b`` and ``<b>x</b>``."""
    root = tmp_path_factory.mktemp("warned")
    d = warned_folder(root / "data", "a&b", "<b>x</b>")
    out = root / "run"
    train(load_config(None, tiny(out, "data.symbols=null", f"data.data_dir={d}", *QUICK)))
    return out


def test_the_report_states_the_data_warnings_of_its_data_report_once(warned_run):
    """long_gaps, unread_files and mixed_stamps were logged while the data were read and kept in
    data_report.json, but report.md and report.html said nothing of them: a reader of the report alone
    trusted windows read across a halt, a panel missing a file and days split in two."""
    rep = json.loads((warned_run / "data_report.json").read_text(encoding="utf-8"))
    assert {"long_gaps", "unread_files", "mixed_stamps"} <= set(rep)
    md = (warned_run / "report.md").read_text(encoding="utf-8")
    page = (warned_run / "report.html").read_text(encoding="utf-8")
    assert md.count("## Data warnings") == 1 and page.count("<h2>Data warnings</h2>") == 1
    for key in ("long_gaps", "unread_files", "mixed_stamps"):
        why = rep[key]["why"]
        assert md.count(md_text(f"{key}: {why}")) == 1, key
        assert page.count(html.escape(f"{key}: {why}")) == 1, key
    # the symbols' names are text, never markup, in either file (the warnings name them too)
    assert "<b>x</b>" not in page and "a&b" not in page.replace("a&amp;b", "")
    assert "<b>x</b>" not in md and "&lt;b>x&lt;/b>" in md


def test_a_run_without_data_warnings_has_no_such_part(tmp_path):
    out = tmp_path / "run"
    train(load_config(None, tiny(out, *QUICK, "evaluation.intervals=[]")))
    assert "Data warnings" not in (out / "report.md").read_text(encoding="utf-8")


def _eval(name: str, ratio: float) -> dict:
    return {"target": "return", "mse_vs_zero": ratio, "model": {"mse": ratio, "directional_accuracy": 0.5},
            "strongest_baseline": {"name": name, "mse_ratio": ratio, "dm": {"p_value": 0.5, "statistic": 0.3}}}


def test_the_seeds_line_names_the_baseline_it_compares_with():
    """"seeds: test MSE / strongest baseline's = 1.0300 ± ..." named no baseline: each seed's verdict names
    one, and the seeds' line must say which (and, where their verdicts differ, which in how many seeds)."""
    line = format_seed_summary(seed_summary([_eval("ridge", 1.02), _eval("ridge", 1.04)]))
    assert "over 2 seeds, against fitted:ridge;" in line, line
    line = format_seed_summary(seed_summary([_eval("ridge", 1.02), _eval("drift", 1.04), _eval("ridge", 1.01)]))
    assert "against fitted:ridge in 2 seeds, naive:drift in 1 seed;" in line, line


def test_each_walk_forward_note_is_said_once(tmp_path, capsys):
    """The pooled intervals note (purged k-fold: no fold has intervals) and the cut test block's backtest note
    were logged as warnings and printed again in the table: the same sentence twice in the terminal."""
    args = tiny(tmp_path / "wf", *QUICK, "evaluation.report=false", "evaluation.max_test_windows=100")
    assert main(["walkforward", "--folds", "2", "--scheme", "purged_kfold", *args]) == 0
    res = json.loads((tmp_path / "wf" / "walkforward" / "walkforward.json").read_text(encoding="utf-8"))
    captured = capsys.readouterr()
    said = captured.out + captured.err
    for key in ("intervals_note", "backtest_note"):
        note = res["pooled"][key]
        assert said.count(note) == 1, (key, said.count(note))


def test_an_ensembles_report_states_its_method_weights_and_members(tmp_path, capsys):
    """`hftraining evaluate <ensemble>` wrote a report of member:member-0 rows and nothing of what the
    ensemble is: how its members' forecasts combine, with what weights, and which runs they are."""
    root = train_seeds(load_config(None, tiny(tmp_path / "seeds", *QUICK, "evaluation.report=false",
                                              "evaluation.intervals=[]")), 2)
    ens = root / "ensemble"
    assert main(["evaluate", str(ens), "--set", "evaluation.report=true"]) == 0
    meta = json.loads((ens / "ensemble.json").read_text(encoding="utf-8"))
    md = (ens / "report.md").read_text(encoding="utf-8")
    part = md.split("\n## Ensemble\n", 1)[1].split("\n## ", 1)[0]
    assert "the mean, equal weights" in part and "method mean" in part
    for member, source in zip(meta["members"], meta["sources"]):
        row = next(line for line in part.splitlines() if line.startswith(f"| {md_text(Path(member).name)} |"))
        assert md_text(source) in row and "0.5000" in row
    page = (ens / "report.html").read_text(encoding="utf-8")
    assert "<h2>Ensemble</h2>" in page and all(html.escape(s) in page for s in meta["sources"])
    # the report of another split (in evaluations/<name>/) reads the same ensemble.json
    assert main(["evaluate", str(ens), "--split", "val", "--set", "evaluation.report=true"]) == 0
    other = [p for p in (ens / "evaluations").rglob("report.md")]
    assert len(other) == 1 and "\n## Ensemble\n" in other[0].read_text(encoding="utf-8")
