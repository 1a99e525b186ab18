"""Running a model: the one path from letterboxed images to detections, shared by prediction
(:class:`yolox_fast.inference.detector.Detector`) and evaluation (:class:`yolox_fast.evaluation.COCOEvaluator`).

A runner wraps one backend. Its interface is small on purpose, so that a new backend is one class:

* ``runner.forward(batch) -> outputs``: the network on ``batch [B, 3, h, w]`` float32 (a CPU tensor from
  :func:`letterbox_batch`); ``outputs`` is whatever the backend's postprocess takes;
* ``runner.postprocess(outputs, settings) -> PaddedResult``: score filter, class filter, NMS and the
  detection limit of :class:`DetectSettings`, boxes in network-input pixels (numpy, fixed size);
* ``runner(batch, settings)`` does both; ``class_names``, ``num_classes``, ``img_size`` ``(h, w)`` (or None
  when any size goes) and ``describe()`` tell what the model is.

:class:`TorchRunner` runs an ``nn.Module`` (a loaded checkpoint, or the model being trained);
:class:`OnnxRunner` an exported model in ONNX Runtime. Both postprocess through
:func:`yolox_fast.ops.postprocess_padded` (a graph with NMS inside does its own), so the same image gives
the same detections whichever command asks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from ..data.preprocess import preprocess
from ..deploy.onnx_runtime import OnnxModel, PaddedResult, padded_from_torch
from ..models.layout import inference_memory_format
from ..ops.postprocess import PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET


@dataclasses.dataclass(frozen=True)
class DetectSettings:
    """What a postprocess keeps.

    Attributes:
        conf: keep ``obj * cls_conf >= conf``.
        nms: NMS IoU threshold (suppress above it).
        class_agnostic: one NMS over all classes instead of one per class.
        max_det: detections per image at most (None: no limit, as the COCO evaluation).
        classes: keep only these class indices (None: all). Applied before NMS: a box whose best class is
            left out is no candidate, so it can suppress nothing.
    """

    conf: float = PREDICT_CONF
    nms: float = PREDICT_IOU
    class_agnostic: bool = False
    max_det: int | None = PREDICT_MAX_DET
    classes: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.max_det is not None and int(self.max_det) < 1:
            raise ValueError(f"max_det must be >= 1 (or None for no limit), got {self.max_det}")
        if self.classes is not None:
            classes = self.classes
            classes = (classes,) if isinstance(classes, (int, np.integer)) else tuple(classes)
            if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes):
                raise ValueError(f"classes must be class indices (ints), got {list(classes)!r}")
            if any(c < 0 for c in classes):
                raise ValueError(f"classes must be class indices >= 0, got {sorted(int(c) for c in classes)}")
            object.__setattr__(self, "classes", tuple(sorted({int(c) for c in classes})))
        object.__setattr__(self, "conf", float(self.conf))
        object.__setattr__(self, "nms", float(self.nms))
        object.__setattr__(self, "class_agnostic", bool(self.class_agnostic))
        if self.max_det is not None:
            object.__setattr__(self, "max_det", int(self.max_det))

    def updated(self, **changes) -> DetectSettings:
        """A copy with the given fields changed; a field given as None keeps its value."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check_classes(self, num_classes: int) -> None:
        """``ValueError`` when ``classes`` names an index the model does not have."""
        if self.classes is not None and self.classes[-1] >= num_classes:
            raise ValueError(f"classes {list(self.classes)}: the model has {num_classes} classes (0-{num_classes - 1})")


def letterbox_batch(images: Sequence[np.ndarray], img_size: tuple[int, int]) -> tuple[torch.Tensor, list[float]]:
    """BGR uint8 images ``[H, W, 3]`` (any sizes) -> ``([B, 3, h, w]`` float32, resize ratio of each image).

    A box in network pixels maps back to its image as ``box / ratio``.
    """
    tensors, ratios = [], []
    for img in images:
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image [H, W, 3], got "
                             f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}")
        tensor, r = preprocess(img, img_size)
        tensors.append(tensor)
        ratios.append(r)
    return torch.stack(tensors), ratios


