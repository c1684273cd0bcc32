"""The run report: written by train and by evaluate, every <img> is a real PNG, the Markdown twin's
images exist beside it; evaluate/backtest CLI output and their one-line errors."""

import base64
import dataclasses
import json
import struct
from html.parser import HTMLParser

import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.workflows.evaluate_run import evaluate_and_backtest
from hftraining.eval.forecasts import score
from hftraining.eval.report import write_report
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.alts, self.tables = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))
            self.alts.append(dict(attrs).get("alt", ""))
        self.tables += tag == "table"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _check_html(path, min_images=5):
    p = _Images()
    p.feed(path.read_text(encoding="utf-8"))
    assert len(p.srcs) >= min_images and p.tables >= 3
    for src in p.srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        w, h = _png_size(png)
        assert w >= 200 and h >= 150 and len(png) > 5000  # a plot, not an empty canvas
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    cfg = load_config(None, tiny(
        tmp / "run", "model.hidden_size=8", "model.dropout=0.15", "data.sequence_length=16", "data.symbols=[AEM, WPM, NIO]",
        "training.max_steps=6", "training.logging_steps=1", "evaluation.eval_steps=3",
    ))
    train(cfg)
    return tmp / "run"


def test_train_writes_html_and_markdown_reports(run):
    _check_html(run / "report.html")
    md = (run / "report.md").read_text(encoding="utf-8")
    refs = [line.split("](", 1)[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(refs) >= 5
    for ref in refs:
        assert _png_size((run / ref).read_bytes())[0] >= 200
    for section in ("## Configuration", "## Data", "## Training", "## Forecast metrics", "## Backtest", "Diebold"):
        assert section in md
    saved = json.loads((run / "eval.json").read_text())
    assert set(saved["backtest"]["strategies"]) >= {"model", "buy_and_hold", "naive:drift"}
    assert saved["model"]["cross_section"]["rank_ic"]["n_dates"] > 0  # eval.json carries the step-1 IC summary
    assert "cross_section" in saved["baselines"]["drift"]
    assert "NaN" not in (run / "eval.json").read_text()  # strict JSON
    # the report opens with the model against the strongest baseline, named, and the verdict
    best = saved["strongest_baseline"]["name"]
    first = md.split("\n## ")[1]
    assert first.startswith("Verdict: the model against the strongest baseline")
    assert f"{best} (strongest baseline)" in first and saved["verdict"] in first


def test_write_report_into_another_folder_is_self_contained(run, tmp_path):
    """write_report returns the paths it wrote; the HTML embeds every plot as a PNG and every image
    the Markdown references lies under the chosen folder (nothing points back into the run)."""
    out = tmp_path / "elsewhere"
    result, fc, bt = evaluate_and_backtest(run)
    html_path, md_path = write_report(out, result, fc, bt, run)
    assert (html_path, md_path) == (out / "report.html", out / "report.md")
    assert html_path.is_file() and md_path.is_file()
    n_html = len(_check_html(html_path).srcs)
    refs = [line.split("](", 1)[1].rstrip(")") for line in md_path.read_text(encoding="utf-8").splitlines()
            if line.startswith("![")]
    assert len(refs) == n_html  # one file per embedded plot
    for ref in refs:
        img = (out / ref).resolve()
        assert img.is_relative_to(out.resolve()) and img.is_file(), ref
        w, h = _png_size(img.read_bytes())
        assert w >= 200 and h >= 150
    assert sorted(p.name for p in (out / "report_files").iterdir()) == sorted(ref.rsplit("/", 1)[1] for ref in refs)


def test_report_shows_the_cross_sectional_ic_over_time_with_several_symbols(run, tmp_path):
    result, fc, bt = evaluate_and_backtest(run)
    assert len(fc.symbols) == 3 and result["model"]["cross_section"]["ic"]["n_dates"] >= 20
    html_path, md_path = write_report(tmp_path / "three", result, fc, bt, run)
    p = _check_html(html_path)
    ic = [src for alt, src in zip(p.alts, p.srcs) if "cross-sectional IC per date" in alt]
    assert len(ic) == 1
    w, h = _png_size(base64.b64decode(ic[0].split(",", 1)[1], validate=True))
    assert w >= 600 and h >= 150
    md = md_path.read_text(encoding="utf-8")
    assert "report_files/ic_over_time.png" in md and "Rank IC mean" in md
    assert _png_size((tmp_path / "three" / "report_files" / "ic_over_time.png").read_bytes())[0] >= 600
    # one symbol: no cross-section, so the table shows dashes and there is no IC figure (and no crash)
    one = fc.symbol_ids == 0
    fc1 = dataclasses.replace(fc, pred={k: v[one] for k, v in fc.pred.items()}, true=fc.true[one], dates=fc.dates[one],
                              symbol_ids=fc.symbol_ids[one], last_return=fc.last_return[one], past_vol=fc.past_vol[one],
                              last_close=fc.last_close[one], quantiles=None, levels=[])
    r1 = score(fc1)
    assert r1["model"]["cross_section"]["ic"]["n_dates"] == 0
    html1, md1 = write_report(tmp_path / "one", r1, fc1, None, run)
    p1 = _Images()
    p1.feed(html1.read_text(encoding="utf-8"))
    assert not any("cross-sectional IC" in alt for alt in p1.alts) and "ic_over_time" not in md1.read_text(encoding="utf-8")
    assert "| model | 0 | — |" in md1.read_text(encoding="utf-8")


def test_report_skips_only_a_cut_short_last_metrics_line(tmp_path):
    """The training section reads metrics.jsonl through the one reader: half a last line (a run
    killed mid-write) is skipped; a corrupt line before it is a DataError naming the file and line."""
    from hftraining.core.errors import DataError

    recs = [{"step": s, "loss": 1.0 / s, "learning_rate": 1e-3} for s in range(1, 4)] + [{"step": 3, "eval_mse": 0.5}]
    lines = [json.dumps(r) for r in recs]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    _, md = write_report(tmp_path / "ok", run_dir=tmp_path)
    assert "## Training" in md.read_text(encoding="utf-8")
    lines[0] = '{"step": 1, "loss": 1.0,, "learning_rate": 0.001}'
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        write_report(tmp_path / "bad", run_dir=tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'metrics.jsonl'}: line 1 is not valid JSON") and "\n" not in str(e.value)


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evaluate_cli_json_and_report_dir(run, tmp_path, capsys):
    code, out, err = _cli(capsys, "evaluate", run, "--json", "--report-dir", tmp_path)
    assert code == 0, err
    got = json.loads(out)
    for key in ("model", "baselines", "dm_vs_zero", "per_step", "per_symbol", "backtest", "verdict"):
        assert key in got
    assert set(got["baselines"]) == {"zero", "repeat", "drift", "seasonal_naive", "ridge", "lightgbm"}  # the last two: fitted with the run
    for m in [got["model"], *got["baselines"].values()]:  # step-1 cross-sectional IC of every forecast
        assert set(m["cross_section"]) == {"ic", "rank_ic"}
        assert {"mean", "std", "icir", "t_stat", "positive_share", "n_dates"} <= set(m["cross_section"]["rank_ic"])
    assert got["model"]["cross_section"]["ic"]["n_dates"] > 0 and got["model"]["cross_section"]["ic"]["lag"] == 0
    assert 0 <= got["dm_vs_zero"]["p_value"] <= 1
    _check_html(tmp_path / "report.html")  # the training curves come from the run folder


def test_evaluate_cli_applies_every_evaluation_override(run, capsys):
    """``--set evaluation.max_test_windows`` caps what evaluate scores, intervals and backtests
    (it was read again from the run's config.json and ignored)."""
    code, out, err = _cli(capsys, "evaluate", run, "--json", "--no-report", "--set", "evaluation.max_test_windows=7")
    assert code == 0, err
    got = json.loads(out)
    assert (got["n_windows"], got["n_symbols"], got["n_dates"]) == (6, 3, 2)  # the last 2 whole dates of 3 symbols
    assert len(got["intervals"]["levels"]["0.9"]["coverage_per_step"]) == 3
    full = json.loads(_cli(capsys, "evaluate", run, "--json", "--no-report")[1])
    assert full["n_windows"] > 6 and full["backtest"] != got["backtest"]


def test_evaluate_writes_no_report_with_evaluation_report_false(run, tmp_path, capsys):
    code, _, err = _cli(capsys, "evaluate", run, "--report-dir", str(tmp_path / "r"), "--set", "evaluation.report=false")
    assert code == 2 and "--report-dir" in err and "evaluation.report=false" in err, err  # asked for both: which?
    assert not (tmp_path / "r").exists()  # it wrote report.html there regardless before
    code, _, err = _cli(capsys, "evaluate", run, "--set", "evaluation.report=false")
    assert code == 0, err
    assert _cli(capsys, "evaluate", run, "--report-dir", str(tmp_path / "r"))[0] == 0
    assert (tmp_path / "r" / "report.html").exists()


def test_backtest_cli(run, capsys):
    code, out, err = _cli(capsys, "backtest", run, "--json", "--long-only", "--cost-bps", "20")
    assert code == 0, err
    got = json.loads(out)
    assert got["settings"]["long_only"] is True and got["settings"]["cost_bps"] == 20
    assert got["settings"]["periods_per_year"] == 252
    assert {"sharpe", "sortino", "max_drawdown", "calmar", "turnover", "hit_rate"} <= set(got["strategies"]["model"])


@pytest.mark.parametrize("args, needle", [
    (["backtest", "{tmp}/nope"], "nope"),
    (["backtest", "{run}", "--set", "evaluation.backtest_cost_bps=-1"], "evaluation.backtest_cost_bps"),
    (["evaluate", "{run}", "--set", "evaluation.backtest_positionz=sign"], "backtest_positionz"),
    # keys that act during training did nothing on a trained model: now they say so
    (["evaluate", "{run}", "--set", "evaluation.interval_method=aci"], "evaluation.interval_method: acts during training"),
    (["backtest", "{run}", "--set", "evaluation.max_val_windows=10"], "evaluation.max_val_windows: acts during training"),
])
def test_cli_errors_are_one_line(run, tmp_path, capsys, args, needle):
    code, _, err = _cli(capsys, *[a.format(run=run, tmp=tmp_path) for a in args])
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_time_axes_show_dates_and_the_equity_plot_shows_the_strongest_baseline(run, tmp_path, monkeypatch):
    """The x axes of the time plots are labelled with dates, the equity plot draws the baseline the
    verdict names, and the intervals get a coverage-over-time plot."""
    from hftraining.eval import report as R
    from test_eval_audit import kept_figures

    figures = kept_figures(monkeypatch)
    result, fc, bt = evaluate_and_backtest(run)
    write_report(tmp_path / "dates", result, fc, bt, run)
    assert {"ic_over_time", "equity_drawdown", "forecast_over_price", "interval_coverage"} <= set(figures)
    for name in ("ic_over_time", "equity_drawdown", "forecast_over_price", "interval_coverage"):
        ax = figures[name].axes[-1]
        figures[name].canvas.draw()  # tick labels exist once drawn
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(len(t) == 10 and t[4] == "-" and t[7] == "-" for t in labels), (name, labels)
    strongest = R.forecast_label(result["strongest_baseline"]["name"])
    lines = [line.get_label() for line in figures["equity_drawdown"].axes[0].get_lines()]
    assert f"{strongest} (strongest baseline)" in lines and "model" in lines
    assert "## Forecast intervals" in (tmp_path / "dates" / "report.md").read_text(encoding="utf-8")


def test_report_states_the_backtest_rule_for_missing_rows(run):
    md = (run / "report.md").read_text(encoding="utf-8")
    rule = json.loads((run / "eval.json").read_text())["backtest"]["settings"]["no_row"]
    assert f"Missing rows: {rule}." in md.split("## Backtest", 1)[1]


def test_report_of_a_split_whose_zero_forecast_is_exact_writes_a_dash_for_the_ratio(tmp_path):
    """A universe whose realised returns are all 0 (pegged or halted) gives the zero forecast an MSE
    of 0: the verdict table shows "—" for MSE / zero instead of failing the whole report."""
    import numpy as np

    from hftraining.eval.forecasts import Forecasts

    D, S, H = 30, 3, 2
    W = D * S
    rng = np.random.default_rng(0)
    pred = {"model": rng.normal(0, 1e-4, (W, H)), "zero": np.zeros((W, H)), "drift": rng.normal(0, 1e-4, (W, H))}
    fc = Forecasts(pred=pred, true=np.zeros((W, H)), dates=np.repeat(np.arange(D, dtype=np.int64) * 86_400 * 10**9, S),
                   symbol_ids=np.tile(np.arange(S), D), symbols=["A", "B", "C"], last_return=np.zeros(W),
                   past_vol=np.ones(W), last_close=np.ones(W))
    result = score(fc)
    assert result["baselines"]["zero"]["mse"] == 0.0
    _, md = write_report(tmp_path, result, fc)
    verdict = md.read_text(encoding="utf-8").split("\n## ")[1]
    assert "| model |" in verdict and "| — |" in verdict
