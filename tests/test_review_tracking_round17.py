"""TensorBoard of a run stopped while its test split was being scored and resumed (it trains nothing and
scores the test split again at its checkpoint's step): reading the earlier event files back never
stops the run, and TensorBoard's loader says nothing to the user of the restarts it applies there.
Read back as a user reads it: TensorBoard's own loader."""

import logging
import struct
from pathlib import Path

from hftraining.core.config import Config
from hftraining.train.tracking import TensorBoardTracker


def _stopped_while_scored(run: Path) -> None:
    """A session that trained steps 4 and 8, logged its test numbers at step 8 and stopped before its
    verdict (its model card not written)."""
    first = TensorBoardTracker()
    first.on_start(run, Config(), None)
    for step in (4, 8):
        first.on_log(step, {"loss": 1.0 / step})
        first.on_log(step, {"eval_mse": 0.5 / step})
    first.on_eval(8, {"mse": 0.25})
    first.on_end(None, [], failed=True)


def _scored_again(run: Path, mse: float, verdict: str | None) -> None:
    resumed = TensorBoardTracker()
    resumed.on_start(run, Config(), 8)  # the last checkpoint, step 8: nothing is trained again
    resumed.on_eval(8, {"mse": mse})
    resumed.on_end(verdict, [], failed=verdict is None)


def _events(path: Path) -> list:
    """The events of one file as written (TensorBoard's raw loader: scalars as ``simple_value``)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    return list(LegacyEventFileLoader(str(path)).Load())


def _not_an_event(path: Path) -> None:
    """A record TensorBoard's record reader accepts (its length and checksums right) whose bytes are
    not an event: what a file of another kind named like an event file holds."""
    from tensorboard.summary.writer.record_writer import masked_crc32c

    data = b"\xff\xff\xff\xff\x0f not an event"
    header = struct.pack("Q", len(data))
    path.write_bytes(header + struct.pack("I", masked_crc32c(header)) + data + struct.pack("I", masked_crc32c(data)))


def test_event_files_that_cannot_be_read_back_are_a_warning_and_the_run_goes_on(tmp_path, caplog):
    """An event file in <run>/tensorboard/ that TensorBoard's loader cannot parse stopped the resumed run
    with the protobuf library's traceback (DecodeError) while it scored the test split, after training,
    its model card never written. Now a warning names the folder, the test numbers and the verdict are
    written, and no restart hides the step's train/* values it could not read back to write again."""
    run = tmp_path / "run"
    run.mkdir()
    _stopped_while_scored(run)
    _not_an_event(run / "tensorboard" / "events.out.tfevents.1000000000.elsewhere.1.0")

    with caplog.at_level(logging.WARNING, logger="hftraining"):
        _scored_again(run, 0.3, "the verdict")

    said = [r.getMessage() for r in caplog.records if r.name == "hftraining" and r.levelno == logging.WARNING]
    assert len(said) == 1 and str(run / "tensorboard") in said[0] and "step 8" in said[0], said
    newest = max((run / "tensorboard").glob("events.out.tfevents.*.*.*.*"), key=lambda p: p.stat().st_mtime_ns)
    events = _events(newest)
    tests = [(e.step, v.simple_value) for e in events for v in e.summary.value if v.tag == "test/mse"]
    assert [(s, round(x, 6)) for s, x in tests] == [(8, 0.3)]
    assert [e.step for e in events for v in e.summary.value if v.tag.startswith("verdict")] == [8]
    starts = [e.step for e in events if e.HasField("session_log")]
    assert 8 not in starts, starts  # a restart at 8 would hide train/loss and eval/mse at step 8


def test_scoring_again_prints_no_tensorflow_restart_lines_and_shows_each_value_once(tmp_path, caplog):
    """Each resume of a run stopped while scored printed TensorBoard's loader's "Detected out of order
    event.step likely caused by a TensorFlow restart ... Removing N scalars" to the console: a run
    with no TensorFlow, whose values were all kept. A run stopped twice so, resumed twice, prints none
    and shows every value once, at its step."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    run = tmp_path / "run"
    run.mkdir()
    _stopped_while_scored(run)
    _scored_again(run, 0.3, None)  # stopped again while scored
    with caplog.at_level(logging.WARNING):
        _scored_again(run, 0.35, "the verdict")

    said = [r.getMessage() for r in caplog.records if r.name.startswith("tensorboard")]
    assert not said, said
    acc = ea.EventAccumulator(str(run / "tensorboard"), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    board = {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()[ea.SCALARS]}
    assert board == {"train/loss": [(4, 0.25), (8, 0.125)], "eval/mse": [(4, 0.125), (8, 0.0625)],
                     "test/mse": [(8, 0.35)]}
    assert [e.step for e in acc.Tensors("verdict/text_summary")] == [8]
