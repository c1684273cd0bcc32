"""Model folders and the files written whole: ``ForecastModel.from_pretrained(d, map_location=...)`` returns
the model on that device (a device this machine lacks is one line naming ``map_location``, not a file
called unreadable); a file or folder written whole reaches the disk before its name does (fsync of the
file, then of the folder after the rename), and a cut-short model folder is refused naming the file."""

import os
from pathlib import Path

import pytest
import torch

from hftraining.core import files
from hftraining.core.config import ModelConfig
from hftraining.core.errors import ConfigError, DataError
from hftraining.core.jsonio import write_json
from hftraining.models.base import ForecastModel
from hftraining.models.registry import build_model

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), 6, 3, 12)
    return model.save_pretrained(tmp_path_factory.mktemp("m") / "model")


def _x() -> torch.Tensor:
    return torch.randn(4, 12, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("where", ["cpu", "cpu:0", torch.device("cpu")])
def test_from_pretrained_accepts_every_spelling_of_the_cpu(folder, where):
    """A torch.device or ``cpu:0`` (a name torch accepts) loads the folder; they were refused as if the
    weights file were unreadable."""
    model = ForecastModel.from_pretrained(folder, map_location=where)
    ref = ForecastModel.from_pretrained(folder).eval()
    assert {p.device.type for p in [*model.parameters(), *model.buffers()]} == {"cpu"}
    with torch.no_grad():
        assert torch.equal(model.eval()(_x()).prediction, ref(_x()).prediction)


@pytest.mark.parametrize("where, says", [
    ("bogus", "not a device"),
    ("meta", "not available"),
    pytest.param("cuda", "CUDA is not available", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
])
def test_a_device_the_machine_lacks_is_one_line_naming_map_location(folder, where, says):
    """Before: a DataError calling the folder's model.safetensors unreadable (the file was fine)."""
    with pytest.raises(ConfigError) as e:
        ForecastModel.from_pretrained(folder, map_location=where)
    msg = str(e.value)
    assert msg.startswith(f"map_location={where!r}") and says in msg and "\n" not in msg
    assert "safetensors" not in msg


@cuda_only
@pytest.mark.parametrize("where", ["cuda", "cuda:0", torch.device("cuda", 0)])
def test_from_pretrained_on_cuda_returns_the_model_on_the_gpu(folder, where):
    """Before: the weights were read onto the GPU, then copied into a model built on the CPU, which was returned."""
    model = ForecastModel.from_pretrained(folder, map_location=where).eval()
    assert {p.device.type for p in [*model.parameters(), *model.buffers()]} == {"cuda"}
    ref = ForecastModel.from_pretrained(folder).eval()
    with torch.no_grad():
        got = model(_x().cuda()).prediction.cpu()
        torch.testing.assert_close(got, ref(_x()).prediction, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ written whole, on the disk


def _path_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def disk_log(monkeypatch):
    """What reaches the disk, in order: ("fsync", path, bytes of the file then) and ("rename", src, dst)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name a file descriptor")
    log: list[tuple] = []
    fsync, replace, rename = os.fsync, os.replace, os.rename

    def spy_fsync(fd):
        p = _path_of(fd)
        log.append(("fsync", p, Path(p).read_bytes() if Path(p).is_file() else None))
        return fsync(fd)

    def spy_replace(src, dst, *a, **k):
        log.append(("rename", os.path.realpath(src), os.path.realpath(os.path.dirname(dst))))
        return replace(src, dst, *a, **k)

    def spy_rename(src, dst, *a, **k):
        log.append(("rename", os.path.realpath(src), os.path.realpath(os.path.dirname(dst))))
        return rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(os, "rename", spy_rename)
    return log


def test_a_file_written_whole_reaches_the_disk_before_its_name_does(tmp_path, disk_log):
    """A power loss after the rename could leave the new name over bytes never written (an empty or cut
    config.json, a CSV of fewer rows): the sibling's full content is fsync'ed before the rename, and the
    folder after it."""
    path = tmp_path / "eval.json"
    write_json(path, {"a": 1})
    disk_log.clear()
    text = b'{"a": 2}\n'
    write_json(path, {"a": 2})
    after_first = list(disk_log)
    renames = [i for i, e in enumerate(after_first) if e[0] == "rename"]
    assert len(renames) == 1
    r = renames[0]
    tmp = after_first[r][1]
    assert ("fsync", tmp, text) in after_first[:r], "the new bytes were not flushed before the rename"
    assert any(e[0] == "fsync" and e[1] == str(tmp_path.resolve()) for e in after_first[r + 1:]), \
        "the folder holding the new name was not flushed after the rename"
    assert path.read_bytes() == text


def test_a_model_folder_s_names_reach_the_disk_after_its_files(tmp_path, disk_log):
    """The temporary folder's entries are flushed before it is renamed into place, its parent after."""
    model = build_model(ModelConfig(type="dlinear", moving_avg=5), 4, 2, 8)
    out = model.save_pretrained(tmp_path / "final")
    renames = [i for i, e in enumerate(disk_log) if e[0] == "rename" and e[2] == str(tmp_path.resolve())]
    r = renames[-1]
    tmp = disk_log[r][1]
    flushed = {e[1] for e in disk_log[:r] if e[0] == "fsync"}
    assert {str(Path(tmp) / n) for n in ("config.json", "model.safetensors")} <= flushed
    assert tmp in flushed, "the temporary folder's entries were not flushed before the rename"
    assert any(e[0] == "fsync" and e[1] == str(tmp_path.resolve()) for e in disk_log[r + 1:])
    ForecastModel.from_pretrained(out)


def test_a_folder_that_cannot_be_fsynced_is_still_written(tmp_path, monkeypatch):
    """A file system that cannot flush a folder (EINVAL) keeps the file written, whole; an I/O error is a line."""
    import errno

    fsync = os.fsync

    def no_dir_fsync(fd):
        if Path(_path_of(fd)).is_dir():
            raise OSError(errno.EINVAL, "Invalid argument")
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", no_dir_fsync)
    write_json(tmp_path / "x.json", [1])
    assert (tmp_path / "x.json").read_text() == "[1]\n"

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    from hftraining.core.errors import WriteError
    with pytest.raises(WriteError) as e:
        files.replace_file(tmp_path / "y.csv", lambda tmp: tmp.write_text("a\n1\n"))
    assert str(e.value).startswith(f"{tmp_path / 'y.csv'}: cannot write") and "\n" not in str(e.value)
    assert not (tmp_path / "y.csv").exists() and not list(tmp_path.glob(".y.csv.tmp-*"))


@pytest.mark.parametrize("name, keep", [("model.safetensors", 0.5), ("model.safetensors", 0.0),
                                        ("config.json", 0.5), ("config.json", 0.0)])
def test_a_cut_short_model_folder_file_is_refused_naming_it(folder, tmp_path, name, keep):
    import shutil

    d = tmp_path / "cut"
    shutil.copytree(folder, d)
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError) as e:
        ForecastModel.from_pretrained(d)
    assert str(d / name) in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ checkpoints written before checksums


def _legacy_checkpoint(tmp_path: Path):
    """A checkpoint as written before checkpoints carried checksums (loaded unverified), its model and optimizer."""
    import json

    from hftraining.train import checkpoint as ck

    torch.manual_seed(0)
    model = build_model(ModelConfig(type="dlinear", moving_avg=5), 4, 2, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 8, 4)).prediction.sum().backward()
    opt.step()
    path = ck.save_checkpoint(tmp_path / "checkpoints", 1, model, opt, {"global_step": 1}, {"model": {}})
    state = json.loads((path / ck.STATE_FILE).read_text())
    del state["checksums"]
    (path / ck.STATE_FILE).write_text(json.dumps(state))
    return ck, path, model, opt


@pytest.mark.parametrize("name", ["optimizer.json", "trainer_state.json"])
def test_a_cut_short_json_file_of_an_unverified_checkpoint_is_one_line_naming_it(tmp_path, name):
    """Before: json's JSONDecodeError as a traceback, naming no file."""
    ck, path, model, opt = _legacy_checkpoint(tmp_path)
    f = path / name
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_checkpoint(path, model, opt)
    assert str(e.value).startswith(f"{f}: cannot be read") and "\n" not in str(e.value)


def test_weights_of_another_model_in_an_unverified_checkpoint_are_one_line_naming_the_file(tmp_path):
    """Before: torch's RuntimeError listing every missing and unexpected key over several lines."""
    from safetensors.torch import save_file

    ck, path, model, opt = _legacy_checkpoint(tmp_path)
    other = build_model(ModelConfig(hidden_size=16, num_heads=2, num_layers=1), 4, 2, 8)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path / "model.safetensors"))
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_checkpoint(path, model, opt)
    msg = str(e.value)
    assert msg.startswith(f"{path / 'model.safetensors'}: holds the weights of another model") and "\n" not in msg


