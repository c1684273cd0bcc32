"""report.md, report.html, the model card and the console table say what eval.json says: every number in their tables
and sentences rounds from the eval.json value it stands for (same sign, a p-value on the same side
of 0.05), every forecast is named as the verdict and the console name it (``naive:zero``,
``fitted:ridge``), and the verdict is eval.json's, word for word."""

import json
import math
import re
from decimal import Decimal
from html.parser import HTMLParser

import numpy as np
import pytest
import yaml

from hftraining.core.config import load_config
from hftraining.data.labels import CROSS_SECTIONAL
from hftraining.eval.forecasts import SIGNIFICANCE, Forecasts, label, score
from hftraining.eval.report import sentence, write_report
from hftraining.workflows.train_run import train
from conftest import tiny  # noqa: E402

METRICS_HEADER = ["forecast", "MSE", "MAE", "dir. acc.", "PT p (step 1)", "IC", "IC pooled", "DM stat (model vs)", "DM p"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A return-label run of three symbols with a quantile head and conformal intervals, scored on the
    test split's last dates only (evaluation.max_test_windows)."""
    out = tmp_path_factory.mktemp("consistency") / "run"
    train(load_config(None, tiny(
        out, "data.symbols=[AEM, WPM, NIO]", "model.quantiles=[0.1, 0.5, 0.9]", "training.max_steps=6",
        "training.save_steps=0", "evaluation.eval_steps=0", "evaluation.baseline_max_windows=200",
        "evaluation.max_test_windows=240")))
    return out


# ---------------------------------------------------------------------------------------------
# reading a report


def tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of ``md`` as (header, rows of cells)."""
    out, block = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif block:
            out.append((block[0], block[2:]))
            block = []
    return out


def table(md: str, first: str, has: str | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """The one table whose header starts with ``first`` (and holds ``has``): (header, {first cell: row})."""
    found = [(h, rows) for h, rows in tables(md) if h[0] == first and (has is None or has in h)]
    assert len(found) == 1, (first, has, [h for h, _ in tables(md)])
    header, rows = found[0]
    keyed = {r[0]: r for r in rows}
    assert len(keyed) == len(rows), rows  # no forecast twice
    return header, keyed


def agrees(cell: str, value, p_value: bool = False) -> bool:
    """Whether the printed ``cell`` ("0.0160", "-11.00%", "3.65e-14", "—") stands for ``value``:
    within half a unit of its last digit, with the same sign, and a p-value on the same side of
    the significance level; a missing or non-finite value is a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return cell == "—"
    if cell == "—":
        return False
    scale = 100.0 if cell.endswith("%") else 1.0
    d = Decimal(cell.rstrip("%"))
    shown, tol = float(d) / scale, 0.5 * 10.0 ** d.as_tuple().exponent / scale
    ok = abs(shown - value) <= tol * (1 + 1e-9) + 1e-300
    ok &= not cell.startswith("-") or value < 0  # "-0.0000" only for a negative value
    ok &= shown == 0 or value == 0 or (shown > 0) == (value > 0)
    if p_value:
        ok &= (shown < SIGNIFICANCE) == (value < SIGNIFICANCE)
    return ok


def check(row: list[str], values: list, p_columns: tuple[int, ...] = ()) -> None:
    """Each cell of ``row`` after the name agrees with its value (None: not compared)."""
    assert len(row) == len(values) + 1, (row, values)
    for i, (cell, v) in enumerate(zip(row[1:], values), start=1):
        if v is not None:
            assert agrees(cell, v, i in p_columns), (row[0], i, cell, v)


def direction_agrees(cell: str, m: dict) -> bool:
    """Whether the printed Pesaran–Timmermann p-value ``cell`` stands for the ``directional_p`` of the
    metrics ``m``: "n/a" where the test is undefined (null in eval.json, NaN in memory: e.g. a forecast
    or realisation whose sign never varies), never "—", 0 or 1 for it."""
    p = m["directional_p"]
    if p is None or not math.isfinite(p):
        return cell == "n/a"
    return agrees(cell, p, p_value=True)


def section(md: str, heading: str) -> str:
    parts = [p for p in md.split("\n## ") if p.startswith(heading)]
    assert len(parts) == 1, heading
    return parts[0]


def check_report(md: str, ev: dict) -> None:
    """Every number of report.md against eval.json ``ev``."""
    cs_first = ev["target"] in CROSS_SECTIONAL and "cross_section_strongest" in ev
    sb = ev["cross_section_strongest"] if cs_first else ev["strongest_baseline"]
    zero = ev["baselines"]["zero"]["mse"]
    strategies = ev["backtest"]["strategies"]

    # the verdict: the model beside the baseline the verdict names, and the verdict word for word
    top = section(md, "Verdict")
    assert ev["verdict"] in top
    header, rows = table(top, "forecast", "MSE / zero")
    assert list(rows) == ["model", f"{label(sb['name'])} (strongest baseline)"]
    for name, m in (("model", ev["model"]), (f"{label(sb['name'])} (strongest baseline)", ev["baselines"][sb["name"]])):
        rank = m["cross_section"]["rank_ic"]
        strat = strategies["model" if name == "model" else label(sb["name"])]
        check(rows[name], [m["mse"], m["mse"] / zero if zero else None, rank["mean"], rank["t_stat"], strat["sharpe"]])
    if cs_first:
        # "mean D per date", or "mean A − B = D per date over ..." where the two rank on other dates
        got = re.search(r"model − (\S+): mean (?:\S+ − \S+ = )?(\S+) per date.*?, t = (\S+), p = (\S+) over (\d+) dates\.", top)
        d = sb["difference"]
        assert got and got[1] == label(sb["name"]) and int(got[5]) == d["n_dates"]
        check(list(got.groups()[:4]), [d["mean"], d["t_stat"], d["p_value"]], p_columns=(3,))
    else:
        if ev["model"]["cross_section"]["rank_ic"]["n_dates"]:  # as the console prints it
            # one full stop: a verdict that ends in one (or in its in-sample note) gets no second
            assert sentence(f"On the cross-section: {ev['cross_section_verdict']}") in top
            assert ".." not in top.replace("...", "")
        got = re.search(r"Diebold–Mariano, model against (\S+): statistic (\S+), p = (\S+)\.", top)
        assert got and got[1] == label(sb["name"])
        check(list(got.groups()), [sb["dm"]["statistic"], sb["dm"]["p_value"]], p_columns=(2,))

    # the forecast metrics of the model and of every baseline, no other, in eval.json's names
    body = section(md, f"Forecast metrics ({ev['split']} split)")
    scored = (f" (the last dates' {ev['windows_scored']} of the split's {ev['windows_in_split']} windows: "
              "evaluation.max_test_windows)" if "windows_scored" in ev else "")  # the data section counts the split
    assert (f"{ev['n_windows']} windows{scored} × {ev['horizon']} steps, {ev['n_symbols']} symbols, {ev['n_dates']} "
            f"dates; {ev['units']}.") in body
    assert ev["verdict"] in body and f"lag H−1 = {ev['dm']['zero']['lag']}" in body
    header, rows = table(body, "forecast", "DM p")
    assert header == METRICS_HEADER
    named = {"model": ev["model"], **{label(n): m for n, m in ev["baselines"].items()},
             **{f"member:{n}": m for n, m in ev.get("members", {}).items()}}  # the console's names
    assert list(rows) == list(named)
    for shown, m in named.items():
        d = ev["dm"].get(shown.split(":")[-1], {}) if shown.startswith(("naive:", "fitted:")) else {}
        check(rows[shown], [m["mse"], m["mae"], m["directional_accuracy"], None, m["ic"], m["ic_pooled"],
                            d.get("statistic"), d.get("p_value")], p_columns=(8,))
        assert direction_agrees(rows[shown][4], m), (shown, rows[shown][4], m["directional_p"])
        if not d:
            assert rows[shown][7:] == ["—", "—"]
    header, rows = table(body, "step")
    assert header[1:-4] == [f"{label(n)} MSE" for n in ev["per_step"]]
    assert header[-4:] == ["model dir. acc.", "model PT p", "model IC", "DM p vs zero"]
    assert list(rows) == [str(h + 1) for h in range(ev["horizon"])]
    for h in range(ev["horizon"]):
        check(rows[str(h + 1)], [ev["per_step"][n][h]["mse"] for n in ev["per_step"]]
              + [ev["per_step"]["model"][h]["directional_accuracy"], None, ev["per_step"]["model"][h]["ic"],
                 ev["dm_vs_zero_per_step"][h]["p_value"]], p_columns=(len(header) - 1,))
        assert direction_agrees(rows[str(h + 1)][-3], ev["per_step"]["model"][h])
    # the headline test is step 1's: the same p and, as its hit rate, the step table's step-1 accuracy
    for m, steps in [(ev["model"], ev["per_step"]["model"])] + [(ev["baselines"][n], ev["per_step"][n]) for n in ev["baselines"]]:
        undefined = [p is None or not math.isfinite(p) for p in (m["directional_p"], steps[0]["directional_p"])]
        assert undefined[0] == undefined[1] and (undefined[0] or m["directional_p"] == steps[0]["directional_p"])
        assert m["directional_test"]["hit_rate"] == steps[0]["directional_accuracy"]
    header, rows = table(body, "symbol")
    assert header[2:4] == ["model MSE", f"{label('zero')} MSE"] and header[5:7] == ["dir. acc.", "PT p (step 1)"]
    per, per_zero = ev["per_symbol"]["model"], ev["per_symbol"]["zero"]
    assert list(rows) == list(per)
    for s, m in per.items():
        assert rows[s][1] == str(m["n_windows"])
        check(rows[s][:1] + rows[s][2:], [m["mse"], per_zero[s]["mse"], m["mse"] / per_zero[s]["mse"],
                                          m["directional_accuracy"], None, m["ic_pooled"]])
        assert direction_agrees(rows[s][6], m)
    if "pinball" in ev["model"]:
        _, rows = table(body, "quantile head")
        expect = {**ev["model"]["pinball"], "mean pinball loss": ev["model"]["pinball_mean"],
                  **{f"coverage {k}": v for k, v in ev["model"]["coverage"].items()}}
        assert set(rows) == set(expect)
        for k, v in expect.items():
            check(rows[k], [v])
    _, rows = table(body, "forecast", "Rank IC mean")
    with_cs = {"model": ev["model"], **{label(n): m for n, m in ev["baselines"].items()}}
    assert list(rows) == list(with_cs)
    for shown, m in with_cs.items():
        ic, ric = m["cross_section"]["ic"], m["cross_section"]["rank_ic"]
        assert rows[shown][1] == str(ic["n_dates"])
        check(rows[shown][:1] + rows[shown][2:], [ic["mean"], ic["std"], ic["icir"], ic["t_stat"], ic["positive_share"],
                                                  ric["mean"], ric["icir"], ric["t_stat"], ric["positive_share"]])

    # the conformal intervals
    if "intervals" in ev:
        iv = section(md, "Forecast intervals")
        assert ev["intervals"]["sentence"] in iv
        _, rows = table(iv, "level")
        assert list(rows) == [f"{float(lv):.0%}" for lv in ev["intervals"]["levels"]]
        for lv, e in ev["intervals"]["levels"].items():
            row = rows[f"{float(lv):.0%}"]
            cov = row[1].split(" ")
            assert len(cov) == len(e["coverage_per_step"])
            assert all(agrees(c, v) for c, v in zip(cov, e["coverage_per_step"]))
            lo, hi = row[6].split(" – ")
            check([row[0], *row[2:6], lo, hi], [e["mean_width_per_step"][0], e["winkler_per_step"][0],
                                                e["kupiec"]["p_value"], e["christoffersen"]["p_value"],
                                                e["rolling_coverage"]["min"], e["rolling_coverage"]["max"]],
                  p_columns=(3, 4))

    # the backtest: every strategy that traded, its numbers as eval.json holds them
    bt = section(md, "Backtest")
    assert f"{ev['backtest']['settings']['periods_per_year']:g} periods per year" in bt
    header, rows = table(bt, "strategy")
    traded = {n: m for n, m in strategies.items() if m.get("n_periods")}
    assert list(rows) == list(traded)
    keys = ["total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "max_drawdown", "calmar",
            "turnover", "hit_rate"] + (["information_ratio"] if "IR vs equal weight" in header else [])
    for n, m in traded.items():
        check(rows[n], [m.get(k) for k in keys])


def check_console(log: str, ev: dict) -> None:
    """The console's metrics table (as train.log keeps it) against eval.json: every forecast's
    directional accuracy and Pesaran–Timmermann p-value, and the DM p-values."""
    lines = log.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith("forecast") and "PT p" in line]
    assert len(start) == 1, start
    named = {"model": (ev["model"], {}), **{label(n): (m, ev["dm"][n]) for n, m in ev["baselines"].items()}}
    rows = {}
    for line in lines[start[0] + 1:start[0] + 1 + len(named)]:
        rows[line[:22].strip()] = line[22:].split()
    assert list(rows) == list(named)
    for shown, (m, d) in named.items():
        check([shown, *rows[shown]], [m["mse"], m["mae"], m["directional_accuracy"], None, m["ic"], m["ic_pooled"],
                                      d.get("statistic"), d.get("p_value")], p_columns=(8,))
        assert direction_agrees(rows[shown][3], m), (shown, rows[shown][3])


