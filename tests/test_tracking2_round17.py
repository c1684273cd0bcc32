"""A resumed run's TensorBoard values are the ones shown, also when it resumes in the second its earlier
start opened its event file, in the same process (TensorBoard orders a run's files by name: second
opened, then an unpadded counter of the writers the process opened, so ``….10`` sorted before ``….9``)."""

import time

import pytest

from hftraining.train.tracking import TensorBoardTracker


def _shown(folder) -> dict[int, float]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("train/loss")}


def test_a_resume_in_the_second_of_the_earlier_file_is_the_one_shown(tmp_path, monkeypatch):
    import tensorboard.summary.writer.event_file_writer as efw

    uids = iter([9, 10])  # the 9th and the 10th writer this process opens
    monkeypatch.setattr(efw._global_uid, "get", lambda: next(uids))
    while time.time() % 1.0 > 0.2:  # both starts within one second
        time.sleep(0.02)
    first = TensorBoardTracker()
    first.on_start(tmp_path, None, None)
    for step in (2, 4, 6):
        first.on_log(step, {"loss": 1.0})
    first.writer.close()
    resumed = TensorBoardTracker()  # killed after step 6, resumed from its checkpoint of step 4
    resumed.on_start(tmp_path, None, 4)
    resumed.on_log(6, {"loss": 2.0})
    resumed.writer.close()
    files = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert [f.rsplit(".", 1)[1] for f in files] == ["9", "10"], files  # the resumed file sorts after
    assert _shown(tmp_path / "tensorboard") == pytest.approx({2: 1.0, 4: 1.0, 6: 2.0})
