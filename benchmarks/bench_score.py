"""Wall time of ``score()`` (every metric of the model and each baseline) on a synthetic panel.

    .venv/bin/python benchmarks/bench_score.py [--symbols 500] [--dates 500] [--horizon 5] [--repeat 1]
        [--profile]

A panel of S symbols × D dates (every symbol on every date), H horizon steps, the model and the six
baselines of an evaluation (four naive, two fitted: random forecasts of the same shape); a few ties
(forecasts rounded to a grid) so the rank code paths see them. Prints the panel size, the wall and
CPU seconds of each ``score()`` call with the machine's load average (on a shared machine the CPU
seconds of this process are the steadier number) and, with ``--profile``, the functions that took the
most time (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

import numpy as np

from hftraining.eval.forecasts import BASELINES, FITTED_BASELINES, Forecasts, score


def panel(S: int, D: int, H: int, seed: int = 0) -> Forecasts:
    """S symbols × D dates of H-step forecasts: the model sees a fifth of the realised return."""
    rng = np.random.default_rng(seed)
    W = S * D
    true = rng.normal(0, 0.01, (W, H))
    pred = {"model": np.round(0.2 * true + rng.normal(0, 0.01, (W, H)), 4)}
    for name in BASELINES + FITTED_BASELINES:
        pred[name] = np.zeros((W, H)) if name == "zero" else np.round(rng.normal(0, 0.01, (W, H)), 4)
    return Forecasts(pred=pred, true=true, dates=np.repeat(np.arange(D, dtype=np.int64) * 86_400 * 10**9, S),
                     symbol_ids=np.tile(np.arange(S, dtype=np.int64), D), symbols=[f"S{i:04d}" for i in range(S)],
                     last_return=np.zeros(W), past_vol=np.ones(W), last_close=np.ones(W))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--dates", type=int, default=500)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    fc = panel(args.symbols, args.dates, args.horizon)
    print(f"panel: {args.symbols} symbols × {args.dates} dates = {len(fc)} windows × {args.horizon} steps, "
          f"{len(fc.pred)} forecasts")
    for i in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        score(fc)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"score(): {time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU "
              f"(load average {load} on {os.cpu_count()} CPUs)")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(score, fc)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
