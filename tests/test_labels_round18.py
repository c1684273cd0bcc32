"""Labels and the rows they are taken from: a label of one symbol that is 0 on every date is refused,
the equal-weight universe return of a date whose returns all fall below exp's range, a return
whose price ratio leaves float64 named by its date, and the rows-needed reason that adds up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.core.config import DataConfig
from hftraining.core.errors import DataError
from hftraining.data.labels import row_labels, universe_return
from hftraining.data.rows import RowsNeeded, symbol_rows
from conftest import tiny  # noqa: E402


from test_config_combos_audit import _train  # noqa: E402  (exit code and stderr of `hftraining train`)


def test_an_excess_return_label_of_one_symbol_is_refused(tmp_path, monkeypatch, capsys):
    """``data.target=excess_return`` of a single symbol is its return minus its own: 0 on every date.
    The run trained on zeros, exited 0 and printed an "undefined" verdict for every model; now it is
    a one-line error naming the key, before any run folder is written, as for cs_zscore and cs_rank."""
    labels = row_labels(np.array([0.01, -0.02, 0.03], np.float32), np.arange(3, dtype=np.int64), "excess_return")
    assert not labels.any()  # the labels the run would train on
    rc, err = _train(tiny(tmp_path / "run", "data.symbols=[AEM]", "data.target=excess_return", "model.type=ridge"),
                     monkeypatch, capsys, tmp_path)
    assert rc == 2 and "data.target: excess_return" in err and "every label would be 0" in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("hftraining: error:") and "Traceback" not in err
    assert not (tmp_path / "run" / "final").exists()


def test_a_date_whose_returns_all_underflow_exp_has_the_log_mean_exp_as_its_universe_return():
    """Every return of a date below about −745 (a price divided by more than 1e323): the sum of exp
    underflowed to 0, the universe return read −inf and every excess-return label of the date +inf;
    just above, the sum was subnormal and lost digits. Now log(mean(exp(r))) to float64 precision,
    as computed in long double; the other dates keep their values bit for bit."""
    r = np.array([-760.0, -750.0, -740.0, -741.0, 0.01, 0.02, -0.03])
    inv = np.array([0, 0, 1, 1, 2, 2, 2])
    got = universe_return(r, inv)
    want = [float(np.log(np.mean(np.exp(r[inv == k].astype(np.longdouble))))) for k in range(3)]
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-15)
    np.testing.assert_allclose(got[2], want[2], atol=1e-15)
    assert got[2] == np.log(np.exp(r[4:]).sum() / 3)  # an ordinary date: the plain sum, bit for bit
    labels = row_labels(r.astype(np.float32), inv.astype(np.int64), "excess_return")
    assert np.isfinite(labels).all()
    np.testing.assert_allclose(labels[:2], [-10 + np.log(2 / (1 + np.exp(-10))), np.log(2 / (1 + np.exp(-10)))], rtol=1e-6)


def test_a_return_beyond_float64_names_its_timestamp_and_both_closes(recwarn):
    """A close that leaps from 1e-200 to 1e200 (both valid prices) has a ratio beyond float64. The error
    named "row 20" of the validated frame (not the file's line: a header, dropped or sorted rows move it)
    and the close as ``np.float64(1e+200)``, after a numpy overflow warning; now it names the bar's date
    and both closes, without a warning."""
    n = 30
    c = np.full(n, 1e-200)
    c[20:] = 1e200
    frame = pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC"),
                          "open": c, "high": c, "low": c, "close": c, "volume": 1.0})
    with pytest.raises(DataError) as e:
        symbol_rows(frame, ["calendar"], "AAA", tz="UTC")
    msg = str(e.value)
    assert "\n" not in msg and "AAA" in msg and "2020-01-21" in msg, msg
    assert "1e+200" in msg and "1e-200" in msg and "np.float64" not in msg and "row 20" not in msg, msg
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("features", [["calendar"], ["log_return"], ["rsi_14"]])
def test_the_rows_needed_reason_adds_up_to_the_rows_with_min_rows(features):
    """With ``data.min_rows`` above one window, the reason read "feature warm-up 0 + data.min_rows 500"
    for 501 rows when no feature has a warm-up (the first row, which has no return, is one): every
    reason's numbers add up to the rows it explains."""
    for min_rows in (0, 500):
        for targets in (True, False):
            need = RowsNeeded.of(DataConfig(features=features, min_rows=min_rows), targets=targets)
            numbers = [int(part.split()[-1] if part[0].isalpha() else part.split()[0]) for part in need.why.split(" + ")]
            assert sum(numbers) == need.rows, need
