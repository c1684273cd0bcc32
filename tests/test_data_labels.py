"""Cross-sectional labels (``data.target``), date batches (``data.batching: dates``) and the IC and
ranking losses (``model.loss``): each against a direct pandas / numpy reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.core.config import DataConfig, ModelConfig, load_config
from hftraining.core.errors import ConfigError
from hftraining.data.labels import RANK_SCALE, row_labels
from hftraining.data.pipeline import apply, prepare
from hftraining.data.synth import synth_frames
from hftraining.data.windows import DateSampler, date_groups
from hftraining.eval.forecasts import collect_forecasts
from hftraining.models.losses import compute_loss, ic_loss, listnet_loss
from hftraining.models.outputs import ForecastOutput


def _panel(seed: int = 0, dates: int = 40, symbols: int = 6):
    """Rows of ``symbols`` symbols over ``dates`` dates, some (symbol, date) missing, one date with a
    single symbol; (returns, times) flat in symbol order as in Rows, and the same as a frame."""
    rng = np.random.default_rng(seed)
    recs = []
    for s in range(symbols):
        for t in range(dates):
            if rng.random() < 0.15 and t != 7:
                continue
            if t == 7 and s > 0:  # date 7: one symbol only
                continue
            recs.append((s, t, rng.normal(0, 0.02) if t != 11 else 0.01))  # date 11: all returns tie
    df = pd.DataFrame(recs, columns=["symbol", "date", "r"])
    return df["r"].to_numpy(np.float32), df["date"].to_numpy(np.int64) * 86_400 * 10**9, df


def _qlib(df: pd.DataFrame, target: str) -> np.ndarray:
    """The reference: Qlib's processors written with pandas groupby, date by date."""
    g = df.groupby("date")["r"]
    r = df["r"].astype(np.float64)
    if target == "cs_zscore":  # CSZScoreNorm: (x - mean) / std, pandas' sample std
        out = (r - g.transform("mean")) / g.transform("std")
    elif target == "cs_rank":  # CSRankNorm (pct rank - 0.5, × 3.46), centred: minus half a rank step
        out = (g.rank(pct=True) - 0.5 / g.transform("size") - 0.5) * 3.46
    else:
        out = r - np.log(g.transform(lambda x: np.exp(x.astype(np.float64)).mean()))
    out = out.where(g.transform("size") >= 2, 0.0)  # no cross-section: 0
    return out.fillna(0.0).replace([np.inf, -np.inf], 0.0).to_numpy()


@pytest.mark.parametrize("target", ["excess_return", "cs_zscore", "cs_rank"])
def test_labels_match_qlib_processors_per_date(target):
    r, t, df = _panel()
    got = row_labels(r, t, target)
    assert got.dtype == np.float32 and got.shape == r.shape
    np.testing.assert_allclose(got, _qlib(df, target), rtol=2e-5, atol=2e-6)
    alone = (df["date"] == 7).to_numpy()
    assert alone.sum() == 1 and got[alone][0] == 0.0  # one symbol: no cross-section
    # all returns equal: excess and z-score are 0; ranks tie at the middle, which is 0
    assert np.allclose(got[(df["date"] == 11).to_numpy()], 0.0, atol=1e-6)
    assert row_labels(r, t, "return") is None


@pytest.mark.parametrize("target", ["excess_return", "cs_zscore", "cs_rank"])
def test_a_label_reads_only_its_own_date(target):
    """Changing every row dated after date 20 (or removing them) leaves the labels up to date 20."""
    r, t, df = _panel(seed=3)
    base = row_labels(r, t, target)
    early = (df["date"] <= 20).to_numpy()
    changed = r.copy()
    changed[~early] = np.random.default_rng(9).normal(0, 0.05, (~early).sum())
    np.testing.assert_array_equal(row_labels(changed, t, target)[early], base[early])
    np.testing.assert_array_equal(row_labels(r[early], t[early], target), base[early])


@pytest.fixture(scope="module")
def frames():
    return synth_frames(6, 260, seed=4)


def _data(frames, **kw):
    d = dataclasses.replace(DataConfig(), features=["log_return_1", "rsi_14"], sequence_length=20,
                            prediction_horizon=3, **kw)
    return d, prepare(d, dict(frames))


