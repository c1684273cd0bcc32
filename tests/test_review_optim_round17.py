"""A tune whose trials draw ``training.max_steps``, the warmup or ``training.num_cycles`` is checked for cosine
cycles that do not fit by the values its trials draw, not by the config's own values of those keys, which no
trial trains with."""

from __future__ import annotations

import copy

import pytest
import yaml

pytest.importorskip("optuna")

from hftraining.core.config import load_config  # noqa: E402
from hftraining.core.errors import ConfigError  # noqa: E402
from hftraining.workflows import tune  # noqa: E402
from test_tune_audit import TINY  # noqa: E402


def _checks(tmp_path, training: dict, space: dict) -> None:
    """What ``hftraining tune`` checks before its first trial: the searched settings, then every value a
    trial may draw."""
    c = copy.deepcopy(TINY)
    c["training"].update(training)
    c["tune"]["search_space"] = space
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(c))
    cfg = load_config(str(path), [])
    parsed = tune.parse_space(cfg.tune.search_space)
    tune.check_searched_settings(cfg, parsed)
    tune.check_space_values(str(path), [], parsed, tmp_path / "out")


OPTIMIZERS = {"training.optimizer": {"choices": ["adamw", "sgd"]}}


@pytest.mark.parametrize("training, searched", [
    # the config's 6 steps hold 2 cycles; every trial draws 20 to 40, which hold 4
    ({"max_steps": 6, "num_cycles": 4}, {"training.max_steps": {"type": "int", "low": 20, "high": 40}}),
    # the config's 20 cycles do not fit its 30 steps; every trial draws 2 or 4, which do
    ({"max_steps": 30, "num_cycles": 20}, {"training.num_cycles": {"choices": [2, 4]}}),
    # the config's warmup of 27 of 30 steps leaves room for no restart; every trial warms up for 0 or 3
    ({"max_steps": 30, "num_cycles": 4, "warmup_ratio": 0.9}, {"training.warmup_ratio": {"choices": [0.0, 0.1]}}),
])
def test_a_searched_optimizer_is_not_refused_for_cycles_the_trials_steps_hold(tmp_path, training, searched):
    """With ``training.optimizer`` searched, the tune was refused before any trial, blaming a choice of
    optimizer ("choice adamw: training.num_cycles: 4 cosine cycles need at least 2 steps each, but
    training.max_steps 6 ..."), for a max_steps, warmup or cycle count the search space replaces in every
    trial: no optimizer could be searched with cosine restarts unless the config's own values fit too."""
    _checks(tmp_path, {"lr_scheduler": "cosine_restarts", **training}, {**OPTIMIZERS, **searched})


def test_a_searched_schedule_is_not_refused_for_the_configs_unused_steps(tmp_path):
    """The same for ``training.lr_scheduler`` searched: its choice cosine_restarts was refused for the config's
    6 steps, which no trial trains (each draws 20 to 40)."""
    _checks(tmp_path, {"lr_scheduler": "cosine_restarts", "max_steps": 6, "num_cycles": 4},
            {"training.lr_scheduler": {"choices": ["cosine_restarts"]},
             "training.max_steps": {"type": "int", "low": 20, "high": 40}})


def test_cycles_that_no_trial_fits_are_still_refused_before_the_first_trial(tmp_path):
    """Cycles the trials' steps cannot hold are still one line before any trial: the config's own error when
    no drawn value changes the steps, and the searched value that fails when one does."""
    with pytest.raises(ConfigError, match=r"^training\.num_cycles: 4 cosine cycles need at least 2 steps each, but "
                                          r"training\.max_steps 6 .* at least 9$"):
        _checks(tmp_path, {"lr_scheduler": "cosine_restarts", "max_steps": 6, "num_cycles": 4}, OPTIMIZERS)
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.training\.max_steps: low 6 fails whatever the other "
                                          r"searched keys draw: training\.num_cycles: 4 cosine cycles"):
        _checks(tmp_path, {"lr_scheduler": "cosine_restarts", "num_cycles": 4},
                {**OPTIMIZERS, "training.max_steps": {"type": "int", "low": 6, "high": 40}})
