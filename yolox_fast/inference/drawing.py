"""Drawing detections onto BGR images (OpenCV): boxes, then labels placed so that none covers another."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(class_id: int) -> tuple[int, int, int]:
    """A fixed BGR colour per class id."""
    return (37 * (class_id + 1) % 255, 17 * (class_id + 3) % 255, (200 + 29 * class_id) % 255)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(xyxy: np.ndarray, sizes: Sequence[tuple[int, int]], scores: np.ndarray,
                 image_shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Where each box's label goes: ``(x1, y1, x2, y2)`` pixel rectangles, in the order of ``xyxy``.

    Labels are placed most confident first, each at the first free spot of: above the box's top-left
    corner, inside it, below the box, inside its bottom, then sliding down (and up) from above the box
    one label height at a time; a spot is free when it overlaps no label placed before (a more
    confident one). Only when the image has no free spot left does a label take its first choice.

    Args:
        xyxy: ``[n, 4]`` boxes in image pixels.
        sizes: ``(width, height)`` of each label in pixels.
        scores: ``[n]``, the placing priority.
        image_shape: ``(height, width)``; labels stay inside it.
    """
    h_img, w_img = image_shape
    placed: dict[int, tuple[int, int, int, int]] = {}
    for i in np.argsort(-np.asarray(scores, np.float64), kind="stable").tolist():
        x1, y1, x2, y2 = (int(round(v)) for v in np.asarray(xyxy[i]).tolist())
        tw, th = sizes[i]
        left = min(max(x1, 0), max(w_img - tw, 0))
        tops = [y1 - th, y1, y2, y2 - th]
        tops += [y1 - th + k * th for k in range(1, h_img // max(th, 1) + 2)]
        tops += [y1 - th - k * th for k in range(1, h_img // max(th, 1) + 2)]
        tops = [min(max(t, 0), max(h_img - th, 0)) for t in tops]  # inside the image
        candidates = [(left, t, left + tw, t + th) for t in tops]
        free = next((c for c in candidates if not any(_overlaps(c, p) for p in placed.values())), candidates[0])
        placed[i] = free
    return [placed[i] for i in range(len(placed))]


def label_text(name: str, score: float, conf: bool = True) -> str:
    """``"dog 0.86"``, or ``"dog"`` without the score."""
    return f"{name} {score:.2f}" if conf else name


def label_scale(image_shape: tuple[int, ...]) -> float:
    """The font scale of labels on an image of this ``(height, width)``."""
    return max(0.4, max(image_shape[:2]) / 1200)


def label_size(text: str, scale: float) -> tuple[int, int, int]:
    """``(width, height, baseline)`` in pixels of a label (height includes the baseline)."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    return tw, th + base, base


def draw_label(img: np.ndarray, rect: tuple[int, int, int, int], text: str, color: tuple[int, int, int],
               scale: float) -> None:
    """White ``text`` on a ``color`` background filling ``rect`` ``(x1, y1, x2, y2)``, in place."""
    x1, y1, x2, y2 = rect
    cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, -1)
    cv2.putText(img, text, (x1, y2 - label_size(text, scale)[2]), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_detections(img: np.ndarray, xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                    class_names: Sequence[str], line_width: int | None = None, labels: bool = True,
                    conf: bool = True) -> np.ndarray:
    """Draw boxes ``xyxy [n, 4]`` (in ``img`` pixels) with ``"name score"`` labels onto ``img`` in place.

    Boxes are drawn least confident first (a more confident box's lines stay on top), then the labels,
    at the spots :func:`place_labels` gives them, so that no label covers another's.

    Args:
        line_width: box line width in pixels (default: about one per 400 image pixels).
        labels: draw the labels (False: boxes only).
        conf: put the score in the labels.

    Returns:
        ``img``.
    """
    if line_width is not None and line_width < 1:
        raise ValueError(f"line_width must be >= 1, got {line_width}")
    thickness = line_width or max(1, round(max(img.shape[:2]) / 400))
    scale = label_scale(img.shape)
    xyxy, scores, class_ids = np.asarray(xyxy), np.asarray(scores), np.asarray(class_ids)
    finite = np.isfinite(xyxy).all(-1) if len(xyxy) else np.zeros(0, bool)  # an untrained model's boxes can be inf
    xyxy, scores, class_ids = xyxy[finite], scores[finite], class_ids[finite]
    order = np.argsort(scores, kind="stable")
    for i in order.tolist():
        x1, y1, x2, y2 = (int(round(v)) for v in xyxy[i].tolist())
        cv2.rectangle(img, (x1, y1), (x2, y2), class_color(int(class_ids[i])), thickness)
    if not labels or not len(scores):
        return img
    texts = []
    for score, cid in zip(scores.tolist(), class_ids.tolist(), strict=True):
        name = class_names[int(cid)] if 0 <= int(cid) < len(class_names) else str(int(cid))
        texts.append(label_text(name, score, conf))
    spots = place_labels(xyxy, [label_size(t, scale)[:2] for t in texts], scores, img.shape[:2])
    for i in order.tolist():
        draw_label(img, spots[i], texts[i], class_color(int(class_ids[i])), scale)
    return img
