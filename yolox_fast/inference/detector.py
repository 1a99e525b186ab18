"""``Detector``: run a YOLOX checkpoint (PyTorch) or an exported ONNX model (ONNX Runtime) on images.

    from yolox_fast import Detector
    det = Detector("yolox_nano.pth", conf=0.3)            # or Detector("yolox_nano.onnx")
    result = det("dog.jpg")                              # -> Detections (boxes in original pixels)
    result.xyxy, result.scores, result.class_ids, result.names
    cv2.imwrite("out.jpg", result.plot())
    for r in det("video.mp4"): ...                       # videos and cameras stream frame by frame

Both backends share the preprocessing (:func:`yolox_fast.data.preprocess`) and give the same
detections (:mod:`yolox_fast.deploy.onnx_runtime` for the ONNX side).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..data.preprocess import preprocess
from .sources import Frame, Source, read_ahead, read_frames, resolve_sources
from .results import Detections
from ..deploy.onnx_runtime import PaddedResult, padded_from_torch
from ..deploy.openvino_model import is_openvino_path, open_exported
from ..ops.anchors import check_input_size
from ..ops.postprocess import PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET



def resolve_device(device: str | None) -> str:
    """``device`` checked (``ValueError`` for CUDA without a GPU); default: cuda when available."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: CUDA is not available here (no GPU or a CPU-only torch); use cpu")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return device


class _TorchBackend:
    """A YOLOX nn.Module + :func:`yolox_fast.ops.postprocess_padded`."""

    def __init__(self, weights, model_name, img_size, device, prefer_ema=True):
        from ..models.checkpoint import load_model
        from ..models.layout import inference_memory_format

        self.model, self.info = load_model(weights, model_name=model_name, prefer_ema=prefer_ema)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.class_names = list(self.info.class_names)
        self.num_classes = self.info.num_classes
        size = img_size or self.info.input_size  # the size the checkpoint was trained at, else the preset's
        self.img_size = (size, size) if isinstance(size, int) else tuple(size)
        self.memory_format = inference_memory_format(self.device)

    def describe(self) -> str:
        return f"{self.info.describe()} on {self.device}"

    def detect(self, batch: torch.Tensor, conf, nms, class_agnostic, max_det) -> PaddedResult:
        from ..ops import postprocess_padded

        with torch.inference_mode():
            pred = self.model(batch.to(self.device, memory_format=self.memory_format))
            dets, counts = postprocess_padded(pred, self.num_classes, conf, nms, bool(class_agnostic), max_det=max_det)
        return padded_from_torch(dets, counts)


class _OnnxBackend:
    """An exported model, ONNX or OpenVINO IR (:func:`yolox_fast.deploy.openvino_model.open_exported`)."""

    def __init__(self, path, img_size, device, threads=None):
        self.model = open_exported(path, device=device, threads=threads)
        self.class_names = self.model.class_names
        self.num_classes = self.model.num_classes
        self.img_size = tuple(self.model.img_size)
        asked = None if img_size is None else tuple((img_size, img_size) if isinstance(img_size, int) else img_size)
        if asked is not None and self.model.dynamic_size:  # one export for every size
            self.img_size = asked
        elif asked is not None and asked != self.img_size:
            raise ValueError(f"{path} was exported for {self.img_size[0]}x{self.img_size[1]} input, not {img_size}; "
                             "leave the size out or export again")

    def describe(self) -> str:
        return self.model.describe()

    def detect(self, batch: torch.Tensor, conf, nms, class_agnostic, max_det) -> PaddedResult:
        return self.model.detect(batch.numpy(), conf, nms, class_agnostic, max_det)


