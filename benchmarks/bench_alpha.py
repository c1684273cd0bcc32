"""Features × labels × losses on the 52 Yahoo files: does Alpha158, a cross-sectional label or an IC
loss make any forecast rank stocks better?

    .venv/bin/python benchmarks/bench_alpha.py [--data ../shared/data/yahoo] [--steps 300] [--threads 2]
        [--features default alpha158] [--neural transformer patchtst] [--losses mse ic]

(``--neural`` with no names: the fitted baselines alone, in seconds; ``--losses`` picks the neural
models' settings; any subset prints the same rows as the whole run.)

One calendar split of the panel (every symbol cut at the same dates; the quickstart's window:
L=60, H=5). Settings: features {``default`` (the quickstart's 8 indicator columns), ``alpha158``} ×
{``return`` label with MSE, ``cs_rank`` label with MSE, ``cs_rank`` label with the IC loss on date
batches}. Models: ridge and LightGBM (fitted on each features × label; a loss setting does not apply
to them), the quickstart transformer and PatchTST (trained through the trainer lifecycle as in
``train``; the IC loss on whole dates). Everything is scored by the package's one path
(``collect_forecasts``, ``score``, ``backtest_forecasts``) on the test split.

Printed per (setting, model): fit seconds; step-1 cross-sectional rank IC, its ICIR and t (rank IC
is comparable across labels: a per-date rank of the return orders symbols as the return does);
the Sharpe of a top-5 long-short book (costs 5 + 2 bps) and its information ratio against the
equal-weight universe; and the verdict of that model against the strongest of the other forecasts
(naive and fitted): by rank IC for a cs_rank label (paired per-date test), by MSE (Diebold–Mariano)
for the return label.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from hftraining.core.config import load_config
from hftraining.core.fmt import fmt
from hftraining.data.pipeline import prepare
from hftraining.eval.backtest import backtest_forecasts
from hftraining.eval.forecasts import collect_forecasts, fit_baselines, label, score
from hftraining.models.predict import predict_scaled
from hftraining.train.runner import training_run

ROOT = Path(__file__).resolve().parents[1]
FEATURES = {"default": None, "alpha158": "[alpha158]"}
SETTINGS = [("return", "mse"), ("cs_rank", "mse"), ("cs_rank", "ic")]


def short_verdict(res: dict) -> str:
    """The model against the strongest other forecast, in a few words."""
    if res["target"] == "cs_rank":
        sb = res.get("cross_section_strongest")
        if not sb:
            return "no rank IC"
        d = sb["difference"]
        word = ("BEATS" if d["mean"] > 0 else "loses to") if d["p_value"] < 0.05 else "ties"
        return f"{word} {label(sb['name'])} (rank IC {sb['rank_ic']:.4f}, paired p {d['p_value']:.2f})"
    sb = res.get("strongest_baseline")
    if not sb:
        return "no baseline"
    p, r, stat = sb["dm"].get("p_value", float("nan")), sb["mse_ratio"], sb["dm"].get("statistic", float("nan"))
    word = "ties"
    if p < 0.05:  # the direction is the DM statistic's; the pooled MSE ratio must agree
        word = "BEATS" if stat < 0 and r < 1 else "loses to" if stat > 0 and r > 1 else "disagrees with"
    return f"{word} {label(sb['name'])} (MSE ratio {r:.4f}, DM p {p:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "yahoo"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps of each neural model (the quickstart's 300)")
    ap.add_argument("--features", nargs="+", default=list(FEATURES), choices=list(FEATURES))
    ap.add_argument("--neural", nargs="*", default=["transformer", "patchtst"], choices=["transformer", "patchtst"])
    ap.add_argument("--losses", nargs="+", default=["mse", "ic"], choices=["mse", "ic"],
                    help="the neural models' settings to train (the fitted baselines run under every label)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    print(f"{'features':<10}{'label':<9}{'loss':<6}{'model':<13}{'fit s':>7}{'rank IC':>9}{'ICIR':>7}{'t':>7}"
          f"{'top5 SR':>9}{'IR':>7}  verdict against the strongest other forecast")
    with tempfile.TemporaryDirectory() as tmp:
        for feats in a.features:
            for target in ("return", "cs_rank"):
                over = [f"data.data_dir={a.data}", f"data.cache_dir={tmp}/cache", f"training.max_steps={a.steps}",
                        f"output.output_dir={tmp}/run", "output.tensorboard=false", "output.progress_bar=never",
                        "evaluation.report=false", "evaluation.eval_steps=100", f"data.target={target}",
                        "evaluation.backtest_portfolio=topk", "evaluation.backtest_topk=5", "training.save_steps=0"]
                if FEATURES[feats]:
                    over.append(f"data.features={FEATURES[feats]}")
                cfg = load_config(ROOT / "configs" / "quickstart.yaml", over)
                data = prepare(cfg.data)
                pre = data.preprocessing
                seconds: dict[str, float] = {}
                fitted = fit_baselines(data.train, data.val, None, seconds)  # every window, timed
                preds = {}  # name → (model, settings label, fit s)
                for loss in [lo for t, lo in SETTINGS if t == target and lo in a.losses]:
                    for kind in a.neural:
                        extra = ["data.batching=dates", "data.dates_per_batch=2", "model.loss=ic",
                                 "evaluation.metric=neg_rank_ic"] if loss == "ic" else (
                            ["evaluation.metric=neg_rank_ic"] if target == "cs_rank" else [])
                        run_cfg = load_config(ROOT / "configs" / "quickstart.yaml", [*over, f"model.type={kind}", *extra])
                        t0 = time.perf_counter()
                        with training_run(run_cfg, data, save_final=False) as run:  # batching is the trainer's
                            model = run.model
                        secs = time.perf_counter() - t0  # the fit alone: the baselines' seconds leave out their test forecasts too
                        preds[(kind, loss)] = (predict_scaled(model, data.test, cfg.data.eval_batch_size), secs)
                for name, m in fitted.items():
                    preds[(name, "mse")] = (predict_scaled(m, data.test, cfg.data.eval_batch_size), seconds[name])
                for (name, loss), (pred, secs) in preds.items():
                    others = {k: v for k, v in fitted.items() if k != name}
                    fc = collect_forecasts(None, data.test, pre.target_scale, cfg.data.eval_batch_size, pred_scaled=pred,
                                           fitted=others)
                    res = score(fc)
                    bt = backtest_forecasts(fc, dataclasses.replace(cfg.evaluation))
                    cs = res["model"]["cross_section"]["rank_ic"]
                    st = bt["strategies"]["model"]
                    shown_loss = loss if name in ("transformer", "patchtst") else "—"
                    print(f"{feats:<10}{target:<9}{shown_loss:<6}{name:<13}{secs:>7.1f}{fmt(cs['mean'], '>9.4f')}"
                          f"{fmt(cs['icir'], '>7.3f')}{fmt(cs['t_stat'], '>7.2f')}{fmt(st.get('sharpe'), '>9.2f')}"
                          f"{fmt(st.get('information_ratio'), '>7.2f')}  {short_verdict(res)}", flush=True)
    split = data.report["split"]
    print(f"{len(data.test.symbols)} symbols, calendar split: validation from {split['val_from'][:10]}, test from "
          f"{split['test_from'][:10]}; {len(data.test):,} test windows; {a.steps} steps per neural model; "
          f"torch threads {torch.get_num_threads()}; {time.perf_counter() - t_start:.0f} s in all")


if __name__ == "__main__":
    main()
