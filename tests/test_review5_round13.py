"""The header hint of a file without a header keeps a volume that lies near the prices as the volume
(a coin at 50,000 trading 30,000 a day, a penny stock trading a few shares), names an Adj Close far below
the close (decades of dividends) and leaves Kraken's vwap of single-trade bars a vwap; a purged k-fold
fold's report and model card say its training rows lie on both sides of its test block, not that the
rows after it are a validation split."""

import json

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.workflows.walkforward import walk_forward
from conftest import tiny  # noqa: E402
from test_eval_report_consistency import tables  # noqa: E402


def _bars(n: int = 150, price: float = 50_000.0, step: float = 0.02, seed: int = 0):
    """Daily stamps (seconds) and open/high/low/close of a random walk around ``price``."""
    rng = np.random.default_rng(seed)
    t = (1_609_459_200 + 86_400 * np.arange(n)).astype(np.int64)
    close = price * np.exp(np.cumsum(rng.normal(0, step, n)))
    open_ = np.r_[close[0], close[:-1]]
    return rng, t, open_, np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99, close


def _hint(tmp_path, capsys, columns) -> str:
    """The header line ``data check`` suggests for a file of ``columns`` without a header."""
    path = tmp_path / "XBTUSD_1440.csv"
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in zip(*columns)))
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "e.g. " in err, err
    return err.split("e.g. ", 1)[1].split()[0]


def test_a_kraken_ohlcvt_volume_near_the_prices_is_told_the_volume(tmp_path, capsys):
    """Kraken's OHLCVT file of a coin near 50,000 that trades 30,000-40,000 a day: the hint told the
    volume ``other6`` and the trades after it ``volume``; a user who followed it read counts of trades as
    the volume."""
    rng, t, o, h, lo, c = _bars()
    volume = rng.uniform(30_000, 40_000, len(t)).round(4)
    trades = rng.integers(5_000, 20_000, len(t))
    hint = _hint(tmp_path, capsys, [t, o.round(1), h.round(1), lo.round(1), c.round(1), volume, trades])
    assert hint == "timestamp,open,high,low,close,volume,trades"


def test_a_penny_stocks_volume_of_a_few_shares_is_told_the_volume(tmp_path, capsys):
    """A stock near 2 that trades 1-3 shares a bar: its volume lies within the prices' range and was told
    ``other6``, leaving the file no volume column at all."""
    rng, t, o, h, lo, c = _bars(price=2.0, step=0.002, seed=1)
    hint = _hint(tmp_path, capsys, [t, o.round(4), h.round(4), lo.round(4), c.round(4), rng.integers(1, 4, len(t))])
    assert hint == "timestamp,open,high,low,close,volume"


def test_an_adj_close_far_below_the_close_is_told_adj_close(tmp_path, capsys):
    """Yahoo's columns of a stock's early years, whose Adj Close (written to six decimals) is a third of the
    close after decades of dividends: it was told ``volume`` (and the volume ``other7``), and read so."""
    rng, t, o, h, lo, c = _bars(price=80.0, seed=2)
    volume = rng.integers(1_000_000, 9_000_000, len(t))
    hint = _hint(tmp_path, capsys, [t, o.round(2), h.round(2), lo.round(2), c.round(2), (c * 0.3).round(6), volume])
    assert hint == "timestamp,open,high,low,close,adj_close,volume"


def test_krakens_vwap_of_single_trade_bars_stays_the_vwap(tmp_path, capsys):
    """Kraken's OHLC API rows of an illiquid pair, most bars a single trade (open = high = low = close =
    vwap): the vwap is in a constant ratio of 1 to the close, and was told ``adj_close``."""
    rng, t, o, h, lo, c = _bars(price=30_000.0, step=0.001, seed=3)
    single = rng.random(len(t)) < 0.9
    o, h, lo = np.where(single, c, o), np.where(single, c, h), np.where(single, c, lo)
    vwap = np.where(single, c, (h + lo) / 2)
    volume = rng.uniform(0.001, 0.01, len(t)).round(6)
    trades = np.where(single, 1, rng.integers(2, 9, len(t)))
    hint = _hint(tmp_path, capsys, [t, o.round(1), h.round(1), lo.round(1), c.round(1), vwap.round(1), volume, trades])
    assert hint == "timestamp,open,high,low,close,vwap,volume,trades"


@pytest.fixture(scope="module")
def purged(tmp_path_factory):
    """A 3-fold purged k-fold walk-forward of the zero forecast on the bundled data, each fold with its
    report and model card; returns walkforward.json's folds and their run folders."""
    out = tmp_path_factory.mktemp("purged") / "run"
    walk_forward(load_config(None, tiny(out, "model.type=zero", "evaluation.baseline_max_windows=200")), 3,
                 scheme="purged_kfold")
    root = out / "walkforward"
    results = json.loads((root / "walkforward.json").read_text())["folds"]
    return results, [root / f"fold-{f['fold']}" for f in results]


def _split_row(md: str, first_header: str) -> str:
    found = [r[1] for header, rows in tables(md) if header[0] == first_header for r in rows if r[0] == "split"]
    assert len(found) == 1, found
    return found[0]


def test_a_purged_kfold_folds_card_and_report_give_its_training_dates_on_both_sides(purged):
    """A purged k-fold fold trains on the rows before and after its test block and has no validation
    split; its card and report called the rows after the block "validation 20..→20..", dates the fold
    trained on. They are said as training dates, before and after the test dates."""
    results, runs = purged
    middle = results[1]
    run = runs[1]
    card = (run / "final" / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[1]
    for text in (_split_row(card, ""), _split_row((run / "report.md").read_text(encoding="utf-8"), "item")):
        assert "validation" not in text, text
        train, test = text.split("train ", 1)[1].split(", test ")
        assert test.startswith(f"{middle['test_from']} → "), text
        before, after = train.split(" and ")
        assert before.split(" → ")[1] < middle["test_from"] < after.split(" → ")[0], text