def drop_other_classes(prediction: torch.Tensor, num_classes: int, classes: Sequence[int]) -> torch.Tensor:
    """``prediction [B, A, 5 + C]`` (decoded) with the objectness of every anchor whose best class is not in
    ``classes`` set to NaN (a copy): the postprocess drops NaN scores, so those anchors are no candidates
    and suppress nothing. The best class is the postprocess's (first index among equal maxima)."""
    best = prediction[..., 5 : 5 + num_classes].argmax(-1)
    wanted = torch.zeros(num_classes, dtype=torch.bool, device=prediction.device)
    wanted[list(classes)] = True
    out = prediction.clone()
    out[..., 4] = torch.where(wanted[best], out[..., 4], torch.full_like(out[..., 4], float("nan")))
    return out


def postprocess_predictions(prediction: torch.Tensor, num_classes: int, settings: DetectSettings) -> PaddedResult:
    """Decoded predictions ``[B, A, 5 + C]`` -> :class:`PaddedResult` (the postprocess every runner shares)."""
    from ..ops import postprocess_padded

    prediction = prediction.float()
    if prediction.dim() != 3 or prediction.shape[-1] - 5 != num_classes:
        raise ValueError(f"the model output {tuple(prediction.shape)} does not hold [B, A, 5 + {num_classes}] "
                         "predictions")
    if settings.classes is not None:
        settings.check_classes(num_classes)
        prediction = drop_other_classes(prediction, num_classes, settings.classes)
    dets, counts = postprocess_padded(prediction, num_classes, settings.conf, settings.nms, settings.class_agnostic,
                                      max_det=settings.max_det)
    return padded_from_torch(dets, counts)


def keep_rows_of_classes(found: PaddedResult, classes: Sequence[int]) -> PaddedResult:
    """``found`` with only the rows of ``classes``, compacted (order kept; zeros after each image's count)."""
    boxes, scores, labels = np.zeros_like(found.boxes), np.zeros_like(found.scores), np.zeros_like(found.labels)
    counts = np.zeros_like(found.counts)
    for b in range(found.counts.shape[0]):
        n = int(found.counts[b])
        keep = np.isin(found.labels[b, :n], list(classes))
        k = int(keep.sum())
        boxes[b, :k], scores[b, :k], labels[b, :k], counts[b] = (found.boxes[b, :n][keep], found.scores[b, :n][keep],
                                                                 found.labels[b, :n][keep], k)
    return PaddedResult(boxes, scores, labels, counts)


class Runner:
    """The runner interface (module docstring); subclasses give ``forward`` and ``postprocess``."""

    class_names: list[str]
    num_classes: int
    img_size: tuple[int, int] | None

    def forward(self, batch: torch.Tensor):
        raise NotImplementedError

    def postprocess(self, outputs, settings: DetectSettings) -> PaddedResult:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __call__(self, batch: torch.Tensor, settings: DetectSettings) -> PaddedResult:
        return self.postprocess(self.forward(batch), settings)


