"""predict --out to what is not a regular file, and the mode of a file it replaces."""

from __future__ import annotations

import os
import stat

from hftraining.cli import main
from hftraining.data.io import sample_data_dir


def test_predict_out_writes_into_a_fifo_and_keeps_a_files_mode(tmp_path):
    """``--out`` may name a pipe, ``/dev/stdout`` or ``/dev/null``: the forecasts go into it, as
    ``to_csv`` wrote them, instead of a file renamed over it (a reader of the FIFO then waited forever;
    run as root, ``--out /dev/null`` replaced the device by a file). A file replaced keeps its
    permission bits (forecasts kept private stay private)."""
    from test_inference_serve import make_model  # noqa: E402

    make_model(tmp_path / "m")
    data = str(sample_data_dir() / "AEM.csv")
    fifo = tmp_path / "fc.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting: the writer's open does not block
    try:
        assert main(["predict", str(tmp_path / "m"), "--data", data, "--out", str(fifo)]) == 0
        got = os.read(reader, 1 << 20)
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a file"
    assert got.startswith(b"symbol,"), got
    private = tmp_path / "private.csv"
    private.write_text("old\n")
    private.chmod(0o600)
    assert main(["predict", str(tmp_path / "m"), "--data", data, "--out", str(private)]) == 0
    assert private.read_text().startswith("symbol,")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
