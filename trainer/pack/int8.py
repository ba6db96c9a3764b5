"""INT8 calibration images and the held-out check an INT8 artifact must pass (``dfwatch-train engines --int8``).

From the shared media (``--media``, the ``../shared/data`` layout), read in place:

- calibration: WIDER FACE train images (detector) and face crops cut from them with ``engines.crop_faces``
  at the classifier's size and margin (classifier): real faces, as serving sees them;
- acceptance: the detector's recall on WIDER FACE val (faces at least 32 px high, IoU 0.5, the model
  card's measure), the classifier's ROC AUC on the inswapper swaps against real FFHQ faces
  (``labelled/wild_swaps/inswapper``, never trained on). fp32 and INT8 are measured on the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engines import Manifest
from trainer.realmedia import read_rgb

MIN_FACE = 32  # px: faces smaller than this do not count for recall (as in the detector's model card)


def calibration_images(media: Path, manifest: Manifest, *, limit: int = 256) -> Iterator[np.ndarray]:
    """uint8 RGB images to calibrate ``manifest``'s model: WIDER train images, or face crops from them."""
    from engines import Detections, crop_faces
    from trainer.pack.realfaces import wider_boxes

    train = media / "widerface" / "train"
    paths = sorted((train / "images").glob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no WIDER FACE train images in {train / 'images'} (--media is ../shared/data)")
    given = 0
    for path in paths[:: max(1, len(paths) // limit)]:
        image = read_rgb(path)
        if image is None:
            continue
        if manifest.kind == "detector":
            yield image
            given += 1
        else:
            h, w = image.shape[:2]
            boxes = wider_boxes(train / "labels" / f"{path.stem}.txt", w, h)  # (n, 4)
            boxes = boxes[(boxes[:, 3] - boxes[:, 1]) >= MIN_FACE][:4]
            if len(boxes):
                found = Detections(boxes, np.ones(len(boxes)), np.zeros(len(boxes)))
                yield crop_faces(
                    [image], found, size=manifest.input_size, margin=float(manifest.preprocess["crop_margin"])
                )
                given += len(boxes)
        if given >= limit:
            return


def face_recall(detector_path: Path, media: Path) -> float:
    """Recall of faces >= MIN_FACE px on WIDER FACE val through ``detector_path`` (IoU 0.5)."""
    from engines import Detector
    from trainer.detector.evaluate import match_recall, wider_pairs

    return match_recall(wider_pairs(Detector(detector_path), media / "widerface" / "val"), min_height=MIN_FACE).recall


def swap_auc(classifier_path: Path, media: Path) -> float:
    """ROC AUC of ``classifier_path`` on inswapper face swaps (fake) against real FFHQ faces."""
    from engines import Classifier
    from engines.images import resize
    from trainer.metrics import roc_auc

    classifier = Classifier(classifier_path)
    root = media / "labelled" / "wild_swaps" / "inswapper"
    s = classifier.input_size
    crops, labels = [], []
    for label, folder in ((1, "fake"), (0, "real_ffhq")):
        for path in sorted((root / folder).glob("*")):
            image = read_rgb(path)
            if image is not None:
                crops.append(resize(image, s, s))
                labels.append(label)
    if not crops or len(set(labels)) < 2:
        raise FileNotFoundError(f"{root} needs fake/ and real_ffhq/ images")
    scores = np.concatenate([classifier(np.stack(crops[i : i + 64])) for i in range(0, len(crops), 64)])
    return float(roc_auc(np.array(labels), scores))


def acceptance(media: Path):
    """The held-out check for ``engines.build_cpu.gate_int8``: (kind, fp32 path, INT8 path) -> (metric, fp32, int8)."""

    measured: dict[Path, float] = {}  # the fp32 artifact is measured once for its INT8 twins

    def measure(kind: str, path: Path) -> float:
        if path not in measured:
            measured[path] = face_recall(path, media) if kind == "detector" else swap_auc(path, media)
        return measured[path]

    def accept(kind: str, fp32: Path, int8: Path) -> tuple[str, float, float]:
        metric = "WIDER val face recall" if kind == "detector" else "inswapper ROC AUC"
        return metric, measure(kind, fp32), measure(kind, int8)

    return accept
