"""Run a model exported by :mod:`yolox_fast.export` in ONNX Runtime.

:class:`OnnxModel` opens the file, reads the export settings from its metadata (input size, class
names, whether NMS is in the graph) and returns the same fixed-size detections as
:func:`yolox_fast.ops.postprocess_padded` does on the PyTorch path:

* a graph with NMS (``--nms onnx``) gives them directly;
* a prediction graph (``--nms none``) is followed by :func:`~yolox_fast.ops.postprocess_padded` (for
  ``--decode none``, after :func:`yolox_fast.ops.box_coding.decode_outputs`).

Preprocessing is the PyTorch path's (:func:`yolox_fast.data.preprocess`): BGR, keep-ratio resize, top-left
paste on 114, float32 0-255, NCHW. :class:`yolox_fast.inference.detector.Detector` wraps both paths.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
import torch

from ..ops.anchors import check_input_size
from ..ops.postprocess import PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET
from .onnx_export import INPUT_NAME, METADATA_KEY, PREDICTION_NAME

#: The outputs of a graph with the postprocess (``--nms onnx``), by name.
NMS_OUTPUTS = ("num_dets", "boxes", "scores", "labels")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_unit(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0


def check_metadata(path: str, text: str, inputs, outputs) -> dict:
    """The export settings of ``path`` (the JSON ``text`` of its :data:`METADATA_KEY` metadata), checked against
    their schema and against the graph's ``inputs``/``outputs`` (ONNX Runtime ``NodeArg`` lists) before any
    is used: a file from elsewhere may carry malformed or wrong metadata.

    Raises:
        ValueError: one line naming ``path`` and the first thing wrong.
    """
    def bad(problem: str) -> ValueError:
        return ValueError(f"{path}: {problem}; not a model exported by yolox_fast.export, or one altered since")

    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise bad(f"its {METADATA_KEY!r} metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise bad(f"its {METADATA_KEY!r} metadata is a {type(meta).__name__}, not an object")
    try:
        size = check_input_size(meta.get("img_size"), "img_size")
    except ValueError as exc:
        raise bad(f"metadata {exc}") from None
    num_classes, names = meta.get("num_classes"), meta.get("class_names")
    if not _is_int(num_classes) or num_classes < 1:
        raise bad(f"metadata num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) != num_classes:
        raise bad(f"metadata class_names must be a list of {num_classes} names (num_classes), got "
                  f"{len(names) if isinstance(names, list) else type(names).__name__}")
    if meta.get("nms") not in ("onnx", "none"):
        raise bad(f"metadata nms must be 'onnx' or 'none', got {meta.get('nms')!r}")
    for key in ("decode", "static"):
        if not isinstance(meta.get(key), bool):
            raise bad(f"metadata {key} must be true or false, got {meta.get(key)!r}")
    if meta.get("static") and (not _is_int(meta.get("batch_size")) or meta["batch_size"] < 1):
        raise bad(f"metadata batch_size of a static export must be a positive integer, got {meta.get('batch_size')!r}")
    if meta.get("model") is not None and not isinstance(meta["model"], str):
        raise bad(f"metadata model must be a name, got {meta['model']!r}")
    if meta["nms"] == "onnx":
        if not (_is_unit(meta.get("conf")) and _is_unit(meta.get("nms_thre"))):
            raise bad(f"metadata conf and nms_thre must be numbers in [0, 1], got {meta.get('conf')!r} and "
                      f"{meta.get('nms_thre')!r}")
        if not _is_int(meta.get("max_det")) or meta["max_det"] < 1:
            raise bad(f"metadata max_det must be a positive integer, got {meta.get('max_det')!r}")
        if not isinstance(meta.get("class_agnostic"), bool):
            raise bad(f"metadata class_agnostic must be true or false, got {meta.get('class_agnostic')!r}")

    # The graph must be what the metadata describes.
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise bad(f"the graph takes {[i.name for i in inputs]}, not one input {INPUT_NAME!r}")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or any(_is_int(d) and d != want for d, want in zip(shape[1:], (3, *size), strict=True)):
        raise bad(f"the graph's input is {shape}, the metadata says [B, 3, {size[0]}, {size[1]}]")
    if meta.get("static") and _is_int(shape[0]) and shape[0] != meta["batch_size"]:
        raise bad(f"the graph's batch is {shape[0]}, the metadata says {meta['batch_size']}")
    names_out = [o.name for o in outputs]
    if meta["nms"] == "onnx":
        if sorted(names_out) != sorted(NMS_OUTPUTS):
            raise bad(f"the graph's outputs are {names_out}, a graph with NMS has {list(NMS_OUTPUTS)}")
    else:
        if names_out != [PREDICTION_NAME]:
            raise bad(f"the graph's outputs are {names_out}, a prediction graph has [{PREDICTION_NAME!r}]")
        last = list(outputs[0].shape)[-1] if outputs[0].shape else None
        if _is_int(last) and last != 5 + num_classes:
            raise bad(f"the graph predicts {last - 5} classes, the metadata says {num_classes}")
    return meta


class PaddedResult(NamedTuple):
    """Fixed-size detections of a batch in network-input pixels (numpy).

    Attributes:
        boxes: ``[B, M, 4]`` float32 x1, y1, x2, y2; rows past ``counts[b]`` are zeros.
        scores: ``[B, M]`` float32 ``obj * cls_conf``.
        labels: ``[B, M]`` int64.
        counts: ``[B]`` int64.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    counts: np.ndarray


