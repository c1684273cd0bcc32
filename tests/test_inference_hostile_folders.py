"""Hostile model folders: a corpus of broken and malicious variants of a valid folder (config.json,
preprocessing.json, model.safetensors, symbolic links, ensembles). Each must be either a one-line
user error (exit 2 on the command line) within 10 s and 1 GB more memory, or a correct forecast; a
NaN forecast never comes back. Loaded in one child process that caps its own address space
(``resource.setrlimit``) at what it holds after start-up plus 1 GB."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hftraining.data.io import sample_data_dir
from test_inference_serve import _free_port, make_model  # noqa: E402

CSV = str(sample_data_dir() / "AEM.csv")


def _json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def _tensors(path: Path, change) -> None:
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata={"format": "pt"})


def _header(path: Path, change) -> None:
    """Rewrite the safetensors header of ``path`` (the tensor bytes stay as they are)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    change(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def _first_weight(state):
    return next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)


# name → (file the error must name, mutation of a copy of the valid folder d); expect "ok" for a correct forecast
VARIANTS = {
    # config.json
    "config_not_json": ("config.json", lambda d: (d / "config.json").write_text("{")),
    "config_a_list": ("config.json", lambda d: (d / "config.json").write_text("[1, 2]")),
    "config_no_model": ("config.json", lambda d: _json(d / "config.json", lambda o: o.pop("model"))),
    "config_million_layers": ("config.json", lambda d: _json(d / "config.json", lambda o: o["model"].update(num_layers=10**6))),
    "config_32gb_model": ("config.json", lambda d: _json(d / "config.json", lambda o: o["model"].update(hidden_size=16384, num_heads=16, num_layers=40))),
    "config_negative_dim": ("config.json", lambda d: _json(d / "config.json", lambda o: o.update(n_features=-3))),
    "config_dim_as_text": ("config.json", lambda d: _json(d / "config.json", lambda o: o.update(horizon="3"))),
    "config_code_as_type": ("config.json", lambda d: _json(d / "config.json", lambda o: o["model"].update(type="__import__('os').system('touch /tmp/pwned')"))),
    "config_dropout_5": ("config.json", lambda d: _json(d / "config.json", lambda o: o["model"].update(dropout=5))),
    "config_heads_not_dividing": ("config.json", lambda d: _json(d / "config.json", lambda o: o["model"].update(num_heads=3))),
    "config_deep": ("config.json", lambda d: (d / "config.json").write_text("[" * 200_000 + "]" * 200_000)),
    "config_20mb": ("config.json", lambda d: (d / "config.json").write_text(json.dumps({"x": "a" * 20_000_000}))),
    "config_format_version_99": ("config.json", lambda d: _json(d / "config.json", lambda o: o.update(format_version=99))),
    "config_link_dev_zero": ("config.json", lambda d: ((d / "config.json").unlink(), (d / "config.json").symlink_to("/dev/zero"))),
    "config_a_folder": ("config.json", lambda d: ((d / "config.json").unlink(), (d / "config.json").mkdir())),
    # preprocessing.json
    "pre_nan_target_scale": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: o.update(target_scale=float("nan")))),
    "pre_zero_target_scale": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: o.update(target_scale=0))),
    "pre_negative_scale": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: next(iter(o["scaler"]["params"].values()))["scale"].__setitem__(0, -1.0))),
    "pre_zero_scale": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: next(iter(o["scaler"]["params"].values()))["scale"].__setitem__(1, 0.0))),
    "pre_inf_center": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: next(iter(o["scaler"]["params"].values()))["center"].__setitem__(0, float("inf")))),
    "pre_short_scale": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: next(iter(o["scaler"]["params"].values()))["scale"].pop())),
    "pre_no_scaler": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: o.pop("scaler"))),
    "pre_extra_column": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: o["feature_columns"].append("x"))),
    "pre_unknown_feature": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: o.update(features=["no_such_indicator_9"]))),
    "pre_other_window": ("preprocessing.json", lambda d: _json(d / "preprocessing.json", lambda o: o.update(seq_len=500))),
    "pre_link_dev_zero": ("preprocessing.json", lambda d: ((d / "preprocessing.json").unlink(), (d / "preprocessing.json").symlink_to("/dev/zero"))),
    # model.safetensors
    "weights_nan": ("model.safetensors", lambda d: _tensors(d / "model.safetensors", lambda s: s[_first_weight(s)].view(-1).__setitem__(0, float("nan")))),
    "weights_inf": ("model.safetensors", lambda d: _tensors(d / "model.safetensors", lambda s: s[_first_weight(s)].view(-1).__setitem__(3, float("inf")))),
    "weights_missing_tensor": ("model.safetensors", lambda d: _tensors(d / "model.safetensors", lambda s: s.pop(_first_weight(s)))),
    "weights_extra_tensor": ("model.safetensors", lambda d: _tensors(d / "model.safetensors", lambda s: s.update(evil=torch.zeros(3)))),
    "weights_wrong_shape": ("model.safetensors", lambda d: _tensors(d / "model.safetensors", lambda s: s.update({_first_weight(s): torch.zeros(7, 5)}))),
    "weights_as_float64": ("model.safetensors", lambda d: _tensors(d / "model.safetensors", lambda s: s.update({k: v.double() for k, v in s.items() if v.is_floating_point()}))),
    "weights_truncated": ("model.safetensors", lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100])),
    "weights_huge_header": ("model.safetensors", lambda d: (d / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")),
    "weights_32gb_shape": ("model.safetensors", lambda d: _header(d / "model.safetensors", lambda h: h[next(k for k in h if k != "__metadata__")].update(shape=[1 << 20, 1 << 13]))),
    "weights_overlapping": ("model.safetensors", lambda d: _header(d / "model.safetensors", lambda h: [v.update(data_offsets=[0, v["data_offsets"][1] - v["data_offsets"][0]]) for k, v in h.items() if k != "__metadata__"])),
    "weights_garbage": ("model.safetensors", lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096))),
    "weights_link_outside": ("model.safetensors", lambda d: ((d / "model.safetensors").rename(d.parent / f"{d.name}-w"), (d / "model.safetensors").symlink_to(d.parent / f"{d.name}-w"))),
    "weights_dtype_not_a_name": ("model.safetensors", lambda d: _header(d / "model.safetensors", lambda h: h[next(k for k in h if k != "__metadata__")].update(dtype=["F32"]))),
    "pre_link_loop": ("preprocessing.json", lambda d: ((d / "preprocessing.json").unlink(), (d / "preprocessing.json").symlink_to("preprocessing.json"))),
    # intervals.json: a link in a loop is refused, not taken for a folder without intervals
    "intervals_link_loop": ("intervals.json", lambda d: (d / "intervals.json").symlink_to("intervals.json")),
    # allowed: a link that stays inside the folder is an ordinary file
    "weights_link_inside": ("ok", lambda d: ((d / "model.safetensors").rename(d / "w.bin"), (d / "model.safetensors").symlink_to("w.bin"))),
}


