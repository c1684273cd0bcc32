"""What ``hftraining data synth`` and ``hftraining tune`` write for valid input: a session whose bars end on
the last day a nanosecond timestamp holds (2262-04-11) is written up to its last bar, and the best config a
tune writes is one ``hftraining train --config`` accepts, whatever its trial drew."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from hftraining.core.config import load_config
from hftraining.core.errors import DataError
from hftraining.data.synth import bar_times


@pytest.mark.parametrize("rows, start, session, tz, first, last", [
    # Tuesday to Friday around the clock: the last bar, 2262-04-11 00:59 UTC, is hours before the limit (23:47:16)
    (1440 * 4 + 60, "2262-04-07", "00:00-24:00", "UTC", "2262-04-07 00:00", "2262-04-11 00:59"),
    # one bar of a session that closes at midnight, on the last day
    (1, "2262-04-11", "23:00-24:00", "UTC", "2262-04-11 23:00", "2262-04-11 23:00"),
    # 23:00 in Tokyo is 14:00 UTC
    (2, "2262-04-11", "23:00-24:00", "Asia/Tokyo", "2262-04-11 14:00", "2262-04-11 14:01"),
])
def test_session_bars_before_the_last_nanosecond_time_are_written(rows, start, session, tz, first, last):
    # the bound was checked at the close of the last day's session, not at the last bar written: these were
    # refused ("the last bar is after 2262-04-11"), though every bar they ask for is a valid time
    t = bar_times(rows, "1min", start, session, tz)
    expected = pd.date_range(pd.Timestamp(first, tz="UTC"), pd.Timestamp(last, tz="UTC"), freq="min")
    assert len(t) == rows and str(t.dtype) == "datetime64[ns, UTC]"
    np.testing.assert_array_equal(t.asi8, expected.as_unit("ns").asi8)


def test_a_bar_past_the_last_nanosecond_time_is_still_refused():
    # the last of these bars is 2262-04-11 23:49 UTC, past 23:47:16: refused, not wrapped to an earlier century
    with pytest.raises(DataError, match=r"2,870 rows at frequency '1min' do not fit .*after 2262-04-11"):
        bar_times(1440 + 1430, "1min", "2262-04-10", "00:00-24:00", "UTC")
    with pytest.raises(DataError, match="do not fit"):
        bar_times(1_000_000, "30min", "2000-01-03")


optuna = pytest.importorskip("optuna")
TINY = {
    "model": {"hidden_size": 8, "num_heads": 2, "num_layers": 1, "dropout": 0.0},
    "data": {"sequence_length": 16, "prediction_horizon": 2, "batch_size": 32, "symbols": ["AEM", "WPM"]},
    "training": {"max_steps": 6, "logging_steps": 3, "save_steps": 0},
    "evaluation": {"eval_steps": 2, "max_eval_batches": 1, "report": False},
    "output": {"experiment_name": "cfg", "tensorboard": False, "progress_bar": "never"},
    "tune": {"seed": 0, "sampler": "random", "pruner": "none"},
}


def _tune(tmp_path, sections: dict, space: dict, trials: int = 1) -> tuple[int, object]:
    from hftraining.cli import main
    c = copy.deepcopy(TINY)
    for section, keys in sections.items():
        c[section].update(keys)
    c["tune"]["search_space"] = space
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(c))
    return main(["tune", "--config", str(path), "--trials", str(trials), "--out", str(tmp_path / "o")]), path


@pytest.mark.parametrize("sections, space, drawn, reset", [
    # the trial drew validation at the last step only: its patience acted in no step
    ({"training": {"early_stopping_patience": 3}, "evaluation": {"eval_steps": 2}},
     {"evaluation.eval_steps": {"choices": [6, 0]}}, ("evaluation", "eval_steps", 0),
     ("training", "early_stopping_patience", 0)),
    # the trial drew date batches: data.batch_size sized no micro-batch of it
    ({"data": {"batch_size": 16}}, {"data.batching": {"choices": ["windows", "dates"]}}, ("data", "batching", "dates"),
     ("data", "batch_size", 32)),
])
def test_the_best_config_of_a_tune_is_one_train_accepts(tmp_path, sections, space, drawn, reset):
    # best_config.yaml is written without the search space, so a key its drawn choice ignores was refused by the
    # very command its header gives (`hftraining train --config best_config.yaml`: exit 2); now that key is at
    # its default, which trains as the trial did, and the header says which key was set back
    rc, _ = _tune(tmp_path, sections, space)
    assert rc == 0
    best = tmp_path / "o" / "best_config.yaml"
    cfg = load_config(best)
    assert getattr(getattr(cfg, drawn[0]), drawn[1]) == drawn[2]
    assert getattr(getattr(cfg, reset[0]), reset[1]) == reset[2]
    header = [line for line in best.read_text().splitlines() if line.startswith("# set back to the default")]
    assert len(header) == 1 and f"{reset[0]}.{reset[1]}: " in header[0], header
    # the trial's own config.json keeps what it trained with, searched space included
    trial = json.loads((tmp_path / "o" / "trial-0000" / "config.json").read_text())
    assert trial[drawn[0]][drawn[1]] == drawn[2]


def test_the_report_of_a_study_whose_trial_was_written_before_the_rule(tmp_path):
    # a trial folder trained before early stopping under eval_steps 0 was refused: its config.json holds both.
    # `tune --trials 0` (the report of the stored study) refused it reading that file, writing no best config
    rc, path = _tune(tmp_path, {"evaluation": {"eval_steps": 0}},
                     {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    assert rc == 0
    saved = tmp_path / "o" / "trial-0000" / "config.json"
    trial = json.loads(saved.read_text())
    trial["training"]["early_stopping_patience"] = 3
    saved.write_text(json.dumps(trial))
    (tmp_path / "o" / "best_config.yaml").unlink()
    from hftraining.cli import main
    assert main(["tune", "--config", str(path), "--trials", "0", "--out", str(tmp_path / "o")]) == 0
    cfg = load_config(tmp_path / "o" / "best_config.yaml")
    assert cfg.training.early_stopping_patience == 0 and cfg.evaluation.eval_steps == 0
