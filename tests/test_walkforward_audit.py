"""Walk-forward and ``train --seeds`` as a user relies on them: every row a fold's model, its fitted
baselines, its calibration and its scaler read is dated before the fold's test block (recorded as
read, not derived from the split arithmetic); the pooled out-of-sample series is the folds' test
windows, each once; a setting walkforward would ignore (a resume, split dates), or a resume that would
make the seeds copies of one run, is a one-line error; a config mistake leaves an earlier walk-forward
in place."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from safetensors.torch import load_file

from hftraining.cli import main
from hftraining.core.config import load_config
from hftraining.data import scaling
from hftraining.data.synth import synth_ohlcv
from hftraining.data.windows import WindowSet
from hftraining.workflows import walkforward as wf
from conftest import tiny  # noqa: E402

L, H, EMB, K = 12, 3, 2, 3


def _panel(folder) -> None:
    """Daily bars: one symbol listed late, one delisted during the test folds, one with holes."""
    folder.mkdir()
    gap = synth_ohlcv(330, seed=3, start="2020-01-06").drop(index=list(range(80, 95)) + list(range(290, 298)))
    frames = {"FULL": synth_ohlcv(330, seed=1, start="2020-01-06"), "LATE": synth_ohlcv(230, seed=2, start="2020-05-25"),
              "EARLY": synth_ohlcv(285, seed=4, start="2020-01-06"), "GAP": gap.reset_index(drop=True)}
    for sym, f in frames.items():
        f.to_csv(folder / f"{sym}.csv", index=False)


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_every_row_a_fold_reads_is_dated_before_its_test_block(tmp_path, monkeypatch, scheme):
    """Each batch any model of a fold gathers (training, validation, the conformal calibration, the
    ridge and LightGBM baselines) and the scaler's training rows are recorded while a real
    walk-forward runs. Outside the fold's test windows no row read, input or target, is dated on or
    after the fold's first test date, nor within data.embargo of the symbol's own rows before it;
    the test windows' targets lie in the block; the pooled series is the folds' test windows, each
    exactly once, and the blocks follow each other without overlapping."""
    _panel(tmp_path / "data")
    fold = {"k": None}
    reads = collections.defaultdict(list)  # fold → [(symbols, ends, input rows, target rows)]
    scaler_rows = collections.defaultdict(list)  # fold → [{symbol: slice of the panel's rows}]
    prepared, pooled = {}, {}

    real_batch, real_fit, real_prepare, real_pool = WindowSet.batch, scaling.Scaler.fit_rows, wf.prepare_fold, wf.pool_forecasts

    def batch(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        ends, sid = self.ends[idx].astype(np.int64), self.symbol_ids[idx]
        inputs = np.maximum(ends[:, None] + np.arange(-self.seq_len + 1, 1), self.segment_first[sid][:, None])
        reads[fold["k"]].append((np.asarray(self.symbols)[sid], ends, inputs, ends[:, None] + np.arange(1, self.horizon + 1)))
        return real_batch(self, idx)

    def fit_rows(self, x, train_rows, **kw):
        scaler_rows[fold["k"]].append(dict(train_rows))
        return real_fit(self, x, train_rows, **kw)

    def prepare_fold(cfg, source, k, n, scheme_, before_test=False):
        fold["k"] = k
        prepared[k] = (real_prepare(cfg, source, k, n, scheme_, before_test), source)
        return prepared[k][0]

    def pool(parts, *args):
        out = real_pool(parts, *args)
        pooled["fc"] = out[0]
        return out

    real_run = wf.training_run

    def training_run(fcfg, data, *args, **kwargs):  # every fold is prepared before the first trains
        fold["k"] = next(k for k, (p, _) in prepared.items() if p is data)
        return real_run(fcfg, data, *args, **kwargs)

    monkeypatch.setattr(WindowSet, "batch", batch)
    monkeypatch.setattr(scaling.Scaler, "fit_rows", fit_rows)
    monkeypatch.setattr(wf, "prepare_fold", prepare_fold)
    monkeypatch.setattr(wf, "pool_forecasts", pool)
    monkeypatch.setattr(wf, "training_run", training_run)
    cfg = load_config(None, tiny(
        tmp_path / "run", "model.hidden_size=8", f"data.sequence_length={L}", f"data.prediction_horizon={H}",
        f"data.embargo={EMB}", f"data.data_dir={tmp_path / 'data'}", "data.symbols=null", "data.cache_dir=null",
        "data.features=[log_return_1, rsi_14]", "training.max_steps=2", "evaluation.eval_steps=1",
        "evaluation.max_eval_batches=1", "evaluation.report=false", "evaluation.baseline_max_windows=100"))
    wf.walk_forward(cfg, K, scheme=scheme)

    rows = prepared[0][1].rows
    times, index = rows.times, {s: i for i, s in enumerate(rows.symbols)}
    starts = {s: int(rows.starts[i]) for s, i in index.items()}
    test_keys, last_target = [], None
    for k in range(K):
        test = prepared[k][0].test
        test_ends = test.ends.astype(np.int64)
        first_date = int(times[test_ends + 1].min())  # the fold's first test date
        if last_target is not None:
            assert first_date > last_target, f"fold {k + 1}'s block starts before fold {k}'s ends"
        last_target = int(times[test_ends + H].max())
        mine = set(zip(np.asarray(test.symbols)[test.symbol_ids], test_ends.tolist()))
        test_keys += [(s, int(times[e])) for s, e in mine]
        # each symbol's first row dated on or after the block's first date, less data.embargo rows
        limit = {s: starts[s] + int(np.searchsorted(rows.symbol_times()[i], first_date)) - EMB for s, i in index.items()}
        assert len(reads[k]) > 0 and len(scaler_rows[k]) > 0
        for syms, ends, inputs, targets in reads[k]:
            scored = np.array([(s, e) in mine for s, e in zip(syms, ends.tolist())], dtype=bool)
            assert (times[targets[scored]] >= first_date).all()  # a test window predicts its block only
            for s in set(syms[~scored].tolist()):
                own = ~scored & (syms == s)
                read = np.concatenate([inputs[own].ravel(), targets[own].ravel()])
                assert times[read].max() < first_date, f"fold {k + 1}: {s} read a row dated in its test block"
                assert read.max() < limit[s], f"fold {k + 1}: {s} read a row within data.embargo of the block"
        for fit in scaler_rows[k]:
            for s, sl in fit.items():
                assert sl.stop <= limit[s], f"fold {k + 1}: the scaler read {s}'s rows of the embargo or the block"
    fc = pooled["fc"]
    keys = list(zip(np.asarray(fc.symbols)[fc.symbol_ids], fc.dates.tolist()))
    assert len(set(keys)) == len(keys)  # no window scored twice
    assert sorted(keys) == sorted(test_keys)  # none dropped, none added


@pytest.mark.parametrize("setting, said", [
    ("training.resume_from_checkpoint=auto", "training.resume_from_checkpoint=auto: walkforward does not resume"),
    ("training.resume_from_checkpoint={ckpt}", "training.resume_from_checkpoint={ckpt}: walkforward does not resume"),
    ("data.split_dates={{val: '2024-01-02', test: '2024-07-01'}}", "data.split_dates: walkforward cuts its folds at "
                                                                   "data.train_ratio of the calendar and would ignore"),
])
def test_walkforward_refuses_a_setting_it_would_ignore(tmp_path, capsys, setting, said):
    """walkforward trains every fold from its start and cuts its folds at data.train_ratio: a resume
    asked for, or split dates (a test period kept apart, then trained on by the later folds), were
    dropped without a word (a fresh walk-forward ran, exit 0). Now: one line naming the key, exit 2,
    before any data is read."""
    root, ckpt = tmp_path / "run", tmp_path / "ckpt"
    args = tiny(root, "training.max_steps=2", "evaluation.report=false", f"data.data_dir={tmp_path / 'absent'}")
    assert main(["walkforward", "--folds", "2", *args, setting.format(ckpt=ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said.format(ckpt=ckpt) in err
    assert not root.exists()


def test_a_config_mistake_leaves_the_earlier_walk_forward_in_place(tmp_path, capsys):
    """With output.overwrite=true, a config mistake (an unknown optimizer) was found only when the
    first fold started training, after the earlier walk-forward had been removed: the error lost
    it. Now the config is checked first and the earlier folds stay as they were."""
    base = tmp_path / "run" / "walkforward"
    for name in ("fold-1", "fold-2"):
        (base / name).mkdir(parents=True)
        (base / name / "eval.json").write_text("{}")
    (base / "walkforward.json").write_text('{"n_folds": 2}')
    before = sorted(str(p.relative_to(base)) for p in base.rglob("*"))
    args = tiny(tmp_path / "run", "training.max_steps=2", "evaluation.report=false", "data.cache_dir=null",
                "output.overwrite=true", "training.optimizer=adamx")
    assert main(["walkforward", "--folds", "2", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.optimizer: unknown optimizer 'adamx'" in err
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*")) == before


def _weights(path):
    return load_file(str(path / "final" / "model.safetensors"))


def test_seeds_differ_repeat_alone_and_never_resume_from_one_named_checkpoint(tmp_path, capsys):
    """Seed k of ``train --seeds`` is exactly a single run with training.seed + k, and differs from
    seed 0. A checkpoint path as training.resume_from_checkpoint resumed every seed from it (its
    weights, optimizer and random states): the seeds became copies of one run, and the ensemble one
    model counted twice, exit 0. Now: one line naming the key and --resume, exit 2, nothing touched."""
    def args(root, *extra):
        return tiny(root, "model.hidden_size=8", "model.dropout=0.2", "training.max_steps=2", "training.save_steps=1",
                    "evaluation.eval_steps=0", "evaluation.report=false", "evaluation.baseline_max_windows=100", *extra)

    root = tmp_path / "seeds"
    assert main(["train", "--seeds", "2", *args(root)]) == 0
    seed = load_config(None, args(root)).training.seed
    assert main(["train", *args(tmp_path / "alone", f"training.seed={seed + 1}")]) == 0
    first, second, alone = _weights(root / "seed-0"), _weights(root / "seed-1"), _weights(tmp_path / "alone")
    assert all(np.array_equal(second[n].numpy(), alone[n].numpy()) for n in second)
    assert any(not np.array_equal(first[n].numpy(), second[n].numpy()) for n in first)

    listing = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    named = root / "seed-0" / "checkpoints" / "step-00000001"
    assert named.is_dir()
    capsys.readouterr()
    assert main(["train", "--seeds", "2", *args(root, f"training.resume_from_checkpoint={named}",
                                                 "training.max_steps=3")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"training.resume_from_checkpoint={named}: --seeds 2 resumes each seed-<k>/" in err
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == listing
