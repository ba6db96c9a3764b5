"""dfwatch-train validate: measure a classifier (and the model pack it serves in) on held-out material."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def cmd_validate(args: argparse.Namespace) -> int:
    import numpy as np

    from engines import Classifier
    from trainer import holdout, realmedia
    from trainer.metrics import binary_metrics

    classifier = Classifier(args.models / "deepfake_classifier.onnx", threads=args.threads)
    report: dict = {"classifier": str(args.models / "deepfake_classifier.onnx"),
                    "manifest_name": classifier.manifest.name, "input_size": classifier.input_size}  # fmt: skip
    report["self_blend_test_clips"] = holdout.self_blend_auc(classifier, args.store)
    report["dfdc_test_crops"] = holdout.labelled_auc(classifier, args.store, prefix="dfdc:")
    if not args.skip_videos:
        sources = realmedia.deeperforensics(args.media)
        summary, raw = holdout.pipeline_videos(args.models, [s.path for s in sources], extra_args=args.watch_args)
        labels = {str(s.path): s.label for s in sources}
        videos = [{"video": s.rel, "label": s.label, **summary[str(s.path)]} for s in sources]
        means = [v["mean_p_fake"] if v["mean_p_fake"] is not None else 0.0 for v in videos]
        face_labels = np.concatenate([np.full(len(raw[p]), labels[p]) for p in raw])
        face_scores = np.concatenate(list(raw.values()))
        video_auc = binary_metrics(np.array([v["label"] for v in videos]), np.array(means)).roc_auc
        face_auc = binary_metrics(face_labels, face_scores).roc_auc if len(face_scores) else None
        report["deeperforensics"] = {"videos": videos, "video_auc_mean_score": video_auc, "face_auc": face_auc}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    sb, dfdc = report["self_blend_test_clips"], report["dfdc_test_crops"]
    print(f"self-blended vs pristine, held-out clips: AUC {sb['roc_auc']} ({sb['pairs']} pairs)", file=sys.stderr)
    print(f"DFDC held-out crops: AUC {dfdc['roc_auc']} ({dfdc['crops']} crops, {dfdc['fakes']} fake)", file=sys.stderr)
    if "deeperforensics" in report:
        d = report["deeperforensics"]
        for v in d["videos"]:
            print(f"  {v['video']} label {v['label']}: mean p_fake {v['mean_p_fake']}, verdicts {v['verdicts']}",
                  file=sys.stderr)  # fmt: skip
        print(f"DeeperForensics: video AUC {d['video_auc_mean_score']}, face AUC {d['face_auc']}", file=sys.stderr)
    print(f"validate: wrote {args.out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="measure the model pack on held-out clips, DFDC crops and DeeperForensics")
    p.add_argument("--models", type=Path, default=Path("models"), help="model directory (classifier and detector)")
    p.add_argument("--store", type=Path, required=True, help="face store from `dfwatch-train realfaces`")
    p.add_argument("--media", type=Path, default=Path("../shared/data"), help="the shared real-media folder")
    p.add_argument("--out", type=Path, default=Path("runs/validate.json"), help="JSON report")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--skip-videos", action="store_true", help="skip the DeeperForensics videos (full pipeline)")
    p.add_argument("--watch-args", nargs=argparse.REMAINDER, default=[],
                   help="extra `dfwatch watch` flags for the videos (last on the line)")  # fmt: skip
    p.set_defaults(func=cmd_validate)
