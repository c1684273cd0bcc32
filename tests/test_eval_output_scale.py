"""Evaluation outputs at scale: the JSON writer lays out a report of thousands of symbols compactly and
reads back exactly what ``json.dumps`` would have written; the backtest's carrying forward and holding
of weights give, without a loop over every date, exactly what the loop over dates gives."""

import json
import math
import struct

import numpy as np
import pytest

from hftraining.core.jsonio import dumps, json_safe, read_json, write_json
from hftraining.eval import backtest
from hftraining.eval.backtest import _select, carry_forward, hold, rebalancing, topk_weights


def _canonical(text: str) -> str:
    """The parsed content of ``text``, written one way: floats by repr (bit-exact), NaN and ±Inf kept,
    1 and 1.0 told apart."""
    return json.dumps(json.loads(text))


def _float(rng) -> float:
    """Any finite double from its bits half the time (subnormals, -0.0, huge exponents), else a metric-like one."""
    if rng.random() < 0.5:
        while True:
            x = struct.unpack("<d", rng.bytes(8))[0]
            if math.isfinite(x):
                return x
    return float(rng.normal(0, 1) * 10.0 ** rng.integers(-12, 4))


def _tree(rng, depth: int, exact: bool):
    """A random nested value: dicts, lists and tuples (empty ones too) of floats, ints, bools, None, strings
    that need escapes, non-finite floats, numpy values (strict only) and non-string keys."""
    if depth == 0 or rng.random() < 0.3:
        pick = rng.integers(0, 11)
        if pick < 4:
            return _float(rng)
        if pick == 4:
            return [math.nan, math.inf, -math.inf][rng.integers(0, 3)]
        if pick == 5:
            return int(rng.integers(-10**12, 10**12)) * int(rng.choice([1, 10**9]))
        if pick == 6:
            return [True, False, None][rng.integers(0, 3)]
        if pick == 7:
            return "".join(rng.choice(list('ab"\\\n\té€ 😀/,:{}[]'), size=int(rng.integers(0, 8))))
        if pick == 8 and not exact:
            return [np.float64(_float(rng)), np.float32(1.5), np.int64(7), np.bool_(True), np.array([[1.0, np.nan], [2.0, 3.0]])][rng.integers(0, 5)]
        return {} if rng.random() < 0.5 else []
    n = int(rng.integers(0, 6))
    kind = rng.integers(0, 3)
    if kind == 0:
        keys = [f"k{i}" for i in range(n)]
        if rng.random() < 0.3:  # keys the encoder turns into strings
            keys = [[1, 2.5, True, None, "s\"é", -0.0][i % 6] if i < 6 else f"k{i}" for i in range(n)]
        return {k: _tree(rng, depth - 1, exact) for k in keys}
    items = [_tree(rng, depth - 1, exact) for _ in range(n)]
    return tuple(items) if kind == 1 else items


@pytest.mark.parametrize("exact", [False, True])
def test_dumps_reads_back_what_json_dumps_with_indent_wrote(exact):
    rng = np.random.default_rng(3)
    for trial in range(300):
        obj = _tree(rng, int(rng.integers(0, 6)), exact)
        for indent in (2, 1, 0, "\t"):
            before = json.dumps(obj, indent=indent) if exact else json.dumps(json_safe(obj), indent=indent, allow_nan=False)
            text = dumps(obj, indent=indent, exact=exact)
            assert _canonical(text) == _canonical(before), (trial, indent)
        if not exact:
            assert "NaN" not in text and "Infinity" not in text