class _HtmlTables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


# ---------------------------------------------------------------------------------------------
# the tests


def test_report_and_card_numbers_are_eval_json_numbers(run):
    """Every number in report.md's tables and sentences stands for its eval.json value, under the
    names the verdict and the console use; report.html shows the same tables cell for cell; the
    model card's verdict, metrics table, DM sentence and intervals stand for eval.json's values."""
    ev = json.loads((run / "eval.json").read_text())
    assert ev["windows_scored"] < ev["windows_in_split"]
    md = (run / "report.md").read_text(encoding="utf-8")
    check_report(md, ev)
    p = _HtmlTables()
    p.feed((run / "report.html").read_text(encoding="utf-8"))
    assert p.tables == [[h, *rows] for h, rows in tables(md)]
    check_console((run / "train.log").read_text(encoding="utf-8"), ev)
    card = (run / "final" / "README.md").read_text(encoding="utf-8")
    front, body = card[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert meta["verdict"] == ev["verdict"] and meta["strongest_baseline"] == ev["strongest_baseline"]["name"]
    assert section("\n## " + body, "Verdict").strip().endswith(ev["verdict"])
    sb = ev["strongest_baseline"]["name"]
    _, rows = table(body, "forecast", "MSE / zero")
    named = {"model": ev["model"], **{label(n) + (" (strongest baseline)" if n == sb else ""): ev["baselines"][n]
                                      for n in dict.fromkeys(["zero", sb])}}
    assert list(rows) == list(named)
    zero = ev["baselines"]["zero"]["mse"]
    for shown, m in named.items():
        check(rows[shown], [m["mse"], m["mae"], m["directional_accuracy"], None, m["cross_section"]["rank_ic"]["mean"],
                            m["mse"] / zero])
        assert direction_agrees(rows[shown][4], m), (shown, rows[shown][4])
    assert any(m["directional_p"] is None for m in named.values())  # naive:zero: "n/a", as its sign never varies
    tests = dict((n, (s, p)) for n, s, p in re.findall(r"(\S+): statistic (\S+), p = ([^\s;]+?)[;\s]", body))
    assert set(tests) == {label("zero"), label(sb)}
    for n in ("zero", sb):
        s, p = tests[label(n)]
        check(["dm", s, p], [ev["dm"][n]["statistic"], ev["dm"][n]["p_value"]], p_columns=(2,))
    for lv, e in ev["intervals"]["levels"].items():
        got = re.search(f"{float(lv):.0%}: step-1 coverage (\\S+), mean width (\\d[\\d.e+-]*\\d|\\d)", body)
        assert got, lv
        check(["iv", *got.groups()], [e["coverage_per_step"][0], e["mean_width_per_step"][0]])


def _cross_sectional_result():
    """A cs_rank label scored on synthetic forecasts: the strongest baseline by rank IC (repeat) is
    not the strongest by MSE (drift)."""
    rng = np.random.default_rng(0)
    D, S, H = 200, 5, 3
    W = D * S
    true = rng.normal(0, 1, (W, H))
    pred = {"model": 0.05 * true + rng.normal(0, 0.3, (W, H)), "zero": np.zeros((W, H)),
            "repeat": 0.3 * true + rng.normal(0, 1, (W, H)), "drift": rng.normal(0, 0.01, (W, H)),
            "seasonal_naive": rng.normal(0, 0.5, (W, H)), "ridge": 0.02 * true + rng.normal(0, 0.05, (W, H))}
    fc = Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * 86_400 * 10**9, S),
                   symbol_ids=np.tile(np.arange(S), D), symbols=[f"S{i}" for i in range(S)], last_return=np.zeros(W),
                   past_vol=np.ones(W), last_close=np.ones(W), target="cs_rank")
    return score(fc), fc