# ------------------------------------------------------------------ resume exactness beyond tests/test_resume_round9.py

RESUME_CASES = {
    # PatchTST with dropout on patches (round9's cases train the transformer only)
    "patchtst-dropout": (["model.type=patchtst", "model.patch_len=4", "model.patch_stride=4", "training.max_steps=6"], 3),
    # DLinear under SGD with momentum
    "dlinear-sgd": (["model.type=dlinear", "model.moving_avg=5", "training.optimizer=sgd", "training.max_steps=6"], 3),
    # step 6's 3 micro-batches span the end of epoch 0 (16 batches of 128 of the 2,092 training windows) before the
    # checkpoint at 6: the resumed run continues epoch 1's order and its augmentation noise
    "accumulation-across-an-epoch": (["data.batch_size=128", "training.gradient_accumulation_steps=3",
                                      "data.augment_noise_std=0.1", "training.max_steps=9"], 6),
}


@pytest.mark.parametrize("name", list(RESUME_CASES))
def test_a_resumed_run_ends_with_the_uninterrupted_run_s_weights(name, tmp_path):
    import json

    from safetensors.torch import load_file

    from hftraining.core.config import load_config
    from hftraining.train import trainer as trainer_mod
    from hftraining.workflows.train_run import train
    from conftest import tiny

    class Killed(BaseException):
        pass

    common = ("model.dropout=0.1", "training.save_steps=3", "evaluation.eval_steps=3", "training.logging_steps=3",
              "training.save_total_limit=100", "training.warmup_steps=2", "output.report_to=[jsonl]",
              "evaluation.report=false")
    extra, stop = RESUME_CASES[name]

    def run(out, *more, kill_after=None):
        save = trainer_mod.Trainer.save_checkpoint

        def save_then_die(self):
            save(self)
            if self.state.global_step == kill_after:
                raise Killed

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(trainer_mod.Trainer, "save_checkpoint", save_then_die)
            try:
                train(load_config(None, tiny(out, *common, *extra, *more)))
            except Killed:
                return
        assert kill_after is None

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run(full)
    run(resumed, kill_after=stop)
    at_stop = json.loads((resumed / "checkpoints" / f"step-{stop:08d}" / "trainer_state.json").read_text())
    if name == "accumulation-across-an-epoch":
        assert at_stop["sampler"]["epoch"] == 1, at_stop["sampler"]  # the case is what it says
    run(resumed, "training.resume_from_checkpoint=auto")
    last = max(full.glob("checkpoints/step-*")).relative_to(full)
    for f in ("final/model.safetensors", f"{last}/optimizer.safetensors", f"{last}/rng.safetensors"):
        a, b = load_file(str(full / f)), load_file(str(resumed / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
