"""Video files through the service in process, as `dfwatch watch FILE...` runs them (behind `dfwatch report`,
`dfwatch-train validate` and `dfwatch-train calibrate`).

The same sources, Runner and BatchProcessor as `dfwatch watch`: a file's reader waits for room in its queue, so
no frame is lost, and no live-feed load adaptation applies. Each clip comes back as the verdict messages the run
published, in frame order (``ClipRun``). ``serve_files`` also loads the models as `dfwatch watch` does: the served
detector (pipeline.config.FAST_DETECTOR where it opens, else face_detector.onnx), the classifier, and the verdict
thresholds from the classifier's manifest unless given.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
from tqdm import tqdm

from pipeline.messages import Publication, Verdict, VerdictState
from pipeline.observer import NullObserver
from pipeline.processor import BatchProcessor
from pipeline.runner import Runner, RunnerConfig
from pipeline.schedule import ScheduleConfig
from pipeline.sinks import FrameSink, Sink
from pipeline.sources import SourceSpec
from pipeline.tracker import TrackerConfig
from pipeline.verdict import VerdictConfig

if TYPE_CHECKING:
    from engines import Classifier, Detector
    from pipeline.config import ModelsConfig

logger = logging.getLogger(__name__)

AT_ONCE = 16  # files per Runner in serve_files: enough streams to fill its batches, few decoders open at a time


@dataclass(frozen=True)
class ClipRun:
    """One file through the service: every verdict the run published for it."""

    path: Path
    stream_id: str  # its stream's name in the run (log lines, the ``stream`` of its verdict lines)
    publications: tuple[Publication, ...] = field(repr=False)  # one per decoded frame, in frame order
    error: str | None = None  # why the file broke off (the verdicts cover the frames that decoded); None: read to end

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return tuple(p.verdict for p in self.publications)

    @property
    def scores(self) -> list[float | None]:
        """The stream score of each frame (None: no scored face on screen)."""
        return [p.verdict.score for p in self.publications]

    @property
    def face_scores(self) -> np.ndarray:
        """(n,) float64: the newest raw classifier output of every scored face on every frame (``p_fake_last``)."""
        parts = [p.verdict.faces.p_fake_last for p in self.publications]
        raw = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
        return raw[~np.isnan(raw)]

    @property
    def first_fake(self) -> int | None:
        """The frame index of the first FAKE verdict; None when the verdict never turned FAKE."""
        return next((p.verdict.frame_index for p in self.publications if p.verdict.state is VerdictState.FAKE), None)


class _Collector(Sink):
    """Sink that keeps every publication of the run, per stream, and moves the progress bar."""

    name = "clips"

    def __init__(self, streams: Sequence[str], *, total: int | None, desc: str) -> None:
        self.kept: dict[str, list[Publication]] = {s: [] for s in streams}
        self.bar = tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, leave=False, disable=None)

    def publish(self, publications: Sequence[Publication]) -> None:
        for p in publications:
            self.kept[p.verdict.stream_id].append(p)
        self.bar.update(len(publications))

    def close(self) -> None:
        self.bar.close()


def run_clips(
    paths: Sequence[Path],
    detector: Detector,
    classifier: Classifier,
    *,
    verdict: VerdictConfig = VerdictConfig(),
    schedule: ScheduleConfig = ScheduleConfig(),
    tracker: TrackerConfig = TrackerConfig(),
    runner: RunnerConfig = RunnerConfig(),
    sinks: Sequence[Sink] = (),
    frame_sinks: Sequence[FrameSink] = (),
    desc: str = "clips",
) -> list[ClipRun]:
    """Every file of ``paths`` through one Runner and a fresh BatchProcessor at once (`dfwatch watch FILE...`); one
    ClipRun per path, in order. ``verdict`` is used as given (``serve_files`` resolves it from the manifest);
    ``sinks`` and ``frame_sinks`` also get every verdict (with its frame), and are closed at the end of the run.

    Each clip's stream is named after its file (``name-2`` for the second of a name); more paths than
    ``[sources] max_streams`` are refused (StreamLimitError): ``serve_files`` runs them in groups.
    """
    specs = [SourceSpec(sid, str(path)) for sid, path in zip(_stream_ids(paths), paths)]  # a path, even with '='
    total = [_declared_frames(p) for p in paths]
    collector = _Collector([s.stream_id for s in specs], total=None if None in total else sum(total), desc=desc)
    observer = NullObserver()
    processor = BatchProcessor(detector, classifier, observer, schedule=schedule, verdict=verdict, tracker=tracker)
    run = Runner(specs, processor, [collector, *sinks], observer, config=runner, frame_sinks=frame_sinks)
    stats = run.run()
    return [
        ClipRun(Path(path), s.stream_id, tuple(collector.kept[s.stream_id]), stats.streams[s.stream_id].error)
        for path, s in zip(paths, specs)
    ]


def serve_files(
    paths: Sequence[Path],
    models: ModelsConfig,
    *,
    verdict: VerdictConfig = VerdictConfig(),
    schedule: ScheduleConfig = ScheduleConfig(),
    runner: RunnerConfig = RunnerConfig(),
    at_once: int = AT_ONCE,
) -> list[ClipRun]:
    """``run_clips`` with the models of ``models`` loaded once as `dfwatch watch` loads them (served detector,
    verdict thresholds unset in ``verdict`` from the classifier's manifest), ``at_once`` files per Runner. What a
    clip gets does not depend on the files beside it: each group has its own BatchProcessor, and files are never
    shed or thinned for load."""
    from pipeline.cli import load_models, resolve_verdict  # watch's own loaders

    detector, classifier = load_models(models)
    resolved = resolve_verdict(verdict, classifier)
    out: list[ClipRun] = []
    for start in range(0, len(paths), at_once):
        group = paths[start : start + at_once]
        desc = f"clips {start + 1}-{start + len(group)} of {len(paths)}"
        out += run_clips(group, detector, classifier, verdict=resolved, schedule=schedule, runner=runner, desc=desc)
    return out


def _stream_ids(paths: Sequence[Path]) -> list[str]:
    """A stream name per path from its file name (``name``, ``name-2``, ...): unique within the run."""
    ids: list[str] = []
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem)[:100] or "clip"
        sid, n = stem, 1
        while sid in ids:
            n += 1
            sid = f"{stem}-{n}"
        ids.append(sid)
    return ids


def _declared_frames(clip: Path) -> int | None:
    """The frame count the container declares, for the progress bar; None when it does not say."""
    try:
        with av.open(str(clip)) as container:
            return container.streams.video[0].frames or None
    except (av.error.FFmpegError, IndexError, OSError):
        return None
