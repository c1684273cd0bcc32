"""``data features --out`` naming a folder: a one-line error naming the --out given, not the file written
beside it to be renamed onto it."""

from __future__ import annotations

import pytest

from hftraining.cli import main
from hftraining.data.io import sample_data_dir


@pytest.mark.parametrize("link", [False, True])
def test_features_out_that_is_a_folder_is_named_as_given(tmp_path, capsys, link):
    """``--out x.csv`` where x.csv is a folder (or a link to one) said ``x.csv.tmp: cannot write (Is a
    directory)``, a file the user never named, after computing every feature; the folder is left as it was."""
    folder = tmp_path / "x.csv"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    out = folder
    if link:
        out = tmp_path / "latest.csv"
        out.symlink_to(folder)
    assert main(["data", "features", str(sample_data_dir()), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"{out}: is a folder" in err and ".tmp" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["x.csv", *(["latest.csv"] if link else [])])
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