def test_cross_sectional_report_numbers_are_eval_json_numbers(tmp_path):
    """A cross-sectional label's report leads with the baseline its verdict names (by rank IC), as
    ``naive:repeat``, the name in the verdict sentence, and every number agrees with the result."""
    from hftraining.eval.backtest import backtest_forecasts
    from hftraining.core.config import EvaluationConfig

    result, fc = _cross_sectional_result()
    assert result["cross_section_strongest"]["name"] == "repeat" and "naive:repeat" in result["verdict"]
    bt = backtest_forecasts(fc, EvaluationConfig())
    result = {"split": "test", **result, "backtest": {"settings": bt["settings"], "strategies": bt["strategies"]}}
    _, md = write_report(tmp_path, result, fc, bt)
    text = md.read_text(encoding="utf-8")
    assert "| naive:repeat (strongest baseline) |" in text and "model − naive:repeat:" in text
    check_report(text, json.loads(json.dumps(result, default=float)))


def test_a_p_value_just_under_the_level_is_not_shown_as_the_level(run, tmp_path):
    """p = 0.04996 is significant at 0.05: the report and the card show 0.04996, not "0.05" beside it."""
    from hftraining.eval.model_card import model_card
    from hftraining.inference.forecaster import Forecaster

    ev = json.loads((run / "eval.json").read_text())
    sb = ev["strongest_baseline"]["name"]
    for name in ("zero", sb):
        ev["dm"][name]["p_value"] = 0.04996
    ev["strongest_baseline"]["dm"] = ev["dm"][sb]
    ev["dm_vs_zero_per_step"][0]["p_value"] = 0.049951
    _, md = write_report(tmp_path, ev, None, ev["backtest"], run)
    text = md.read_text(encoding="utf-8")
    assert "p = 0.04996." in text
    _, rows = table(section(text, "Forecast metrics"), "forecast", "DM p")
    assert rows[label("zero")][-1] == "0.04996" and rows[label(sb)][-1] == "0.04996"
    _, rows = table(section(text, "Forecast metrics"), "step")
    assert rows["1"][-1] == "0.04995"
    assert "| 0.05 |" not in text
    f = Forecaster.from_pretrained(run / "final")
    cfg = load_config(run / "config.json")
    card = model_card(run / "final", cfg, json.loads((run / "data_report.json").read_text()), f.preprocessing.to_dict(),
                      f.model, ev["step"], ev)
    assert f"{label('zero')}: statistic" in card and "p = 0.04996" in card and not re.search(r"p = 0\.05\b", card)


