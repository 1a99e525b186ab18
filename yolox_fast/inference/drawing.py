"""Drawing detections onto BGR images (OpenCV)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def class_color(class_id: int) -> tuple[int, int, int]:
    """A fixed BGR colour per class id."""
    return (37 * (class_id + 1) % 255, 17 * (class_id + 3) % 255, (200 + 29 * class_id) % 255)


def draw_detections(img: np.ndarray, xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                    class_names: Sequence[str]) -> np.ndarray:
    """Draw boxes ``xyxy [n, 4]`` (in ``img`` pixels) with ``"name score"`` labels onto ``img`` in place.

    Boxes are drawn lowest score first, so where two labels overlap (a dog also scored as a cat) the
    more confident one stays readable on top. Returns ``img``.
    """
    thickness = max(1, round(max(img.shape[:2]) / 400))
    scale = max(0.4, max(img.shape[:2]) / 1200)
    xyxy, scores, class_ids = np.asarray(xyxy), np.asarray(scores), np.asarray(class_ids)
    order = np.argsort(scores, kind="stable")
    for (x1, y1, x2, y2), score, cid in zip(xyxy[order].tolist(), scores[order].tolist(),
                                            class_ids[order].tolist(), strict=True):
        color = class_color(int(cid))
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(img, p1, p2, color, thickness)
        name = class_names[int(cid)] if 0 <= int(cid) < len(class_names) else str(int(cid))
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(p1[1], th + base)
        cv2.rectangle(img, (p1[0], top - th - base), (p1[0] + tw, top), color, -1)
        cv2.putText(img, text, (p1[0], top - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img
