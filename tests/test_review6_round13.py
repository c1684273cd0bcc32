"""The store's key holds the code of the data layer however the package is laid out on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import hftraining


def _package(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(Path(hftraining.__file__).parent, src / "hftraining", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def _entries(path: Path, cache: Path) -> list[str]:
    """Build the rows of one symbol with ``path`` first on PYTHONPATH → the store's entries after it."""
    data = Path(hftraining.__file__).parent / "sample_data"  # a folder, whichever way the code is imported
    script = ("from hftraining.core.config import DataConfig\nfrom hftraining.data.pipeline import data_rows\n"
              f"data_rows(DataConfig(symbols=['AEM'], data_dir={str(data)!r}, cache_dir={str(cache)!r}, "
              "sequence_length=20, "
              "prediction_horizon=3, features=['log_return_1']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_an_editors_lock_file_beside_the_data_modules_does_not_fail_a_build(tmp_path):
    """Emacs marks a file being edited with a link to nowhere, ``.#features.py``: the key read it as a module
    and every build with a cache_dir failed with a traceback (FileNotFoundError) while the file was open."""
    src = _package(tmp_path)
    cache = tmp_path / "cache"
    first = _entries(src, cache)
    os.symlink("user@host.4242:1700000000", src / "hftraining" / "data" / ".#features.py")
    assert _entries(src, cache) == first  # the same code: the entry is served


def test_a_package_imported_from_a_zip_builds_a_new_entry_when_its_data_code_changes(tmp_path):
    """Imported from a zip archive, the data layer's folder was no folder: the key hashed no module, the same
    digest for any code, and rows computed the old way were served."""
    src = _package(tmp_path)
    cache = tmp_path / "cache"

    def zipped(name: str) -> Path:
        archive = tmp_path / name
        with zipfile.ZipFile(archive, "w") as z:
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(src).as_posix())
        return archive

    first = _entries(zipped("a.zip"), cache)
    assert len(first) == 1
    features = src / "hftraining" / "data" / "features.py"
    features.write_text(features.read_text() + "\n# a change of the code that computes the rows\n")
    assert len(_entries(zipped("b.zip"), cache)) == 2  # a new entry, not the old rows


def test_a_per_symbol_purged_kfold_fold_gives_each_sides_training_dates_by_the_symbols_own_test_block(tmp_path):
    """In a per-symbol split each symbol's test block has its own dates: a symbol listed later (ARM) trains
    before a block that starts after the other's, and its rows before it were said as rows after the first
    block (the report's second training range began in 2023, before and across the test dates)."""
    import json

    from conftest import tiny  # noqa: E402
    from hftraining.core.config import load_config
    from hftraining.workflows.walkforward import walk_forward
    from test_eval_report_consistency import tables  # noqa: E402

    out = tmp_path / "run"
    walk_forward(load_config(None, tiny(out, "model.type=zero", "data.symbols=[AEM, ARM]", "data.split=per_symbol",
                                        "evaluation.baseline_max_windows=200")), 3, scheme="purged_kfold")
    run = out / "walkforward" / "fold-2"
    per = json.loads((run / "data_report.json").read_text())["split"]["symbols"]
    before = [s["train"] for s in per.values() if s["train"] and s["train"][1] < s["test"][0]]
    after = [s["train_after_test"] for s in per.values() if s["train_after_test"]]  # val: none in a purged fold
    assert len(before) == 2 and len(after) == 2  # both symbols train on both sides of their own blocks
    assert per["AEM"]["test"][0] < per["ARM"]["train"][1]  # ARM's rows before its block run past AEM's

    def day(iso: str) -> str:
        return iso[:10]

    said = [r[1] for header, rows in tables((run / "report.md").read_text(encoding="utf-8")) if header[0] == "item"
            for r in rows if r[0] == "split"]
    assert len(said) == 1, said
    train = said[0].split("train ", 1)[1].split(", test ")[0]
    first, second = (side.split(" → ") for side in train.split(" and "))
    assert first == [day(min(s[0] for s in before)), day(max(s[1] for s in before))], said
    assert second == [day(min(s[0] for s in after)), day(max(s[1] for s in after))], said
