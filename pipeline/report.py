"""`dfwatch report CLIP`: run one clip through the pipeline and chart what it said about the clip's faces.

The same Runner and BatchProcessor as `dfwatch watch` (pipeline.clips); the chart is drawn only from the verdict
messages the run published (and, for the thumbnails, the frames they came with):

- the smoothed fake probability of each face track over time, with the verdict's enter and leave
  thresholds;
- the verdict timeline (UNKNOWN / REAL / FAKE / NO_FACE as coloured bands) under the stream score;
- thumbnails of the highest-scoring faces (at most one per track and second), cropped the way the
  classifier saw them.

Written as PNG (matplotlib, Agg canvas, no GUI) or HTML (the same PNG inline, plus the verdict
changes); the plotted series go to a JSON file beside it (``report.png`` -> ``report.json``), so
what the chart shows can be checked against the verdict messages. A clip in which no face was
found gets no chart: the summary says so.

The report, its series and ``--verdicts`` are written without following a symbolic link (a link
planted at one of those names is refused, never written through), and the clip's name is printed
with its control characters escaped, as everywhere else.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines import Classifier, Detector, crop_faces
from engines.urls import printable
from pipeline.annotate import VERDICT_COLOURS, check_writable, open_no_follow, score_colour
from pipeline.clips import run_clips
from pipeline.errors import PipelineError
from pipeline.messages import Frame, Verdict, VerdictState
from pipeline.runner import RunnerConfig
from pipeline.schedule import ScheduleConfig
from pipeline.sinks import FrameSink, JsonLinesSink
from pipeline.tracker import TrackerConfig
from pipeline.verdict import VerdictConfig

logger = logging.getLogger(__name__)

REPORT_SUFFIXES = (".png", ".html")
THUMBNAILS = 6  # highest-scoring faces shown
THUMB_SIZE = 112  # pixels per thumbnail side
MAX_LEGEND_TRACKS = 12  # more tracks than this are drawn without a legend entry each


@dataclass(frozen=True)
class Thumb:
    track: int
    frame: int
    t: float  # seconds into the clip (pts), or the frame index when the clip has no timestamps
    p_fake: float
    image: np.ndarray = field(repr=False)  # (THUMB_SIZE, THUMB_SIZE, 3) uint8 RGB


@dataclass(frozen=True)
class Report:
    clip: Path
    out: Path | None  # the chart, None when nothing was drawn (no face)
    data: Path | None  # the plotted series as JSON
    frames: int  # verdicts published (frames that went through the pipeline)
    faces: int  # face boxes over all frames
    verdict: str  # FAKE when the clip was FAKE at any frame, else its last verdict
    changes: list[dict[str, Any]]  # {"frame", "t", "verdict"} per verdict change
    summary: str  # the one line printed at the end
    error: str | None = None  # the clip broke off (the report covers the frames that decoded)


class _TopFaces(FrameSink):
    """FrameSink that keeps crops of the ``k`` highest-scoring faces, at most one per track and second."""

    name = "report-thumbnails"

    def __init__(self, *, k: int, margin: float) -> None:
        self.k, self.margin = k, margin
        self.best: dict[tuple[int, int], Thumb] = {}  # (track, second) -> its best face so far

    def publish_frames(self, pairs: Sequence[tuple[Frame, Verdict]]) -> None:
        for frame, verdict in pairs:
            faces = verdict.faces  # a one-frame batch: frame_index 0 is ``frame``
            for row, (track, p_fake) in enumerate(zip(faces.track_id.tolist(), faces.p_fake.tolist())):
                if p_fake != p_fake:  # NaN: not scored yet
                    continue
                t = frame.pts if frame.pts is not None else float(frame.index)
                key = (track, math.floor(t))
                held = self.best.get(key)
                if held is not None and held.p_fake >= p_fake:
                    continue
                if held is None and len(self.best) >= self.k and self._lowest().p_fake >= p_fake:
                    continue
                crop = crop_faces([frame.rgb().image], faces[[row]], size=THUMB_SIZE, margin=self.margin)[0]
                self.best[key] = Thumb(track, frame.index, t, p_fake, crop)
                if len(self.best) > self.k:
                    lowest = self._lowest()
                    del self.best[(lowest.track, math.floor(lowest.t))]

    def _lowest(self) -> Thumb:
        return min(self.best.values(), key=lambda th: th.p_fake)

    def close(self) -> None:
        pass

    @property
    def thumbs(self) -> list[Thumb]:
        return sorted(self.best.values(), key=lambda th: -th.p_fake)


def timeline(records: Sequence[dict], *, verdict: VerdictConfig) -> dict[str, Any]:
    """The series the report plots, from the verdict records of one stream in frame order.

    ``t`` is the pts in seconds when every record has one, else the frame index (``x`` says which).
    Segments are runs of equal verdict, each from its first to its last frame.
    """
    use_pts = bool(records) and all(r["pts"] is not None for r in records)
    at = (lambda r: r["pts"]) if use_pts else (lambda r: float(r["frame"]))
    tracks: dict[int, dict[str, list]] = {}
    for r in records:
        for f in r["faces"]:
            if f["p_fake"] is None:
                continue
            series = tracks.setdefault(f["track"], {"frame": [], "t": [], "p_fake": []})
            series["frame"].append(r["frame"])
            series["t"].append(at(r))
            series["p_fake"].append(f["p_fake"])
    segments: list[dict[str, Any]] = []
    for r in records:
        if segments and segments[-1]["verdict"] == r["verdict"]:
            segments[-1].update(end_frame=r["frame"], end_t=at(r))
        else:
            segments.append(
                {
                    "verdict": r["verdict"],
                    "start_frame": r["frame"],
                    "end_frame": r["frame"],
                    "start_t": at(r),
                    "end_t": at(r),
                }
            )
    return {
        "x": "pts" if use_pts else "frame",
        "frames": len(records),
        "faces": sum(len(r["faces"]) for r in records),
        "thresholds": {"enter_fake": verdict.enter_fake, "leave_fake": verdict.leave_fake},
        "tracks": {str(k): v for k, v in sorted(tracks.items())},
        "score": {
            "frame": [r["frame"] for r in records],
            "t": [at(r) for r in records],
            "score": [r["score"] for r in records],
        },
        "segments": segments,
        "changes": [{"frame": r["frame"], "t": at(r), "verdict": r["verdict"]} for r in records if r["changed"]],
        "verdict": clip_verdict(records),
    }


def clip_verdict(records: Sequence[dict]) -> str:
    """FAKE when any frame's verdict was FAKE, else the last verdict (UNKNOWN for no records)."""
    if any(r["verdict"] == VerdictState.FAKE.value for r in records):
        return VerdictState.FAKE.value
    return records[-1]["verdict"] if records else VerdictState.UNKNOWN.value


