"""ETT study: do validation MSE and test MSE agree on which closed-form map is better?

    .venv/bin/python benchmarks/ett_selection_study.py [ETTh1 [96]] [--data ../shared/data/ett]

For each closed-form member (full L→H least-squares maps at several look-backs, with no centring,
the last value or the window mean subtracted; and SparseTSF-style maps that share one small map
across the 24 phases of the day, from the mean-centred look-back, optionally with ±1/±2
neighbouring phases) it prints the MSE on three periods:

* fold B: the last 4 months of the training rows, the map fitted on the first 8 months;
* val and test: the map fitted on all training rows (the protocol's fit).

Then the test MSE of the greedy average (select_average's rule) chosen on val only, on fold B
only, and on both (each fold's MSE divided by its best member's). Each member's ridge λ is the one
with the lowest fold-B + val MSE. On ETTh1-96 the ranking of
val disagrees with test's: the summer val period favours full maps, the winter test period the
phase-shared and centred ones. This is a study printed for the reader, not part of
``hftraining bench ett``, whose selection stays on val alone.
"""

import argparse
import numpy as np
import torch

from hftraining.data.scaling import Scaler
from hftraining.workflows.ett import SERIES, load_ett, window_set
from hftraining.workflows.ett import scores as _mse_mae

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset", nargs="?", default="ETTh1")
ap.add_argument("horizon", nargs="?", type=int, default=96)
ap.add_argument("--data", default="../shared/data/ett")
cli = ap.parse_args()
ds, H = cli.dataset, cli.horizon
torch.set_num_threads(2)
vals = load_ett(cli.data, ds)
f = 4 if ds.startswith("ETTm") else 1; month = 720*f
w = 24 if f == 1 else 96
tr, va, te = 12*month, 16*month, 20*month
sc = Scaler().fit_rows(vals, {SERIES: slice(0, tr)}); zn = sc.transform(vals, SERIES).astype(np.float32)
z, row_times = torch.from_numpy(zn), np.arange(len(zn), dtype=np.int64)
def seg(a, b, L):
    """X (n, L, C), Y (n, H, C): the stride-1 windows of rows [a, b), through the package's one windowing."""
    ws = window_set(zn, row_times, a, b, L, H)
    got = ws.batch(np.arange(len(ws)))
    return got["x"], got["y"]
def series(X): return X.transpose(1,2).reshape(-1, X.shape[1]).double()
def unseries(s, n): return s.view(n, -1, s.shape[1]).transpose(1,2).float()
def solve(A, Y, lam):
    G = A.T @ A; B = A.T @ Y
    return torch.linalg.solve(G + lam * G.diagonal().mean() * torch.eye(G.shape[0], dtype=G.dtype), B)
def ones(a): return torch.cat([a, torch.ones(a.shape[0],1,dtype=a.dtype)],1)
class Full:
    """The full L→H map, shared across channels, with a bias; an offset subtracted first."""

    def __init__(self, L, center, lam):
        self.L, self.center, self.lam = L, center, lam

    def offset(self, x):  # x (series, L)
        if self.center == "last":
            return x[:, -1:]
        if self.center == "mean":
            return x.mean(1, keepdim=True)
        return torch.zeros(x.shape[0], 1, dtype=x.dtype)

    def fit(self, X, Y):
        x = series(X)
        o = self.offset(x)
        self.W = solve(ones(x - o), series(Y) - o, self.lam)
        return self

    def __call__(self, X):
        x = series(X)
        o = self.offset(x)
        return unseries(ones(x - o) @ self.W + o, X.shape[0])