class TorchRunner(Runner):
    """A YOLOX ``nn.Module`` (eval output ``[B, A, 5 + C]``), run where its parameters are (or on ``device``,
    which the caller moved it to) in their dtype, under ``torch.no_grad`` (not ``inference_mode``: the model
    may be the one being trained, and a tensor it caches in inference mode, e.g. the head's anchor grid, would
    break its next backward); the model's train/eval
    mode is the caller's business (:func:`yolox_fast.evaluation.coco` restores it, :class:`Detector`'s model is
    always in eval mode).

    Args:
        model: the network.
        class_names: a name per class (default ``"0"``, ``"1"`` ...; the count is ``model.num_classes``).
        img_size: the input size the model is meant for, ``(h, w)``, or None.
        device: where the batches go (default: the model's parameters' device).
        description: what :meth:`describe` says (default: the class name).
    """

    def __init__(self, model: torch.nn.Module, class_names: Sequence[str] | None = None,
                 img_size: tuple[int, int] | None = None, device: torch.device | str | None = None,
                 description: str | None = None):
        self.model = model
        param = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (
            param.device if param is not None else torch.device("cpu"))
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        num_classes = model_num_classes(model)
        if class_names is None:
            if num_classes is None:
                raise ValueError("the model declares no num_classes: give class_names")
            class_names = [str(i) for i in range(num_classes)]
        self.class_names = [str(n) for n in class_names]
        self.num_classes = len(self.class_names) if num_classes is None else num_classes
        self.img_size = None if img_size is None else tuple(img_size)
        self.memory_format = inference_memory_format(self.device)
        self.description = description or type(model).__name__

    def describe(self) -> str:
        return f"{self.description} on {self.device}"

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(batch.to(device=self.device, dtype=self.dtype, non_blocking=True,
                                       memory_format=self.memory_format))

    def postprocess(self, outputs: torch.Tensor, settings: DetectSettings) -> PaddedResult:
        with torch.no_grad():
            return postprocess_predictions(outputs, self.num_classes, settings)


class OnnxRunner(Runner):
    """A model exported by :mod:`yolox_fast.export`, in ONNX Runtime
    (:class:`yolox_fast.deploy.onnx_runtime.OnnxModel`).

    A prediction graph (``--nms none``) is postprocessed as :class:`TorchRunner` does. A graph with NMS
    inside brings its IoU threshold, NMS mode and detection limit (asking for others raises
    ``ValueError``; a higher ``conf`` filters exactly); ``classes`` then filter its output, which is exact
    for class-aware NMS (a class never suppresses another), apart from the graph's ``max_det`` counting
    every class, and refused for class-agnostic NMS.
    """

    def __init__(self, model: OnnxModel):
        self.model = model
        self.class_names = list(model.class_names)
        self.num_classes = model.num_classes
        self.img_size = tuple(model.img_size)

    def describe(self) -> str:
        return self.model.describe()

    def forward(self, batch: torch.Tensor) -> list[np.ndarray]:
        return self.model.run(batch.numpy() if isinstance(batch, torch.Tensor) else batch)

    def postprocess(self, outputs: list[np.ndarray], settings: DetectSettings) -> PaddedResult:
        if not self.model.has_nms:
            return postprocess_predictions(self.model.decoded(outputs, self.img_size), self.num_classes, settings)
        if settings.classes is not None:
            settings.check_classes(self.num_classes)
            if self.model.meta["class_agnostic"]:
                raise ValueError(f"{self.model.path} has class-agnostic NMS in its graph: a class filter there "
                                 "would let left-out classes suppress kept ones; export with class-aware NMS "
                                 "or --nms none")
        found = self.model.padded_from_nms_outputs(outputs, settings.conf, settings.nms, settings.class_agnostic,
                                                   settings.max_det)
        return found if settings.classes is None else keep_rows_of_classes(found, settings.classes)


def model_num_classes(model: torch.nn.Module) -> int | None:
    """The class count a YOLOX-like model declares (``model.num_classes`` or ``model.head.num_classes``)."""
    for owner in (model, getattr(model, "head", None)):
        n = getattr(owner, "num_classes", None)
        if isinstance(n, int):
            return n
    return None


def make_runner(model, device: torch.device | str | None = None) -> Runner:
    """A runner for an ``nn.Module``, an :class:`OnnxModel` or a runner (returned as is)."""
    if isinstance(model, Runner):
        return model
    if isinstance(model, OnnxModel):
        return OnnxRunner(model)
    if isinstance(model, torch.nn.Module):
        return TorchRunner(model, device=device)
    raise TypeError(f"cannot run a {type(model).__name__}: give an nn.Module, an OnnxModel or a runner")