def test_an_ensemble_report_shows_its_members_beside_the_model(run, tmp_path):
    """An ensemble's evaluation scores its members on the same windows (eval.json "members"): the
    report's metrics table shows each, as the console does, with the numbers eval.json holds."""
    ev = json.loads((run / "eval.json").read_text())
    ev["members"] = {"member-0": {**ev["baselines"]["drift"], "mse": 0.5}, "member-1": ev["baselines"]["repeat"]}
    _, md = write_report(tmp_path, ev, None, ev["backtest"], run)
    text = md.read_text(encoding="utf-8")
    _, rows = table(section(text, "Forecast metrics"), "forecast", "DM p")
    assert rows["member:member-0"][1] == "0.5" and rows["member:member-1"][-2:] == ["—", "—"]
    check_report(text, ev)


def test_a_report_of_another_split_names_it_in_its_verdict(run, tmp_path):
    """``evaluate --split val`` writes its report where eval.json holds the test split's numbers: the
    verdict at the top of the report says which split it judges."""
    from hftraining.workflows.evaluate_run import evaluate_and_backtest

    result, fc, bt = evaluate_and_backtest(run, split="val")
    _, md = write_report(tmp_path, result, fc, bt, run)
    text = md.read_text(encoding="utf-8")
    assert text.split("\n## ")[1].startswith("Verdict on the val split: the model against the strongest baseline")
    check_report(text, json.loads(json.dumps(result, default=float)))
