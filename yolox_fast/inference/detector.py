"""``Detector``: run a YOLOX checkpoint (PyTorch) or an exported ONNX model (ONNX Runtime) on images.

    from yolox_fast import Detector
    det = Detector("yolox_nano.pth", conf=0.3)            # or Detector("yolox_nano.onnx")
    result = det("dog.jpg")                              # -> Detections (boxes in original pixels)
    result.xyxy, result.scores, result.class_ids, result.names, result.xywhn, result.speed
    result[result.scores > 0.5].save("out.jpg")
    det("dog.jpg", conf=0.5, classes=[0, 16])             # settings for one call
    for r in det("video.mp4"): ...                       # videos and cameras stream frame by frame
    det.info()["summary"]                                # parameters and GFLOPs at the input size

Both backends share the preprocessing and the postprocess through :mod:`yolox_fast.inference.runner`
(which the COCO evaluation runs through too), and give the same detections.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch

from ..deploy.openvino_model import is_openvino_path, open_exported
from ..ops.anchors import check_input_size
from ..ops.postprocess import PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET
from .results import Detections
from .runner import DetectSettings, OnnxRunner, TorchRunner, letterbox_batch
from .sources import Frame, Source, read_ahead, read_frames, resolve_sources

__all__ = ["Detector", "resolve_device"]

RUNTIMES = ("torch", "onnx")


def runtime_of_file(path: str) -> str:
    """``"torch"`` or ``"onnx"``: which runtime reads ``path``, judged by its content, not its name.

    A PyTorch checkpoint is a zip archive (``torch.save``'s format since 1.6) or a pickle stream (older
    files); an ONNX model is a protobuf ``ModelProto`` whose first field is ``ir_version`` (tag byte 0x08).
    Anything else (text, a truncated file) goes by its suffix, to the loader whose error will name it.
    """
    suffix_says = "onnx" if path.lower().endswith(".onnx") else "torch"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:  # missing or unreadable: the runtime's loader gives the error that names the file
        return suffix_says
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return "torch"
    if head[:1] == b"\x08":
        return "onnx"
    return suffix_says



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


def _torch_runner(weights, model_name, img_size, device) -> TorchRunner:
    from ..models.checkpoint import load_model

    model, info = load_model(weights, model_name=model_name, prefer_ema=True)
    model.to(device)
    size = img_size or info.input_size  # the size the checkpoint was trained at, else the preset's
    runner = TorchRunner(model, class_names=info.class_names, img_size=(size, size) if isinstance(size, int)
                         else tuple(size), device=device, description=info.describe())
    runner.checkpoint = info
    return runner


def _onnx_runner(path, img_size, device, threads) -> OnnxRunner:
    """A runner for an exported model, ONNX or OpenVINO IR (:func:`yolox_fast.deploy.openvino_model.open_exported`);
    a ``--dynamic`` export runs at any ``img_size`` (multiple of 32), a fixed one only at its own."""
    runner = OnnxRunner(open_exported(path, device=device, threads=threads))
    asked = None if img_size is None else tuple((img_size, img_size) if isinstance(img_size, int) else img_size)
    if asked is not None and runner.model.dynamic_size:  # one export for every size
        runner.img_size = asked
    elif asked is not None and asked != runner.img_size:
        raise ValueError(f"{path} was exported for {runner.img_size[0]}x{runner.img_size[1]} input, not {img_size}; "
                         "leave the size out or export again")
    return runner


class Detector:
    """A YOLOX detector for images, folders, videos and cameras.

    Args:
        weights: a checkpoint (official or yolox_fast; PyTorch), a model file from :mod:`yolox_fast.export`
            (ONNX Runtime) or an OpenVINO IR folder (or its ``model.xml``) from ``export --format openvino``;
            a checkpoint or an ONNX file is told apart by ``runtime``, else by the file's content (not its suffix).
        model: preset name (default: the checkpoint's; ignored for ONNX, which records it).
        img_size: network input size, a multiple of 32 (default: the size the checkpoint was trained at, else
            the model's; the exported file's, or any for an export with ``--dynamic``).
        conf: score threshold (default ``PREDICT_CONF`` 0.25; an ONNX graph with NMS takes its exported one
            unless a higher one is given).
        nms: NMS IoU threshold (default ``PREDICT_IOU`` 0.45, or the ONNX graph's).
        device: ``cpu``, ``cuda``, ``cuda:N`` (default: cuda when available).
        class_agnostic: one NMS over all classes (default: no, or the ONNX graph's NMS mode).
        max_det: detections per image at most.
        classes: keep only these class indices (default: all), filtered before NMS (a left-out class
            suppresses nothing).
        batch_size: images per forward pass for lists, folders and globs.
        threads: ONNX Runtime intra-op threads (default: its choice).
        runtime: ``"torch"`` or ``"onnx"`` (default: by the file's content, :func:`runtime_of_file`).

    Calling it (``conf``, ``nms``, ``classes`` and ``max_det`` may be given per call, for that call only):

    * a BGR ``np.ndarray`` or an image path -> :class:`~yolox_fast.inference.results.Detections`;
    * a list of images/paths, a folder or a glob -> a list of them (batched, read in a background thread);
    * a video path, a camera index, or any iterator of BGR frames -> a generator, one result per frame.

    The model runs through :mod:`yolox_fast.inference.runner`, as the COCO evaluation does.
    """

    def __init__(self, weights: str | os.PathLike, model: str | None = None, img_size: int | None = None,
                 conf: float | None = None, nms: float | None = None, device: str | None = None,
                 class_agnostic: bool | None = None, max_det: int = PREDICT_MAX_DET,
                 classes: Sequence[int] | None = None,
                 batch_size: int = 1, threads: int | None = None, runtime: str | None = None):
        weights = os.fspath(weights)
        if img_size is not None:
            check_input_size(img_size, "img_size")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for name, value in (("conf", conf), ("nms", nms)):  # Detector(conf=1.5) or nms=2 were taken (issue 18.7)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                                      or not 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if runtime is not None and runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        # an exported model (ONNX or OpenVINO) or a checkpoint: the flag says, else the file's content
        self.is_onnx = runtime == "onnx" if runtime else is_openvino_path(weights) or runtime_of_file(weights) == "onnx"
        if self.is_onnx:
            self.runner = _onnx_runner(weights, img_size, None if device is None else device, threads)
            onnx_model = self.runner.model
            if onnx_model.has_nms:
                onnx_model.check_settings(conf, nms, class_agnostic)
                conf = onnx_model.meta["conf"] if conf is None else conf
                nms, class_agnostic = onnx_model.meta["nms_thre"], onnx_model.meta["class_agnostic"]
        else:
            self.runner = _torch_runner(weights, model, img_size, resolve_device(device))
        self.settings = DetectSettings(PREDICT_CONF if conf is None else conf, PREDICT_IOU if nms is None else nms,
                                       bool(class_agnostic), max_det, classes)
        self.settings.check_classes(self.runner.num_classes)
        self.batch_size = int(batch_size)

    @property
    def conf(self) -> float:
        return self.settings.conf

    @property
    def nms(self) -> float:
        return self.settings.nms

    @property
    def class_agnostic(self) -> bool:
        return self.settings.class_agnostic

    @property
    def max_det(self) -> int:
        return self.settings.max_det

    @property
    def classes(self) -> tuple[int, ...] | None:
        return self.settings.classes

    @property
    def class_names(self) -> list[str]:
        return list(self.runner.class_names)

    @property
    def img_size(self) -> tuple[int, int]:
        return self.runner.img_size

    def describe(self) -> str:
        kept = "" if self.classes is None else f", classes {', '.join(map(str, self.classes))}"
        return (f"{self.runner.describe()}, input {self.img_size[0]}x{self.img_size[1]}, conf {self.conf}, "
                f"{'class-agnostic' if self.class_agnostic else 'class-aware'} NMS {self.nms}{kept}")

    def info(self, verbose: bool = False) -> dict:
        """The model's size: ``{"parameters", "gflops", "img_size", "summary"}`` (a one-line text, printed when
        ``verbose``).

        GFLOPs count one multiply-add as two operations, at :attr:`img_size` (as the official YOLOX
        prints them); for an ONNX model the parameters are its weights' elements and ``gflops`` is None.
        """
        if self.is_onnx:
            params = self.runner.model.parameter_count()
            info = {"parameters": params, "gflops": None, "img_size": self.img_size,
                    "summary": f"{params / 1e6:.2f} M parameters ({self.runner.model.FORMAT}; GFLOPs not counted), input "
                               f"{self.img_size[0]}x{self.img_size[1]}"}
        else:
            from ..models.summary import model_summary

            summary = model_summary(self.runner.model, self.img_size)
            info = {"parameters": summary.parameters, "gflops": summary.gflops, "img_size": self.img_size,
                    "summary": summary.describe()}
        if verbose:
            print(info["summary"])
        return info

    def _settings(self, conf=None, nms=None, classes=None, max_det=None) -> DetectSettings:
        if conf is None and nms is None and classes is None and max_det is None:
            return self.settings
        if self.is_onnx:
            self.runner.model.check_settings(conf, nms)
        settings = self.settings.updated(conf=conf, nms=nms, max_det=max_det, classes=classes)
        settings.check_classes(self.runner.num_classes)
        return settings

    # -- core -----------------------------------------------------------------------------------

    def detect(self, images: Sequence[np.ndarray], sources: Sequence[str | None] | None = None,
               keep_images: bool = True, settings: DetectSettings | None = None) -> list[Detections]:
        """One forward pass over BGR images (any sizes) -> their :class:`Detections` in original pixels
        (``settings``: default the detector's), each with the ``speed`` of its batch per image."""
        if not images:
            return []
        settings = settings or self.settings
        cuda = getattr(self.runner, "device", torch.device("cpu")).type == "cuda"
        t0 = time.perf_counter()
        batch, ratios = letterbox_batch(images, self.img_size)
        t1 = time.perf_counter()
        outputs = self.runner.forward(batch)
        if cuda:  # the forward is asynchronous on a GPU: wait for it, so that its time is its own
            torch.cuda.synchronize(self.runner.device)
        t2 = time.perf_counter()
        found = self.runner.postprocess(outputs, settings)
        t3 = time.perf_counter()
        per_image = 1000 / len(images)
        speed = {"preprocess": (t1 - t0) * per_image, "inference": (t2 - t1) * per_image,
                 "postprocess": (t3 - t2) * per_image}
        sources = sources or [None] * len(images)
        return [Detections.from_padded(found, b, r, self.class_names, img if keep_images else None, src,
                                       orig_shape=img.shape[:2], speed=speed)
                for b, (img, r, src) in enumerate(zip(images, ratios, sources, strict=True))]

    def detect_frames(self, frames: Iterable[Frame], batch_size: int | None = None,
                      settings: DetectSettings | None = None) -> Iterator[tuple[Frame, Detections | None]]:
        """Batched detection over :class:`~yolox_fast.inference.sources.Frame` items (read ahead in a thread).

        Yields ``(frame, detections)`` in input order; ``detections`` is None for a frame that could not
        be decoded (``frame.error`` says why). ``detections.source`` is the frame's label.
        """
        batch_size = batch_size or self.batch_size
        pending: list[Frame] = []
        for frame in read_ahead(frames, depth=2 * batch_size):
            if frame.error is not None:
                yield from self._flush(pending, settings)
                pending = []
                yield frame, None
                continue
            pending.append(frame)
            if len(pending) >= batch_size:
                yield from self._flush(pending, settings)
                pending = []
        yield from self._flush(pending, settings)

    def _flush(self, frames: list[Frame], settings: DetectSettings | None) -> list[tuple[Frame, Detections | None]]:
        """Detect a batch; when one image breaks it (a shape OpenCV refuses, ...), the frames are retried one
        by one and the one that fails comes back as ``(frame with error, None)``, naming its source."""
        if not frames:
            return []
        try:
            found = self.detect([f.image for f in frames], [f.label for f in frames], settings=settings)
        except (ValueError, cv2.error) as exc:
            if len(frames) > 1:
                return [pair for frame in frames for pair in self._flush([frame], settings)]
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return [(dataclasses.replace(frames[0], image=None, error=f"{frames[0].label}: {message}"), None)]
        return list(zip(frames, found, strict=True))

    # -- convenience ------------------------------------------------------------------------------

    def __call__(self, source, *, conf: float | None = None, nms: float | None = None,
                 classes: Sequence[int] | None = None, max_det: int | None = None):
        """Detect on ``source`` (see the class docstring); ``conf``, ``nms``, ``classes``, ``max_det`` replace the
        detector's settings for this call only."""
        settings = self._settings(conf, nms, classes, max_det)
        if isinstance(source, np.ndarray):
            return self.detect([source], settings=settings)[0]
        if isinstance(source, (str, os.PathLike)):
            sources = resolve_sources(source)
            if len(sources) == 1 and sources[0].kind == "image" and not os.path.isdir(source):
                return self._one_image(sources[0], settings)
            if all(s.kind == "image" for s in sources):
                return self._images(sources, settings)
            return self._stream_sources(sources, settings)
        if isinstance(source, (list, tuple)):
            if all(isinstance(s, np.ndarray) for s in source):
                return [r for start in range(0, len(source), self.batch_size)
                        for r in self.detect(list(source[start : start + self.batch_size]), settings=settings)]
            return self._images([s for item in source for s in resolve_sources(item)], settings)
        if isinstance(source, Iterable):
            return self._stream_arrays(source, settings)
        raise TypeError(f"cannot detect on a {type(source).__name__}; give an image, a path, a list or an iterator")

    def _one_image(self, source: Source, settings: DetectSettings) -> Detections:
        frame = next(read_frames(source))
        if frame.error:
            raise ValueError(frame.error)
        return self.detect([frame.image], [frame.label], settings=settings)[0]

    def _images(self, sources: list[Source], settings: DetectSettings) -> list[Detections]:
        return list(self._stream_sources(sources, settings, self.batch_size))

    def _stream_sources(self, sources: list[Source], settings: DetectSettings,
                        batch_size: int = 1) -> Iterator[Detections]:
        frames = (f for s in sources for f in read_frames(s))
        for frame, result in self.detect_frames(frames, batch_size, settings):
            if result is None:
                raise ValueError(frame.error)
            yield result

    def _stream_arrays(self, frames: Iterable[np.ndarray], settings: DetectSettings) -> Iterator[Detections]:
        for frame in frames:
            yield self.detect([frame], settings=settings)[0]
