"""Where a YOLO-format dataset's splits are: an ultralytics ``data.yaml`` or a YOLO folder.

A ``data.yaml`` (read with ``yaml.safe_load``), as ultralytics writes and reads it::

    path: ../datasets/coco128   # dataset root; relative to the yaml's folder (default: that folder)
    train: images/train2017     # a folder, a list of folders, or a .txt list of image paths
    val: images/val2017
    test:                       # optional
    names: {0: person, 1: bicycle}   # or a list [person, bicycle]

Each image's label file is found by replacing the last ``images`` folder of its path with ``labels``
and its extension with ``.txt`` (``ds/images/train/a.jpg`` -> ``ds/labels/train/a.txt``). Lines of a
``.txt`` list are image paths, relative ones taken from the list's folder.

A YOLO folder (``--yolo-dir``) holds ``images/<split>`` + ``labels/<split>`` (or ``<split>/images`` +
``<split>/labels``), or flat ``images/`` + ``labels/``, which is a training split only.

:func:`read_data_yaml` and :func:`yolo_folder_spec` give a :class:`DatasetSpec`; its :meth:`~DatasetSpec.dataset`
builds the :class:`~yolox_fast.data.datasets.YOLODetection` of a split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import YOLODetection
from .preprocess import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")

#: Split folders of a YOLO folder, first found wins.
YOLO_SPLIT_DIRS = {
    "train": ("images/train", "train/images"),
    "val": ("images/val", "val/images", "valid/images"),
    "test": ("images/test", "test/images"),
}


@dataclass
class DatasetSpec:
    """A dataset's splits as their sources, and its class names.

    Attributes:
        source: the ``data.yaml`` or the folder this came from (named in messages).
        root: the dataset root the split sources are relative to.
        splits: split name -> absolute sources (folders of images or ``.txt`` lists of image paths).
        names: class names, or None (then :class:`YOLODetection` looks for a names file).
    """

    source: str
    root: Path
    splits: dict[str, list[Path]] = field(default_factory=dict)
    names: list[str] | None = None

    def has_split(self, split: str) -> bool:
        return bool(self.splits.get(split))

    def image_files(self, split: str) -> list[Path]:
        """The image files of ``split``: sorted, each once. Raises naming the source that is missing or empty."""
        if not self.has_split(split):
            have = ", ".join(s for s in SPLITS if self.has_split(s)) or "none"
            raise ValueError(f"{self.source}: no '{split}' split (splits given: {have})")
        files: list[Path] = []
        for source in self.splits[split]:
            if source.is_dir():
                found = [p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
                if not found:
                    raise ValueError(f"{self.source}: {split}: {source} holds no images "
                                     f"(looked for {', '.join(IMAGE_SUFFIXES)})")
                files += found
            elif source.is_file() and source.suffix == ".txt":
                files += _read_image_list(source)
            elif source.is_file():
                raise ValueError(f"{self.source}: {split}: {source} is neither a folder nor a .txt list of images")
            else:
                raise FileNotFoundError(f"{self.source}: {split}: {source} not found")
        return sorted(dict.fromkeys(p.resolve() for p in files))

    def dataset(self, split: str, class_names: Sequence[str] | str | None = None, **kwargs) -> YOLODetection:
        """The :class:`YOLODetection` of ``split``; ``class_names`` only when the spec has none.

        ``kwargs``: ``cache_images``, ``bad_images`` (see :class:`YOLODetection`).
        """
        names = self.names if self.names is not None else class_names
        sources = self.splits.get(split) or []
        if len(sources) == 1 and sources[0].is_dir():  # one folder: labels mirror it (as --yolo-dir always did)
            return YOLODetection(sources[0], class_names=names, **kwargs)
        return YOLODetection(image_files=self.image_files(split), class_names=names,
                             source=f"{self.source} ({split})", **kwargs)


def _read_image_list(path: Path) -> list[Path]:
    """Image paths listed in a .txt file, one per line; relative lines are relative to the file's folder."""
    files = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        image = Path(line)
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise FileNotFoundError(f"{path}:{line_no}: image not found: {image}")
        files.append(image)
    if not files:
        raise ValueError(f"{path}: the image list is empty")
    return files


def _names_from_yaml(data: dict, where: str) -> list[str]:
    names, count = data.get("names"), data.get("nc")
    if names is None:
        if isinstance(count, int) and count > 0:  # ultralytics' fallback when only the count is given
            return [f"class_{k}" for k in range(count)]
        raise ValueError(f"{where}: no 'names' (a list of class names or a {{index: name}} map)")
    if isinstance(names, dict):
        if not all(isinstance(k, int) for k in names):
            raise ValueError(f"{where}: 'names' keys must be class indices 0, 1, ..., got {list(names)[:5]}")
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{where}: 'names' must map every index 0..{len(names) - 1} once, "
                             f"got indices {sorted(names)[:10]}")
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}: 'names' must be a non-empty list or {{index: name}} map, got {names!r:.80}")
    if count is not None and count != len(names):
        raise ValueError(f"{where}: nc is {count} but 'names' has {len(names)} classes")
    return [str(n) for n in names]


def read_data_yaml(path: str | os.PathLike) -> DatasetSpec:
    """The :class:`DatasetSpec` of an ultralytics ``data.yaml`` (see the module docstring).

    Raises:
        FileNotFoundError: the file, or its dataset root, does not exist.
        ValueError: not a YAML mapping, no ``train`` and no ``val``, bad ``names``.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid YAML file ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with path, train, val and names")
    where = str(path)
    root = Path(os.path.expanduser(str(data.get("path") or ".")))
    if not root.is_absolute():
        beside = path.parent / root
        root = beside if beside.exists() or not root.exists() else root  # the yaml's folder first, then the cwd
    root = root.resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{where}: dataset root (path) not found: {root}")
    splits = {}
    for split in SPLITS:
        value = data.get(split)
        if value in (None, "", []):
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise ValueError(f"{where}: '{split}' must be a path or a list of paths, got {value!r:.80}")
        splits[split] = [(root / os.path.expanduser(v)).resolve() for v in items]
    if "train" not in splits and "val" not in splits:
        raise ValueError(f"{where}: neither 'train' nor 'val' is given")
    return DatasetSpec(source=where, root=root, splits=splits, names=_names_from_yaml(data, where))


def yolo_folder_spec(root: str | os.PathLike) -> DatasetSpec:
    """The :class:`DatasetSpec` of a YOLO folder: ``images/<split>`` or ``<split>/images`` per split, or a flat
    ``images/`` (+ ``labels/``) as the training split. Class names are left to :class:`YOLODetection`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"YOLO dataset folder not found: {root}")
    splits = {}
    for split, candidates in YOLO_SPLIT_DIRS.items():
        found = next((root / c for c in candidates if (root / c).is_dir()), None)
        if found is not None:
            splits[split] = [found.resolve()]
    flat = root / "images"
    if "train" not in splits and flat.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in flat.iterdir()):
        splits["train"] = [flat.resolve()]
    if "train" not in splits:
        layouts = [c for cs in (YOLO_SPLIT_DIRS["train"], ("images",)) for c in cs]
        raise FileNotFoundError(f"{root}: no training images; expected one of {', '.join(layouts)} "
                                f"(labels in the matching labels/ folder), or give a data.yaml with --data")
    return DatasetSpec(source=str(root), root=root.resolve(), splits=splits)