def _booster(path: Path, change, resize: bool = True) -> None:
    """Rewrite the text of the first LightGBM booster in ``path``; ``resize``: make its
    ``tree_sizes`` agree with the changed trees (else they are left as written)."""
    import re

    def edit(state):
        text = change(bytes(state["booster_0"].numpy()).decode("utf-8"))
        if resize:
            start, end = text.index("\nTree="), text.index("\nend of trees")
            sizes = [len(b.encode()) for b in re.split(r"(?<=\n)(?=Tree=)", text[start + 1:end + 1])]
            text = re.sub(r"tree_sizes=[0-9 ]*", "tree_sizes=" + " ".join(map(str, sizes)), text, count=1)
        state["booster_0"] = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)
    _tensors(path, edit)


def _first_tree(text: str, key: str, change) -> str:
    """``text`` with the ``key=`` array of its first tree changed (a list of strings in, one out)."""
    head, _, rest = text.partition(f"\n{key}=")
    values, _, tail = rest.partition("\n")
    return f"{head}\n{key}={' '.join(change(values.split()))}\n{tail}"


# LightGBM's parser ends the process (SIGABRT) on a malformed tree: these must be refused before it
BOOSTERS = {
    "weights_lgb_leaf_cut": ("model.safetensors", lambda d: _booster(d / "model.safetensors", lambda t: _first_tree(t, "leaf_value", lambda v: v[:-1]))),
    "weights_lgb_leaf_cut_sizes_kept": ("model.safetensors", lambda d: _booster(d / "model.safetensors", lambda t: _first_tree(t, "leaf_value", lambda v: v[:-1]), resize=False)),
    "weights_lgb_child_out_of_range": ("model.safetensors", lambda d: _booster(d / "model.safetensors", lambda t: _first_tree(t, "left_child", lambda v: ["999", *v[1:]]))),
    "weights_lgb_other_width": ("model.safetensors", lambda d: _booster(d / "model.safetensors", lambda t: t.replace("max_feature_idx=", "max_feature_idx=1", 1))),
    "weights_lgb_not_a_number": ("model.safetensors", lambda d: _booster(d / "model.safetensors", lambda t: _first_tree(t, "threshold", lambda v: ["nope", *v[1:]]))),
}
ENSEMBLES = {
    "ensemble_member_outside": ("ensemble.json", lambda e: _json(e / "ensemble.json", lambda o: o["members"].__setitem__(0, "../../elsewhere"))),
    "ensemble_member_absolute": ("ensemble.json", lambda e: _json(e / "ensemble.json", lambda o: o["members"].__setitem__(0, "/etc"))),
    "ensemble_member_link_outside": ("ensemble.json", lambda e: (shutil.rmtree(e / "members" / "member-0"), (e / "members" / "member-0").symlink_to(e.parent / "model"))),
    "ensemble_nan_weights": ("ensemble.json", lambda e: _json(e / "ensemble.json", lambda o: o.update(method="weighted", weights=[float("nan"), 1.0]))),
    "ensemble_unknown_method": ("ensemble.json", lambda e: _json(e / "ensemble.json", lambda o: o.update(method="exec"))),
    "ensemble_1000_members": ("ensemble.json", lambda e: _json(e / "ensemble.json", lambda o: o.update(members=["members/member-0"] * 1000))),
    "ensemble_member_nul": ("ensemble.json", lambda e: _json(e / "ensemble.json", lambda o: o["members"].__setitem__(0, "members/a\u0000b"))),
    "ensemble_member_link_loop": ("ensemble.json", lambda e: ((e / "members" / "loop").symlink_to("loop"), _json(e / "ensemble.json", lambda o: o["members"].__setitem__(0, "members/loop")))),
    "ensemble_format_version_99": ("ensemble.json", lambda e: _json(e / "ensemble.json", lambda o: o.update(format_version=99))),
    # the evaluation settings recorded for `evaluate`/`backtest` are checked as they are read, like a run's config.json
    "ensemble_evaluation_not_a_number": ("ensemble.json", lambda e: _json(e / "ensemble.json", lambda o: o.update(evaluation={"backtest_cost_bps": "x"}))),
    # a member cut into windows by other rules (its max_gap) was combined with the first member's windows
    "ensemble_member_other_max_gap": ("data.max_gap", lambda e: _json(e / "members" / "member-1" / "preprocessing.json", lambda o: o["data"].update(max_gap="1h"))),
    "ensemble_broken_member": ("preprocessing.json", lambda e: _json(e / "members" / "member-1" / "preprocessing.json", lambda o: o.update(target_scale=-1))),
}

