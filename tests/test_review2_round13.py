"""What a user of the library sees of the data's warnings: a build that keeps its warnings for the feature
store still says them on stderr when logging is not set up (Python's last resort), once each, whether the
rows are built in memory, in this process or by build workers, and whether the entry is built or served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_store_round13 import _undecided  # noqa: E402  (files whose dates read two ways)

UNDECIDED = "dates such as '21/03/01'"


def _library_stderr(folder: Path, cache: Path | None, workers: int = 0) -> str:
    """stderr of a script that reads ``folder``'s rows through the library, without setting up logging."""
    script = (
        "from hftraining.core.config import DataConfig\nfrom hftraining.data.pipeline import data_rows\n"
        "if __name__ == '__main__':\n"
        f"    data_rows(DataConfig(data_dir={str(folder)!r}, cache_dir={None if cache is None else str(cache)!r}, "
        f"sequence_length=5, prediction_horizon=2, features=['log_return_1'], num_workers={workers}))\n"
        "    print('read')\n")
    path = folder.parent / "read.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "read", done.stderr[-2000:]
    return done.stderr


@pytest.mark.parametrize("cache", [False, True], ids=["in-memory", "store"])
def test_a_library_build_without_logging_set_up_says_its_warnings_on_stderr(tmp_path, cache):
    # the handler that keeps a build's warnings for the store counted as one that shows them, so Python's
    # last resort stayed silent: the build (in memory always, in the store on a miss) said nothing, and only
    # a hit of the entry said the warning
    folder = tmp_path / "data"
    _undecided(folder, ("AAA",))
    store = tmp_path / "cache" if cache else None
    for _ in range(2 if cache else 1):  # the build (a miss), then the entry served (a hit)
        said = [line for line in _library_stderr(folder, store).splitlines() if UNDECIDED in line]
        assert len(said) == 1 and str(folder / "AAA.csv") in said[0], said


def test_build_workers_warnings_are_said_once_each_in_library_use(tmp_path):
    folder = tmp_path / "data"
    _undecided(folder, ("AAA", "BBB"))
    said = [line for line in _library_stderr(folder, None, workers=2).splitlines() if UNDECIDED in line]
    assert len(said) == 2 and "AAA.csv" in said[0] and "BBB.csv" in said[1], said


@pytest.mark.parametrize("spec, bad", [("rsi_14.0000001", "14.0000001"), ("macd_12_26_9.0000001", "9.0000001"),
                                       ("market_5_2.0000001", "2.0000001"), ("log_return_1.0000001", None)])
def test_a_fractional_window_is_named_as_the_spec_writes_it(spec, bad):
    # six significant digits named rsi_14.0000001 "rsi_14 ..., got 14": a spec the user did not write, a whole number
    from hftraining.core.errors import ConfigError
    from hftraining.data.features import check_specs

    with pytest.raises(ConfigError) as err:
        check_specs(["log_return_1", spec])
    msg = str(err.value)
    assert msg.startswith(f"data.features: {spec}: "), msg
    assert bad is None or msg.endswith(f", got {bad}"), msg


def test_an_int_valued_float_spec_is_the_whole_number():
    from hftraining.data.features import check_specs, feature_columns, parse_spec

    check_specs(["rsi_14.0", "market_5.0"])
    assert parse_spec("rsi_14.0") == ("rsi", [14]) and feature_columns(["rsi_14.0"]) == feature_columns(["rsi_14"])


def test_a_build_inside_a_held_training_run_says_its_warnings_once_on_stderr(tmp_path, monkeypatch, capsys):
    # library use without logging set up, a build inside the hold a training run opens before train.log: the
    # hold and the store's collector each took the other for a handler that shows the record, so neither did
    import logging

    from hftraining.core.config import DataConfig
    from hftraining.data.pipeline import data_rows
    from hftraining.train.logging import held_records

    log = logging.getLogger("hftraining")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's capture handler stands for a configured app
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "propagate", True)
    folder = tmp_path / "data"
    _undecided(folder, ("AAA",))
    with held_records():
        data_rows(DataConfig(data_dir=str(folder), cache_dir=None, sequence_length=5, prediction_horizon=2,
                             features=["log_return_1"]))
    said = [line for line in capsys.readouterr().err.splitlines() if UNDECIDED in line]
    assert len(said) == 1, said