class Detector:
    """A YOLOX detector for images, folders, videos and cameras.

    Args:
        weights: a checkpoint (official or yolox_fast; PyTorch), an ``.onnx`` file from
            :mod:`yolox_fast.export` (ONNX Runtime) or an OpenVINO IR folder (or its ``model.xml``) from
            ``export --format openvino``.
        model: preset name (default: the checkpoint's; ignored for ONNX, which records it).
        img_size: network input size, a multiple of 32 (default: the size the checkpoint was trained at, else
            the model's; the exported file's, or any for an export with ``--dynamic``).
        conf: score threshold (default ``PREDICT_CONF`` 0.25; an ONNX graph with NMS takes its exported one
            unless a higher one is given).
        nms: NMS IoU threshold (default ``PREDICT_IOU`` 0.45, or the ONNX graph's).
        device: ``cpu``, ``cuda``, ``cuda:N`` (default: cuda when available).
        class_agnostic: one NMS over all classes.
        max_det: detections per image at most.
        batch_size: images per forward pass for lists, folders and globs.
        threads: ONNX Runtime intra-op threads (default: its choice).

    Calling it:

    * a BGR ``np.ndarray`` or an image path -> :class:`~yolox_fast.inference.results.Detections`;
    * a list of images/paths, a folder or a glob -> a list of them (batched, read in a background thread);
    * a video path, a camera index, or any iterator of BGR frames -> a generator, one result per frame.
    """

    def __init__(self, weights: str | os.PathLike, model: str | None = None, img_size: int | None = None,
                 conf: float | None = None, nms: float | None = None, device: str | None = None,
                 class_agnostic: bool = False, max_det: int = PREDICT_MAX_DET, batch_size: int = 1,
                 threads: int | None = None):
        weights = os.fspath(weights)
        if img_size is not None:
            check_input_size(img_size, "img_size")
        if batch_size < 1 or max_det < 1:
            raise ValueError(f"batch_size and max_det must be >= 1, got {batch_size} and {max_det}")
        self.is_onnx = weights.lower().endswith(".onnx") or is_openvino_path(weights)  # an exported model
        if self.is_onnx:
            self.backend = _OnnxBackend(weights, img_size, None if device is None else device, threads)
            onnx_model = self.backend.model
            if onnx_model.has_nms:
                onnx_model.check_settings(conf, nms, class_agnostic)
                conf = onnx_model.meta["conf"] if conf is None else conf
                nms, class_agnostic = onnx_model.meta["nms_thre"], onnx_model.meta["class_agnostic"]
        else:
            self.backend = _TorchBackend(weights, model, img_size, resolve_device(device))
        self.conf = PREDICT_CONF if conf is None else float(conf)
        self.nms = PREDICT_IOU if nms is None else float(nms)
        self.class_agnostic, self.max_det, self.batch_size = bool(class_agnostic), int(max_det), int(batch_size)

    @property
    def class_names(self) -> list[str]:
        return list(self.backend.class_names)

    @property
    def img_size(self) -> tuple[int, int]:
        return self.backend.img_size

    def describe(self) -> str:
        return (f"{self.backend.describe()}, input {self.img_size[0]}x{self.img_size[1]}, conf {self.conf}, "
                f"{'class-agnostic' if self.class_agnostic else 'class-aware'} NMS {self.nms}")

    # -- core -----------------------------------------------------------------------------------

    def detect(self, images: Sequence[np.ndarray], sources: Sequence[str | None] | None = None,
               keep_images: bool = True) -> list[Detections]:
        """One forward pass over BGR images (any sizes) -> their :class:`Detections` in original pixels."""
        if not images:
            return []
        tensors, ratios = [], []
        for img in images:
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"expected a BGR uint8 image [H, W, 3], got "
                                 f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}")
            tensor, r = preprocess(img, self.img_size)
            tensors.append(tensor)
            ratios.append(r)
        found = self.backend.detect(torch.stack(tensors), self.conf, self.nms, self.class_agnostic, self.max_det)
        sources = sources or [None] * len(images)
        out = []
        for b, (img, r, src) in enumerate(zip(images, ratios, sources, strict=True)):
            n = int(found.counts[b])
            out.append(Detections((found.boxes[b, :n] / r).astype(np.float32), found.scores[b, :n].astype(np.float32),
                                  found.labels[b, :n].astype(np.int64), self.class_names,
                                  img if keep_images else None, src))
        return out

    def detect_frames(self, frames: Iterable[Frame],
                      batch_size: int | None = None) -> Iterator[tuple[Frame, Detections | None]]:
        """Batched detection over :class:`~yolox_fast.inference.sources.Frame` items (read ahead in a thread).

        Yields ``(frame, detections)`` in input order; ``detections`` is None for a frame that could not
        be decoded (``frame.error`` says why). ``detections.source`` is the frame's label.
        """
        batch_size = batch_size or self.batch_size
        pending: list[Frame] = []
        for frame in read_ahead(frames, depth=2 * batch_size):
            if frame.error is not None:
                yield from self._flush(pending)
                pending = []
                yield frame, None
                continue
            pending.append(frame)
            if len(pending) >= batch_size:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def _flush(self, frames: list[Frame]) -> list[tuple[Frame, Detections]]:
        if not frames:
            return []
        return list(zip(frames, self.detect([f.image for f in frames], [f.label for f in frames]), strict=True))

    # -- convenience ------------------------------------------------------------------------------

    def __call__(self, source):
        if isinstance(source, np.ndarray):
            return self.detect([source])[0]
        if isinstance(source, (str, os.PathLike)):
            sources = resolve_sources(source)
            if len(sources) == 1 and sources[0].kind == "image" and not os.path.isdir(source):
                return self._one_image(sources[0])
            if all(s.kind == "image" for s in sources):
                return self._images(sources)
            return self._stream_sources(sources)
        if isinstance(source, (list, tuple)):
            if all(isinstance(s, np.ndarray) for s in source):
                return [r for start in range(0, len(source), self.batch_size)
                        for r in self.detect(list(source[start : start + self.batch_size]))]
            return self._images([s for item in source for s in resolve_sources(item)])
        if isinstance(source, Iterable):
            return self._stream_arrays(source)
        raise TypeError(f"cannot detect on a {type(source).__name__}; give an image, a path, a list or an iterator")

    def _one_image(self, source: Source) -> Detections:
        frame = next(read_frames(source))
        if frame.error:
            raise ValueError(frame.error)
        return self.detect([frame.image], [frame.label])[0]

    def _images(self, sources: list[Source]) -> list[Detections]:
        return list(self._stream_sources(sources, self.batch_size))

    def _stream_sources(self, sources: list[Source], batch_size: int = 1) -> Iterator[Detections]:
        for frame, result in self.detect_frames((f for s in sources for f in read_frames(s)), batch_size):
            if result is None:
                raise ValueError(frame.error)
            yield result

    def _stream_arrays(self, frames: Iterable[np.ndarray]) -> Iterator[Detections]:
        for frame in frames:
            yield self.detect([frame])[0]
