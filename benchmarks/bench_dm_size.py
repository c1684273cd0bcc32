"""Size of the verdict's Diebold–Mariano test: how often it rejects a true null at 5%.

    .venv/bin/python benchmarks/bench_dm_size.py [--reps 4000] [--seed 0]

Two forecasts with equal expected loss (+c and −c around iid standard-normal returns) of H-step
paths from T consecutive origins (the losses of consecutive dates share H − 1 returns), scored with
``dm_test`` exactly as an evaluation scores a model against a baseline. A test of the right size
rejects 5% of the time; more means a model "beats" an equal baseline by chance that often. Prints
one row per (H, T) with the rejection rate and its binomial standard error.
"""

from __future__ import annotations

import argparse

import numpy as np

from hftraining.eval.metrics import dm_test

CASES = ((1, 20), (1, 60), (5, 20), (5, 60), (5, 200), (5, 1000), (10, 60), (10, 200), (20, 250))


def rejection_rate(H: int, T: int, reps: int, rng: np.random.Generator, c: float = 0.3) -> float:
    rejected = 0
    for _ in range(reps):
        r = rng.standard_normal(T + H)
        y = np.stack([r[1 + h: 1 + h + T] for h in range(H)], axis=1)  # (T, H): steps 1..H after each origin
        rejected += dm_test(np.full_like(y, c), np.full_like(y, -c), y, np.arange(T))["p_value"] < 0.05
    return rejected / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"DM test at 5%, equal expected loss, {args.reps} repetitions per row")
    print(f"{'H':>3} {'dates':>6} {'rejects':>8} {'± s.e.':>7}")
    for H, T in CASES:
        p = rejection_rate(H, T, args.reps, rng)
        print(f"{H:>3} {T:>6} {p:>8.1%} {np.sqrt(p * (1 - p) / args.reps):>7.1%}")


if __name__ == "__main__":
    main()