CHILD = r"""
import json, resource, sys, time
import numpy as np
from hftraining.core.errors import UserError
from hftraining.inference.forecaster import Forecaster
cases, csv = json.loads(sys.argv[1]), sys.argv[2]
Forecaster.from_pretrained(cases[0][1]).predict(csv)  # warm-up on the valid folder: imports, kernels
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
for name, path in cases:
    t0 = time.perf_counter()
    try:
        table = Forecaster.from_pretrained(path).predict(csv)
        out = {"ok": True, "forecast": table["forecast_return"].tolist()}
    except UserError as e:
        out = {"ok": False, "user_error": True, "message": str(e)}
    except BaseException as e:
        out = {"ok": False, "user_error": False, "message": f"{type(e).__name__}: {e}"[:500]}
    out.update(name=name, seconds=time.perf_counter() - t0)
    print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from hftraining.inference.ensemble import build_ensemble

    root = tmp_path_factory.mktemp("hostile")
    valid = make_model(root / "model")
    other = make_model(root / "model2")
    gbm = make_lightgbm_model(root / "lightgbm")
    cases, expect = [("valid", str(valid)), ("valid_lightgbm", str(gbm))], {"valid": "ok", "valid_lightgbm": "ok"}
    for variants, base in ((VARIANTS, valid), (BOOSTERS, gbm)):
        for name, (what, mutate) in variants.items():
            d = root / name
            shutil.copytree(base, d)
            mutate(d)
            cases.append((name, str(d)))
            expect[name] = what
    for name, (what, mutate) in ENSEMBLES.items():
        e = build_ensemble([valid, other], root / name)
        mutate(e)
        cases.append((name, str(e)))
        expect[name] = what
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases), CSV], capture_output=True, text=True,
                          timeout=900)
    results = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert len(results) == len(cases), proc.stderr[-3000:]
    return root, expect, results


def make_lightgbm_model(d):
    """A fitted LightGBM model folder at ``d`` (AEM, 20 rows in, 3 steps out)."""
    from hftraining.core.config import ModelConfig, load_config
    from hftraining.data.pipeline import prepare
    from hftraining.models import build_model

    data = prepare(load_config(None, ["data.symbols=[AEM]", "data.sequence_length=20", "data.prediction_horizon=3"]).data)
    pre = data.preprocessing
    m = build_model(ModelConfig(type="lightgbm", lightgbm_rounds=20), len(pre.feature_columns), pre.horizon, pre.seq_len)
    m.fit_windows(data.train, data.val)
    m.save_pretrained(d, preprocessing=pre.to_dict())
    return d


def test_the_corpus_has_at_least_25_variants_across_every_kind_of_file(corpus):
    _, expect, _ = corpus
    kinds = {name.split("_")[0] for name in expect if not name.startswith("valid")}
    assert len(expect) - 2 >= 25 and kinds == {"config", "pre", "weights", "intervals", "ensemble"}


def test_every_hostile_variant_is_a_one_line_error_naming_its_file_or_a_correct_forecast(corpus):
    _, expect, results = corpus
    valid = results["valid"]["forecast"]
    assert results["valid"]["ok"] and all(map(lambda v: v == v, valid))
    assert results["valid_lightgbm"]["ok"]  # the intact booster loads and forecasts
    problems = []
    for name, what in expect.items():
        r = results[name]
        if r["seconds"] > 10:
            problems.append(f"{name}: {r['seconds']:.1f} s")
        if name == "valid_lightgbm":
            continue
        if what == "ok":
            if not (r["ok"] and r["forecast"] == pytest.approx(valid)):
                problems.append(f"{name}: expected the valid folder's forecast, got {r}")
        elif r["ok"]:
            problems.append(f"{name}: loaded and forecast {r['forecast'][:3]}...; expected an error naming {what}")
        elif not r["user_error"] or "\n" in r["message"] or what not in r["message"]:
            problems.append(f"{name}: {r['message'][:300]}")
    assert not problems, "\n".join(problems)
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("name", ["weights_nan", "pre_negative_scale", "config_link_dev_zero", "ensemble_member_outside"])
def test_the_command_line_says_one_line_and_exits_2(corpus, name, tmp_path, capsys):
    root, _, _ = corpus
    cmd = ["predict", str(root / name), "--data", CSV, "--out", str(tmp_path / "f.csv")]
    if name == "config_link_dev_zero":  # a real process (and one a runaway read could not take this one down with)
        proc = subprocess.run([sys.executable, "-m", "hftraining", *cmd], capture_output=True, text=True, timeout=120)
        rc, err = proc.returncode, proc.stderr
    else:  # the same command in process: the exit code main returns and what it wrote to stderr
        from hftraining.cli import main

        capsys.readouterr()
        rc = main(cmd)
        err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert err.count("\n") == 1 and err.startswith("hftraining: error: "), err[-2000:]
    assert not (tmp_path / "f.csv").exists()


def test_serve_refuses_to_start_on_a_hostile_folder(corpus):
    root, _, _ = corpus
    proc = subprocess.run([sys.executable, "-m", "hftraining", "serve", str(root / "weights_nan"), "--port", str(_free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "holds NaN or infinite values" in proc.stderr, proc.stderr[-2000:]


def test_a_model_whose_position_table_would_not_fit_is_refused_before_it_is_built(tmp_path):
    """seq_len x hidden_size values of the transformer's position table are built, not loaded: a
    small folder claiming seq_len 1,000,000 at hidden 1,024 would take 4 GB. It is refused first."""
    from hftraining.core.config import ModelConfig
    from hftraining.core.errors import DataError
    from hftraining.models.folder import expected_tensors

    cfg = ModelConfig(hidden_size=1024, num_heads=8, num_layers=1)
    expected_tensors(cfg, 8, 5, 1000, tmp_path / "config.json")  # an ordinary window: fine
    with pytest.raises(DataError, match=r"config\.json: .* buffer values \(seq_len x hidden_size\)"):
        expected_tensors(cfg, 8, 5, 1_000_000, tmp_path / "config.json")


RUN_CHILD = r"""
import json, resource, sys
from pathlib import Path
from hftraining.core.errors import UserError
from hftraining.inference.forecaster import Forecaster
from hftraining.inference.serve import model_info
cases = json.loads(sys.argv[1])
Forecaster.from_pretrained(cases[0][1])  # warm-up: imports
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
for name, path in cases:
    try:
        info = model_info(Forecaster.from_pretrained(path))
        out = {"ok": True, "run_config": info.get("run_config"), "test": info["training_metrics"].get("test")}
    except UserError as e:
        out = {"ok": False, "user_error": True, "message": str(e)}
    except BaseException as e:
        out = {"ok": False, "user_error": False, "message": f"{type(e).__name__}: {e}"[:500]}
    print(json.dumps({"name": name, **out}), flush=True)
