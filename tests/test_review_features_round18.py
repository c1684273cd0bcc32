"""An ETT file that is not UTF-8 text: the error names the byte and the line where it stops being so.

The bytes of a CSV are decoded in chunks; the offset the decoder reports counts from the start of its
chunk (and from after a byte order mark), so a bad byte deep in a file (an ETTm1.csv of 10 MB
touched by a Latin-1 editor) or after the mark was named at a byte that holds nothing wrong.
A UTF-16 file (Excel's "Unicode Text") is named as such.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.core.errors import DataError
from hftraining.workflows import ett

BOM = b"\xef\xbb\xbf"


def _rows(rows: int) -> list[str]:
    rng = np.random.default_rng(0)
    dates = np.datetime64("2016-07-01T00:00") + np.arange(rows) * np.timedelta64(1, "h")
    return [str(d).replace("T", " ") + ":00," + ",".join(f"{y:.3f}" for y in x)
            for d, x in zip(dates, rng.normal(size=(rows, 7)))]


def _write(folder: Path, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ETTh1.csv").write_bytes(data)
    return folder


def _bad_byte_file(rows: int, bom: bool, newline: str) -> tuple[bytes, int, int]:
    """(file bytes, offset of its one non-UTF-8 byte, its 1-based line): ``rows`` good rows, then a row
    whose OT holds a Latin-1 degree sign (0xB0, not UTF-8 on its own)."""
    head = (newline.join([",".join(ett.COLUMNS), *_rows(rows)]) + newline).encode()
    bad_row = b"2020-01-01 00:00:00,1,2,3,4,5,6,7\xb0" + newline.encode()
    data = (BOM if bom else b"") + head + bad_row
    return data, data.index(b"\xb0"), rows + 2


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_bad_byte_deep_in_the_file_is_named_at_its_offset_and_line(tmp_path: Path, bom: bool, newline: str):
    data, at, line = _bad_byte_file(3000, bom, newline)  # ~100 KB: beyond the decoder's first chunk
    folder = _write(tmp_path, data)
    with pytest.raises(DataError) as e:
        ett.load_ett(folder, "ETTh1")
    msg = str(e.value)
    assert f"at byte {at}, line {line})" in msg, msg
    assert data[at:at + 1] == b"\xb0"


def test_a_bad_byte_after_a_byte_order_mark_is_named_at_its_offset_in_the_file(tmp_path: Path):
    data, at, line = _bad_byte_file(2, True, "\r\n")
    assert data.startswith(BOM) and line == 4 and data[at:at + 1] == b"\xb0"
    folder = _write(tmp_path, data)
    with pytest.raises(DataError, match=rf"not UTF-8 text \(invalid start byte at byte {at}, line 4\)"):
        ett.load_ett(folder, "ETTh1")


@pytest.mark.parametrize("encoding,mark", [("utf-16", "FF FE"), ("utf-32", "FF FE 00 00")])
def test_bench_ett_names_a_utf16_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  encoding: str, mark: str):
    text = "\r\n".join([",".join(ett.COLUMNS), *_rows(48)]) + "\r\n"
    folder = _write(tmp_path, text.encode(encoding))
    assert main(["bench", "ett", "--data", str(folder), "--model", "linear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{encoding.upper()} text (byte order mark {mark}); save it as UTF-8" in err[0], err[0]

