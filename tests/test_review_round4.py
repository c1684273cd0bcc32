import json
import subprocess
import sys

import numpy as np
import pytest

from hftraining.core.errors import UserError


def test_predict_out_dev_stdout_redirected_to_a_file_appends_not_replaces(tmp_path):
    """`predict --out /dev/stdout >> log`: the CSV goes where standard output goes, after the log's
    earlier lines and before later ones; the file is not replaced by one holding the CSV alone."""
    log = tmp_path / "log.txt"
    log.write_text("earlier\n")
    code = ("import pandas as pd; from hftraining.cli import _write_csv; print('before', flush=True); "
            "_write_csv(pd.DataFrame({'a': [1, 2]}), '/dev/stdout'); print('after', flush=True)")
    with open(log, "a") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True)
    assert log.read_text().splitlines() == ["earlier", "before", "a", "1", "2", "after"]


def test_predict_out_dev_stdout_into_a_pipe_is_the_csv_alone(tmp_path):
    """`predict --out /dev/stdout | consumer`: the consumer reads the CSV and nothing after it (the
    "wrote N forecasts" line goes to stderr then)."""
    code = ("import pandas as pd, sys; from hftraining import cli\n"
            "class F:\n"
            "    @staticmethod\n"
            "    def from_pretrained(path):\n"
            "        return F()\n"
            "    def predict(self, data):\n"
            "        return pd.DataFrame({'symbol': ['A', 'A'], 'as_of': pd.to_datetime(['2024-01-02'] * 2, utc=True),"
            " 'step': [1, 2]})\n"
            "cli.Forecaster = F\n"
            f"sys.exit(cli.main(['predict', {str(tmp_path / 'model')!r}, '--data', {str(tmp_path / 'data')!r}, "
            "'--out', '/dev/stdout']))")
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["symbol,as_of,step", "A,2024-01-02T00:00:00+00:00,1", "A,2024-01-02T00:00:00+00:00,2"]
    assert "wrote 2 forecasts" in done.stderr


def test_a_rank_ic_equal_on_every_date_gets_the_sign_test_p_whatever_its_rounding():
    """0.8 on 3 dates (5 symbols ranked alike): its mean rounds off 0.8, which left a spread of 1e-17 and
    t = 1e16 (p = 1e-32); every date of one sign is the sign test's 2^(1-n)."""
    from hftraining.eval import metrics as M
    from hftraining.eval.forecasts import _ic_p_value

    for n in (3, 6, 7):
        s = M.ic_summary(np.full(n, 0.8), lag=0)
        assert s["t_stat"] == np.inf and s["std"] == 0.0
        assert _ic_p_value(s) == pytest.approx(2.0 ** (1 - n))


def test_windows_alone_changed_blame_the_version_only_for_a_run_strided_by_dates(tmp_path):
    from hftraining.train.runner import check_same_data

    report = {"windows": {"train": 300, "val": 40}, "split": {"val_from": "2024-01-02",
                                                                "symbols": {"AEM": {"train": [0, 300], "val": [300, 340]}}}}
    ckpt = tmp_path / "checkpoints" / "step-00000004"
    ckpt.mkdir(parents=True)
    (tmp_path / "data_report.json").write_text(json.dumps(report))
    fewer = {**report, "windows": {"train": 299, "val": 40}}  # a bar lost inside the training period
    (ckpt / "config.json").write_text(json.dumps({"data": {"batching": "windows", "stride": 1}}))
    with pytest.raises(UserError, match="the files under data.data_dir changed"):
        check_same_data(fewer, ckpt)
    (ckpt / "config.json").write_text(json.dumps({"data": {"batching": "dates", "stride": 2}}))
    with pytest.raises(UserError, match="this version cuts the windows otherwise"):
        check_same_data(fewer, ckpt)


def test_a_fold_after_a_symbol_s_last_rows_leaves_it_out_of_the_per_symbol_minimum(tmp_path):
    """Rolling walk-forward on a panel with a symbol that stops trading: in fold 2 its last 12 rows lie at
    the start of the training span and it has no validation or test row (no window reads it); its own
    scaler's minimum refused the fold after fold 1 had trained."""
    import shutil
    from importlib.resources import files

    from conftest import tiny
    from hftraining.core.config import load_config
    from hftraining.data.pipeline import prepare
    from hftraining.data.splits import Fold

    sample = files("hftraining") / "sample_data"
    shutil.copy(sample / "AEM.csv", tmp_path / "AEM.csv")
    (tmp_path / "WPM.csv").write_text("".join((sample / "WPM.csv").read_text().splitlines(keepends=True)[:275]))
    d = load_config(None, tiny(None, f"data.data_dir={tmp_path}", "data.scale_per_symbol=true")).data
    for k in (0, 1):
        data = prepare(d, fold=Fold(k, 2, "rolling"))
        assert len(data.train) and len(data.test)
    # fold 2's model has no scaler of its own for WPM: given WPM, it refuses it in one line, never scales it by
    # another's statistics or none
    from hftraining.core.errors import DataError

    assert "WPM" not in data.preprocessing.scaler.params and "AEM" in data.preprocessing.scaler.params
    with pytest.raises(DataError, match="WPM"):
        data.preprocessing.scaler.stats("WPM")
