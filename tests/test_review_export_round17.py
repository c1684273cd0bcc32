"""A forecast's warning of a kept jump names the flagged rows the forecast reads, not those before them."""

import numpy as np
import pandas as pd
import pytest

from hftraining.inference.forecaster import Forecaster

from test_export_round17 import SAMPLE, model_dir  # noqa: E402,F401  (the module's model folder)


@pytest.fixture(scope="module")
def fc(model_dir):
    """The random-weight model folder of tests/test_export_round17.py, loaded."""
    return Forecaster.from_pretrained(model_dir)


def _spiked(*rows: int) -> pd.DataFrame:
    """The bundled AEM rows with a bad print (a close at 30% of its level) at each of ``rows``: a jump that
    ``data.jumps=flag`` (the default) keeps."""
    df = pd.read_csv(SAMPLE)
    for k in rows:
        df.loc[k, ["open", "high", "low", "close"]] *= 0.3
    return df


def _flagged(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "flagged" in w]


def test_a_jump_before_the_rows_the_forecast_reads_is_not_said_to_be_read(fc):
    """A bad print years before as_of changes no forecast (the forecast depends on the latest settled_rows
    rows), yet every forecast of the symbol said it was "read by the forecast as they are"."""
    clean = fc.predict({"AEM": pd.read_csv(SAMPLE)}, warnings=[])
    settled = fc.settled_rows()
    n = len(pd.read_csv(SAMPLE))
    assert settled is not None and n > settled + 20
    warnings: list[str] = []
    table = fc.predict({"AEM": _spiked(10)}, warnings=warnings)
    np.testing.assert_allclose(table["forecast_return"], clean["forecast_return"], rtol=0, atol=1e-12)
    assert not _flagged(warnings), warnings
    # just before the rows the forecast depends on: not said; the first of them: said
    warnings = []
    fc.predict({"AEM": _spiked(n - settled - 1)}, warnings=warnings)
    assert not _flagged(warnings), warnings
    warnings = []
    fc.predict({"AEM": _spiked(n - settled)}, warnings=warnings)
    said = _flagged(warnings)
    assert len(said) == 1 and f"jump: position {n - settled}" in said[0] and "read by the forecast" in said[0], warnings


def test_a_file_with_an_old_and_a_recent_jump_says_which_one_the_forecast_reads(fc, tmp_path):
    """Of two flagged rows of a file, one far before as_of and one two bars before it, the warning counted
    both as read by the forecast; it now says how many are, and their dates."""
    n = len(pd.read_csv(SAMPLE))
    df = _spiked(10, n - 3)
    path = tmp_path / "AEM.csv"
    df.to_csv(path, index=False)
    warnings: list[str] = []
    fc.predict(str(path), warnings=warnings)
    said = _flagged(warnings)
    assert len(said) == 1, warnings
    line = said[0]
    assert line.startswith(f"{path}: 2 row(s) flagged") and f"jump: lines 12, {n - 1}" in line, line
    recent = pd.Timestamp(df["Date"].iloc[n - 3], tz="UTC").isoformat()
    old = pd.Timestamp(df["Date"].iloc[10], tz="UTC").isoformat()
    assert f"the forecast reads 1 as they are" in line and recent in line and old not in line, line
    assert "and read by the forecast as they are" not in line, line


def test_a_panel_frame_warns_only_for_the_symbol_whose_read_rows_hold_a_jump(fc):
    """A frame of two symbols, one with a jump long before as_of, the other with one two bars before it:
    one warning, the second symbol's."""
    n = len(pd.read_csv(SAMPLE))
    a = _spiked(10).assign(symbol="AEM")
    b = _spiked(n - 3).assign(symbol="BBB")
    warnings: list[str] = []
    fc.predict(pd.concat([a, b], ignore_index=True), warnings=warnings)
    said = _flagged(warnings)
    assert len(said) == 1 and said[0].startswith("BBB: 1 row(s) flagged"), warnings
    assert f"jump: position {n + n - 3}" in said[0] and "read by the forecast as they are" in said[0], said
