"""The validation report lists every row it touched: for each policy of each rule, a clean CSV file
with a known set of corrupted rows (random positions, several kinds at once, adjacent rows, the
first and the last row, duplicated timestamps with other values, rows out of order, blank lines)
is validated, and the report must name exactly the rows a plain reference of the documented rules
(:mod:`hftraining.data.validate`'s docstring) drops, repairs or flags, under the right rule and
action; the counts add up, and every kept row holds the file's values unless it is listed as repaired.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.sources import Unit, read_unit
from hftraining.data.synth import synth_ohlcv
from hftraining.data.validate import VALUE_RULES, format_report

COLS = ["open", "high", "low", "close", "volume"]
PRICES = COLS[:4]
N = 120  # clean rows per file
THRESHOLD = 0.5  # DataConfig().jump_threshold


def clean_rows(seed: int) -> list[list[str]]:
    """[date, open, high, low, close, volume] as CSV text: prices to 2 decimals, integer volume."""
    f = synth_ohlcv(N, seed=seed, start="2020-01-06")
    out = []
    for r in f.itertuples(index=False):
        out.append([r.timestamp.strftime("%Y-%m-%d"), *(f"{getattr(r, c):.2f}" for c in PRICES), str(int(r.volume))])
    return out


# --------------------------------------------------------------------------------------------
# Corruptions: each edits the list of text rows in place


def corrupt(rows: list[list[str]], rng: np.random.Generator) -> None:
    """Damage about a fifth of the rows, at random positions that include the first and the last row
    and runs of adjacent rows; several kinds at once."""
    n = len(rows)
    targets = {0, n - 1}
    while len(targets) < n // 5:
        start = int(rng.integers(0, n))
        targets.update(range(start, min(n, start + int(rng.integers(1, 4)))))  # runs of 1 to 3 adjacent rows
    cell_kinds = ["text", "empty", "inf", "zero_price", "neg_price", "neg_volume", "high_low", "spike", "bad_date"]
    for i in sorted(targets):
        kind = cell_kinds[int(rng.integers(0, len(cell_kinds)))]
        r = rows[i]
        price = 1 + int(rng.integers(0, 4))  # a column among open/high/low/close
        if kind == "text":
            r[price] = "abc"
        elif kind == "empty":
            r[1 + int(rng.integers(0, 5))] = ""
        elif kind == "inf":
            r[1 + int(rng.integers(0, 5))] = "inf"
        elif kind == "zero_price":
            r[price] = "0"
        elif kind == "neg_price":
            r[price] = "-" + r[price]
        elif kind == "neg_volume":
            r[5] = "-7"
        elif kind == "high_low":  # high under the body, or low above it
            o, c = float(r[1]), float(r[4])
            if rng.random() < 0.5:
                r[2] = f"{min(o, c) * 0.98:.2f}"
            else:
                r[3] = f"{max(o, c) * 1.02:.2f}"
        elif kind == "spike":  # the whole bar four times higher: a jump up here and down after it
            for c in PRICES:
                r[PRICES.index(c) + 1] = f"{float(r[PRICES.index(c) + 1]) * 4:.2f}"
        elif kind == "bad_date":
            r[0] = "2020-13-45" if rng.random() < 0.5 else ""
        if rng.random() < 0.25:  # a second defect in the same row
            r[5] = "-3" if r[5] not in ("", "inf") else r[5]
    # duplicated timestamps with other values: right after the row, and further down (also out of order)
    for _ in range(3):
        i = int(rng.integers(0, n))
        dup = list(rows[i])
        dup[1:5] = [f"{float(x) * 1.01:.2f}" if _num(x) else x for x in dup[1:5]]
        rows.insert(i + 1 + int(rng.integers(0, 4)), dup)
    # a Yahoo table's event row on a bar's date, before or after the bar: a duplicate with bad cells
    for _ in range(2):
        i = int(rng.integers(0, n))
        rows.insert(i + int(rng.integers(0, 2)), [rows[i][0], "0.175 Dividend", "", "", "", ""])
    # a row moved up three places, before rows dated earlier than it (one row out of place)
    i = int(rng.integers(4, len(rows)))
    rows.insert(i - 3, rows.pop(i))
    # blank lines and one timestamp far in the future (outlier_timestamp)
    for _ in range(2):
        rows.insert(int(rng.integers(1, len(rows))), [""] * 6)
    rows[int(rng.integers(1, len(rows) - 1))][0] = "2087-06-02"


def _num(x: str) -> bool:
    try:
        return math.isfinite(float(x))
    except ValueError:
        return False


def write_csv(path: Path, rows: list[list[str]]) -> None:
    lines = ["Date,Open,High,Low,Close,Volume"] + [",".join(r) if any(r) else "" for r in rows]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# The reference: the documented rules, one row at a time


def cell_rule(col: str, text: str) -> str | None:
    t = text.strip()
    if t == "":
        return "nan_or_inf"
    try:
        v = float(t)
    except ValueError:
        return "non_numeric"
    if not math.isfinite(v):
        return "nan_or_inf"
    if col == "volume":
        return "negative_volume" if v < 0 else None
    return "non_positive_price" if v <= 0 else None


def reference(numbered: list[tuple[int, list[str]]], cfg: DataConfig, barred: frozenset = frozenset(),
              doomed: frozenset = frozenset(), attempt: int = 0):
    """One symbol's (line, text row)s → (events {(rule, action): {line}}, kept [(line, timestamp text,
    {col: value})], errors [(rule, line)]: the first row each rule's policy ``error`` would stop at).
    ``barred``: rows that lend no value; ``doomed``: rows whose bad cells are not filled (dropped); ``attempt``:
    the pass of the value, OHLC and jump rules."""
    ev: dict[tuple[str, str], set[int]] = defaultdict(set)
    errors: list[tuple[str, int]] = []
    seq = []
    for line, r in numbered:
        if not any(r):
            ev["blank_line", "dropped"].add(line)
            continue
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", r[0]) or pd.to_datetime(r[0], errors="coerce") is pd.NaT:
            ev["bad_timestamp", "dropped"].add(line)
            continue
        seq.append((line, r))
    outlier = [x for x in seq if x[1][0].startswith("2087")]
    ev.update({("outlier_timestamp", "dropped"): {x[0] for x in outlier}} if outlier else {})
    seq = [x for x in seq if not x[1][0].startswith("2087")]

    # order (ISO dates compare as text): the rows out of place are the fewest whose removal leaves the
    # others in order, those outside the longest non-decreasing run through the file, the earliest lines
    # kept where several are as long. A row moved up three places is one row out of place, not the three
    # rows it now stands before (they are in order among the rest): ``drop`` drops it alone, ``sort``
    # moves it alone, ``error`` names its line.
    dates = [r[0] for _, r in seq]
    longest = [1] * len(dates)  # the longest run in order that starts at each row
    for i in reversed(range(len(dates))):
        longest[i] = 1 + max((longest[j] for j in range(i + 1, len(dates)) if dates[j] >= dates[i]), default=0)
    need, last, late = max(longest, default=0), "", []
    for d, m in zip(dates, longest):
        late.append(not (m == need and d >= last))
        if not late[-1]:
            need, last = need - 1, d
    if any(late):
        errors.append(("unsorted_timestamp", next(x[0] for x, lt in zip(seq, late) if lt)))
        if cfg.unsorted_timestamps == "sort":
            ev["unsorted_timestamp", "repaired"] |= {x[0] for x, lt in zip(seq, late) if lt}
            seq = sorted(seq, key=lambda x: x[1][0])  # stable
        else:
            ev["unsorted_timestamp", "dropped"] |= {x[0] for x, lt in zip(seq, late) if lt}
            seq = [x for x, lt in zip(seq, late) if not lt]

    # duplicates: neighbours now
    groups = [list(g) for _, g in itertools.groupby(seq, key=lambda x: x[1][0])]
    if any(len(g) > 1 for g in groups):
        errors.append(("duplicate_timestamp", next(g[1][0] for g in groups if len(g) > 1)))
    # among a timestamp's rows, one with a bad price/volume cell gives way to one without (a dividend row)
    pools = [[x for x in g if all(cell_rule(c, x[1][i + 1]) is None for i, c in enumerate(COLS))] or g for g in groups]
    keep = [p[0] if cfg.duplicate_timestamps == "first" else p[-1] for p in pools]
    ev["duplicate_timestamp", "dropped"] |= {x[0] for g, k in zip(groups, keep) for x in g if x is not k}
    seq = keep

    # values: drop under the first rule a row breaks, or fill each bad cell from the previous kept row
    # (``barred``: rows that a later rule drops, which lend no value)
    out, last, lender, lent_by = [], None, None, {}
    for line, r in seq:
        rules = {c: cell_rule(c, r[i + 1]) for i, c in enumerate(COLS)}
        broken = [rule for rule in VALUE_RULES if rule in rules.values()]
        if broken and not any(e[0] in VALUE_RULES for e in errors):
            errors.append((broken[0], line))
        if not broken:
            vals = {c: float(r[i + 1]) for i, c in enumerate(COLS)}
        elif cfg.invalid_values == "drop" or last is None or line in doomed:
            ev[broken[0], "dropped"].add(line)
            continue
        else:
            vals = {c: float(r[i + 1]) if rules[c] is None else last[c] for i, c in enumerate(COLS)}
            lent_by[line] = {lender[c] for c in COLS if rules[c] is not None}
            for rule in broken:
                ev[rule, "repaired"].add(line)
        out.append((line, r[0], vals))
        if line not in barred:
            last = vals
            lender = {c: line if rules[c] is None else lender[c] for c in COLS}
    seq = out

    # high/low must cover open and close
    out = []
    for line, ts, v in seq:
        if v["high"] < max(v["open"], v["close"]) or v["low"] > min(v["open"], v["close"]):
            if not any(e[0] == "ohlc_inconsistent" for e in errors):
                errors.append(("ohlc_inconsistent", line))
            if cfg.ohlc_violations == "drop":
                ev["ohlc_inconsistent", "dropped"].add(line)
                continue
            ev["ohlc_inconsistent", "repaired"].add(line)
            v = {**v, "high": max(v["high"], v["open"], v["close"]), "low": min(v["low"], v["open"], v["close"])}
        out.append((line, ts, v))
    seq = out

    # jumps: each close against the last kept close; the 4th of consecutive jumps that agree (each within the
    # threshold of the one before) is kept, a new level
    jumps, ref, run = [], 0, 0
    for i in range(1, len(seq)):
        close = seq[i][2]["close"]
        if abs(math.log(close / seq[ref][2]["close"])) <= THRESHOLD:
            ref, run = i, 0
            continue
        run = run + 1 if run and abs(math.log(close / seq[i - 1][2]["close"])) <= THRESHOLD else 1
        if run == 4:
            if jumps[0] > ref and i < 7:  # the file's first level: the fewer than 4 rows before it are the jump
                jumps = list(range(i - 3))
            ref, run = i, 0
        else:
            jumps.append(i)
    if jumps:
        errors.append(("jump", seq[jumps[0]][0]))
        action = "dropped" if cfg.jumps == "drop" else "flagged"
        ev["jump", action] |= {seq[i][0] for i in jumps}
        if cfg.jumps == "drop":
            seq = [x for i, x in enumerate(seq) if i not in set(jumps)]
    # a row a later rule dropped lends no value: the rules again without it as a source; where a row still
    # took a value from a row dropped then, once more with that row's bad cells unfilled
    kept = {x[0] for x in seq}
    lent = {s for ss in lent_by.values() for s in ss if s not in kept}
    if lent and attempt == 0:
        return reference(numbered, cfg, barred | lent, doomed, 1)
    if lent and attempt >= 1:
        lost = {line for line, ss in lent_by.items() if ss - kept}
        return reference(numbered, cfg, barred, doomed | lost, attempt + 1)
    if lent_by and barred & kept:  # a kept row lent nothing: again, with the rows kept now the only lenders
        return reference(numbered, cfg, frozenset(x[0] for x in numbered) - kept, doomed, attempt + 1)
    return {k: v for k, v in ev.items() if v}, seq, errors


# --------------------------------------------------------------------------------------------


def write_parquet(path: Path, rows: list[list[str]]) -> None:
    """Every column as text (a blank line: a row of nulls), as a file exported from a spreadsheet."""
    cells = [r if any(r) else [None] * 6 for r in rows]
    pd.DataFrame(cells, columns=["Date", "Open", "High", "Low", "Close", "Volume"], dtype="string").to_parquet(path)


def long_file(seed: int) -> tuple[list[list[str]], dict[str, list[tuple[int, list[str]]]], set[int], set[int]]:
    """Two damaged symbols interleaved in one long CSV file, and rows with no symbol → (text rows with
    the symbol last, {symbol: its (line, row)s}, blank lines, lines without a symbol)."""
    rng = np.random.default_rng(100 + seed)
    parts = {}
    for k, sym in enumerate(("AAA", "BBB")):
        rows = clean_rows(seed + k)
        corrupt(rows, rng)
        parts[sym] = rows
    order = ["AAA"] * len(parts["AAA"]) + ["BBB"] * len(parts["BBB"])
    rng.shuffle(order)
    for _ in range(3):  # rows whose symbol cell is empty
        order.insert(int(rng.integers(0, len(order) + 1)), "")
    out, by_sym, blank, nosym = [], {"AAA": [], "BBB": []}, set(), set()
    it = {s: iter(r) for s, r in parts.items()}
    for sym in order:
        line = len(out) + 2
        r = next(it[sym]) if sym else clean_rows(seed)[int(rng.integers(0, N))]
        if not any(r):  # a blank line has no symbol either
            blank.add(line)
            out.append([""] * 7)
            continue
        (by_sym[sym].append((line, r)) if sym else nosym.add(line))
        out.append([*r, sym])
    return out, by_sym, blank, nosym


def check(tmp_path: Path, rows: list[list[str]], cfg: DataConfig, layout: str = "csv") -> dict:
    """Validate ``rows`` written in ``layout`` (csv, parquet or long_csv: ``rows`` from :func:`long_file`)
    and compare the report and the kept rows with :func:`reference`."""
    if layout == "long_csv":
        rows, by_sym, blank, nosym = rows
        path = tmp_path / "long.csv"
        lines = ["Date,Open,High,Low,Close,Volume,Symbol"] + [",".join(r) if any(r) else "" for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif layout == "parquet":
        path = tmp_path / "X.parquet"
        write_parquet(path, rows)
        by_sym, blank, nosym = {"X": [(k + 1, r) for k, r in enumerate(rows)]}, set(), set()
    else:
        path = tmp_path / "X.csv"
        write_csv(path, rows)
        by_sym, blank, nosym = {"X": [(k + 2, r) for k, r in enumerate(rows)]}, set(), set()
    frames, rep = read_unit(Unit("file", str(path)), cfg)
    want: dict[tuple[str, str], set[int]] = defaultdict(set)
    kept_by = {}
    for sym, numbered in by_sym.items():
        ev, kept_by[sym], _ = reference(numbered, cfg)
        for k, v in ev.items():
            want[k] |= v
    want["blank_line", "dropped"] |= blank
    want["missing_symbol", "dropped"] |= nosym
    want = {k: v for k, v in want.items() if v}
    first = 1 if layout == "parquet" else 2
    lines_in = len(rows)

    # the report: every (rule, action) with exactly the rows the reference touches
    got_counts = {(rule, a): e[a] for rule, e in rep["rules"].items() for a in ("dropped", "repaired", "flagged") if e[a]}
    assert got_counts == {k: len(v) for k, v in want.items()}, format_report(rep)
    for rule, e in rep["rules"].items():
        listed = set().union(*(v for (r, _), v in want.items() if r == rule))
        assert e["rows"] == sorted(listed), (rule, format_report(rep))

    # the counts add up, and every input line is kept or dropped exactly once
    dropped = [line for (_, a), v in want.items() if a == "dropped" for line in v]
    assert len(dropped) == len(set(dropped))
    kept_lines = [x[0] for kept in kept_by.values() for x in kept]
    assert sorted(dropped + kept_lines) == list(range(first, lines_in + first))
    assert rep["rows_in"] == lines_in == rep["rows_kept"] + rep["rows_dropped"]
    assert rep["rows_kept"] == len(kept_lines) == sum(map(len, frames.values()))
    assert rep["symbols"] == {s: len(k) for s, k in kept_by.items()}

    # every kept row: the file's values, unless listed as repaired
    repaired = set().union(*(v for (_, a), v in want.items() if a == "repaired"))
    text = {k + first: r for k, r in enumerate(rows)}
    for sym, kept in kept_by.items():
        frame = frames[sym]
        assert [t.strftime("%Y-%m-%d") for t in frame["timestamp"]] == [ts for _, ts, _ in kept]
        for j, (line, _, vals) in enumerate(kept):
            got = {c: float(frame[c].iloc[j]) for c in COLS}
            assert got == vals, (line, got, vals)
            if line not in repaired:
                assert got == {c: float(text[line][i + 1]) for i, c in enumerate(COLS)}, line
    return rep


ERRORS = {"unsorted_timestamps": "unsorted_timestamp", "duplicate_timestamps": "duplicate_timestamp",
          "invalid_values": "value", "ohlc_violations": "ohlc_inconsistent", "jumps": "jump"}
POLICIES = [
    dict(unsorted_timestamps=u, duplicate_timestamps=d, invalid_values=v, ohlc_violations=o, jumps=j)
    for u in ("sort", "drop") for d in ("first", "last") for v in ("drop", "ffill")
    for o in ("clip", "drop") for j in ("flag", "drop")
]


@pytest.mark.parametrize("seed", range(3))
def test_the_report_lists_exactly_the_rows_each_policy_touches(tmp_path, seed):
    """Every combination of the non-error policies, on three randomly damaged files; then each policy
    ``error`` (the other keys at their defaults): one DataError naming the file and the line of the
    first row that breaks the rule, in the order the rules see the rows (after sorting and duplicates)."""
    rng = np.random.default_rng(seed)
    rows = clean_rows(seed)
    corrupt(rows, rng)
    seen = set()
    for pol in POLICIES:
        rep = check(tmp_path, rows, DataConfig(**pol))
        seen |= {(r, a) for r, e in rep["rules"].items() for a in ("dropped", "repaired", "flagged") if e[a]}
    stopped = 0
    for key, rule in ERRORS.items():
        cfg = DataConfig(**{key: "error"})
        _, _, errors = reference([(k + 2, r) for k, r in enumerate(rows)], cfg)
        first = [line for r, line in errors if r == rule or (rule == "value" and r in VALUE_RULES)]
        if not first:  # this file's damage does not reach the rule
            continue
        with pytest.raises(DataError) as e:
            read_unit(Unit("file", str(tmp_path / "X.csv")), cfg)
        msg = str(e.value)
        assert msg.startswith(f"{tmp_path / 'X.csv'}: line {first[0]}: ") and "\n" not in msg, msg
        assert f"data.{key}=error" in msg
        stopped += 1
    assert stopped >= 4
    # the damage exercised every rule and every action of its policies
    assert seen == {*((r, "dropped") for r in ("blank_line", "bad_timestamp", "outlier_timestamp", "duplicate_timestamp")),
                    *((r, a) for r in (*VALUE_RULES, "unsorted_timestamp", "ohlc_inconsistent") for a in ("dropped", "repaired")),
                    ("jump", "dropped"), ("jump", "flagged")}


@pytest.mark.parametrize("layout", ["parquet", "long_csv"])
def test_the_report_lists_exactly_the_rows_in_a_parquet_file_and_a_long_file(tmp_path, layout):
    """The same in a Parquet file (rows numbered from 1) and in a long CSV file of two interleaved
    damaged symbols with rows that have no symbol (one report for the file, the file's line numbers)."""
    for seed in range(2):
        rows = long_file(seed) if layout == "long_csv" else clean_rows(seed)
        if layout == "parquet":
            corrupt(rows, np.random.default_rng(seed))
        for pol in POLICIES[::5]:
            rep = check(tmp_path, rows, DataConfig(**pol), layout)
        assert rep["row_numbers"] == ("row" if layout == "parquet" else "line")


def test_ffill_never_fills_from_a_row_that_is_dropped(tmp_path):
    """The first row has no previous row, so its bad close drops it; the second row's bad volume then
    has no previous kept row either (nor has the third row's bad open): they are dropped and reported
    as such, not filled with the values of the dropped first row and reported as repaired. The next
    bad cell, after a clean row, is filled from that row."""
    rows = clean_rows(0)
    rows[0][4] = "abc"
    rows[1][5] = ""
    rows[2][1] = "inf"
    rows[4][5] = ""
    rep = check(tmp_path, rows, DataConfig(invalid_values="ffill"))
    assert rep["rows_kept"] == N - 3
    assert rep["rules"]["non_numeric"]["dropped"] == 1 and rep["rules"]["nan_or_inf"]["dropped"] == 2
    assert rep["rules"]["nan_or_inf"]["repaired"] == 1 and rep["rules"]["nan_or_inf"]["rows"] == [3, 4, 6]


def test_more_than_five_rows_of_one_rule_are_all_listed(tmp_path):
    """A rule that drops eight rows lists all eight in the report (data_report.json, data check --json);
    the printed report shows the first five and '...'."""
    rows = clean_rows(1)
    bad = [3, 4, 20, 21, 22, 60, 90, 119]
    for i in bad:
        rows[i][5] = "-1"
    rep = check(tmp_path, rows, DataConfig())
    assert rep["rules"]["negative_volume"]["rows"] == [i + 2 for i in bad]
    assert "negative_volume: 8 dropped (lines 5, 6, 22, 23, 24, ...)" in format_report(rep)
