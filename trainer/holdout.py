"""Validate an exported deepfake classifier on what its training never saw.

- ``self_blend_auc``: pristine crops of the held-out ``test`` clips (people no training row
  shows) against self-blended fakes made from the same crops (fixed seed): does it see the
  blending boundary on new faces?
- ``labelled_auc``: the held-out half of the labelled DFDC face crops (real face swaps).
- ``pipeline_videos``: whole videos through the full service (``dfwatch watch`` in a child
  process: decode, detect, track, classify, smooth), e.g. the DeeperForensics clips; per video
  the mean of every face score and the verdicts it reached.

Scores are P(fake) from the ONNX artifact through ``engines.Classifier``, as served.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.images import resize
from trainer.errors import TrainerError
from trainer.metrics import binary_metrics

logger = logging.getLogger(__name__)


def _resize(crops: np.ndarray, size: int) -> np.ndarray:
    if crops.shape[1] == size:
        return crops
    return np.stack([resize(c, size, size) for c in crops])


def _score(classifier: Any, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    crops = _resize(crops, classifier.input_size)
    return np.concatenate([classifier(crops[i : i + batch]) for i in range(0, len(crops), batch)] or [np.zeros(0)])


def _rows(store_path: Path, *, split: str, prefix: str, originals: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """(crops (n, S, S, 3), labels (n,), the store's crop margin) of the rows in ``split`` whose identity
    starts with ``prefix``."""
    from trainer.store import FaceStore

    with FaceStore(store_path) as store:
        idx = store.indices(split, originals_only=originals)
        ident = store.meta("identity")[idx]
        keep = idx[np.array([str(i).startswith(prefix) for i in ident], dtype=bool)]
        if len(keep) == 0:
            raise TrainerError(f"{store_path}: no {split} rows of {prefix!r} identities")
        crops = np.stack([store.crops(int(r)) for r in keep])
        return crops, store.meta("label")[keep].astype(np.int64), float(store.attrs["crop_margin"])


def self_blend_auc(classifier: Any, store_path: Path, *, split: str = "test", seed: int = 1234) -> dict[str, Any]:
    """AUC of pristine held-out clip crops (label 0) against their self-blended versions (label 1)."""
    from trainer.selfblend import self_blend

    crops, labels, margin = _rows(store_path, split=split, prefix="clip:")
    crops = crops[labels == 0]
    fakes = np.stack([self_blend(c, np.random.default_rng(seed + k), margin=margin) for k, c in enumerate(crops)])
    scores = np.concatenate([_score(classifier, crops), _score(classifier, fakes)])
    truth = np.r_[np.zeros(len(crops)), np.ones(len(fakes))]
    return {"pairs": len(crops), **_summary(truth, scores, classifier.threshold)}


def labelled_auc(classifier: Any, store_path: Path, *, prefix: str = "dfdc:", split: str = "test") -> dict[str, Any]:
    """AUC on held-out labelled crops (e.g. DFDC) of the store."""
    crops, labels, _ = _rows(store_path, split=split, prefix=prefix)
    return {"crops": len(crops), "fakes": int(labels.sum()), **_summary(labels, _score(classifier, crops),
                                                                        classifier.threshold)}  # fmt: skip


def _summary(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    m = binary_metrics(labels, scores, threshold=threshold)
    return {"roc_auc": None if m.roc_auc is None else round(m.roc_auc, 4), "accuracy": round(m.accuracy, 4),
            "eer": None if m.eer is None else round(m.eer, 4), "threshold": threshold,
            "mean_p_fake_real": round(float(scores[labels == 0].mean()), 4),
            "mean_p_fake_fake": round(float(scores[labels == 1].mean()), 4)}  # fmt: skip


def pipeline_videos(
    models: Path, videos: Sequence[Path], *, extra_args: Sequence[str] = ()
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Run ``dfwatch watch`` on whole files.

    Returns per video (its path) a summary (frames, face scores, their mean, verdicts reached
    and the last one) and every raw face score (``p_fake_last`` of each face on each frame).
    """
    names = {f"v{i}": Path(v) for i, v in enumerate(videos)}
    cmd = [sys.executable, "-m", "pipeline.cli", "watch", "--models", str(models), "--metrics-port", "0",
           *extra_args, *(f"{n}={p}" for n, p in names.items())]  # fmt: skip
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise TrainerError(f"dfwatch watch exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    per: dict[str, dict[str, Any]] = {n: {"scores": [], "frames": 0, "verdicts": {}, "last": None} for n in names}
    for line in proc.stdout.splitlines():
        msg = json.loads(line)
        rec = per[msg["stream"]]
        rec["frames"] += 1
        rec["scores"] += [f["p_fake_last"] for f in msg["faces"] if f.get("p_fake_last") is not None]
        rec["verdicts"][msg["verdict"]] = rec["verdicts"].get(msg["verdict"], 0) + 1
        rec["last"] = msg["verdict"]
    out, raw = {}, {}
    for n, rec in per.items():
        s = np.asarray(rec["scores"], np.float64)
        raw[str(names[n])] = s
        out[str(names[n])] = {"frames": rec["frames"], "face_scores": len(s),
                              "mean_p_fake": round(float(s.mean()), 4) if len(s) else None,
                              "verdicts": rec["verdicts"], "last_verdict": rec["last"]}  # fmt: skip
    return out, raw
