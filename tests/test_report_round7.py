"""The report and the model card as a reader sees them: symbol names are whatever a file's ``symbol``
column holds (a ``|``, markup, a line break, a ``$``), run folders may have spaces in their names, and
neither may break a table, inject markup, fail the report or make a copied command wrong."""

import ast
import dataclasses
import html
import re
import shlex
import warnings
from pathlib import Path

import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.eval.model_card import card_meta
from hftraining.eval.report import write_report
from hftraining.workflows.evaluate_run import evaluate_and_backtest, evaluation_config
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

markdown = pytest.importorskip("markdown")  # a renderer to read the Markdown as a reader sees it

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "hftraining" / "sample_data"
NAMES = {"AEM": "A|B <b>x</b> & *y* [l](u)", "WPM": "W\nP `z` _q_ ~~s~~"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    frames = [pd.read_csv(SAMPLE / f"{s}.csv").assign(symbol=name) for s, name in NAMES.items()]
    (tmp / "data").mkdir()
    pd.concat(frames).to_csv(tmp / "data" / "panel.csv", index=False)
    folder = tmp / "my run"
    train(load_config(None, tiny(folder, f"data.data_dir={tmp / 'data'}", "data.symbols=null", "model.hidden_size=8",
                                 "data.sequence_length=16", "training.max_steps=2")))
    return folder


def _rows(md: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the Markdown table whose first header cell is ``first_header``, cells split at
    the pipes a renderer splits at (not the escaped ones)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    cells = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]  # noqa: E731
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append(cells(line))
    return cells(lines[start]), body


def _shown(cell: str) -> str:
    """What a Markdown renderer shows of one table cell (Python-Markdown, tables extension)."""
    out = markdown.markdown(f"| a |\n|---|\n| {cell} |", extensions=["tables"])
    assert "<script" not in out and "<b>" not in out and "<em>" not in out and "<a " not in out
    body = re.search(r"<td>(.*)</td>", out, re.S).group(1)
    return html.unescape(body)


def test_report_tables_show_any_symbol_name_literally(run):
    md = (run / "report.md").read_text(encoding="utf-8")
    header, rows = _rows(md, "symbol")
    assert len(rows) == len(NAMES) and all(len(r) == len(header) for r in rows)  # a line break or | split no row
    assert sorted(_shown(r[0]) for r in rows) == sorted(" ".join(n.splitlines()) for n in NAMES.values())
    for _, body in (_rows(md, "item"), _rows(md, "key")):
        assert all(len(r) == 2 for r in body)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<b>x</b>" not in page and "A|B &lt;b&gt;x&lt;/b&gt; &amp; *y*" in page


def test_model_card_shows_symbols_literally_and_its_commands_work_in_a_folder_with_a_space(run):
    card = (run / "final" / "README.md").read_text(encoding="utf-8")
    assert card_meta(run / "final" / "README.md")["symbols"] == sorted(NAMES.values())  # the YAML reads back
    header, rows = _rows(card, "")  # the data table: no header names
    assert len(header) == 2 and rows[0][0] == "source" and all(len(r) == 2 for r in rows)
    symbols = next(r[1] for r in rows if r[0] == "symbols")
    assert _shown(symbols) == "2: " + ", ".join(" ".join(n.splitlines()) for n in sorted(NAMES.values()))
    assert card.splitlines()[card.splitlines().index("---", 1) + 2].startswith("# my run: ")
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    call = next(n for n in ast.walk(ast.parse(code))
                if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "from_pretrained")
    assert ast.literal_eval(call.args[0]) == str(run / "final")
    command = card.split("```bash\n", 1)[1].split("```", 1)[0]
    assert shlex.split(command)[:3] == ["hftraining", "predict", str(run / "final")]


def test_a_symbol_with_dollar_signs_does_not_fail_the_report(run, tmp_path):
    """Two ``$`` in a plot title start matplotlib's math text: ``$x^$`` was a parse error that failed the report."""
    result, fc, bt = evaluate_and_backtest(run)
    fc.symbols = ["$x^$", "$\\frac{$"]
    _, md = write_report(tmp_path, result, fc, bt, run)
    assert (tmp_path / "report_files" / "forecast_over_price.png").is_file()


def test_a_report_of_one_date_draws_no_empty_equity_plot(run, tmp_path):
    ev = dataclasses.replace(evaluation_config(run), max_test_windows=1)
    result, fc, bt = evaluate_and_backtest(run, None, "test", ev)
    assert len(set(fc.dates.tolist())) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend"
        write_report(tmp_path, result, fc, bt, run)
    assert not (tmp_path / "report_files" / "equity_drawdown.png").exists()
    assert "equity_drawdown" not in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_a_report_of_other_data_says_its_data_section_is_the_training_data(run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    for s in NAMES:
        (other / f"{s}.csv").write_bytes((SAMPLE / f"{s}.csv").read_bytes())
    assert main(["evaluate", str(run), "--data", str(other), "--report-dir", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert md.splitlines()[0].startswith("# hftraining evaluate:") and "data " in md.splitlines()[0]
    _, rows = _rows(md, "symbol")
    assert sorted(r[0] for r in rows) == sorted(NAMES)  # scored on the other data's symbols
    heading = md[:md.index("| item |")].rsplit("\n## ", 1)[1].splitlines()[0]
    assert "training run" in heading  # the training data's report, not the data scored here


def test_a_report_written_over_another_keeps_only_its_own_plots(tmp_path):
    """evaluate twice into one --report-dir (4 symbols, then one): the first report's IC plot stayed
    beside a report of one symbol, read as its own."""
    from hftraining.eval import report as R

    first = R._Doc("first", tmp_path / "report_files")
    first.images += [("curves", b"a"), ("ic_over_time", b"b")]
    first.write(tmp_path)
    second = R._Doc("second", tmp_path / "report_files")
    second.images += [("curves", b"c")]
    second.write(tmp_path)
    assert sorted(p.name for p in (tmp_path / "report_files").iterdir()) == ["curves.png"]
    assert (tmp_path / "report_files" / "curves.png").read_bytes() == b"c"
