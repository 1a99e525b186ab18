"""Per-image detection results in original-image pixels, shared by the PyTorch and ONNX Runtime paths."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES


@dataclass
class Detections:
    """The detections of one image.

    Attributes:
        xyxy: ``[n, 4]`` float32 x1, y1, x2, y2 in original-image pixels, by decreasing score.
        scores: ``[n]`` float32 ``objectness * class confidence``.
        class_ids: ``[n]`` int64 model class indices.
        class_names: the model's class names (all of them; ``names`` gives each detection's).
        image: the BGR image the detections belong to (kept for :meth:`plot`), or None.
        source: where the image came from (a path, ``"video.mp4#12"``), or None.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: Sequence[str]
    image: np.ndarray | None = field(default=None, repr=False)
    source: str | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in self.class_ids.tolist()]

    def summary(self) -> str:
        """``"2 dog, 1 bicycle"`` (counts per class, most frequent first) or ``"no detections"``."""
        if not len(self):
            return "no detections"
        counts: dict[str, int] = {}
        for name in self.names:
            counts[name] = counts.get(name, 0) + 1
        return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def plot(self, image: np.ndarray | None = None) -> np.ndarray:
        """A copy of ``image`` (default: the detected image) with the boxes, class names and scores drawn."""
        from .drawing import draw_detections

        base = self.image if image is None else image
        if base is None:
            raise ValueError("no image to draw on: these detections were made without keeping the image; pass one")
        return draw_detections(base.copy(), self.xyxy, self.scores, self.class_ids, self.class_names)

    def coco_category_ids(self) -> list[int]:
        """COCO category ids for an 80-class COCO model (ids 1..90), else the class indices."""
        if list(self.class_names) == list(COCO_CLASSES):
            return [COCO_CATEGORY_IDS[c] for c in self.class_ids.tolist()]
        return [int(c) for c in self.class_ids.tolist()]

    def to_coco(self, image_id) -> list[dict]:
        """COCO results format: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``."""
        boxes = self.xyxy.astype(np.float64)
        wh = boxes[:, 2:] - boxes[:, :2]
        return [{"image_id": image_id, "category_id": cat, "bbox": [round(v, 3) for v in (*b[:2], *s)],
                 "score": round(float(p), 5)}
                for b, s, p, cat in zip(boxes.tolist(), wh.tolist(), self.scores.tolist(), self.coco_category_ids(),
                                        strict=True)]

    def to_json(self) -> str:
        """The detections as a JSON list of ``{"box": [x1, y1, x2, y2], "score", "class_id", "class_name"}``."""
        return json.dumps([{"box": [round(v, 3) for v in b], "score": round(float(s), 5), "class_id": int(c),
                            "class_name": n}
                           for b, s, c, n in zip(self.xyxy.tolist(), self.scores.tolist(), self.class_ids.tolist(),
                                                 self.names, strict=True)])

    def to_yolo_lines(self, with_score: bool = False) -> list[str]:
        """YOLO label lines ``class cx cy w h`` (normalised by the image size), plus the score if asked."""
        if self.image is None:
            raise ValueError("YOLO lines need the image size: these detections were made without the image")
        h, w = self.image.shape[:2]
        lines = []
        for (x1, y1, x2, y2), s, c in zip(self.xyxy.tolist(), self.scores.tolist(), self.class_ids.tolist(),
                                          strict=True):
            fields = [f"{(x1 + x2) / 2 / w:.6f}", f"{(y1 + y2) / 2 / h:.6f}", f"{(x2 - x1) / w:.6f}",
                      f"{(y2 - y1) / h:.6f}"]
            lines.append(" ".join([str(int(c)), *fields] + ([f"{s:.5f}"] if with_score else [])))
        return lines