class Sparse:
    """SparseTSF-style: one map from the L/w values at a phase (± nb neighbouring phases) to the
    ceil(H/w) values at that phase, shared by all w phases and channels; mean-centred input."""

    def __init__(self, L, nb, lam):
        self.L, self.nb, self.lam = L, nb, lam

    def feats(self, X):
        x = series(X)
        m = x.mean(1, keepdim=True)
        n = x.shape[0]
        P = (x - m).view(n, self.L // w, w)  # (series, periods, phase)
        F = torch.cat([torch.roll(P, shifts=-o, dims=2) for o in range(-self.nb, self.nb + 1)], 1)
        return ones(F.permute(0, 2, 1).reshape(n * w, -1)), m  # rows: (series, phase)

    def fit(self, X, Y):
        F, m = self.feats(X)
        self.hw = -(-H // w)
        y = series(Y) - m
        if self.hw * w != H:  # pad the target to whole periods (the padding is cut off again)
            y = torch.cat([y, y[:, -1:].expand(-1, self.hw * w - H)], 1)
        self.W = solve(F, y.view(-1, self.hw, w).permute(0, 2, 1).reshape(-1, self.hw), self.lam)
        return self

    def __call__(self, X):
        F, m = self.feats(X)
        n = F.shape[0] // w
        p = (F @ self.W).view(n, w, self.hw).permute(0, 2, 1).reshape(n, self.hw * w)[:, :H] + m
        return unseries(p, X.shape[0])


specs = []
for L in (96, 192, 336, 512, 720):
    for c in ("none", "last", "mean"):
        specs.append((f"full L={L} {c}", lambda lam, L=L, c=c: Full(L, c, lam)))
for L in (336, 720):
    for nb in (0, 1, 2):
        specs.append((f"sparse L={L} nb={nb}", lambda lam, L=L, nb=nb: Sparse(L, nb, lam)))
LAMS = (1e-4, 1e-2, 1e-1, 1.0)
cut = tr - 4*month  # fold B: the last 4 months of train
preds = {}
for name, make in specs:
    L = make(1).L
    Xa, Ya = seg(0, cut, L); XB, YB = seg(cut - L, tr, L)
    Xt, Yt = seg(0, tr, L); Xv, Yv = seg(tr - L, va, L); Xte, Yte = seg(va - L, te, L)
    best = None
    for lam in LAMS:
        pB = make(lam).fit(Xa, Ya)(XB); m = make(lam).fit(Xt, Yt); pv, pt = m(Xv), m(Xte)
        eB, ev, et = (_mse_mae(p, y)["mse"] for p, y in ((pB, YB), (pv, Yv), (pt, Yte)))
        crit = eB + ev
        if best is None or crit < best[0]: best = (crit, lam, pB, pv, pt, eB, ev, et)
    preds[name] = best[2:5]
    print(f"{name:24s} λ={best[1]:<6g} foldB {best[5]:.4f} val {best[6]:.4f} test {best[7]:.4f}", flush=True)
YB, Yv, Yte = YB, Yv, Yte
def greedy(score, steps=20):
    chosen=[min(preds, key=lambda n: score({n:1.0}))]; best=score({chosen[0]:1.0})
    for _ in range(steps-1):
        def wts(extra): 
            c = chosen+[extra]; return {n: c.count(n)/len(c) for n in set(c)}
        cand = min(preds, key=lambda n: score(wts(n)))
        s = score(wts(cand))
        if s >= best: break
        chosen.append(cand); best = s
    return {n: chosen.count(n)/len(chosen) for n in set(chosen)}
def mix(wts, i): return sum(w * preds[n][i].double() for n, w in wts.items())
bB = min(_mse_mae(p[0], YB)["mse"] for p in preds.values()); bv = min(_mse_mae(p[1], Yv)["mse"] for p in preds.values())
for label, score in [("val only", lambda W: _mse_mae(mix(W,1), Yv)["mse"]),
                     ("foldB only", lambda W: _mse_mae(mix(W,0), YB)["mse"]),
                     ("foldB+val normalised", lambda W: _mse_mae(mix(W,0), YB)["mse"]/bB + _mse_mae(mix(W,1), Yv)["mse"]/bv)]:
    W = greedy(score)
    chosen = ", ".join(f"{v:.2f}·{n}" for n, v in sorted(W.items(), key=lambda kv: -kv[1]))
    print(f"{label:22s} test {_mse_mae(mix(W,2), Yte)['mse']:.4f} val {_mse_mae(mix(W,1), Yv)['mse']:.4f} "
          f"foldB {_mse_mae(mix(W,0), YB)['mse']:.4f}  {chosen}")