def make_report(
    clip: Path,
    detector: Detector,
    classifier: Classifier,
    *,
    out: Path,
    verdicts_out: Path | None = None,
    verdict: VerdictConfig = VerdictConfig(),
    schedule: ScheduleConfig = ScheduleConfig(),
    tracker: TrackerConfig = TrackerConfig(),
    runner: RunnerConfig = RunnerConfig(),
) -> Report:
    """Run ``clip`` through the pipeline and write the chart to ``out`` (.png or .html) and its series as JSON.

    Raises PipelineError when the clip yields no frame at all; a clip without a face gets no chart.
    """
    suffix = out.suffix.lower()
    if suffix not in REPORT_SUFFIXES:
        raise PipelineError(
            f"report {printable(str(out))}: write it as {' or '.join(REPORT_SUFFIXES)}, got {suffix or 'no suffix'!r}"
        )
    check_writable(out.parent, what=f"the report {printable(out.name)}")  # before the run, not after it
    data = out.with_suffix(".json")
    for path, what in ((out, "the report"), (data, "the report's series")):  # refused now, not after the run
        if path.is_symlink():
            raise PipelineError(
                f"cannot write {what} {printable(str(path))}: it is a symbolic link, and dfwatch "
                "never writes through one"
            )
    sinks: list = []
    verdict_file = None
    if verdicts_out is not None:
        verdict_file = os.fdopen(open_no_follow(verdicts_out, what="the verdicts"), "w")  # closed after the run
        sinks.append(JsonLinesSink(verdict_file))
    thumbs = _TopFaces(k=THUMBNAILS, margin=classifier.crop_margin)
    try:
        (run,) = run_clips(
            [clip],
            detector,
            classifier,
            verdict=verdict,
            schedule=schedule,
            tracker=tracker,
            runner=runner,
            sinks=sinks,
            frame_sinks=[thumbs],
            desc="report",
        )
    finally:
        if verdict_file is not None:
            verdict_file.close()
    records = [p.record for p in run.publications]  # the verdict messages as published
    error = run.error
    if not records:
        raise PipelineError(
            f"clip {printable(str(clip))}: no frame went through the pipeline ({error or 'empty video'})"
        )
    placeholder_models = run.verdicts[0].placeholder_models
    series = timeline(records, verdict=verdict)
    series["clip"] = str(clip)
    series["placeholder_models"] = placeholder_models
    series["thumbnails"] = [
        {"track": t.track, "frame": t.frame, "t": t.t, "p_fake": round(t.p_fake, 4)} for t in thumbs.thumbs
    ]  # p_fake rounded as in the verdict records
    name = printable(clip.name)  # a file name can hold terminal escapes: it is printed
    broke = f"; the clip broke off after {len(records)} frames ({error})" if error else ""
    noise = " (PLACEHOLDER models: scores are noise)" if placeholder_models else ""
    if not series["faces"]:
        summary = (
            f"{name}: no face found in {len(records)} frames (verdict {records[-1]['verdict']}); "
            f"nothing to chart, no report written{broke}{noise}"
        )
        return Report(clip, None, None, len(records), 0, series["verdict"], series["changes"], summary, error)
    png = _draw(series, thumbs.thumbs, title=name)
    page = png if suffix == ".png" else _html(series, png, title=name).encode()
    for path, what, content in ((out, "the report", page), (data, "the report's series", json.dumps(series, indent=1))):
        try:
            with os.fdopen(open_no_follow(path, what=what), "wb") as file:
                file.write(content if isinstance(content, bytes) else content.encode())
        except OSError as exc:
            raise PipelineError(f"cannot write {what} {printable(str(path))}: {exc.strerror or exc}") from exc
    summary = f"{name}: {_story(series)}; report {printable(str(out))}, series {printable(data.name)}{broke}{noise}"
    return Report(clip, out, data, len(records), series["faces"], series["verdict"], series["changes"], summary, error)


