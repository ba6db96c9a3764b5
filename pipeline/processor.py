"""The batch processor: frames of several streams in, one verdict per frame out.

    schedule -> detect -> track and score -> decide

One instance serves `dfwatch watch` and `dfwatch report` (through the runner, which owns the threads
and queues) and the latency benchmark (directly). It keeps each stream's state (frame count,
tracker, verdict) until ``forget``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from engines import Classifier, Detector
from pipeline.messages import Batch, Frame
from pipeline.observer import NullObserver, Observer
from pipeline.schedule import Schedule, ScheduleConfig
from pipeline.stages import DecideStage, DetectStage, TrackStage
from pipeline.tracker import TrackerConfig
from pipeline.verdict import VerdictConfig


class BatchProcessor:
    def __init__(
        self,
        detector: Detector,
        classifier: Classifier,
        observer: Observer | None = None,
        *,
        schedule: ScheduleConfig = ScheduleConfig(),
        tracker: TrackerConfig = TrackerConfig(),
        verdict: VerdictConfig = VerdictConfig(),
    ) -> None:
        """``placeholder_models`` (every verdict carries it) comes from the two artifacts' manifests."""
        self.observer = observer or NullObserver()
        self.detector, self.classifier = detector, classifier
        self.placeholder_models = bool(detector.manifest.placeholder or classifier.manifest.placeholder)
        self.schedule = Schedule(schedule, self.observer)
        self.stages = (
            DetectStage(detector, self.observer),
            TrackStage(classifier, tracker),
            DecideStage(verdict, self.observer, placeholder_models=self.placeholder_models),
        )

    def process(self, frames: Sequence[Frame], *, taken: float | None = None) -> Batch:
        """Verdicts for ``frames`` (taken from their queues at ``taken``, time.time(); default now)."""
        start = time.perf_counter()
        batch = self.schedule.process(list(frames), taken=taken)  # I420 frames convert when a stage needs them
        for stage in self.stages:
            batch = stage.process(batch)
        self.schedule.took(time.perf_counter() - start)
        t, obs = batch.timings, self.observer
        if batch.detect.any():
            obs.stage("detect", t["letterbox"] + t["detect"])
        if batch.faces.due.any():
            obs.stage("classify", t["crop"] + t["classify"])
        for verdict in batch.verdicts:
            obs.stage("queue", verdict.latency["queue"])
        return batch

    def forget(self, stream_id: str) -> None:
        """Drop what the stages keep about a stream that is gone."""
        self.schedule.forget(stream_id)
        for stage in self.stages:
            stage.forget(stream_id)
