"""The validation figures: PR curve, F1-confidence curve, confusion matrix (matplotlib, PNG), and
validation images with their ground truth beside the predictions (OpenCV, JPEG).

Every file is written atomically (:func:`yolox_fast.files.atomic.atomic_write`).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..files.atomic import atomic_write
from ..inference.drawing import class_color, draw_detections
from .confusion import normalize_columns
from .per_class import ClassMetrics

#: Classes named on the confusion matrix's axes up to this count (more would be unreadable; ultralytics: 30).
MAX_NAMED_CLASSES = 30


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure as PNG atomically, close it; returns the path."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout and glyph warnings say nothing about the content
        fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    path = Path(path)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def write_image(path: str | Path, img: np.ndarray, quality: int = 90) -> Path:
    """Encode a BGR image as JPEG (or PNG, by the suffix) and write it atomically."""
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(path.suffix, img, params)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode an image as {path.suffix}")
    atomic_write(path, lambda f: f.write(encoded.tobytes()))
    return path


def _class_curves(ax, x: np.ndarray, curves: np.ndarray, metrics: ClassMetrics, mean_label: str) -> None:
    """One thin line per class with ground truth (labelled when few), the thick class mean on top."""
    present = np.flatnonzero(metrics.present)
    label_each = len(present) < 21
    for k in present:
        ax.plot(x, curves[k], linewidth=1, label=metrics.names[k] if label_each else None,
                color=None if label_each else "grey")
    if len(present):
        ax.plot(x, curves[present].mean(0), linewidth=3, color="blue", label=mean_label)
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=8)


def plot_pr_curve(metrics: ClassMetrics, path: str | Path) -> Path:
    """Precision against recall at IoU 0.5: pycocotools' interpolated curves, whose mean area is AP50."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), tight_layout=True)
    _class_curves(ax, metrics.recall_points, metrics.pr_curve, metrics,
                  f"all classes AP50 {metrics.mean(metrics.ap50):.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall curve (IoU 0.5)")
    return save_figure(fig, path)


def plot_f1_curve(metrics: ClassMetrics, path: str | Path) -> Path:
    """F1 against the confidence threshold (IoU 0.5), the best mean marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), tight_layout=True)
    present = metrics.present
    best = metrics.f1_curve[present].mean(0).max() if present.any() else 0.0
    _class_curves(ax, metrics.conf_grid, metrics.f1_curve, metrics,
                  f"all classes F1 {best:.2f} at {metrics.confidence:.3f}")
    ax.axvline(metrics.confidence, color="blue", linestyle=":", linewidth=1)
    ax.set(xlabel="confidence", ylabel="F1", title="F1-confidence curve (IoU 0.5)")
    return save_figure(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """The matrix of :func:`~yolox_fast.evaluation.confusion.confusion_matrix`, each true-class column
    normalised to 1, the background as last row and column."""
    plt = pyplot()
    normalized = normalize_columns(matrix)
    size = len(names) + 1
    fig, ax = plt.subplots(figsize=(12, 9), tight_layout=True)
    shown = np.where(normalized > 0.005, normalized, np.nan)  # empty cells blank, as ultralytics shows them
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if size - 1 <= MAX_NAMED_CLASSES:
        labels = [*names, "background"]
        ax.set_xticks(range(size), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(size), labels, fontsize=8)
        if size <= 16:
            for (row, col), value in np.ndenumerate(normalized):
                if value > 0.005:
                    ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if value > 0.5 else "black")
    ax.set(xlabel="true", ylabel="predicted",
           title="confusion matrix (columns normalised; last row: missed, last column: false alarms)")
    return save_figure(fig, path)


def ground_truth_beside_predictions(img: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray,
                                    det_boxes: np.ndarray, det_scores: np.ndarray, det_classes: np.ndarray,
                                    names: Sequence[str], height: int = 320) -> np.ndarray:
    """One BGR image: ``img`` with its ground truth (left) and with the predictions (right), ``height`` pixels high.

    Boxes are ``[N, 4]`` x1, y1, x2, y2 in ``img`` pixels; ground-truth labels show the class name only.
    """
    scale = height / img.shape[0]
    size = (max(1, round(img.shape[1] * scale)), height)
    truth = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    predicted = truth.copy()
    draw_boxes(truth, np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4) * scale, gt_classes, names)
    draw_detections(predicted, np.asarray(det_boxes, dtype=np.float32).reshape(-1, 4) * scale, det_scores,
                    det_classes, names)
    for panel, title in ((truth, "ground truth"), (predicted, "predictions")):
        cv2.putText(panel, title, (5, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(panel, title, (5, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    gap = np.full((height, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([truth, gap, predicted], axis=1)


def draw_boxes(img: np.ndarray, xyxy: np.ndarray, class_ids: Sequence[int], names: Sequence[str] | None = None,
               thickness: int = 1) -> np.ndarray:
    """Draw labelled boxes (ground truth: no score) ``xyxy [N, 4]`` in ``img`` pixels onto ``img`` in place, each
    in its class colour with the class name (or index) above it. Returns ``img``."""
    for (x1, y1, x2, y2), cid in zip(np.asarray(xyxy).reshape(-1, 4).tolist(), list(map(int, class_ids)), strict=True):
        color = class_color(cid)
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(img, p1, p2, color, thickness)
        if names is not None:
            text = names[cid] if 0 <= cid < len(names) else str(cid)
            cv2.putText(img, text, (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return img
