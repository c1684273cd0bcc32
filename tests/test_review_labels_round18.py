"""A label taken across the symbols of each date (excess_return, cs_zscore, cs_rank) scored on a
validation or test split where no date holds two symbols: every label there is 0 by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.data.labels import row_labels
from conftest import tiny  # noqa: E402

YAHOO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yahoo"


def _panel(folder: Path, wpm_until: str) -> Path:
    """AEM's whole file and WPM's rows up to ``wpm_until`` (a symbol delisted, or a file not updated)."""
    folder.mkdir(parents=True)
    (folder / "AEM.csv").write_text((YAHOO / "AEM.csv").read_text())
    wpm = pd.read_csv(YAHOO / "WPM.csv")
    wpm[wpm.iloc[:, 0] <= wpm_until].to_csv(folder / "WPM.csv", index=False)
    return folder


from test_labels_round18 import _train  # noqa: E402  (exit code and stderr of `hftraining train`)


@pytest.mark.parametrize("target", ["excess_return", "cs_rank"])
@pytest.mark.parametrize("until,split", [("2023-07-28", "validation"), ("2025-01-31", "test")])
def test_a_split_whose_dates_hold_one_symbol_is_refused_for_a_label_taken_across_symbols(
        tmp_path, monkeypatch, capsys, target, until, split):
    """WPM's rows end before the split (the calendar split starts validation in 2024-05 and test in
    2025-04 on AEM's dates): every label of that split is AEM's excess over itself, or its rank among
    one, 0. The run exited 0 and reported the model "significantly WORSE than the zero-return
    forecast" (DM p = 1.7e-21) on labels no forecast can differ from; now it is a one-line error
    naming the key and the split, before any run folder is written."""
    if not (YAHOO / "AEM.csv").is_file():
        pytest.skip("the sample data of ../shared/data/yahoo")
    data = _panel(tmp_path / "data", until)
    wpm = pd.read_csv(data / "WPM.csv")
    r = np.log(wpm["close"].to_numpy()[1:] / wpm["close"].to_numpy()[:-1])
    assert not row_labels(r[-5:], np.arange(5, dtype=np.int64), target).any()  # one symbol a date: all 0
    rc, err = _train(tiny(tmp_path / "run", "data.symbols=[AEM, WPM]", f"data.data_dir={data}",
                          f"data.target={target}", "model.type=ridge", "evaluation.report=false"),
                     monkeypatch, capsys, tmp_path)
    assert rc == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"hftraining: error: data.target: {target}") and f"no {split} date has more than 1 symbol" in last, last
    assert "Traceback" not in err and not (tmp_path / "run" / "final").exists()


def test_a_panel_whose_splits_all_hold_two_symbols_still_trains(tmp_path, monkeypatch, capsys):
    """The refusal reads whole splits: a symbol that leaves inside the test split (a few test dates
    with AEM alone) still trains and is scored on the dates both have."""
    if not (YAHOO / "AEM.csv").is_file():
        pytest.skip("the sample data of ../shared/data/yahoo")
    data = _panel(tmp_path / "data", "2025-09-30")
    rc, err = _train(tiny(tmp_path / "run", "data.symbols=[AEM, WPM]", f"data.data_dir={data}",
                          "data.target=excess_return", "model.type=ridge", "evaluation.report=false"),
                     monkeypatch, capsys, tmp_path)
    assert rc == 0, err[-3000:]
    assert (tmp_path / "run" / "final").is_dir()
