"""The closed-form and tree fits read only what they use, and DLinear's bf16 forecast: ridge and
LightGBM gather each window once and only the rows their design reads (its last feature row, its
last returns), with the weights and boosters of the whole windows; LightGBM bins its design matrix
once for every step; DLinear adds its two heads in fp32 under a bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hftraining.models.ridge as ridge_mod
from hftraining.core.config import ModelConfig
from hftraining.data.windows import WindowSet, eval_batches
from hftraining.models import build_model
from hftraining.models.dlinear import DLinearMultivariate, decompose

F, L, H, LAGS = 4, 30, 3, 5


class CountedRows(np.ndarray):
    """A feature array that counts the values read from it (every view and gather of it)."""

    read = 0

    def __getitem__(self, key):
        out = super().__getitem__(key)
        CountedRows.read += int(np.size(out))
        return out


def panel(n_symbols: int = 3, rows: int = 260, seed: int = 0) -> WindowSet:
    """Windows of several scaled symbols; each symbol's first windows are left-padded, some of them
    within their last LAGS steps (what data.min_history < sequence_length gives)."""
    g = np.random.default_rng(seed)
    n = n_symbols * rows
    feats = (g.normal(size=(n, F)) * 2 + 1).astype(np.float32)
    ret = (0.01 * g.normal(size=n) + 0.004 * feats[:, 0]).astype(np.float32)
    first = np.arange(n_symbols, dtype=np.int64) * rows
    ends = np.concatenate([np.arange(f + 2, f + rows - H) for f in first]).astype(np.int32)
    sid = np.repeat(np.arange(n_symbols, dtype=np.int32), rows - H - 2)
    return WindowSet(features=feats, returns=ret, ends=ends, symbol_ids=sid, segment_first=first,
                     row_times=np.arange(n, dtype=np.int64), row_close=np.ones(n),
                     symbols=[f"S{k}" for k in range(n_symbols)], seq_len=L, horizon=H,
                     center=g.normal(size=(n_symbols, F)).astype(np.float32),
                     scale=(1 + g.random(size=(n_symbols, F))).astype(np.float32), target_scale=0.01)


def split(ws: WindowSet) -> tuple[WindowSet, WindowSet]:
    """The first 80% of each symbol's windows to train, the rest to validate."""
    pos = np.arange(len(ws))
    late = np.zeros(len(ws), bool)
    for k in np.unique(ws.symbol_ids):
        i = np.flatnonzero(ws.symbol_ids == k)
        late[i[int(0.8 * len(i)):]] = True
    return ws.subset(pos[~late]), ws.subset(pos[late])