def padded_from_torch(dets: torch.Tensor, counts: torch.Tensor) -> PaddedResult:
    """:func:`yolox_fast.ops.postprocess_padded`'s ``([B, M, 7], [B])`` as a :class:`PaddedResult`."""
    dets = dets.detach().float().cpu()
    return PaddedResult(dets[..., :4].numpy(), (dets[..., 4] * dets[..., 5]).numpy(),
                        dets[..., 6].long().numpy(), counts.cpu().numpy())


def available_providers(device: str | None = None) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``; default: CUDA when
    ONNX Runtime has it)."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    kind = (device or ("cuda" if "CUDAExecutionProvider" in have else "cpu")).split(":")[0]
    if kind == "cuda":
        if "CUDAExecutionProvider" not in have:
            raise ValueError("--device cuda: this ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu) "
                             "or use --device cpu")
        index = int(device.split(":")[1]) if device and ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if kind != "cpu":
        raise ValueError(f"unknown device {device!r} for ONNX Runtime; use cpu or cuda")
    return ["CPUExecutionProvider"]


class OnnxModel:
    """An ONNX model exported by :mod:`yolox_fast.export`, in an ONNX Runtime session.

    Args:
        path: the ``.onnx`` file.
        device: ``"cpu"`` or ``"cuda[:i]"`` (default: CUDA when ONNX Runtime has it).
        threads: intra-op threads (default: ONNX Runtime's choice).

    Attributes:
        meta: the export settings (:data:`yolox_fast.deploy.onnx_export.METADATA_KEY`).
        img_size: ``(h, w)`` network input size.
        class_names, num_classes, has_nms, model_name.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ONNX model, or not one exported by yolox_fast (no metadata).
    """

    FORMAT = "ONNX"

    def __init__(self, path: str | os.PathLike, device: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise ValueError(f"ONNX model {self.path} is a folder, not a file")
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about unused initializers of simplified graphs
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(self.path, options, providers=available_providers(device))
        except ValueError:
            raise
        except Exception as exc:  # ORT raises its own types for a file that is not a model
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{self.path} is not an ONNX model ONNX Runtime can load ({first})") from None
        custom = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in custom:
            raise ValueError(f"{self.path} was not exported by yolox_fast.export (no {METADATA_KEY!r} metadata); "
                             "export it with python -m yolox_fast.export")
        self._read_meta(check_metadata(self.path, custom[METADATA_KEY], self.session.get_inputs(),
                                       self.session.get_outputs()))
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _read_meta(self, meta: dict) -> None:
        """Set the attributes from the export settings (shared by the OpenVINO model)."""
        self.meta = meta
        self.img_size = tuple(self.meta["img_size"])
        self.class_names = list(self.meta["class_names"])
        self.num_classes = int(self.meta["num_classes"])
        self.model_name = self.meta.get("model")
        self.has_nms = self.meta["nms"] == "onnx"
        self.static_batch = self.meta["batch_size"] if self.meta.get("static") else None
        #: any input size of multiples of 32 (an export with ``--dynamic``); ``img_size`` is its default
        self.dynamic_size = bool(self.meta.get("dynamic_size", False))

    def _infer(self, images: np.ndarray) -> list[np.ndarray]:
        """One run of the graph on a float32 batch it accepts."""
        return self.session.run(None, {INPUT_NAME: images})

    def check_input(self, images: np.ndarray) -> None:
        """Raise ``ValueError`` unless ``images`` is ``[B, 3, h, w]`` with the model's ``(h, w)`` (any multiples
        of 32 for a ``--dynamic`` export)."""
        if self.dynamic_size:
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"images must be [B, 3, h, w] for {self.path}, got {list(images.shape)}")
            check_input_size(images.shape[2:], f"the image size [h, w] for {self.path}")
        elif images.ndim != 4 or images.shape[1:] != (3, *self.img_size):
            raise ValueError(f"images must be [B, 3, {self.img_size[0]}, {self.img_size[1]}] for {self.path}, "
                             f"got {list(images.shape)}")

    def describe(self) -> str:
        post = (f"NMS in the graph (conf {self.meta['conf']}, IoU {self.meta['nms_thre']}, max {self.meta['max_det']})"
                if self.has_nms else "prediction output")
        size = f"{self.img_size[0]}x{self.img_size[1]}" + (" (any multiple of 32)" if self.dynamic_size else "")
        int8 = ", INT8" if self.meta.get("int8") else ""
        return (f"{self.model_name or 'YOLOX'} {self.FORMAT} {self.path} ({self.num_classes} classes, "
                f"{size}{int8}, {post}, {self._runtime()})")

    def _runtime(self) -> str:
        return self.session.get_providers()[0]

    def parameter_count(self) -> int:
        """Elements of the graph's weights (its initializers: the network's parameters and constants)."""
        import onnx

        graph = onnx.load(self.path, load_external_data=False).graph
        return sum(int(np.prod(t.dims)) for t in graph.initializer)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """The raw graph outputs for ``images [B, 3, h, w]`` float32 (a static-batch model runs in chunks)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        self.check_input(images)
        n = self.static_batch
        if n is None or images.shape[0] == n:
            return self._infer(images)
        chunks = []
        for start in range(0, images.shape[0], n):
            part = images[start : start + n]
            pad = n - part.shape[0]
            if pad:
                part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), np.float32)])
            outs = self._infer(part)
            chunks.append([o[: n - pad] for o in outs])
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]

    def check_settings(self, conf: float | None, nms: float | None, class_agnostic: bool | None = None) -> None:
        """Raise ``ValueError`` when a graph with NMS cannot give ``conf``/``nms`` (its constants are baked in).

        A higher ``conf`` than the exported one is fine (filtering after NMS is exact: a box below the
        threshold only ever suppresses boxes below it); a lower one, another IoU threshold or another
        NMS mode needs a new export.
        """
        if not self.has_nms:
            return
        if conf is not None and conf < self.meta["conf"] - 1e-12:
            raise ValueError(f"{self.path} was exported with --conf {self.meta['conf']}; it cannot detect below it "
                             f"(asked {conf}); export again with a lower --conf")
        if nms is not None and abs(nms - self.meta["nms_thre"]) > 1e-9:
            raise ValueError(f"{self.path} was exported with --iou {self.meta['nms_thre']} (asked {nms}); "
                             "export again to change it")
        if class_agnostic is not None and bool(class_agnostic) != bool(self.meta["class_agnostic"]):
            mode = "class-agnostic" if self.meta["class_agnostic"] else "class-aware"
            raise ValueError(f"{self.path} was exported with {mode} NMS; export again to change it")

    def detect(self, images: np.ndarray, conf: float | None = None, nms: float | None = None,
               class_agnostic: bool | None = None, max_det: int | None = PREDICT_MAX_DET) -> PaddedResult:
        """Detections of ``images [B, 3, h, w]`` float32 (preprocessed) in network-input pixels.

        For a graph with NMS, ``conf`` (at least the exported one) filters further and ``nms``,
        ``class_agnostic`` and ``max_det`` are those of the export; otherwise they drive
        :func:`yolox_fast.ops.postprocess_padded` (defaults ``PREDICT_CONF`` and ``PREDICT_IOU``).
        """
        outputs = self.run(images)
        if self.has_nms:
            return self.padded_from_nms_outputs(outputs, conf, nms, class_agnostic, max_det)
        from ..ops import postprocess_padded

        dets, counts = postprocess_padded(self.decoded(outputs, images.shape[2:]), self.num_classes,
                                          PREDICT_CONF if conf is None else conf, PREDICT_IOU if nms is None else nms,
                                          bool(class_agnostic), max_det=max_det)
        return padded_from_torch(dets, counts)

    def padded_from_nms_outputs(self, outputs: list[np.ndarray], conf: float | None = None, nms: float | None = None,
                                class_agnostic: bool | None = None,
                                max_det: int | None = PREDICT_MAX_DET) -> PaddedResult:
        """The outputs of a graph with NMS (:meth:`run`) as a :class:`PaddedResult`: ``conf`` (at least the
        exported one) filters further, ``max_det`` cuts; ``nms`` and ``class_agnostic`` must be the export's."""
        self.check_settings(conf, nms, class_agnostic)
        named = dict(zip(self.output_names, outputs, strict=True))
        counts, boxes, scores, labels = (named[k] for k in ("num_dets", "boxes", "scores", "labels"))
        counts = counts.astype(np.int64)
        if conf is not None and conf > self.meta["conf"]:
            # scores are sorted: the count of each image is the number of rows at or above conf
            rows = np.arange(scores.shape[1])[None] < counts[:, None]
            counts = ((scores >= conf) & rows).sum(1).astype(np.int64)
            unused = np.arange(scores.shape[1])[None] >= counts[:, None]
            boxes, scores, labels = boxes.copy(), scores.copy(), labels.copy()
            boxes[unused], scores[unused], labels[unused] = 0, 0, 0
        if max_det is not None and max_det < boxes.shape[1]:
            counts = np.minimum(counts, max_det)
            boxes, scores, labels = boxes[:, :max_det], scores[:, :max_det], labels[:, :max_det]
        return PaddedResult(boxes, scores, labels.astype(np.int64), counts)

    def decoded(self, outputs: list[np.ndarray], input_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """The outputs of a prediction graph (:meth:`run`) as decoded predictions ``[B, A, 5 + C]`` (torch), what
        :func:`yolox_fast.ops.postprocess_padded` takes; a ``--decode none`` graph is decoded here, on the anchor
        grid of ``input_hw`` (the input's height and width; default: the export's size; a ``--dynamic`` export
        runs at other sizes, so callers pass the size they ran at)."""
        if self.has_nms:
            raise ValueError(f"{self.path} has NMS in its graph: its outputs are detections, not predictions")
        pred = torch.from_numpy(outputs[0])
        if not self.meta["decode"]:
            from ..ops.anchors import anchor_grid_for_input
            from ..ops.box_coding import decode_outputs

            grids, strides = anchor_grid_for_input(*(self.img_size if input_hw is None else input_hw))
            pred = decode_outputs(pred, grids, strides, sigmoid=False)
        return pred
