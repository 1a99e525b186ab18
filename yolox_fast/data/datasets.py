"""Detection datasets: COCO-format and YOLO-format folders, checked so that bad data names itself.

Every dataset item is ``dataset.load(i) -> (img, targets, image_id)``:

- ``img``: BGR uint8 ``[H, W, 3]`` as decoded by ``cv2.imread``;
- ``targets``: float32 ``[N, 5]`` = ``(x1, y1, x2, y2, class_index)`` in pixels of ``img``, already
  clipped to the image; ``class_index`` is contiguous in ``0 .. len(class_names) - 1``;
- ``image_id``: int (the COCO image id; the image's index for YOLO folders).

Checks (``report`` keeps the counts and the first examples; nothing is dropped silently):

- missing image files are found at construction; by default they are skipped and reported
  (``missing_images="error"`` raises instead); an image that exists but is truncated or cannot be
  decoded raises a ``ValueError`` naming the file when it is loaded (at construction with
  ``cache_images=True``); with ``bad_images="skip"`` every file is read at construction and the empty or
  truncated ones (:func:`~yolox_fast.data.preprocess.image_file_problem`) are skipped and reported;
- crowd annotations (``iscrowd=1``) are skipped and counted, as the official COCO loader does;
- boxes reaching outside the image are clipped and counted; boxes of zero width or height (as given,
  or after clipping) are skipped and counted;
- unknown category ids, malformed annotations and malformed YOLO label lines raise a ``ValueError``
  naming the annotation id or ``file:line``; a dataset without images raises, and so does one without
  a single box (nothing to learn or to evaluate against: typically the wrong annotation file).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .preprocess import IMAGE_SUFFIXES, image_file_problem, read_image

logger = logging.getLogger("yolox_fast.data")

#: What each report counter means; the keys are what ``DataReport.counts`` holds.
REPORT_KINDS = {
    "image_missing": "image files listed but not found (skipped)",
    "image_bad": "image files empty or truncated (skipped, as bad_images='skip' asks)",
    "crowd_skipped": "crowd annotations skipped (iscrowd=1)",
    "box_clipped": "boxes reaching outside the image, clipped to it",
    "box_zero_size": "boxes of zero width or height, skipped",
    "box_outside": "boxes entirely outside the image, skipped",
    "image_no_boxes": "images without any box (kept as background)",
    "label_file_missing": "images without a label file (kept as background)",
    "image_rotated_exif": "images whose EXIF orientation disagrees with the annotation size (read unrotated)",
}

#: Kinds that are normal in good data (logged at INFO level); the others are logged as warnings.
ROUTINE_KINDS = ("crowd_skipped", "image_no_boxes")


class DataReport:
    """What a dataset skipped or fixed while loading: a count per kind and the first few examples.

    ``report["box_clipped"]`` is a count (0 when that never happened); ``str(report)`` is a readable summary.
    """

    max_examples = 5

    def __init__(self, source: str):
        self.source = source
        self.num_images = 0
        self.num_boxes = 0
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.max_examples:
            examples.append(example)

    def __getitem__(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def __bool__(self) -> bool:
        """True when something was skipped or fixed."""
        return any(self.counts.values())

    @property
    def has_problems(self) -> bool:
        """True when the data had defects (missing files, bad boxes), not just crowd or background images."""
        return any(count for kind, count in self.counts.items() if kind not in ROUTINE_KINDS)

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.num_images} images, {self.num_boxes} boxes"]
        for kind, count in self.counts.items():
            lines.append(f"  {count} {REPORT_KINDS.get(kind, kind)}, e.g.")
            lines.extend(f"      {example}" for example in self.examples[kind])
            if count > len(self.examples[kind]):
                lines.append(f"      ... and {count - len(self.examples[kind])} more")
        return "\n".join(lines)

    __repr__ = __str__


@dataclass
class ImageRecord:
    """One image of a dataset. ``boxes`` are x1, y1, x2, y2: pixels, or fractions of the image when ``normalized``."""

    path: str
    image_id: int
    boxes: np.ndarray  # float32 [N, 4], clipped to the image
    classes: np.ndarray  # int64 [N]
    height: int | None = None
    width: int | None = None
    normalized: bool = False


class DetectionDataset(torch.utils.data.Dataset):
    """Base of the datasets: a list of :class:`ImageRecord` plus class names, an optional RAM cache and a report.

    Subclasses fill ``records``, ``class_names`` and ``report`` and then call :meth:`_finish`.
    """

    class_names: list[str]
    records: list[ImageRecord]
    report: DataReport

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_ids(self) -> list[int]:
        """Image ids in dataset order (give them to COCOeval's ``params.imgIds``: skipped images are not in it)."""
        return [r.image_id for r in self.records]

    def image_path(self, i: int) -> str:
        return self.records[i].path

    def num_targets(self, i: int) -> int:
        """Number of boxes of image ``i``, without decoding it."""
        return len(self.records[i].classes)

    def image_size(self, i: int) -> tuple[int, int]:
        """``(height, width)`` of image ``i`` (decodes it once when the annotations do not give it)."""
        record = self.records[i]
        if record.height is None or record.width is None:
            record.height, record.width = self._read(i).shape[:2]
        return record.height, record.width

    def known_image_size(self, i: int) -> tuple[int, int] | None:
        """``(height, width)`` of image ``i`` when known without decoding it (from the annotations, the RAM cache or
        an earlier decode), else None."""
        record = self.records[i]
        if record.height is not None and record.width is not None:
            return record.height, record.width
        if self._cache is not None:
            return self._cache[i].shape[:2]
        return None

    def image_id(self, i: int) -> int:
        return self.records[i].image_id

    def load_image(self, i: int) -> np.ndarray:
        """Image ``i``: BGR uint8 ``[H, W, 3]`` (the RAM cache's array when cached: do not modify it)."""
        return self._read(i)

    def load_targets(self, i: int) -> np.ndarray:
        """float32 ``[N, 5]`` = ``(x1, y1, x2, y2, class_index)`` in pixels of image ``i``."""
        return self._targets(self.records[i], *self.image_size(i))

    def boxes_xywhn(self) -> tuple[np.ndarray, np.ndarray]:
        """Every box of the dataset: ``(classes [N] int64, boxes [N, 4] float32)``, boxes as centre x, centre y,
        width, height in fractions of their image. Decodes only images of pixel boxes whose size is unknown."""
        classes, boxes = [], []
        for i, record in enumerate(self.records):
            xyxy = record.boxes
            if not record.normalized and len(xyxy):
                height, width = self.image_size(i)
                xyxy = xyxy / np.array([width, height, width, height], dtype=np.float32)
            boxes.append(np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1))
            classes.append(record.classes)
        return (np.concatenate(classes).astype(np.int64) if classes else np.zeros(0, np.int64),
                np.concatenate(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32))

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(img BGR uint8 [H, W, 3], targets float32 [N, 5] = (x1, y1, x2, y2, class_index) pixels, image_id)``."""
        record = self.records[i]
        img = self._read(i)
        return img, self._targets(record, img.shape[0], img.shape[1]), record.image_id

    __getitem__ = load

    # -- internals ------------------------------------------------------------------------------
    _cache: list[np.ndarray] | None = None
    _skip_bad_images = False

    def _set_bad_image_policy(self, bad_images: str) -> None:
        if bad_images not in ("error", "skip"):
            raise ValueError(f"bad_images must be 'error' or 'skip', got {bad_images!r}")
        self._skip_bad_images = bad_images == "skip"

    def _skipped_as_bad(self, path: Path, where: str) -> bool:
        """With ``bad_images="skip"``: read the file now; True (and counted) when it is empty or truncated."""
        if not self._skip_bad_images:
            return False
        with open(path, "rb") as f:
            problem = image_file_problem(f.read())
        if problem:
            self.report.add("image_bad", f"{where}: {path}: {problem}")
        return problem is not None

    def _finish(self, cache_images: bool) -> None:
        """Common end of construction: count, refuse an empty dataset, log the report, fill the cache."""
        if not self.records:
            raise ValueError(f"{self.report.source}: the dataset has no images\n{self.report}")
        self.report.num_images = len(self.records)
        self.report.num_boxes = sum(len(r.classes) for r in self.records)
        if self.report.num_boxes == 0:
            raise ValueError(f"{self.report.source}: none of the {len(self.records)} images has a box (no usable "
                             f"annotation): probably the wrong annotation file or label folder\n{self.report}")
        (logger.warning if self.report.has_problems else logger.info)("%s", self.report)
        if cache_images:
            self.cache_images()

    def cache_images(self, num_threads: int | None = None) -> None:
        """Decode every image into RAM now (cv2 releases the GIL, so threads help).

        Done in the main process, before DataLoader workers fork, so that the workers share the
        decoded arrays instead of each decoding (and holding) its own copy. Raises on the first
        corrupt image, naming it.
        """
        if self._cache is not None:
            return
        num_threads = num_threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(num_threads) as pool:
            self._cache = list(pool.map(self._decode, range(len(self.records))))

    def _read(self, i: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[i]
        return self._decode(i)

    def _decode(self, i: int) -> np.ndarray:
        record = self.records[i]
        img = read_image(record.path)
        if record.height is not None and img.shape[:2] != (record.height, record.width):
            # cv2 applies the EXIF orientation; annotations refer to the stored pixels. Re-read unrotated
            # when that explains the difference, otherwise the boxes cannot be trusted: raise.
            raw = cv2.imread(record.path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if raw is None or raw.shape[:2] != (record.height, record.width):
                raise ValueError(
                    f"{record.path}: image is {img.shape[1]}x{img.shape[0]} (w x h) but the annotations "
                    f"say {record.width}x{record.height}"
                )
            img = raw
        elif record.height is None:  # remembered: later mosaics can place this image without decoding it
            record.height, record.width = img.shape[:2]
        return img

    @staticmethod
    def _targets(record: ImageRecord, height: int, width: int) -> np.ndarray:
        targets = np.empty((len(record.classes), 5), dtype=np.float32)
        boxes = record.boxes
        if record.normalized:
            boxes = boxes * np.array([width, height, width, height], dtype=np.float32)
        targets[:, :4] = boxes
        targets[:, 4] = record.classes
        return targets

    def to_coco_dict(self) -> dict:
        """The dataset as a COCO instances dict: category ids ``0 .. C-1``, boxes as loaded.

        Decodes the images whose size is not known yet.
        """
        images, annotations = [], []
        for i, record in enumerate(self.records):
            height, width = self.image_size(i)
            images.append({"id": record.image_id, "file_name": record.path, "height": height, "width": width})
            for x1, y1, x2, y2, cls in self._targets(record, height, width).tolist():
                w, h = x2 - x1, y2 - y1
                annotations.append({"id": len(annotations) + 1, "image_id": record.image_id, "category_id": int(cls),
                                    "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
        categories = [{"id": c, "name": name} for c, name in enumerate(self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}


def _clip_box(x1: float, y1: float, x2: float, y2: float, width: float, height: float, report: DataReport, where: str):
    """Clip a box to ``[0, width] x [0, height]``; returns it, or None (reported) when it is empty."""
    if not x2 > x1 or not y2 > y1:
        report.add("box_zero_size", where)
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if not cx2 > cx1 or not cy2 > cy1:
        report.add("box_outside", where)
        return None
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        report.add("box_clipped", where)
    return cx1, cy1, cx2, cy2


def path_in_folder(folder: str | os.PathLike, file_name: str, where: str) -> Path:
    """``folder / file_name``, refused (``ValueError`` naming ``where``) when the name leads outside ``folder``.

    An annotation file from elsewhere names files by ``file_name``; ``../../x.jpg`` or an absolute path
    elsewhere would make the program read files the user never pointed it at. Checked on the names
    (``..`` resolved, links not followed): a folder of symlinks to images kept elsewhere still works.
    """
    if not isinstance(file_name, str) or not file_name:
        raise ValueError(f"{where}: file_name must be a non-empty string, got {file_name!r}")
    base = os.path.abspath(folder)
    full = os.path.normpath(os.path.join(base, file_name))
    if os.path.commonpath([base, full]) != base:
        raise ValueError(f"{where}: file_name {file_name!r} leads outside the image folder {folder}; refused "
                         "(file names must be relative to the image folder)")
    return Path(folder) / file_name


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class COCODetection(DetectionDataset):
    """A COCO instances json plus its image folder.

    Args:
        image_dir: folder the images' ``file_name`` are relative to.
        ann_file: the instances json (``images``, ``annotations``, ``categories``).
        cache_images: decode all images into RAM at construction.
        missing_images: ``"skip"`` (default: skip and report) or ``"error"``.
        bad_images: ``"error"`` (default: a truncated image raises naming the file when it is loaded) or
            ``"skip"`` (read every file now; skip and report the empty and truncated ones).

    Attributes:
        coco: the ``pycocotools.coco.COCO`` object of the json (all annotations, crowd included, for evaluation).
        category_ids: contiguous class index -> COCO category id; the ids sorted ascending, as the official loader does.
        class_names: category names in the same order.

    Images keep the json's order; an image's boxes keep their annotation order.
    """

    def __init__(self, image_dir, ann_file, cache_images: bool = False, missing_images: str = "skip",
                 bad_images: str = "error"):
        from pycocotools.coco import COCO

        if missing_images not in ("skip", "error"):
            raise ValueError(f"missing_images must be 'skip' or 'error', got {missing_images!r}")
        self._set_bad_image_policy(bad_images)
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {self.ann_file}")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        try:
            with open(self.ann_file) as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.ann_file}: not a valid JSON file ({e})") from e
        images_by_id, category_ids = _check_coco_json(data, self.ann_file)

        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.coco.createIndex()
        self.category_ids = sorted(category_ids)
        names = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]}
        self.class_names = [names[c] for c in self.category_ids]
        class_of = {c: k for k, c in enumerate(self.category_ids)}

        self.report = DataReport(str(self.ann_file))
        anns_by_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            anns_by_image.setdefault(ann["image_id"], []).append(ann)

        self.records = []
        for image in data["images"]:
            path = path_in_folder(self.image_dir, image["file_name"], f"{self.ann_file}: image id {image['id']}")
            if not path.is_file():
                if missing_images == "error":
                    raise FileNotFoundError(f"{self.ann_file}: image id {image['id']}: file not found: {path}")
                self.report.add("image_missing", f"image id {image['id']}: {path}")
                continue
            if self._skipped_as_bad(path, f"image id {image['id']}"):
                continue
            height, width = image.get("height"), image.get("width")
            if not (_is_number(height) and _is_number(width) and height > 0 and width > 0):
                height, width = read_image(path).shape[:2]  # size not in the json: take it from the file
            boxes, classes = [], []
            for ann in anns_by_image.get(image["id"], []):
                where = f"annotation id {ann['id']} ({image['file_name']}): bbox {ann['bbox']}"
                if ann.get("iscrowd", 0):
                    self.report.add("crowd_skipped", where)
                    continue
                x, y, w, h = ann["bbox"]
                box = _clip_box(x, y, x + w, y + h, width, height, self.report, where)
                if box is not None:
                    boxes.append(box)
                    classes.append(class_of[ann["category_id"]])
            if not boxes:
                self.report.add("image_no_boxes", f"image id {image['id']}: {image['file_name']}")
            self.records.append(ImageRecord(
                path=str(path), image_id=int(image["id"]), height=int(height), width=int(width),
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), classes=np.asarray(classes, dtype=np.int64),
            ))
        self._finish(cache_images)


def _check_coco_json(data, ann_file) -> tuple[dict, set]:
    """Structural checks of a COCO instances dict; raises ``ValueError`` naming the file and the entry."""
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file}: expected a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{ann_file}: missing or non-list '{key}'")
    if not data["images"]:
        raise ValueError(f"{ann_file}: the dataset has no images ('images' is empty)")
    if not data["categories"]:
        raise ValueError(f"{ann_file}: 'categories' is empty")
    category_ids: set = set()
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise ValueError(f"{ann_file}: category #{k} has no integer 'id': {cat!r}")
        if cat["id"] in category_ids:
            raise ValueError(f"{ann_file}: category id {cat['id']} appears twice")
        category_ids.add(cat["id"])
    images_by_id: dict = {}
    for k, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise ValueError(f"{ann_file}: image #{k} needs an 'id' and a 'file_name': {image!r}")
        if image["id"] in images_by_id:
            raise ValueError(f"{ann_file}: image id {image['id']} appears twice")
        images_by_id[image["id"]] = image
    ann_ids: set = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            raise ValueError(f"{ann_file}: annotation #{k} has no 'id': {ann!r}")
        name = f"{ann_file}: annotation id {ann['id']}"
        if ann["id"] in ann_ids:
            raise ValueError(f"{name} appears twice")
        ann_ids.add(ann["id"])
        if ann.get("image_id") not in images_by_id:
            raise ValueError(f"{name} refers to image id {ann.get('image_id')!r}, which is not in 'images'")
        if ann.get("category_id") not in category_ids:
            raise ValueError(
                f"{name} (image id {ann['image_id']}) has category_id {ann.get('category_id')!r}, "
                f"which is not among the categories (ids {sorted(category_ids)})"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise ValueError(
                f"{name} (image id {ann['image_id']}): bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}"
            )
    return images_by_id, category_ids


def _labels_dir_for(images_dir: Path) -> Path:
    """YOLO convention: the last path part named ``images`` becomes ``labels``; else labels sit beside the images."""
    parts = list(images_dir.parts)
    for k in range(len(parts) - 1, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            return Path(*parts)
    return images_dir


def _read_names_file(path: Path) -> list[str]:
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise ValueError(f"{path}: reading class names from YAML needs PyYAML (pip install pyyaml)") from e
        with open(path) as f:
            names = (yaml.safe_load(f) or {}).get("names")
        if isinstance(names, dict):  # ultralytics style {0: name, 1: name}
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list):
            raise ValueError(f"{path}: no 'names' list in this YAML file")
        return [str(n) for n in names]
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise ValueError(f"{path}: the class names file is empty")
    return names


class YOLODetection(DetectionDataset):
    """A YOLO-format folder: images plus one ``.txt`` per image with lines ``class cx cy w h`` (fractions of the image).

    Args:
        images_dir: folder searched recursively for images (``IMAGE_SUFFIXES``), taken in sorted path order.
        labels_dir: folder of the label files, mirroring ``images_dir``'s layout. Default: the last
            ``images`` part of the path replaced by ``labels`` (``ds/images/train`` -> ``ds/labels/train``),
            or ``images_dir`` itself when no part is named ``images``.
        image_files: instead of ``images_dir``: the image files themselves (an ultralytics split given as
            several folders or a ``.txt`` list; see :mod:`yolox_fast.data.dataset_spec`), taken in the order
            given; each one's labels are found by the same rule applied to its own folder.
        source: what to call the dataset in the report (default: the images folder).
        class_names: a list of names, or the path of a names file (one name per line, or a YAML file with
            ``names``). Default: the first of ``classes.txt``, ``obj.names``, ``data.yaml`` found in the labels
            folder, the images folder, their parents or the dataset root (the folder holding ``images/``);
            failing that, ``"0", "1", ...`` up to the largest class index found (with a warning).
        cache_images: decode all images into RAM at construction.
        bad_images: ``"error"`` (default: a truncated image raises naming the file when it is loaded) or
            ``"skip"`` (read every file now; skip and report the empty and truncated ones).

    An image without a label file is a background image (counted in ``report``). Image ids are the
    image's index. Malformed lines raise ``ValueError("path:line: ...")``.
    """

    def __init__(self, images_dir=None, labels_dir=None, class_names=None, cache_images: bool = False,
                 bad_images: str = "error", image_files=None, source: str | None = None):
        self._set_bad_image_policy(bad_images)
        if (images_dir is None) == (image_files is None):
            raise ValueError("give either images_dir or image_files")
        if image_files is not None and labels_dir is not None:
            raise ValueError("labels_dir goes with images_dir; with image_files each image's labels are found "
                             "from its own path")
        if image_files is not None:
            image_paths = [Path(p) for p in image_files]
            if not image_paths:
                raise ValueError(f"{source or 'image_files'}: the dataset has no images (the list is empty)")
            # Names files are looked for around the images' common folder and its labels folder.
            self.images_dir = Path(os.path.commonpath([p.parent for p in image_paths]))
            self.labels_dir = _labels_dir_for(self.images_dir)
            label_paths = [_labels_dir_for(p.parent) / p.with_suffix(".txt").name for p in image_paths]
        else:
            self.images_dir = Path(images_dir)
            if not self.images_dir.is_dir():
                raise FileNotFoundError(f"image folder not found: {self.images_dir}")
            self.labels_dir = Path(labels_dir) if labels_dir is not None else _labels_dir_for(self.images_dir)
            image_paths = sorted(p for p in self.images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not image_paths:
                raise ValueError(
                    f"{self.images_dir}: the dataset has no images (looked for {', '.join(IMAGE_SUFFIXES)})")
            label_paths = [self.labels_dir / p.relative_to(self.images_dir).with_suffix(".txt") for p in image_paths]
        self.report = DataReport(source or str(self.images_dir))

        names = self._resolve_names(class_names)
        self.records = []
        max_class = -1
        for index, (image_path, label_path) in enumerate(zip(image_paths, label_paths, strict=True)):
            if self._skipped_as_bad(image_path, f"image {index}"):
                continue
            if not label_path.is_file():
                self.report.add("label_file_missing", f"{image_path} (no {label_path})")
                boxes, classes = [], []
            else:
                boxes, classes = self._parse_label_file(label_path, names)
                if not boxes:
                    self.report.add("image_no_boxes", str(image_path))
            max_class = max([max_class, *classes])
            self.records.append(ImageRecord(
                path=str(image_path), image_id=index, normalized=True,
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), classes=np.asarray(classes, dtype=np.int64),
            ))
        if self.records and self.report["label_file_missing"] == len(self.records):
            hint = ("pass labels_dir=..." if image_files is None else
                    "each image's labels are its path with the last images/ folder replaced by labels/, as .txt")
            raise ValueError(f"no label files found for any of the {len(self.records)} images: looked in "
                             f"{self.labels_dir if image_files is None else label_paths[0].parent} ({hint})")
        if names is None:
            names = [str(k) for k in range(max_class + 1)] or ["0"]
            logger.warning("%s: no class names given or found; using %s", self.images_dir, names)
        self.class_names = names
        self._finish(cache_images)

    def _resolve_names(self, class_names) -> list[str] | None:
        if class_names is None:
            folders = [self.labels_dir, self.labels_dir.parent, self.images_dir, self.images_dir.parent]
            parts = self.images_dir.parts
            if "images" in parts:  # the dataset root: the folder holding images/ (and labels/)
                folders.append(Path(*parts[: len(parts) - 1 - parts[::-1].index("images")]))
            for folder in dict.fromkeys(folders):
                for candidate in ("classes.txt", "obj.names", "data.yaml"):
                    if (folder / candidate).is_file():
                        return _read_names_file(folder / candidate)
            return None
        if isinstance(class_names, (str, os.PathLike)):
            path = Path(class_names)
            if not path.is_file():
                raise FileNotFoundError(f"class names file not found: {path}")
            return _read_names_file(path)
        if isinstance(class_names, Sequence) and class_names and all(isinstance(n, str) for n in class_names):
            return list(class_names)
        raise ValueError(f"class_names must be a non-empty list of str or a path to a names file, got {class_names!r}")

    def _parse_label_file(self, path: Path, names: list[str] | None) -> tuple[list, list]:
        boxes, classes = [], []
        try:
            text = path.read_text()
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a text label file ({e})") from e
        for line_no, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{line_no}"
            if len(fields) != 5:
                raise ValueError(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}: {line.strip()!r}")
            try:
                values = [float(v) for v in fields]
            except ValueError:
                raise ValueError(f"{where}: values must be numbers: {line.strip()!r}") from None
            cls, cx, cy, w, h = values
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{where}: values must be finite: {line.strip()!r}")
            if cls != int(cls) or cls < 0 or (names is not None and cls >= len(names)):
                valid = f"0..{len(names) - 1}" if names is not None else "a non-negative integer"
                raise ValueError(f"{where}: class index {fields[0]} is not a valid class ({valid})")
            if max(cx, cy, w, h) > 2.0:
                # Pixel coordinates are the usual mistake; fractions stay near 0..1 even when a box overflows.
                raise ValueError(f"{where}: cx cy w h must be fractions of the image size (0-1), got {line.strip()!r}")
            box = _clip_box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 1.0, 1.0, self.report,
                            f"{where}: {line.strip()}")
            if box is not None:
                boxes.append(box)
                classes.append(int(cls))
        return boxes, classes

    @property
    def coco(self):
        """A ``pycocotools`` COCO object of this dataset (category ids = class indices), built on first use."""
        if getattr(self, "_coco", None) is None:
            from pycocotools.coco import COCO

            self._coco = COCO()
            self._coco.dataset = self.to_coco_dict()
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco.createIndex()
        return self._coco

    @property
    def category_ids(self) -> list[int]:
        """Contiguous class index -> category id of :attr:`coco` (the identity)."""
        return list(range(len(self.class_names)))
