"""The strongest cheap baselines against the quickstart transformer, on the 52 Yahoo files.

    .venv/bin/python benchmarks/bench_baselines.py [--data ../shared/data/yahoo] [--threads 2]

One run, one calendar split of the panel (the quickstart config's data settings, every symbol cut
at the same dates): the fit time of each forecast and, on the test split, its MSE ratio to the zero
forecast, the Diebold–Mariano p-value of the transformer against it, and the step-1
cross-sectional IC, rank IC and rank ICIR (per date across symbols). Targets: ridge fits in under
2 s and LightGBM in under 60 s on 2 cores. The forecasts go through the package's one prediction
path (``collect_forecasts``) and the transformer through the trainer lifecycle, as in ``train``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hftraining.core.config import load_config
from hftraining.core.fmt import fmt
from hftraining.data.pipeline import prepare
from hftraining.eval.forecasts import collect_forecasts, fit_baselines, score
from hftraining.train.runner import training_run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "yahoo"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300, help="transformer optimizer steps (the quickstart's 300)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs" / "quickstart.yaml", [
            f"data.data_dir={a.data}", f"data.cache_dir={tmp}/cache", f"training.max_steps={a.steps}",
            f"output.output_dir={tmp}/run", "output.tensorboard=false", "output.progress_bar=never",
            "evaluation.report=false",
        ])
        t0 = time.perf_counter()
        data = prepare(cfg.data)
        t_data = time.perf_counter() - t0
        seconds: dict[str, float] = {}
        fitted = fit_baselines(data.train, data.val, None, seconds)  # every window, timed
        t0 = time.perf_counter()
        with training_run(cfg, data, save_final=False) as run:
            model, device, precision = run.model, run.device, run.precision
        seconds["model"] = time.perf_counter() - t0
        pre = data.preprocessing
        fc = collect_forecasts(model, data.test, pre.target_scale, cfg.data.eval_batch_size, device, precision, fitted=fitted)
        res = score(fc)
    split = data.report["split"]
    print(f"{len(data.train.symbols)} symbols, calendar split: validation from {split['val_from'][:10]}, "
          f"test from {split['test_from'][:10]}; windows train {len(data.train):,}, val {len(data.val):,}, "
          f"test {len(data.test):,} (L={cfg.data.sequence_length}, H={cfg.data.prediction_horizon}); "
          f"data prepared in {t_data:.1f} s; torch threads {torch.get_num_threads()}")
    print(f"{'forecast':<26}{'fit s':>8}{'MSE/zero':>10}{'DM p':>8}{'IC':>9}{'rank IC':>9}{'rank ICIR':>10}")
    zero = res["baselines"]["zero"]["mse"]
    rows = [("transformer (quickstart)", "model", res["model"])] + [(k, k, v) for k, v in res["baselines"].items()
                                                                   if k in ("zero", "drift", "ridge", "lightgbm")]
    for label, key, m in rows:
        cs = m["cross_section"]
        p = res["dm"].get(key, {}).get("p_value") if key != "model" else None
        print(f"{label:<26}{fmt(seconds.get(key), '>8.2f')}{fmt(m['mse'] / zero, '>10.4f')}{fmt(p, '>8.3f')}"
              f"{fmt(cs['ic']['mean'], '>9.4f')}{fmt(cs['rank_ic']['mean'], '>9.4f')}{fmt(cs['rank_ic']['icir'], '>10.3f')}")
    print(f"ridge fit {seconds['ridge']:.2f} s (target < 2 s), LightGBM fit {seconds['lightgbm']:.1f} s (target < 60 s); "
          "DM p: the transformer against that forecast")
    print(f"verdict: {res['verdict']}")


if __name__ == "__main__":
    main()