"""


def test_the_files_of_a_hostile_run_folder_are_read_as_untrusted_as_the_model_folder(tmp_path):
    """A run folder is given to predict and serve as its model folder is: its config.json (the run's
    precision), eval.json and metrics.jsonl (``GET /model``) are read bounded and as regular files
    inside it, each failure one line; and a bare model folder's parent is no run: its files are not
    served as the run's."""
    model = make_model(tmp_path / "model")

    def run(name, **files):
        r = tmp_path / name
        shutil.copytree(model, r / "final")
        (r / "config.json").write_text(json.dumps({"training": {}}))
        for f, make in files.items():
            p = r / f.replace("_", ".")
            p.unlink(missing_ok=True)
            make(p)
        return str(r)

    (tmp_path / "config.json").write_text(json.dumps({"secret": "not the run's"}))  # beside the bare folder
    cases = [
        ("valid", run("valid", eval_json=lambda p: p.write_text(json.dumps({"split": "test", "verdict": "ok"})))),
        ("config_dev_zero", run("config_dev_zero", config_json=lambda p: p.symlink_to("/dev/zero"))),
        ("training_a_list", run("training_a_list", config_json=lambda p: p.write_text('{"training": [1]}'))),
        ("eval_dev_zero", run("eval_dev_zero", eval_json=lambda p: p.symlink_to("/dev/zero"))),
        ("eval_not_utf8", run("eval_not_utf8", eval_json=lambda p: p.write_bytes(b"\xff{}"))),
        ("bare_model", str(model)),
    ]
    proc = subprocess.run([sys.executable, "-c", RUN_CHILD, json.dumps(cases)], capture_output=True, text=True, timeout=300)
    results = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert len(results) == len(cases), proc.stderr[-3000:]
    assert results["valid"]["ok"] and results["valid"]["test"] == {"split": "test", "verdict": "ok"}
    for name in ("config_dev_zero", "training_a_list"):
        r = results[name]
        assert not r["ok"] and r["user_error"] and "config.json" in r["message"] and "\n" not in r["message"], r
    for name in ("eval_dev_zero", "eval_not_utf8"):  # informational: left out, the server still starts
        assert results[name]["ok"] and results[name]["test"] == {}, results[name]
    assert results["bare_model"]["ok"] and results["bare_model"]["run_config"] is None, results["bare_model"]


def test_an_unfinished_run_and_a_checkpoint_are_named_as_what_they_are(tmp_path):
    """A run stopped before its end (checkpoints, no final/) and one of its checkpoints are not model
    folders: the one-line error says which, and what to do, instead of listing what a folder may be."""
    from hftraining.core.errors import DataError
    from hftraining.inference.folders import resolve_model_dir

    step = tmp_path / "run" / "checkpoints" / "step-00000002"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text("{}")
    with pytest.raises(DataError, match=r"run: an unfinished run \(checkpoints/, no final/\): finish it with"):
        resolve_model_dir(tmp_path / "run")
    with pytest.raises(DataError, match=r"step-00000002: a training checkpoint, not a model folder"):
        resolve_model_dir(step)