def test_windows_carry_the_label_and_forecasts_keep_realised_returns(frames):
    d, data = _data(frames, target="cs_rank")
    ws = data.train
    rows = np.asarray(ws.returns)
    labels = row_labels(rows, ws.row_times, "cs_rank")
    s = data.preprocessing.target_scale
    assert ws.target == "cs_rank" and np.array_equal(ws.labels, labels)
    b = ws.batch(np.arange(8))
    ahead = ws.ends[:8, None] + np.arange(1, 4)
    np.testing.assert_allclose(b["y"].numpy(), labels[ahead] / np.float32(s), rtol=1e-6)  # targets: labels
    np.testing.assert_allclose(b["past"].numpy()[:, -1], labels[ws.ends[:8]] / np.float32(s), rtol=1e-6)  # so is the past channel
    # the target scale is the std of the training rows' labels, not of the returns
    _, ret_data = _data(frames)
    assert s != pytest.approx(ret_data.preprocessing.target_scale)
    # evaluation: forecasts and truth in label units, the backtest's returns realised
    fc = collect_forecasts(None, data.test, s, 64, pred_scaled=np.zeros((len(data.test), 3), np.float32))
    np.testing.assert_allclose(fc.true, labels[data.test.ends[:, None] + np.arange(1, 4)], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fc.last_return, rows[data.test.ends], rtol=1e-6)
    assert fc.target == "cs_rank"
    # the saved preprocessing reproduces the labels on the same frames
    again = apply(data.preprocessing, dict(frames), split="test")
    np.testing.assert_array_equal(again.targets(), data.test.targets())


def test_date_batches_are_whole_dates_once_per_epoch_and_resume(frames):
    _, data = _data(frames)
    ws = data.train
    times = ws.times
    n_dates = len(np.unique(times))
    s = DateSampler(times, 3, seed=5)
    seen = []
    for _ in range(n_dates // 3):
        idx = s.next_batch()
        days = np.unique(times[idx])
        assert len(days) == 3
        assert len(idx) == np.isin(times, days).sum()  # every window of its dates, and only those
        seen.extend(days.tolist())
    assert len(seen) == len(set(seen)) == (n_dates // 3) * 3  # no date twice in an epoch
    # resume: a sampler restored from the state continues with the same batches
    a = DateSampler(times, 3, seed=5)
    for _ in range(5):
        a.next_batch()
    b = DateSampler(times, 3, seed=5)
    b.load_state_dict(a.state_dict())
    for _ in range(n_dates):  # across the epoch boundary too
        np.testing.assert_array_equal(a.next_batch(), b.next_batch())
    # two ranks split the dates of one process's batch (3 dates per rank → 6 in all)
    one = DateSampler(times, 6, seed=5)
    r0, r1 = DateSampler(times, 3, seed=5, rank=0, world_size=2), DateSampler(times, 3, seed=5, rank=1, world_size=2)
    for _ in range(4):
        np.testing.assert_array_equal(np.sort(one.next_batch()), np.sort(np.concatenate([r0.next_batch(), r1.next_batch()])))


def _groups_ref(pred, target, groups, fn, least: int = 2):
    out = []
    for g in range(groups.shape[0]):
        m = groups[g] > 0
        if m.sum() < least:
            continue
        for h in range(pred.shape[1]):
            out.append(fn(pred[m, h], target[m, h]))
    return np.mean(out)


def test_ic_and_listnet_losses_against_numpy():
    rng = np.random.default_rng(0)
    times = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 3, 4, 4])  # date 2: one window, date 4: two (not for IC)
    B, H = len(times), 2
    pred, target = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    groups = date_groups(times)
    assert groups.shape == (5, B) and torch.equal(groups.sum(0), torch.ones(B))
    p, y = torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    ic = ic_loss(p, y, groups)
    assert float(ic) == pytest.approx(-_groups_ref(pred, target, groups.numpy(), lambda a, b: np.corrcoef(a, b)[0, 1], 3),
                                      abs=1e-5)

    def listnet(a, b):
        pa, pb = np.exp(a) / np.exp(a).sum(), np.exp(b) / np.exp(b).sum()
        return -(pb * np.log(pa)).sum()

    assert float(listnet_loss(p, y, groups)) == pytest.approx(_groups_ref(pred, target, groups.numpy(), listnet), rel=1e-5)
    # IC is blind to a per-date shift and positive scale of the forecast; it rewards ranking, not level
    shift = torch.tensor(rng.normal(size=5), dtype=torch.float32)[torch.as_tensor(np.unique(times, return_inverse=True)[1])]
    assert float(ic_loss(3 * p + shift[:, None], y, groups)) == pytest.approx(float(ic), abs=1e-5)
    assert float(ic_loss(y, y, groups)) == pytest.approx(-1.0, abs=1e-5)
    # gradients reach the forecast
    q = p.clone().requires_grad_(True)
    listnet_loss(q, y, groups).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and torch.all(q.grad[7] == 0)  # the lone window gets none


