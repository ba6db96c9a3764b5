"""Latency bounded under overload: late live frames are shed before inference, fairly, counted; files never are.

The runner's take is driven by hand here (queues filled with frames of known capture times), so what
is shed does not depend on how fast this machine is; an overloaded run end to end is in test_watch.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engines import Classifier, Detector
from pipeline.messages import Frame
from pipeline.observer import RecordingObserver
from pipeline.processor import BatchProcessor
from pipeline.runner import Runner, RunnerConfig
from pipeline.schedule import PUBLISH_MARGIN, SAFETY, Schedule, ScheduleConfig
from pipeline.sources import SourceSpec


def _frame(stream: str, index: int, age: float) -> Frame:
    return Frame(stream, index, index / 25, time.time() - age, np.zeros((48, 64, 3), np.uint8))


def _runner(models: Path, *, max_batch: int = 8) -> Runner:
    observer = RecordingObserver()
    processor = BatchProcessor(
        Detector(models / "face_detector.onnx"),
        Classifier(models / "deepfake_classifier.onnx"),
        observer,
        schedule=ScheduleConfig(latency_budget=1.0),
    )
    specs = [SourceSpec(name, f"rtsp://127.0.0.1:9/{name}") for name in ("a", "b", "c")]
    specs.append(SourceSpec("file", "clip.mp4"))  # a file: its reader waits, its frames are never late
    return Runner(specs, processor, [], observer, config=RunnerConfig(max_batch=max_batch, max_wait_ms=0))


@pytest.fixture()
def runner(fast_models: Path) -> Runner:
    return _runner(fast_models)


def _fill(runner: Runner, stream: str, ages: list[float]) -> None:
    for i, age in enumerate(ages):
        runner.streams[stream].queue.put(_frame(stream, i, age))


def test_late_live_frames_are_shed_before_inference_and_counted(runner: Runner):
    _fill(runner, "a", [3.0, 2.0, 1.5, 0.2, 0.1])  # three too late with newer ones waiting
    _fill(runner, "b", [4.0])  # too late, but the newest of its stream: kept, so every feed gets verdicts
    _fill(runner, "c", [0.3, 0.2])
    _fill(runner, "file", [9.0, 8.0])
    batch = runner._next_batch()
    taken = [(f.stream_id, f.index) for f in batch]
    assert taken == [("a", 3), ("b", 0), ("c", 0), ("file", 0), ("a", 4), ("c", 1), ("file", 1)]  # round-robin
    assert runner.stats.streams["a"].shed == 3 and runner.observer.counts["shed", "a"] == 3
    assert runner.stats.streams["a"].dropped == 3  # a shed frame is a dropped frame too
    for stream in ("b", "c", "file"):
        assert runner.stats.streams[stream].shed == 0 and runner.observer.counts["shed", stream] == 0
    row = next(
        line.split() for line in runner.stats.format(placeholder_models=True).splitlines() if line.startswith("a ")
    )
    assert (row[3], row[4]) == ("3", "3")  # drops, shed


def test_every_stream_gets_its_share_of_the_batches(fast_models: Path):
    runner = _runner(fast_models, max_batch=2)  # more live streams than batch slots
    for stream in ("a", "b", "c"):
        _fill(runner, stream, [1.4, 1.2, 0.9, 0.5, 0.3, 0.05])  # at 1 s budget: the first two are late
    batches = [[f.stream_id for f in runner._next_batch()] for _ in range(3)]
    assert batches == [["a", "b"], ["b", "c"], ["c", "a"]]  # each batch starts with the next stream
    assert [runner.stats.streams[s].shed for s in ("a", "b", "c")] == [2, 2, 2]


def test_the_shed_threshold_follows_how_long_batches_take():
    schedule = Schedule(ScheduleConfig(latency_budget=1.0), RecordingObserver())
    now = 1000.0
    frame = Frame("cam", 0, 0.0, now - 0.6, np.zeros((4, 4, 3), np.uint8))
    assert schedule.expected_seconds == pytest.approx(PUBLISH_MARGIN) and not schedule.late(frame, now=now)
    schedule.took(5.0)  # the first batch warms the runtimes up: not counted
    assert not schedule.late(frame, now=now)
    schedule.took(0.2)
    assert not schedule.late(frame, now=now)  # 0.6 + 1.5 * 0.2 + margin < 1
    schedule.took(0.35)  # the slowest recent batch counts, with a safety factor
    schedule.took(0.1)
    assert schedule.expected_seconds == pytest.approx(SAFETY * 0.35 + PUBLISH_MARGIN) and schedule.late(frame, now=now)


def test_a_box_far_behind_doubles_k_then_m():
    schedule = Schedule(ScheduleConfig(max_detect_every=8, max_classify_every=4), RecordingObserver())
    steps = []
    for _ in range(5):
        schedule.adapt(fill=1.0, lost=90, taken=10, busy=1.0)  # nine frames in ten lost
        steps.append((schedule.detect_every, schedule.classify_every))
    assert steps == [(2, 1), (4, 1), (8, 1), (8, 2), (8, 4)]
    schedule.adapt(fill=0.0, lost=0, taken=25, busy=0.2)
    assert (schedule.detect_every, schedule.classify_every) == (8, 3)  # relief: one step at a time


def test_lost_frames_thin_detection_and_relief_waits_for_idle_stages():
    schedule = Schedule(ScheduleConfig(max_detect_every=3), RecordingObserver())
    schedule.adapt(fill=0.0, lost=5, busy=1.0)  # queues empty, but frames were shed: load
    assert schedule.detect_every == 2
    schedule.adapt(fill=0.0, lost=0, busy=0.9)  # nothing lost, but the stages are still busy: hold
    assert schedule.detect_every == 2
    schedule.adapt(fill=0.0, lost=0, busy=0.3)
    assert schedule.detect_every == 1 and schedule.observer.gauges["intervals", ""] == (1, 1)


def test_streams_are_detected_in_turn_so_batches_cost_alike():
    schedule = Schedule(ScheduleConfig(detect_every=4), RecordingObserver())
    frames = [_frame(f"cam{i}", 0, 0.0) for i in range(4)]
    first = schedule.process(frames).detect
    assert first.all()  # a new stream is detected at once
    later = [schedule.process(frames).detect.tolist() for _ in range(4)]
    assert [sum(d) for d in later] == [1, 1, 1, 1]  # one stream of four a batch, not all four every 4th
    assert [list(col) for col in zip(*later)] == [
        [False, False, False, True],
        [False, False, True, False],
        [False, True, False, False],
        [True, False, False, False],
    ]
