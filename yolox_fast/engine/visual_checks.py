"""Pictures of the training data that show a broken label file before hours of training (as ultralytics draws):

- ``labels.png``: instances per class, box centres and box sizes (fractions of the image) of the whole
  training set, and up to 1000 boxes drawn about a common centre;
- ``train_batch0.jpg``, ...: the first batches as the model gets them, after augmentation, boxes drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..evaluation.plots import draw_boxes, pyplot, save_figure, write_image

#: Batches drawn at the start of a run, images per drawn batch, and the drawing's longest side in pixels.
DRAWN_BATCHES, DRAWN_IMAGES, DRAWN_MAX_SIDE = 3, 16, 1920


def plot_label_distribution(classes: np.ndarray, xywhn: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """``labels.png``: a 2 x 2 figure of a dataset's boxes.

    Args:
        classes: ``[N]`` int class index of every box.
        xywhn: ``[N, 4]`` float centre x, centre y, width, height as fractions of the image.
        names: the class names (the bar chart has one bar per class, empty ones included).
    """
    plt = pyplot()
    classes, xywhn = np.asarray(classes, dtype=np.int64), np.asarray(xywhn, dtype=np.float64).reshape(-1, 4)
    fig, axes = plt.subplots(2, 2, figsize=(10, 10), tight_layout=True)
    counts = np.bincount(classes, minlength=len(names))[: len(names)]
    bars = axes[0, 0]
    bars.bar(range(len(names)), counts, color="tab:blue")
    bars.set(ylabel="instances", title=f"{len(classes)} boxes in {len(names)} classes")
    if len(names) <= 30:
        bars.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    else:
        bars.set_xlabel("class index")

    rng = np.random.default_rng(0)  # the same sample every time for the same labels
    shown = xywhn if len(xywhn) <= 1000 else xywhn[rng.choice(len(xywhn), 1000, replace=False)]
    boxes = axes[0, 1]
    for w, h in shown[:, 2:].tolist():
        boxes.add_patch(plt.Rectangle((0.5 - w / 2, 0.5 - h / 2), w, h, fill=False, linewidth=0.5, alpha=0.4,
                                      color="tab:blue"))
    boxes.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title="boxes about a common centre")
    for ax, (a, b), (xlabel, ylabel), title in ((axes[1, 0], (0, 1), ("x", "y"), "box centres"),
                                                (axes[1, 1], (2, 3), ("width", "height"), "box sizes")):
        ax.hist2d(xywhn[:, a], xywhn[:, b], bins=50, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1)
        ax.set(xlabel=f"{xlabel} (fraction of the image)", ylabel=f"{ylabel} (fraction of the image)", title=title,
               aspect="equal")
    axes[1, 0].invert_yaxis()  # image coordinates: y grows downwards
    return save_figure(fig, path, dpi=100)


def draw_training_batch(images: torch.Tensor, labels: torch.Tensor, names: Sequence[str], path: str | Path) -> Path:
    """A grid of the first :data:`DRAWN_IMAGES` images of a training batch with their boxes, as a JPEG.

    Args:
        images: ``[B, 3, H, W]`` BGR 0-255 (uint8 or float; any memory layout).
        labels: ``[B, N, 5]`` rows ``(class, cx, cy, w, h)`` in pixels of the images; all-zero rows are padding.
        names: the class names.
    """
    count = min(images.shape[0], DRAWN_IMAGES)
    side = int(np.ceil(np.sqrt(count)))
    h, w = images.shape[-2:]
    scale = min(1.0, DRAWN_MAX_SIDE / (side * max(h, w)))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    grid = np.full((side * th, side * tw, 3), 255, dtype=np.uint8)
    batch = images[:count].detach().cpu().float().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rows = labels[:count].detach().cpu().float().numpy()
    for k in range(count):
        tile = np.ascontiguousarray(cv2.resize(batch[k], (tw, th), interpolation=cv2.INTER_AREA))
        real = rows[k][np.abs(rows[k]).sum(1) > 0]
        xyxy = np.stack([real[:, 1] - real[:, 3] / 2, real[:, 2] - real[:, 4] / 2,
                         real[:, 1] + real[:, 3] / 2, real[:, 2] + real[:, 4] / 2], 1) * scale
        draw_boxes(tile, xyxy, real[:, 0].astype(np.int64), names)
        top, left = (k // side) * th, (k % side) * tw
        grid[top : top + th, left : left + tw] = tile
        cv2.rectangle(grid, (left, top), (left + tw - 1, top + th - 1), (255, 255, 255), 2)
    return write_image(path, grid)