def test_cross_sectional_loss_needs_date_batches():
    cfg = ModelConfig(loss="ic")
    out = ForecastOutput(prediction=torch.zeros(4, 2))
    with pytest.raises(ConfigError, match="data.batching=dates"):
        compute_loss(cfg, out, torch.zeros(4, 2), 1.0)
    with pytest.raises(ConfigError, match="data.batching=dates"):
        load_config(None, ["model.loss=ic"])
    with pytest.raises(ConfigError, match="data.augment_jitter"):
        load_config(None, ["data.batching=dates", "data.augment_jitter=2"])
    with pytest.raises(ConfigError, match="weighted but model.loss"):
        compute_loss(ModelConfig(loss="ic", loss_weights={"mse": 1.0}), out, torch.zeros(4, 2), 1.0, date_groups(np.zeros(4)))


@pytest.mark.parametrize("target", ["cs_zscore", "cs_rank"])
def test_buy_hold_sell_classes_need_a_return_label(target):
    """The classes cut the label at ± classification_threshold, a log return: on a rank or a z-score that
    threshold means nothing (0.005 of a rank scaled to ±1.73 is no 0.5% move)."""
    with pytest.raises(ConfigError, match=f"model.classification_threshold: .*data.target={target}"):
        load_config(None, [f"data.target={target}", "model.classification_threshold=0.005"])
    load_config(None, ["data.target=excess_return", "model.classification_threshold=0.005"])  # a log return still


@pytest.mark.parametrize("symbols", [2, 3, 10, 52])
def test_rank_labels_are_centred_on_every_date(symbols):
    """A cs_rank label states only the order of the date: its mean is 0 on every date, as many labels
    above 0 as below, so the zero forecast carries no bias and "always up" no accuracy (Qlib's
    CSRankNorm is shifted by +1.73/n: with 10 symbols 5 of 9 untied labels were positive)."""
    r, t, df = _panel(seed=symbols, dates=30, symbols=symbols)
    got = row_labels(r, t, "cs_rank").astype(np.float64)
    per_date = pd.DataFrame({"date": df["date"], "label": got}).groupby("date")["label"]
    assert np.abs(per_date.mean().to_numpy()).max() < 1e-6
    assert (per_date.apply(lambda x: (x > 0).sum() - (x < 0).sum()) == 0).all()
    n = per_date.size()
    crossed = (n >= 2) & (n.index != 11)  # (date 11: all returns tie, all labels 0) the std of n evenly spaced ranks, ≈ 1 (the scale's promise) for n ≥ 10
    want = np.sqrt(1 - 1 / n[crossed] ** 2) * RANK_SCALE / np.sqrt(12)
    np.testing.assert_allclose(per_date.std(ddof=0)[crossed], want, rtol=1e-5)


def test_a_model_of_an_older_rank_label_is_refused_not_fed_centred_labels(tmp_path):
    """A model trained on cs_rank labels before they were centred (no label_version, or 1) reads the
    past labels as an input: loading it is a one-line error saying to retrain; a label whose formula
    never changed (the return) still loads; a newer label_version is refused as a newer folder is."""
    import json
    import shutil

    from hftraining.core.errors import DataError
    from hftraining.data.labels import LABEL_VERSION
    from hftraining.inference.forecaster import Forecaster

    src = "tests/data/model_v0_1"
    Forecaster.from_pretrained(src)  # written before label versions: a return model still loads
    folder = tmp_path / "m"
    shutil.copytree(src, folder)
    pre = json.loads((folder / "preprocessing.json").read_text())
    pre["data"]["target"] = "cs_rank"
    for version, says in ((None, "label_version 1"), (1, "label_version 1"), (LABEL_VERSION + 1, "newer hftraining")):
        if version is not None:
            pre["label_version"] = version
        (folder / "preprocessing.json").write_text(json.dumps(pre))
        with pytest.raises(DataError, match=says) as e:
            Forecaster.from_pretrained(folder)
        assert "preprocessing.json" in str(e.value) and "\n" not in str(e.value)
    pre["label_version"] = LABEL_VERSION
    (folder / "preprocessing.json").write_text(json.dumps(pre))
    assert Forecaster.from_pretrained(folder).preprocessing.data_config().target == "cs_rank"
