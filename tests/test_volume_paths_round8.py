"""Rows the validation rules and the volume rule leave or drop, as every path that reads them sees them:
a bad feature parameter is one config line before a model is sized on the features; a resume whose data
now keep (or drop) the volume features the run dropped (or kept) is one line, not a state dict's size
mismatch; tune records the test cut of the rows its trials are cut from (without the volume features
when a symbol reports no volume before the first validation date)."""

import pandas as pd
import pytest

from conftest import tiny
from hftraining.core.config import load_config
from hftraining.core.errors import ConfigError, UserError
from hftraining.data.synth import synth_ohlcv
from hftraining.workflows.train_run import train


@pytest.mark.parametrize("spec", ["volatility_0", "rsi_1"])
def test_a_bad_feature_parameter_is_one_config_line_before_the_model_is_sized(tmp_path, spec):
    cfg = load_config(None, tiny(tmp_path / "run", f'data.features=["log_return_1", "{spec}"]', "training.max_steps=1"))
    with pytest.raises(ConfigError, match=rf"data.features: '{spec}': bad parameters"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_resume_whose_data_now_keep_the_volume_features_is_one_line(tmp_path):
    """A vendor backfills the volume of a symbol that reported none before the first validation date:
    the resumed run would keep the volume features the run dropped (the same rows and windows, another
    input layer), so its checkpoint cannot be loaded: one line, not the state dict's size mismatch."""
    data = tmp_path / "data"
    data.mkdir()
    a, b = synth_ohlcv(300, seed=1, start="2024-01-01"), synth_ohlcv(300, seed=2, start="2024-01-01")
    b.to_csv(data / "B.csv", index=False)
    a.assign(volume=a["volume"].where(a["timestamp"] >= pd.Timestamp("2024-11-15", tz="UTC"), 0)).to_csv(data / "A.csv", index=False)

    def cfg(steps):
        return load_config(None, tiny(tmp_path / "run", f"data.data_dir={data}", "data.symbols=null", "data.cache_dir=null",
                                      'data.features=["volatility_60", "volume_ratio_20"]',
                                      'data.split_dates={val: "2024-09-02", test: "2024-11-01"}',
                                      "training.save_steps=3", "evaluation.eval_steps=3", "evaluation.report=false",
                                      f"training.max_steps={steps}", "training.resume_from_checkpoint=auto"))

    train(cfg(3))
    a.to_csv(data / "A.csv", index=False)  # volume backfilled
    with pytest.raises(UserError, match="cannot resume"):
        train(cfg(6))


class _Study:
    def __init__(self):
        self.user_attrs = {}

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value

    def get_trials(self, deepcopy=True, states=None):
        return [_Trial(self, -1)]  # a scored trial: the data and cut of the next are compared


class _Trial:
    def __init__(self, study, number=0):
        self.study, self.number = study, number


def _panel(folder):
    """Two symbols; A reports volume only from a date after the ratio split's test cut."""
    folder.mkdir()
    a, b = synth_ohlcv(300, seed=1, start="2024-01-01"), synth_ohlcv(300, seed=2, start="2024-01-01")
    a.loc[a["timestamp"] < pd.Timestamp("2024-12-01", tz="UTC"), "volume"] = 0
    a.to_csv(folder / "A.csv", index=False)
    b.to_csv(folder / "B.csv", index=False)


def _prepared(tmp_path, study, features):
    overrides = tiny(None, f"data.data_dir={tmp_path / 'data'}", "data.cache_dir=null", "data.split_dates=null", "data.symbols=null",
                     f"data.features={features}")
    space = {"data.features": {"choices": [["log_return_1", "volume_ratio_60"], ["log_return_1"]]}}
    from hftraining.workflows.tune import Objective

    objective = Objective(None, overrides, space, tmp_path / "out")
    cfg = load_config(None, overrides)
    return objective._prepared(_Trial(study), cfg, {"data.features": features})


def test_trials_that_cut_at_the_same_test_date_are_not_refused(tmp_path):
    """A feature list whose volume feature is dropped (no volume before the first validation date) is cut
    as the list without it: the test split the study records is the one its trials train beside."""
    _panel(tmp_path / "data")
    study = _Study()
    first = _prepared(tmp_path, study, '["log_return_1", "volume_ratio_60"]')[0]
    second = _prepared(tmp_path, study, '["log_return_1"]')[0]  # refused: "moves the shared test cut"
    assert first.preprocessing.feature_columns == second.preprocessing.feature_columns == ["log_return_1"]
    assert first.report["split"]["test_from"] == second.report["split"]["test_from"]


def test_trials_that_cut_at_another_test_date_are_refused(tmp_path):
    _panel(tmp_path / "data")
    study = _Study()
    _prepared(tmp_path, study, '["log_return_1", "volume_ratio_60"]')
    with pytest.raises(ConfigError, match="moves the shared test cut"):
        _prepared(tmp_path, study, '["volatility_20", "volume_ratio_60"]')  # accepted, though cut elsewhere


def test_frames_without_a_volume_column_prepare_when_no_feature_needs_volume():
    """A library caller's frames need no volume column for features that read none."""
    from hftraining.core.config import DataConfig
    from hftraining.data.pipeline import prepare

    frames = {s: synth_ohlcv(200, seed=i).drop(columns="volume") for i, s in enumerate("AB")}
    d = DataConfig(sequence_length=10, prediction_horizon=2, features=["log_return_1"], cache_dir=None)
    assert len(prepare(d, frames).train) > 0


def test_frames_without_a_volume_column_drop_the_volume_features():
    """With the default features (volume_ratio_20 among them) frames without a volume column were a
    KeyError: they are read as having an empty one, the volume features dropped for every symbol."""
    from hftraining.core.config import DataConfig
    from hftraining.data.pipeline import prepare

    frames = {s: synth_ohlcv(300, seed=i).drop(columns="volume") for i, s in enumerate("AB")}
    p = prepare(DataConfig(sequence_length=10, prediction_horizon=2, cache_dir=None), frames)
    assert "volume_ratio_20" in p.report["dropped_features"] and len(p.train) > 0