@pytest.mark.parametrize("exact", [False, True])
def test_dumps_on_one_line_is_json_dumps_byte_for_byte(exact):
    """The one-line form (metrics.jsonl, the store's records and their digests) does not change."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        obj = _tree(rng, 4, exact)
        want = json.dumps(obj) if exact else json.dumps(json_safe(obj), allow_nan=False)
        assert dumps(obj, indent=None, exact=exact) == want


def _report(n_symbols: int) -> dict:
    """An eval.json-like report: top-level figures, and per symbol a row of metrics with its per-step rows."""
    rng = np.random.default_rng(0)
    step = lambda: {"mse": float(rng.random()), "mae": float(rng.random()), "directional_p": math.nan}  # noqa: E731
    return {
        "split": "test", "n_symbols": n_symbols, "model": {"mse": 1e-4, "cross_section": {"ic": {"mean": 0.02, "std": math.inf}}},
        "per_symbol": {"model": {f"S{i:04d}": {"n_windows": 30, "mse": float(rng.random()), "ic": np.float64(0.1),
                                              "per_step": [step() for _ in range(3)]} for i in range(n_symbols)}},
        "dates": np.arange(5, dtype=np.int64) * 86_400,
    }


def test_report_rows_of_scalars_are_written_one_a_line(tmp_path):
    """A row holding only scalars (one step of one symbol's metrics, a list of dates) is one line; the
    levels above it stay indented, one key a line; the file reads back as json.dumps with indent 2
    wrote it, in fewer lines and bytes."""
    report = _report(200)
    path = write_json(tmp_path / "eval.json", report)
    text = path.read_text(encoding="utf-8")
    safe = json_safe(report)
    old = json.dumps(safe, indent=2, allow_nan=False)
    assert _canonical(text) == _canonical(old) and read_json(path) == json.loads(old)
    for row in safe["per_symbol"]["model"].values():
        for one in row["per_step"]:
            assert "\n" + " " * 10 + json.dumps(one) + "," in text or "\n" + " " * 10 + json.dumps(one) + "\n" in text
    assert text.endswith('\n  "dates": [0, 86400, 172800, 259200, 345600]\n}\n')
    assert text.startswith('{\n  "split": "test",\n  "n_symbols": 200,\n  "model": {\n    "mse": 0.0001,\n')
    assert '\n      "S0007": {\n        "n_windows": 30,\n' in text
    assert text.count("\n") < old.count("\n") / 2 and len(text) < 0.8 * len(old)


def test_exact_state_keeps_non_finite_floats_and_strict_files_name_them_null(tmp_path):
    state = {"best": {"value": math.inf, "history": [1.0, math.nan, -math.inf]}, "rng": {"seed": 3, "draws": [[1, 2], []]}}
    path = write_json(tmp_path / "state.json", state, indent=1, exact=True)
    back = read_json(path)
    assert back["best"]["value"] == math.inf and math.isnan(back["best"]["history"][1]) and back["rng"] == state["rng"]
    assert _canonical(path.read_text()) == _canonical(json.dumps(state, indent=1))
    strict = write_json(tmp_path / "eval.json", state).read_text()
    assert json.loads(strict)["best"] == {"value": None, "history": [1.0, None, None]}
    assert "Infinity" not in strict and "NaN" not in strict


def test_dumps_refuses_what_json_dumps_refuses():
    loop: dict = {"a": [1]}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match="Circular"):
        dumps(loop, exact=True)
    with pytest.raises(TypeError):
        dumps({"a": [{"b": {1, 2}}]})  # a set is no JSON
    with pytest.raises(TypeError):
        dumps({"a": {(1, 2): [3]}}, exact=True)  # nor a tuple key
    with pytest.raises(TypeError):
        dumps({"a": [np.int64(3), [1]]}, exact=True)  # exact: numpy values are not converted


# --------------------------------------------------------------------------------------------
# The backtest's panels, without a loop over dates


def _carry_forward_loop(values, absent):
    """The plain rule: an absent entry takes the entry of the date before (after that one's own carry)."""
    out = np.array(values, dtype=np.float64)
    for t in range(1, len(out)):
        for i in range(out.shape[1]):
            if absent[t, i]:
                out[t, i] = out[t - 1, i]
    return out


def _absent_runs(rng, T: int, N: int) -> np.ndarray:
    """(T, N) bool with runs absent at the start, in the middle and at the end, a column absent throughout
    and one never absent."""
    a = rng.random((T, N)) < 0.2
    for i in range(N):
        for _ in range(int(rng.integers(0, 3))):
            s = int(rng.integers(0, T))
            a[s: s + int(rng.integers(1, max(T // 4, 2))), i] = True
    a[: T // 3, 0] = True  # a run from the first date
    a[-(T // 3):, 1 % N] = True  # a run to the last date
    a[:, 2 % N] = True  # absent throughout
    a[:, 3 % N] = False  # never absent
    return a


def test_carry_forward_is_the_loop_over_dates():
    rng = np.random.default_rng(5)
    for T, N in [(1, 3), (2, 4), (7, 5), (60, 6), (300, 9)]:
        for _ in range(10):
            absent = _absent_runs(rng, T, N)
            values = rng.normal(size=(T, N))
            values[rng.random((T, N)) < 0.1] = np.nan  # NaN forecasts are carried as they are
            got = carry_forward(values, absent)
            want = _carry_forward_loop(values, absent)
            assert got.dtype == np.float64 and got.shape == (T, N)
            np.testing.assert_array_equal(got, want)  # bit for bit, NaN where NaN
            assert np.array_equal(got.view(np.int64), want.view(np.int64))
    ints = np.arange(12).reshape(4, 3)  # not float: converted as before
    np.testing.assert_array_equal(carry_forward(ints, np.eye(4, 3, dtype=bool)), _carry_forward_loop(ints, np.eye(4, 3, dtype=bool)))
    assert carry_forward(np.zeros((0, 3)), np.zeros((0, 3), dtype=bool)).shape == (0, 3)


def _hold_loop(weights, returns, every=1, absent=None, max_gross=None, closed=None):
    """:func:`hold` as a loop over every date."""
    from hftraining.eval.backtest import _drift
    gaps = None if absent is None else np.asarray(absent, dtype=bool)
    shut = None if closed is None or not np.any(closed) else np.asarray(closed, dtype=bool)
    if every <= 1 and (gaps is None or not gaps[1:].any()):
        return weights if shut is None else np.where(shut, 0.0, weights)
    w = np.array(weights, dtype=np.float64)
    if shut is not None:
        w[0, shut[0]] = 0.0
    simple = np.expm1(np.nan_to_num(np.asarray(returns, dtype=np.float64)))
    reb = rebalancing(len(w), every)
    for t in range(1, len(w)):
        if not reb[t]:
            w[t] = _drift(w[t - 1], simple[t])
        elif gaps is not None and gaps[t].any():
            keep = gaps[t]
            w[t, keep] = _drift(w[t - 1], simple[t])[keep]
            if max_gross is not None:
                room = max(max_gross - float(np.abs(w[t, keep]).sum()), 0.0)
                traded = float(np.abs(w[t, ~keep]).sum())
                if traded > room:
                    w[t, ~keep] *= room / traded
        if shut is not None:
            w[t, shut[t]] = 0.0
    return w


def test_hold_visits_only_the_dates_that_follow_the_one_before():
    rng = np.random.default_rng(6)
    for T, N in [(1, 3), (2, 3), (40, 5), (250, 8)]:
        for every in (1, 2, 5, T + 1):
            for sparse in (0.0, 0.01, 0.3):
                w = rng.normal(size=(T, N)) / N
                R = rng.normal(0, 0.02, (T, N))
                R[rng.random((T, N)) < 0.05] = np.nan
                absent = rng.random((T, N)) < sparse
                closed = (rng.random((T, N)) < 0.05) & ~absent
                for kw in ({}, {"absent": absent}, {"absent": absent, "max_gross": 0.5}, {"absent": absent, "closed": closed},
                           {"closed": closed, "max_gross": 1.0}):
                    got, want = hold(w, R, every, **kw), _hold_loop(w, R, every, **kw)
                    assert np.array_equal(np.asarray(got).view(np.int64), np.asarray(want).view(np.int64)), (T, every, sparse, kw)
    assert hold(np.zeros((0, 2)), np.zeros((0, 2)), 3).shape == (0, 2)


def _topk_loop(signal, k=3, dropout=0, long_only=False, max_gross=1.0, every=1, absent=None):
    """:func:`topk_weights` as a loop over every date, each ranked on its own."""
    sig = np.asarray(signal, dtype=np.float64)
    T, N = sig.shape
    w = np.zeros((T, N))
    books: list[tuple[list[int], list[int]]] = []
    longs: list[int] = []
    shorts: list[int] = []
    reb = rebalancing(T, every)
    for t in range(T):
        if reb[t]:
            gone = np.zeros(N, dtype=bool) if absent is None else np.asarray(absent[t], dtype=bool)
            avail = np.flatnonzero(np.isfinite(sig[t]) & ~gone)
            s = sig[t, avail]
            # held names without a row keep their places (no price to sell at); the others fill the rest
            locked_long, locked_short = [i for i in longs if gone[i]], [i for i in shorts if gone[i]]
            n = len(avail) + len(locked_long) + len(locked_short)
            kk = k if long_only else min(k, n // 2)  # long-short: both sides the same size
            if len(avail) == 0 or np.all(s == s[0]):
                longs, shorts = locked_long, locked_short
            else:
                everyone = [int(i) for i in avail[np.argsort(-s, kind="stable")]]
                held_short = set() if long_only else set(shorts) & set(everyone)
                ranked = everyone
                if dropout > 0:  # a held short is no long candidate: it leaves its side only through that side's dropout
                    ranked = [i for i in everyone if i not in held_short]
                longs = locked_long + _select(ranked, set(longs) & set(ranked), max(kk - len(locked_long), 0), dropout)
                if long_only:
                    shorts = []
                else:
                    rest = [int(i) for i in avail[np.argsort(s, kind="stable")] if i not in longs]
                    shorts = locked_short + _select(rest, held_short - set(longs), max(kk - len(locked_short), 0), dropout)
                    if len(longs) < kk:
                        # fewer than kk names were not held short (the universe shrank): the long side takes the
                        # best of those the short side let go, so both sides hold kk (n >= 2kk: always enough)
                        fill = set(longs) | set([i for i in everyone if i not in longs and i not in shorts][: kk - len(longs)])
                        longs = locked_long + [i for i in everyone if i in fill]
            row = np.zeros(N)
            half = max_gross if long_only else max_gross / 2.0
            if longs:
                row[longs] = half / len(longs)
            if shorts:
                row[shorts] = -half / len(shorts)
        w[t] = row
        books.append((list(longs), list(shorts)))
    return w, books


@pytest.mark.parametrize("block", [5, 4096])
def test_topk_ranks_dates_together_as_the_loop_ranks_each(monkeypatch, block):
    """Forecasts with ties, NaN, -0.0, dates all equal or without any, names without a row, dropout 0
    and 1, long-only or not, rebalancing every 1 or 3 dates; blocks of 5 dates cut the panel anywhere."""
    monkeypatch.setattr(backtest, "TOPK_BLOCK", block)
    rng = np.random.default_rng(7)
    for T, N in [(1, 1), (3, 2), (23, 3), (60, 7), (120, 12)]:
        for trial in range(4):
            sig = np.round(rng.normal(size=(T, N)), int(rng.integers(0, 3)))  # ties
            sig[rng.random((T, N)) < 0.15] = np.nan
            sig[rng.random(T) < 0.05] = 1.0  # a date of equal forecasts
            sig[rng.random(T) < 0.03] = np.nan  # a date without any
            sig[rng.random((T, N)) < 0.05] = -0.0
            absent = None if trial == 0 else rng.random((T, N)) < [0.01, 0.05, 0.2][trial - 1]
            for k, dropout, long_only, every, gross in [(1, 0, False, 1, 1.0), (2, 0, True, 1, 0.7), (3, 0, False, 3, 1.0),
                                                        (5, 0, True, 3, 0.0), (2, 1, False, 1, 1.0), (2, 0, False, 1, 0.0),
                                                        (5, 0, True, 1, 0.9), (5, 0, False, 1, 0.9)]:  # 0.9 / 5 != 0.9 * (1 / 5)
                got = topk_weights(sig, k, dropout, long_only, gross, every, absent)
                want = _topk_loop(sig, k, dropout, long_only, gross, every, absent)
                assert np.array_equal(got[0].view(np.int64), want[0].view(np.int64)), (T, N, trial, k, dropout, long_only)
                assert got[1] == want[1] and all(type(i) is int for a, b in got[1] for i in a + b)


def test_topk_ranks_an_infinite_forecast_as_no_forecast_in_blocks_too():
    """±inf is no forecast on a date ranked one at a time (np.isfinite); ranked in a block it was
    sorted first (+inf long, -inf short)."""
    rng = np.random.default_rng(0)
    s = rng.normal(size=(6, 5))
    s[0, 0], s[1, 3], s[2, [1, 4]] = np.inf, -np.inf, [np.inf, -np.inf]
    for long_only in (False, True):
        got = backtest.topk_weights(s, 1, long_only=long_only)
        want = backtest.topk_weights(np.where(np.isfinite(s), s, np.nan), 1, long_only=long_only)
        assert got[1] == want[1] and np.array_equal(got[0], want[0])
