"""Training-time dataset: the official YOLOX augmentation pipeline around a :class:`DetectionDataset`.

Per item, as the official ``MosaicDetection`` + ``TrainTransform``:

1. with probability ``mosaic_prob`` (while mosaic is on): a mosaic of the item and 3 random images on a
   ``2 x input_size`` canvas, then ``random_affine`` (degrees, translate, ``mosaic_scale``, shear) to
   ``input_size``; then, with probability ``mixup_prob`` and if the mosaic has boxes, mixup with a random
   image that has boxes;
   otherwise: the item resized to fit ``input_size``;
2. ``TrainTransform``: HSV jitter (``hsv_prob``), horizontal flip (``flip_prob``), letterbox with 114,
   boxes to ``(class, cx, cy, w, h)``, boxes with a side of ``min_box_size`` pixels or less dropped, padded
   to ``max_labels`` rows.

Randomness and reproducibility: item ``i`` of epoch ``e`` draws everything from its own generator,
``numpy.random.default_rng([seed, e, i])``. The result therefore depends only on ``(seed, epoch, index,
input_size, mosaic on/off)``: not on worker count, worker assignment, prefetching or process. Call
:meth:`TrainAugmentDataset.set_epoch` at the start of each epoch (as with ``DistributedSampler``).
With ``seed=None`` every call draws fresh OS entropy (not reproducible).

Every item's labels are checked here, on the CPU in the loader workers (:func:`check_labels`: class ids
in range, finite boxes), so that the training step's label assigner needs no value checks (on a GPU
each would cost a host sync per step).

The mutable state (epoch, mosaic on/off, input size) lives in a small shared-memory tensor, so that
``set_epoch``, ``close_mosaic`` and ``input_size = ...`` also reach DataLoader workers started earlier
(``persistent_workers=True``); the other attributes (probabilities, ranges) are copied into the workers
when they start. Items already prefetched keep the old values, so change the input size
only between epochs, or do multiscale the current official way: keep the dataset at the base size
and resize each batch (``F.interpolate`` of the images, labels scaled) in the training loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import transforms as T
from .datasets import DetectionDataset


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class TrainAugmentDataset(torch.utils.data.Dataset):
    """The official YOLOX training augmentations over ``dataset``; defaults are the official ones (``yolox_base``).

    Args:
        dataset: a :class:`DetectionDataset` (or anything with ``load(i)``, ``__len__`` and ``num_targets(i)``; with
            a DetectionDataset, mosaic tiles that the warp does not show are not decoded).
        input_size: ``(height, width)`` or an int; settable later (``ds.input_size = (h, w)``).
        mosaic: start with mosaic on (:meth:`close_mosaic` turns it off for the last epochs).
        mosaic_prob, mixup_prob, hsv_prob, flip_prob: probabilities of each augmentation
            (``mixup_prob=0`` for nano and tiny, as the official recipe).
        degrees, translate, shear: random affine ranges, a number ``v`` meaning ``±v``.
        mosaic_scale, mixup_scale: ``(low, high)`` scale ranges.
        max_labels: rows of the padded label tensor; boxes beyond it are dropped (official: 120).
        seed: base of the per-item generators (see the module docstring); ``None`` = not reproducible.
        min_box_size: boxes whose shorter side is not above this many input pixels are dropped (official: 1).
        min_area_ratio: also drop boxes of which less than this fraction survives the affine crop or mixup
            (0 = off, as the official code; the older official ``box_candidates`` used 0.2).

    ``ds[i] -> (img uint8 [3, H, W] BGR (a view of an HWC array), labels float32 [max_labels, 5] =
    (class, cx, cy, w, h) in input pixels with all-zero padding rows, image_id int)``. A mosaic item reports the
    image id of ``dataset[i]``, its first tile.
    """

    def __init__(self, dataset: DetectionDataset, input_size=(640, 640), mosaic: bool = True, mosaic_prob: float = 1.0,
                 mixup_prob: float = 1.0, hsv_prob: float = 1.0, flip_prob: float = 0.5, degrees: float = 10.0,
                 translate: float = 0.1, mosaic_scale=(0.1, 2.0), mixup_scale=(0.5, 1.5), shear: float = 2.0,
                 max_labels: int = 120, seed: int | None = None, min_box_size: float = 1.0,
                 min_area_ratio: float = 0.0):
        if len(dataset) == 0:
            raise ValueError("TrainAugmentDataset: the dataset is empty")
        for name, p in (("mosaic_prob", mosaic_prob), ("mixup_prob", mixup_prob), ("hsv_prob", hsv_prob),
                        ("flip_prob", flip_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        for name, (low, high) in (("mosaic_scale", mosaic_scale), ("mixup_scale", mixup_scale)):
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        if max_labels < 1:
            raise ValueError(f"max_labels must be >= 1, got {max_labels}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative int or None, got {seed}")
        self.dataset = dataset
        self.mosaic_prob, self.mixup_prob = mosaic_prob, mixup_prob
        self.hsv_prob, self.flip_prob = hsv_prob, flip_prob
        self.degrees, self.translate, self.shear = degrees, translate, shear
        self.mosaic_scale, self.mixup_scale = tuple(mosaic_scale), tuple(mixup_scale)
        self.max_labels = max_labels
        self.seed = seed
        self.min_box_size, self.min_area_ratio = min_box_size, min_area_ratio
        # Mixup partners are drawn uniformly among images with boxes (the official code redraws until it
        # finds one, which is the same distribution, but never ends on a dataset without boxes).
        self._with_boxes = np.array([i for i in range(len(dataset)) if dataset.num_targets(i) > 0], dtype=np.int64)
        h, w = _pair(input_size)
        # epoch, mosaic on, input height, input width: shared with DataLoader workers (see module docstring).
        self._state = torch.tensor([0, int(mosaic), h, w], dtype=torch.int64).share_memory_()

    # -- state ----------------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        return int(self._state[2]), int(self._state[3])

    @input_size.setter
    def input_size(self, size) -> None:
        h, w = _pair(size)
        if h <= 0 or w <= 0:
            raise ValueError(f"input_size must be positive, got {size}")
        self._state[2], self._state[3] = h, w

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (call it before each epoch's iteration starts)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._state[0] = epoch

    def close_mosaic(self) -> None:
        """The official last-epochs switch: no mosaic and therefore no mixup; HSV and flip stay."""
        self._state[1] = 0

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    def __len__(self) -> int:
        return len(self.dataset)

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator of item ``index`` in ``epoch`` (default: the current one); fresh entropy without a seed."""
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])

    # -- items ----------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        index = int(index)
        epoch, mosaic_on, h, w = self._state.tolist()
        size = (h, w)
        rng = self.rng(index, epoch)
        if mosaic_on and rng.random() < self.mosaic_prob:
            img, targets, image_id = self._mosaic(index, rng, size)
            if len(targets) and len(self._with_boxes) and rng.random() < self.mixup_prob:
                other = int(self._with_boxes[rng.integers(len(self._with_boxes))])
                other_img, other_targets, _ = self.dataset.load(other)
                img, targets = T.mixup(img, targets, other_img, other_targets, rng, self.mixup_scale,
                                       self.min_area_ratio, out=img)  # img is the mosaic's work array
        else:
            img, targets, image_id = self.dataset.load(index)
            img, targets = T.resize_to_fit(img, targets, size)
        canvas, labels = T.train_transform(img, targets, rng, size, self.hsv_prob, self.flip_prob, self.max_labels,
                                           self.min_box_size)
        check_labels(labels, self.dataset.num_classes, f"item {index} (image id {image_id})")
        # uint8, and a view of the HWC canvas (no copy): 4x less to move than float32; the trainer converts
        # on its device. The strides are those of channels_last; collate() makes the batch either layout.
        image = torch.from_numpy(np.ascontiguousarray(canvas)).permute(2, 0, 1)
        return image, torch.from_numpy(labels), int(image_id)

    def _mosaic(self, index: int, rng: np.random.Generator, size: tuple[int, int]):
        indices = [index, *rng.integers(0, len(self.dataset), 3).tolist()]
        tiles, image_ids = zip(*(self._tile(k) for k in indices), strict=True)
        # The warped mosaic goes to a work array: train_transform always writes the item to a new one.
        img, targets = T.mosaic_affine(tiles, rng, size, self.degrees, self.translate, self.mosaic_scale, self.shear,
                                       self.min_area_ratio, out=T.scratch("mosaic warp", (*size, 3)))
        return img, targets, image_ids[0]

    def _tile(self, k: int) -> tuple[T.MosaicTile, int]:
        """Mosaic tile ``k`` and its image id. Its image is decoded only if the mosaic shows it, when the dataset
        can tell the image's size without decoding it (:class:`DetectionDataset`); otherwise it is decoded now."""
        dataset = self.dataset
        size = dataset.known_image_size(k) if isinstance(dataset, DetectionDataset) else None
        if size is None:
            img, targets, image_id = dataset.load(k)
            return (img.shape[0], img.shape[1], targets, lambda: img), image_id
        return (size[0], size[1], dataset.load_targets(k), lambda: dataset.load_image(k)), dataset.image_id(k)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` when training labels cannot be assigned.

    ``labels``: ``[N, 5]`` = ``(class, cx, cy, w, h)`` with all-zero padding rows. Real rows need an
    integer class id in ``[0, num_classes)`` and finite box values (what the label assigner relies on).
    """
    real = labels.any(axis=1)
    finite = np.isfinite(labels).all(axis=1)
    cls = labels[:, 0]
    bad = np.flatnonzero(real & ~finite)
    if bad.size:
        raise ValueError(f"{where}: label row {int(bad[0])} is not finite: {labels[bad[0]].tolist()}")
    bad = np.flatnonzero(real & ((cls < 0) | (cls >= num_classes) | (cls != np.round(cls))))
    if bad.size:
        raise ValueError(f"{where}: label row {int(bad[0])} has class id {cls[bad[0]]:g}, "
                         f"outside [0, {num_classes})")


def collate(batch, channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Stack ``TrainAugmentDataset`` items: ``(images [B, 3, H, W], labels [B, max_labels, 5], image_ids)``.

    ``images`` keep the items' dtype (uint8 from :class:`TrainAugmentDataset`) and are laid out in
    ``channels_last`` memory (NHWC; for uint8 items one plain copy each) or, with ``channels_last=False``,
    contiguous NCHW (a transposing copy). In a DataLoader worker the batch is made in shared memory, as
    ``default_collate`` does: otherwise sending it to the main process copies it once more.
    """
    images, labels, image_ids = zip(*batch, strict=True)
    first = images[0]
    if channels_last and first.dim() == 3:
        # Copy as [H, W, C] arrays with NumPy: a plain memcpy per item. (torch's copy_ of the [C, H, W] views
        # took 11-16 ms per 640x640 item here against 0.6 ms: strided iteration, and two OpenMP threads
        # fighting for a busy core.)
        shape = (len(images), *first.shape[1:], first.shape[0])
        if torch.utils.data.get_worker_info() is not None:
            storage = first._typed_storage()._new_shared(math.prod(shape), device=first.device)
            out = first.new(storage).resize_(shape)
        else:
            out = torch.empty(shape, dtype=first.dtype)
        slots = out.numpy()
        for k, image in enumerate(images):
            slots[k] = image.permute(1, 2, 0).numpy()
        out = out.permute(0, 3, 1, 2)
    else:
        out = torch.stack(images)
    return out, torch.stack(labels), [int(i) for i in image_ids]
