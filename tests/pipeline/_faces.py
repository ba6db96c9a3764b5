"""Build the pipeline's columnar Faces from one tuple per face, as tests spell them."""

from __future__ import annotations

import numpy as np

from pipeline.messages import Faces

Row = tuple[int, tuple[float, float, float, float], float, float | None, float | None]  # track, box, det, p, last


def faces(*rows: Row) -> Faces:
    """``faces((1, (x1, y1, x2, y2), det_score, p_fake, p_fake_last), ...)``: one frame's faces; None: not scored."""

    def col(k: int) -> np.ndarray:
        return np.array([np.nan if r[k] is None else r[k] for r in rows], np.float32)

    return Faces.of(
        np.array([r[1] for r in rows], np.float32).reshape(-1, 4),
        col(2),
        np.zeros(len(rows)),
        track_id=np.array([r[0] for r in rows]),
        p_fake=col(3),
        p_fake_last=col(4),
    )
