"""The built-in synthetic detection dataset: coloured shapes on textured backgrounds, in COCO format.

Five classes (:data:`SHAPE_CLASSES`), 1-4 per image, with random sizes (20-40 % of the image side),
rotations, saturation and brightness, on muted textured backgrounds (smooth colour gradients, clutter
lines and arcs, pixel noise). Each class has its own shape and its own hue band (:data:`CLASS_HUES`,
jittered): the colour cue is what lets yolox-nano learn the classes on a CPU within minutes.

Layout under ``root`` (one folder per parameter set, so different sizes never overwrite each other)::

    root/shapes_v3_seed0_train512_val128_320x320/
        train/000001.jpg ...   val/000001.jpg ...
        annotations/instances_train.json   annotations/instances_val.json
        manifest.json          written last: the parameters; its presence marks the folder complete

Deterministic: image ``k`` of a split depends only on ``(seed, split, k, image_size)``, so the same
arguments give byte-identical files (with the same OpenCV build, which encodes the JPEGs).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np

SHAPE_CLASSES = ["circle", "square", "triangle", "cross", "star"]
#: OpenCV hue (0-180) at the centre of each class's colour band: red, orange, green, blue, purple.
CLASS_HUES = [0, 22, 60, 108, 145]
GENERATOR_VERSION = 3  # bump when the drawing changes, so cached folders are not reused
_SPLIT_CODES = {"train": 0, "val": 1}
_JPEG_QUALITY = 92


def _shape_polygon(shape: str, size: float, angle: float) -> np.ndarray:
    """Vertices ``[K, 2]`` of a shape of the given size (its extent before rotation), centred on 0, rotated."""
    r = size / 2
    if shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r * 0.75
    elif shape == "triangle":
        t = np.radians([-90, 30, 150])
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif shape == "cross":
        a, b = r, r * 0.33
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b],
                        [-a, -b], [-b, -b]])
    elif shape == "star":
        t = np.radians(np.arange(10) * 36 - 90)
        radius = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([np.cos(t) * radius, np.sin(t) * radius], 1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _shape_mask(shape: str, size: float, angle: float, center, image_hw) -> np.ndarray:
    """Anti-aliased uint8 coverage mask (0-255) of one shape on an image of size ``image_hw``."""
    mask = np.zeros(image_hw, dtype=np.uint8)
    shift = 4  # sub-pixel vertex precision: coordinates are multiplied by 2**shift
    if shape == "circle":
        centre = (int(round(center[0] * 16)), int(round(center[1] * 16)))
        cv2.circle(mask, centre, int(round(size / 2 * 16)), 255, -1, cv2.LINE_AA, shift)
    else:
        pts = np.round((_shape_polygon(shape, size, angle) + center) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift)
    return mask


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour field, clutter lines and arcs, and pixel noise: float32 ``[h, w, 3]``."""
    base = (rng.uniform(60, 190) + rng.normal(0, 12, 3)).astype(np.float32)  # a grey with a slight tint
    coarse = rng.normal(0, 22, (4, 4, 3)).astype(np.float32)
    img = base + cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    clutter = np.zeros((h, w, 3), dtype=np.float32)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(float(v) for v in rng.normal(0, 30, 3))
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        if rng.random() < 0.5:
            p2 = tuple(int(v) for v in rng.integers(0, (w, h)))
            cv2.line(clutter, p1, p2, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            axes = tuple(int(v) for v in rng.integers(5, max(6, min(h, w) // 4), 2))
            cv2.ellipse(clutter, p1, axes, float(rng.uniform(0, 180)), 0, float(rng.uniform(90, 300)), colour,
                        int(rng.integers(1, 3)), cv2.LINE_AA)
    img += clutter + rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(3, 12))
    return img


def _box_overlap(a, b) -> float:
    """Intersection over the smaller area of two xyxy boxes (limits occlusion of either)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def render_image(seed: int, split: str, index: int, image_size: tuple[int, int]):
    """Draw image ``index`` of ``split``: ``(BGR uint8 [h, w, 3], [(class_index, [x, y, w, h], area), ...])``."""
    h, w = image_size
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    img = _background(rng, h, w)
    objects, boxes = [], []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        size = float(rng.uniform(0.2, 0.4)) * min(h, w)
        angle = float(rng.uniform(0, 2 * math.pi))
        for _attempt in range(20):
            center = rng.uniform((size / 2, size / 2), (w - size / 2, h - size / 2))
            mask = _shape_mask(SHAPE_CLASSES[cls], size, angle, center, (h, w))
            box = cv2.boundingRect((mask >= 128).astype(np.uint8))  # the pixels at least half covered
            box = (box[0], box[1], box[0] + box[2], box[1] + box[3])
            if all(_box_overlap(box, other) < 0.2 for other in boxes):
                break
        else:
            continue  # no room left in this image
        hue = (CLASS_HUES[cls] + int(rng.integers(-8, 9))) % 180
        sat, val = int(rng.integers(150, 256)), int(rng.integers(140, 256))
        colour = cv2.cvtColor(np.uint8([[[hue, sat, val]]]), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        x, y, bw, bh = cv2.boundingRect(mask)  # every covered pixel, anti-aliased edge included
        alpha = (mask[y:y + bh, x:x + bw].astype(np.float32) / 255.0)[..., None]
        shading = rng.standard_normal((bh, bw, 3), dtype=np.float32) * np.float32(6)
        roi = img[y:y + bh, x:x + bw]
        roi[:] = roi * (1 - alpha) + (colour + shading) * alpha
        boxes.append(box)
        area = float(np.count_nonzero(mask >= 128))
        objects.append((cls, [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])], area))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


def _write_split(folder: Path, split: str, count: int, seed: int, image_size: tuple[int, int]) -> Path:
    (folder / split).mkdir(parents=True)
    images, annotations = [], []
    for k in range(1, count + 1):
        img, objects = render_image(seed, split, k, image_size)
        file_name = f"{k:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"cannot encode {split}/{file_name}")
        (folder / split / file_name).write_bytes(encoded.tobytes())
        images.append({"id": k, "file_name": file_name, "height": image_size[0], "width": image_size[1]})
        for cls, bbox, area in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": cls + 1, "bbox": bbox,
                                "area": area, "iscrowd": 0})
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPE_CLASSES)]
    data = {"info": {"description": f"yolox_fast synthetic shapes, {split} split, seed {seed}"},
            "images": images, "annotations": annotations, "categories": categories}
    ann_file = folder / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(exist_ok=True)
    ann_file.write_text(json.dumps(data))
    return ann_file


def _paths(folder: Path) -> dict:
    return {
        "root": str(folder),
        "train_images": str(folder / "train"),
        "train_ann": str(folder / "annotations" / "instances_train.json"),
        "val_images": str(folder / "val"),
        "val_ann": str(folder / "annotations" / "instances_val.json"),
        "class_names": list(SHAPE_CLASSES),
    }


def _is_complete(folder: Path, manifest: dict) -> bool:
    try:
        if json.loads((folder / "manifest.json").read_text()) != manifest:
            return False
    except (OSError, ValueError):
        return False
    paths = _paths(folder)
    return (os.path.isfile(paths["train_ann"]) and os.path.isfile(paths["val_ann"])
            and len(os.listdir(paths["train_images"])) == manifest["num_train"]
            and len(os.listdir(paths["val_images"])) == manifest["num_val"])


def make_synthetic_dataset(root, num_train: int = 512, num_val: int = 128, image_size=320, seed: int = 0) -> dict:
    """Generate (or reuse) the synthetic shapes dataset under ``root``; returns its paths.

    Args:
        root: cache folder; the dataset goes to a sub-folder named after the parameters.
        num_train, num_val: images per split (>= 1).
        image_size: ``(height, width)`` or an int.
        seed: the dataset's seed.

    Returns:
        ``dict(root=..., train_images=..., train_ann=..., val_images=..., val_ann=..., class_names=[...])``
        (paths as str; the json files are COCO instances, category ids 1..5 in :data:`SHAPE_CLASSES` order).

    A complete folder with the same parameters is reused as is. Generation writes into a temporary
    folder renamed into place at the end, so concurrent callers (e.g. several DDP ranks) and interrupted
    runs never leave a half-written dataset behind.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
    if min(h, w) < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    manifest = {"generator": "yolox_fast synthetic shapes", "version": GENERATOR_VERSION, "seed": seed,
                "num_train": num_train, "num_val": num_val, "image_size": [h, w], "class_names": SHAPE_CLASSES}
    root = Path(root)
    folder = root / f"shapes_v{GENERATOR_VERSION}_seed{seed}_train{num_train}_val{num_val}_{h}x{w}"
    if _is_complete(folder, manifest):
        return _paths(folder)

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp_{folder.name}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        for split, count in (("train", num_train), ("val", num_val)):
            _write_split(tmp, split, count, seed, (h, w))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if folder.exists() and not _is_complete(folder, manifest):
            shutil.rmtree(folder)  # an incomplete or damaged earlier copy of this very parameter set
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _is_complete(folder, manifest):  # otherwise another process finished first: use its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _paths(folder)
