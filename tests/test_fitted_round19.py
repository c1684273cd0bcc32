"""Ridge and LightGBM settings past what the fit can take are one-line config errors before the run reads
its data: a LightGBM setting past LightGBM's own limits (its leaf count, the C++ int of its round count and
leaf size) and a ridge penalty past what the model folder records (float32) ended the fit in a traceback
after the features were built."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny
from hftraining.cli import main
from hftraining.core.config import DataConfig, ModelConfig
from hftraining.core.errors import ConfigError
from hftraining.data.pipeline import prepare
from hftraining.models import build_model
from hftraining.models.registry import check_buildable


@pytest.mark.parametrize("setting, key", [
    ("model.lightgbm_num_leaves=200000", "model.lightgbm_num_leaves"),  # LightGBM: at most 131,072 leaves
    ("model.lightgbm_min_data_in_leaf=3000000000", "model.lightgbm_min_data_in_leaf"),  # a C++ int
    ("model.lightgbm_rounds=3000000000", "model.lightgbm_rounds"),
])
def test_a_lightgbm_setting_past_lightgbms_limits_is_a_one_line_error_before_the_data(tmp_path, capsys, setting, key):
    run = tmp_path / "run"
    rc = main(["train", *tiny(run, "model.type=lightgbm", "evaluation.report=false", setting)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"hftraining: error: {key}: LightGBM takes at most")
    assert not run.exists()  # said before the run folder or the features


def test_a_lightgbm_run_without_validation_past_the_round_limit_is_refused_too():
    cfg = ModelConfig(type="lightgbm", lightgbm_rounds_without_validation=2**31)
    with pytest.raises(ConfigError, match="model.lightgbm_rounds_without_validation: LightGBM takes at most 2,147,483,647"):
        check_buildable(cfg, 3, 20)


def test_lightgbm_settings_at_the_limits_and_the_defaults_are_accepted():
    check_buildable(ModelConfig(type="lightgbm"), 3, 20)
    check_buildable(ModelConfig(type="lightgbm", lightgbm_num_leaves=131_072, lightgbm_min_data_in_leaf=2**31 - 1,
                                lightgbm_rounds=2**31 - 1, lightgbm_rounds_without_validation=2**31 - 1), 3, 20)
    # a ridge key LightGBM does not read is said by the unread-settings warning, not refused
    check_buildable(ModelConfig(type="lightgbm", ridge_lambdas=[1e40]), 3, 20)


def test_a_ridge_penalty_the_folder_cannot_record_is_a_one_line_error_before_the_data(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", *tiny(run, "model.type=ridge", "evaluation.report=false", "model.ridge_lambdas=[1e40]")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("hftraining: error: model.ridge_lambdas: 1e+40 is more than the model folder can record")
    assert not run.exists()


def test_the_largest_penalty_the_folder_records_fits_and_shrinks_to_the_mean():
    data = prepare(DataConfig(symbols=["AEM", "WPM"], sequence_length=20, prediction_horizon=3))
    big = float(np.finfo(np.float32).max)
    check_buildable(ModelConfig(type="ridge", ridge_lambdas=[1e-3, big]), 3, 20)
    m = build_model(ModelConfig(type="ridge", ridge_lambdas=[big]), data.train.features.shape[1], 3, 20)
    fit = m.fit_windows(data.train, data.val)
    assert fit["penalty"] == big and float(m.penalty) == big
    w = m.weight.numpy()
    assert np.isfinite(w).all() and np.abs(w[:-1]).max() < 1e-20  # every coefficient but the unpenalised bias is 0
    np.testing.assert_allclose(w[-1], data.train.targets().astype(np.float64).mean(axis=0), rtol=1e-4)
