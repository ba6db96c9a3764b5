"""Files' decoded frames bounded in bytes for the process, nothing lost: 50 files held 2.1 GB in their queues."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from engines import Classifier, Detector
from pipeline.observer import NullObserver
from pipeline.processor import BatchProcessor
from pipeline.queues import BoundedQueue, ByteBudget, DropPolicy
from pipeline.runner import Runner, RunnerConfig
from pipeline.sinks import JsonLinesSink
from pipeline.sources import SourceSpec


def test_queues_that_share_a_byte_budget_wait_for_it_and_each_may_always_hold_one_item():
    budget = ByteBudget(3000)
    a, b = (BoundedQueue(16, DropPolicy.WAIT, budget=budget, weigh=len) for _ in range(2))
    for _ in range(3):
        a.put(b"x" * 1000)  # the budget is spent now
    b.put(b"y" * 1000)  # an empty queue takes one item whatever the budget: no stream starves
    assert budget.used == 4000
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (b.put(b"y" * 1000), done.set()))
    waiter.start()
    assert not done.wait(0.5)  # b holds one item and the budget is spent: its producer waits
    assert len(a.get_all()) == 3  # a's consumer frees 3000 bytes
    assert done.wait(2) and len(b) == 2 and budget.used == 2000
    assert b.get() == b"y" * 1000 and budget.used == 1000
    assert b.clear() == 1 and budget.used == 0
    waiter.join()


def test_a_budget_needs_to_know_what_an_item_weighs():
    with pytest.raises(ValueError, match="needs weigh"):
        BoundedQueue(4, DropPolicy.WAIT, budget=ByteBudget(10))


def test_files_under_a_tiny_byte_budget_still_deliver_every_frame(fast_models: Path, demo_clip):
    """Four files share 1 MB of queued frames (about two of the demo clip's): their readers wait, none is lost."""
    out = io.StringIO()
    processor = BatchProcessor(
        Detector(fast_models / "face_detector.onnx", conf=0.001, max_det=1),
        Classifier(fast_models / "deepfake_classifier.onnx"),
    )
    specs = [SourceSpec(f"f{i}", str(demo_clip.path)) for i in range(4)]
    runner = Runner(specs, processor, [JsonLinesSink(out)], NullObserver(), config=RunnerConfig(file_queue_mb=1))
    stats = runner.run()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert stats.failed == []
    for i in range(4):
        frames = [r["frame"] for r in records if r["stream"] == f"f{i}"]
        assert frames == list(range(demo_clip.n_frames))  # every frame, in order
    assert runner._file_bytes.used == 0  # every byte given back once the queues drained