def _story(series: dict[str, Any]) -> str:
    """'FAKE (FAKE 4.40-8.00 s); verdict changes: REAL at 0.12 s, FAKE at 4.40 s; 200 frames, 2 face tracks'."""
    unit = (lambda t: f"{t:.2f} s") if series["x"] == "pts" else (lambda t: f"frame {t:.0f}")
    fake = [s for s in series["segments"] if s["verdict"] == VerdictState.FAKE.value]
    spans = ", ".join(f"{unit(s['start_t'])} to {unit(s['end_t'])}" for s in fake)
    where = f" (FAKE {spans})" if fake else ""
    changes = ", ".join(f"{c['verdict']} at {unit(c['t'])}" for c in series["changes"]) or "none"
    best = max(((p, k, t) for k, s in series["tracks"].items() for p, t in zip(s["p_fake"], s["t"])), default=None)
    top = f", highest fake score {best[0]:.2f} (track {best[1]} at {unit(best[2])})" if best else ""
    return (
        f"verdict {series['verdict']}{where}; verdict changes: {changes}; {series['frames']} frames, "
        f"{len(series['tracks'])} face tracks{top}"
    )


def _draw(series: dict[str, Any], thumbs: Sequence[Thumb], *, title: str) -> bytes:
    """The chart as PNG bytes: tracks over time, verdict timeline, thumbnails."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: matplotlib is slow to import
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, THUMBNAILS, height_ratios=[3.0, 1.6, 2.0])
    tracks_ax = fig.add_subplot(grid[0, :])
    verdict_ax = fig.add_subplot(grid[1, :], sharex=tracks_ax)
    enter, leave = series["thresholds"]["enter_fake"], series["thresholds"]["leave_fake"]
    label_tracks = len(series["tracks"]) <= MAX_LEGEND_TRACKS
    for track, s in series["tracks"].items():
        tracks_ax.plot(
            s["t"],
            s["p_fake"],
            marker=".",
            markersize=3,
            linewidth=1.2,
            label=f"track {track}" if label_tracks else None,
        )
    for ax in (tracks_ax, verdict_ax):
        ax.axhline(enter, color="tab:red", linestyle="--", linewidth=1, label=f"enter FAKE ({enter:g})")
        ax.axhline(leave, color="tab:green", linestyle="--", linewidth=1, label=f"leave FAKE ({leave:g})")
        ax.set_ylim(-0.02, 1.02)
    tracks_ax.set_ylabel("fake probability\n(smoothed, per face track)")
    tracks_ax.legend(loc="upper left", fontsize=8, ncol=4, framealpha=0.8)
    if not label_tracks:
        tracks_ax.set_title(f"{len(series['tracks'])} face tracks", fontsize=9, loc="right")
    tracks_ax.grid(alpha=0.3)
    score = series["score"]
    step = np.median(np.diff(score["t"])) if len(score["t"]) > 1 else 1.0
    for seg in series["segments"]:
        colour = np.array(VERDICT_COLOURS[VerdictState(seg["verdict"])]) / 255
        start, end = seg["start_t"], seg["end_t"] + step
        verdict_ax.axvspan(start, end, color=colour, alpha=0.35, linewidth=0)
        verdict_ax.text((start + end) / 2, 0.9, seg["verdict"], ha="center", va="top", fontsize=8, clip_on=True)
    t = np.array(score["t"], dtype=float)
    s = np.array([np.nan if v is None else v for v in score["score"]], dtype=float)
    verdict_ax.plot(t, s, color="black", linewidth=1.2, label="stream score")
    verdict_ax.set_ylabel("verdict\n(stream score)")
    verdict_ax.set_xlabel("time in clip (s)" if series["x"] == "pts" else "frame")
    for i in range(THUMBNAILS):
        ax = fig.add_subplot(grid[2, i])
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(thumbs):
            ax.set_axis_off()
            continue
        th = thumbs[i]
        ax.imshow(th.image)
        for spine in ax.spines.values():
            spine.set_edgecolor(np.array(score_colour(th.p_fake)) / 255)
            spine.set_linewidth(4)
        at = f"{th.t:.2f} s" if series["x"] == "pts" else f"frame {th.frame}"
        ax.set_title(f"track {th.track}  p {th.p_fake:.2f}\n{at}", fontsize=8)
    headline = f"{title}: verdict {series['verdict']}, {series['frames']} frames"
    if series.get("placeholder_models"):
        headline += "\nPLACEHOLDER models (untrained): scores and verdicts are noise"
    fig.suptitle(headline, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _html(series: dict[str, Any], png: bytes, *, title: str) -> str:
    rows = "".join(
        f"<tr><td>{c['frame']}</td><td>{c['t']:.2f}</td><td>{html.escape(c['verdict'])}</td></tr>"
        for c in series["changes"]
    )
    image = base64.b64encode(png).decode()
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>dfwatch report: {html.escape(title)}</title>"
        "</head><body style='font-family:sans-serif'>"
        f"<h1>{html.escape(title)}: {html.escape(series['verdict'])}</h1><p>{html.escape(_story(series))}</p>"
        f"<img alt='fake probability per face track, verdict timeline, top faces' src='data:image/png;base64,{image}'>"
        f"<h2>Verdict changes</h2><table><tr><th>frame</th><th>t</th><th>verdict</th></tr>{rows}</table>"
        "</body></html>\n"
    )