def whole_window_design(m, ws: WindowSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The design rows forward() makes of the whole windows, FIT_BATCH at a time, and the targets."""
    parts = [ws.batch(idx) for idx in eval_batches(len(ws), ridge_mod.FIT_BATCH)]
    return (torch.cat([m.design(b["x"], b.get("mask"), b["past"]) for b in parts]),
            torch.cat([b["y"] for b in parts]))


def test_ridge_fit_is_the_fit_of_the_whole_windows_bit_for_bit(monkeypatch):
    monkeypatch.setattr(ridge_mod, "FIT_BATCH", 64)  # batches with and without padded windows
    train, val = split(panel())
    cfg = ModelConfig(type="ridge", ridge_lags=LAGS, ridge_lambdas=[1e-3, 1.0, 100.0])
    m = build_model(cfg, F, H, L)
    fit = m.fit_windows(train, val)
    # the normal equations and the validation scores of the whole windows, accumulated in the same order
    gram = rhs = 0
    for idx in eval_batches(len(train), 64):
        a, y = whole_window_design(m, train.subset(idx))
        gram, rhs = gram + a.double().T @ a.double(), rhs + a.double().T @ y.double()
    scale = float(gram.diagonal()[:-1].mean())
    unit = torch.ones(gram.shape[0], dtype=torch.float64)
    unit[-1] = 0.0
    fits = [ridge_mod.solve_penalised(gram, rhs, lam * scale * unit) for lam in cfg.ridge_lambdas]
    av, yv = whole_window_design(m, val)
    scores = []
    for w in fits:
        se = 0.0
        for idx in eval_batches(len(val), 64):
            se += float((((av[idx] @ w.float()).double() - yv[idx].double()) ** 2).sum())
        scores.append(se / yv.numel())
    best = int(np.argmin(scores))
    assert len(set(scores)) == 3 and fit["penalty"] == cfg.ridge_lambdas[best] and fit["val_mse"] == scores[best]
    assert torch.equal(m.weight, fits[best].float())


@pytest.mark.parametrize("kind", ["ridge", "lightgbm"])
def test_a_fit_reads_each_window_once_and_only_its_last_feature_row(kind):
    # a fit used to gather every window whole (sequence_length rows of every feature, of which the design
    # reads one row) and ridge gathered the validation windows again for every penalty
    ws = panel()
    ws.features = ws.features.view(CountedRows)
    train, val = split(ws)
    m = build_model(ModelConfig(type=kind, ridge_lags=LAGS, lightgbm_rounds=5, lightgbm_num_leaves=4), F, H, L)
    CountedRows.read = 0
    m.fit_windows(train, val)
    assert 0 < CountedRows.read <= (len(train) + len(val)) * F


def test_lightgbm_bins_its_design_matrix_once_with_the_boosters_of_one_dataset_per_step(monkeypatch):
    lgb = pytest.importorskip("lightgbm")
    from hftraining.models.gbm import lightgbm_params

    train, val = split(panel())
    cfg = ModelConfig(type="lightgbm", ridge_lags=LAGS, lightgbm_num_leaves=7, lightgbm_min_data_in_leaf=20,
                      lightgbm_rounds=60, lightgbm_early_stopping=8, lightgbm_rounds_without_validation=15)
    made = []
    init = lgb.Dataset.__init__

    def counted(self, *args, **kwargs):
        made.append(self)
        init(self, *args, **kwargs)

    fitted = {}
    for name, v in (("val", val), ("no val", val.subset(slice(0, 0)))):
        m = build_model(cfg, F, H, L)
        with monkeypatch.context() as mp:
            mp.setattr(lgb.Dataset, "__init__", counted)
            made.clear()
            m.fit_windows(train, v)
        assert len(made) == (2 if len(v) else 1), name  # one Dataset per split, not one per step
        fitted[name] = [bytes(getattr(m, f"booster_{h}").numpy()).decode("utf-8") for h in range(H)]
    # each step's booster is the one LightGBM fits on a Dataset of its own (the model folder's text, unchanged)
    a, y = (t.double().numpy() for t in whole_window_design(m, train))
    av, yv = (t.double().numpy() for t in whole_window_design(m, val))
    params = lightgbm_params(cfg)
    for h in range(H):
        dtrain = lgb.Dataset(a[:, :-1], y[:, h], free_raw_data=False)
        bst = lgb.train(params, dtrain, num_boost_round=cfg.lightgbm_rounds,
                        valid_sets=[lgb.Dataset(av[:, :-1], yv[:, h], reference=dtrain)],
                        callbacks=[lgb.early_stopping(cfg.lightgbm_early_stopping, verbose=False)])
        assert fitted["val"][h] == bst.model_to_string(num_iteration=bst.best_iteration or None), h
        plain = lgb.train(params, lgb.Dataset(a[:, :-1], y[:, h], free_raw_data=False),
                          num_boost_round=cfg.lightgbm_rounds_without_validation)
        assert fitted["no val"][h] == plain.model_to_string(), h


def _heads(net, x, last):
    """Each head's output (fp32 and under the bf16 autocast) for the inputs ``x`` less ``last``."""
    s, t = decompose((x - last).transpose(1, 2), net.kernel)
    out = {}
    for name, ctx in (("fp32", torch.autocast("cpu", enabled=False)), ("bf16", torch.autocast("cpu", dtype=torch.bfloat16))):
        with ctx:
            out[name] = (net.seasonal(s).float(), net.trend(t).float())
    return out


@pytest.mark.parametrize("subtract_last", [False, True])
def test_dlinear_bf16_forecast_loses_no_more_than_its_bf16_heads(subtract_last):
    # the heads were added in bf16: the forecast (with its level, without subtract_last) rounded to 8 bits again
    torch.manual_seed(0)
    C, Lx, Hx = 5, 48, 12
    net = DLinearMultivariate(ModelConfig(type="dlinear", moving_avg=7), C, Hx, Lx, subtract_last=subtract_last).eval()
    with torch.no_grad():
        for lin in (net.seasonal, net.trend):
            lin.weight.add_(0.02 * torch.randn_like(lin.weight))
        x = torch.randn(64, Lx, C).cumsum(1) * 0.1 + 3.0  # a level away from 0, as a drifted channel
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(x)
        heads = _heads(net, x, x[:, -1:, :] if subtract_last else 0.0)
    assert got.dtype == torch.float32
    bound = sum((b - f).abs() for b, f in zip(heads["bf16"], heads["fp32"])).transpose(1, 2)  # (B, H, C)
    assert ((got - ref).abs() <= bound + 1e-6 * (1 + ref.abs())).all()
    assert (got != ref).any()  # the heads did run in bf16


def test_dlinear_forecaster_bf16_forecast_is_fp32_and_fp32_is_unchanged():
    torch.manual_seed(0)
    m = build_model(ModelConfig(type="dlinear", moving_avg=5), F, H, L).eval()
    x, past = torch.randn(32, L, F), torch.randn(32, L) * 0.5
    with torch.no_grad():
        ref = m(x, None, past).prediction
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(x, None, past).prediction
        h = torch.cat([x, past.unsqueeze(-1)], dim=-1).transpose(1, 2)
        s, t = decompose(h, 5)
        assert torch.equal(ref, m.seasonal(s.flatten(1)) + m.trend(t.flatten(1)))  # fp32: the same sum, bit for bit
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hs = m.seasonal(s.flatten(1))
        ht = m.trend(t.flatten(1))  # the trend map, which carries the inputs' level, in fp32 (trend_fp32)
    assert got.dtype == torch.float32 and torch.equal(got, hs.float() + ht)
