"""What a command imports before it does its work: `list`, `data check` and `data features` do not pay for the
training stack's optional heavy libraries (pytorch-optimizer, LightGBM, matplotlib, scipy.signal, MLflow,
ONNX, FastAPI, Optuna); `list features` and `data check` not even for torch; a run that builds AdamW
imports no pytorch-optimizer, while a library optimizer or a LightGBM model still imports what it needs."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pytorch_optimizer", "lightgbm", "matplotlib", "scipy.signal", "mlflow", "onnx", "onnxruntime", "fastapi",
         "optuna")

SCRIPT = """
import contextlib, io, json, sys
from hftraining.cli import main
from hftraining.data.io import sample_data_dir

out, loaded = {}, lambda: sorted(m for m in HEAVY + ("torch",) if m in sys.modules)
HEAVY = tuple(json.loads(sys.argv[1]))
sample = str(sample_data_dir() / "AEM.csv")

def run(name, argv):
    with contextlib.redirect_stdout(io.StringIO()) as text:
        rc = main(argv)
    out[name] = {"rc": rc, "stdout": text.getvalue(), "loaded": loaded()}

run("list features", ["list", "features"])
run("data check", ["data", "check", sample])
run("list models", ["list", "models"])
run("data features", ["data", "features", sample, "--out", sys.argv[2]])

import torch
from torch import nn
from hftraining import optim
from hftraining.core.config import ModelConfig, TrainingConfig
from hftraining.models import build_model
import hftraining.workflows.train_run, hftraining.workflows.evaluate_run, hftraining.inference.forecaster  # noqa

optim.check_compatibility(TrainingConfig())
optim.build_optimizer(nn.Linear(2, 2), TrainingConfig())
out["adamw"] = {"loaded": loaded()}
optim.check_compatibility(TrainingConfig(optimizer="lion"))
build_model(ModelConfig(type="lightgbm"), 3, 2, 10)
out["library"] = {"loaded": loaded(), "lion": type(optim.build_optimizer(nn.Linear(2, 2), TrainingConfig(optimizer="lion"))).__name__}
print(json.dumps(out))
"""


def test_light_commands_import_no_heavy_library(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(HEAVY), str(tmp_path / "features.csv")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    for name in ("list features", "data check", "list models", "data features"):
        assert out[name]["rc"] == 0 and out[name]["stdout"], (name, out[name])
    # `list features` (the first command after `import hftraining.cli`) and `data check`: not even torch
    assert out["list features"]["loaded"] == [] and out["data check"]["loaded"] == [], out
    assert "lightgbm" in out["list models"]["stdout"]  # listed without importing it
    for name in ("list models", "data features", "adamw"):
        assert out[name]["loaded"] == ["torch"], (name, out[name]["loaded"])
    # a name listed is usable: the library optimizer and the LightGBM model import what they need
    assert {"pytorch_optimizer", "lightgbm"} <= set(out["library"]["loaded"]) and out["library"]["lion"] == "Lion"
