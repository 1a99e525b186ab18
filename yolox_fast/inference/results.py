"""Per-image detection results in original-image pixels, shared by the PyTorch and ONNX Runtime paths."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from ..deploy.onnx_runtime import PaddedResult
from ..files.atomic import atomic_write


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
        orig_shape: ``(height, width)`` of the original image (default: the kept image's), or None.
        speed: milliseconds per image spent in ``"preprocess"``, ``"inference"`` and ``"postprocess"``
            (empty when not measured).

    A ``Detections`` is a sequence of detections: ``len(r)``, ``for d in r`` (each a one-row
    ``Detections``), ``r[0]``, ``r[1:3]``, ``r[r.scores > 0.5]``, ``r[[2, 0]]`` all give ``Detections`` of the
    same image.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: Sequence[str]
    image: np.ndarray | None = field(default=None, repr=False)
    source: str | None = None
    orig_shape: tuple[int, int] | None = None
    speed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.orig_shape is None and self.image is not None:
            self.orig_shape = tuple(int(v) for v in self.image.shape[:2])
        elif self.orig_shape is not None:
            self.orig_shape = (int(self.orig_shape[0]), int(self.orig_shape[1]))

    @classmethod
    def from_padded(cls, found: PaddedResult, index: int, ratio: float, class_names: Sequence[str],
                    image: np.ndarray | None = None, source: str | None = None,
                    orig_shape: tuple[int, int] | None = None, scale_xy: tuple[float, float] = (1.0, 1.0),
                    speed: dict[str, float] | None = None) -> Detections:
        """Image ``index`` of a runner's :class:`PaddedResult` (network pixels), mapped back to the original image:
        ``box / ratio`` (the letterbox resize ratio), times ``scale_xy`` when the boxes belong in another
        frame (e.g. the size an annotation file records for a resized file)."""
        n = int(found.counts[index])
        boxes = found.boxes[index, :n] / ratio
        if scale_xy != (1.0, 1.0):
            boxes = boxes * np.array([*scale_xy, *scale_xy], np.float32)
        return cls(boxes.astype(np.float32), found.scores[index, :n].astype(np.float32),
                   found.labels[index, :n].astype(np.int64), class_names, image, source, orig_shape,
                   dict(speed or {}))

    # -- a sequence of detections ----------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index) -> Detections:
        """Detections selected by an int, a slice, a boolean mask ``[n]`` or an index array (same image)."""
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"detection {index} out of range for {len(self)} detections")
            index = slice(int(index) % len(self), int(index) % len(self) + 1)
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (len(self),):
                raise IndexError(f"a boolean mask must have shape [{len(self)}], got {list(index.shape)}")
        return replace(self, xyxy=self.xyxy[index], scores=self.scores[index], class_ids=self.class_ids[index],
                       speed=dict(self.speed))

    def __iter__(self) -> Iterator[Detections]:
        for i in range(len(self)):
            yield self[i]

    # -- boxes in other formats --------------------------------------------------------------------

    @property
    def xywh(self) -> np.ndarray:
        """``[n, 4]`` float32 centre x, centre y, width, height in original-image pixels."""
        return np.concatenate([(self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2, self.xyxy[:, 2:] - self.xyxy[:, :2]], 1)

    def _image_wh(self) -> np.ndarray:
        if self.orig_shape is None:
            raise ValueError("normalised boxes need the image size: these detections have no orig_shape")
        h, w = self.orig_shape
        return np.array([w, h, w, h], np.float32)

    @property
    def xyxyn(self) -> np.ndarray:
        """:attr:`xyxy` divided by the original image's width and height (0-1 inside the image)."""
        return self.xyxy / self._image_wh()

    @property
    def xywhn(self) -> np.ndarray:
        """:attr:`xywh` divided by the original image's width and height (YOLO label format)."""
        return self.xywh / self._image_wh()

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

    # -- pictures ---------------------------------------------------------------------------------

    def _base_image(self, image: np.ndarray | None) -> np.ndarray:
        base = self.image if image is None else image
        if base is None:
            raise ValueError("no image to draw on: these detections were made without keeping the image; pass one")
        return base

    def plot(self, image: np.ndarray | None = None, line_width: int | None = None, labels: bool = True,
             conf: bool = True) -> np.ndarray:
        """A copy of ``image`` (default: the detected image) with the boxes drawn, each labelled with its
        class name (unless ``labels=False``) and score (unless ``conf=False``); ``line_width`` in pixels
        (default: from the image size). See :func:`yolox_fast.inference.drawing.draw_detections`."""
        from .drawing import draw_detections

        return draw_detections(self._base_image(image).copy(), self.xyxy, self.scores, self.class_ids,
                               self.class_names, line_width=line_width, labels=labels, conf=conf)

    def save(self, path: str | os.PathLike, **plot_options) -> str:
        """Write :meth:`plot` (``plot_options`` as there) to ``path`` (format from its suffix), atomically,
        never over an existing file (``FileExistsError``). Returns the path."""
        return write_image(path, self.plot(**plot_options))

    def crops(self, image: np.ndarray | None = None) -> list[np.ndarray]:
        """The image region of each detection (clipped to the image; at least one pixel), undrawn."""
        base = self._base_image(image)
        h, w = base.shape[:2]
        out = []
        for x1, y1, x2, y2 in self.xyxy.tolist():
            left, top = min(max(int(np.floor(x1)), 0), w - 1), min(max(int(np.floor(y1)), 0), h - 1)
            right, bottom = max(min(int(np.ceil(x2)), w), left + 1), max(min(int(np.ceil(y2)), h), top + 1)
            out.append(base[top:bottom, left:right].copy())
        return out

    # -- records ------------------------------------------------------------------------------------

    def records(self) -> list[dict]:
        """One dict per detection: ``{"box": [x1, y1, x2, y2], "score", "class_id", "class_name"}``, plus
        ``"box_normalised"`` when the image size is known."""
        rows = [{"box": [round(v, 3) for v in b], "score": round(float(s), 5), "class_id": int(c), "class_name": n}
                for b, s, c, n in zip(self.xyxy.tolist(), self.scores.tolist(), self.class_ids.tolist(), self.names,
                                      strict=True)]
        if self.orig_shape is not None:
            for row, b in zip(rows, self.xyxyn.tolist(), strict=True):
                row["box_normalised"] = [round(v, 6) for v in b]
        return rows

    def to_dict(self) -> dict:
        """``{"source", "orig_shape": [h, w], "speed": {...}, "detections": records()}`` (JSON-ready)."""
        return {"source": self.source, "orig_shape": None if self.orig_shape is None else list(self.orig_shape),
                "speed": {k: round(v, 3) for k, v in self.speed.items()}, "detections": self.records()}

    def to_json(self) -> str:
        """:meth:`records` as a JSON list."""
        return json.dumps(self.records())

    def coco_category_ids(self) -> list[int]:
        """COCO category ids for an 80-class COCO model (ids 1..90), else the class indices."""
        if list(self.class_names) == list(COCO_CLASSES):
            return [COCO_CATEGORY_IDS[c] for c in self.class_ids.tolist()]
        return [int(c) for c in self.class_ids.tolist()]

    def to_coco(self, image_id: int, category_ids: Sequence[int] | None = None,
                decimals: int | None = None) -> list[dict]:
        """COCO results format: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``.

        Args:
            image_id: the image's id in its dataset (an int).
            category_ids: the category id of each class index (evaluation: the annotation file's ids in
                sorted order); default :meth:`coco_category_ids`.
            decimals: round boxes to this many decimals and scores to ``decimals + 2`` (None: unrounded).
        """
        boxes = self.xyxy.astype(np.float64)
        wh = boxes[:, 2:] - boxes[:, :2]
        cats = (self.coco_category_ids() if category_ids is None
                else [int(category_ids[c]) for c in self.class_ids.tolist()])
        scores = self.scores.tolist()
        if decimals is not None:
            return [{"image_id": image_id, "category_id": cat, "bbox": [round(v, decimals) for v in (*b[:2], *s)],
                     "score": round(p, decimals + 2)}
                    for b, s, p, cat in zip(boxes.tolist(), wh.tolist(), scores, cats, strict=True)]
        return [{"image_id": image_id, "category_id": cat, "bbox": [*b[:2], *s], "score": p}
                for b, s, p, cat in zip(boxes.tolist(), wh.tolist(), scores, cats, strict=True)]

    def to_yolo_lines(self, with_score: bool = False) -> list[str]:
        """YOLO label lines ``class cx cy w h`` (normalised by the image size), plus the score if asked."""
        if self.orig_shape is None:
            raise ValueError("YOLO lines need the image size: these detections have no orig_shape")
        lines = []
        for box, s, c in zip(self.xywhn.tolist(), self.scores.tolist(), self.class_ids.tolist(), strict=True):
            fields = [f"{v:.6f}" for v in box]
            lines.append(" ".join([str(int(c)), *fields] + ([f"{s:.5f}"] if with_score else [])))
        return lines


def write_image(path: str | os.PathLike, image: np.ndarray) -> str:
    """Encode ``image`` (BGR) by ``path``'s suffix and write it atomically, never over an existing file."""
    import cv2

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwritten")
    ok, encoded = cv2.imencode(path.suffix or ".jpg", image)
    if not ok:
        raise ValueError(f"cannot encode an image as {path.suffix!r} ({path})")
    atomic_write(path, lambda f: f.write(encoded.tobytes()))
    return str(path)
