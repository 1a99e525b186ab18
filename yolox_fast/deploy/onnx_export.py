"""Export a YOLOX model to ONNX: the network, the decode, and optionally the postprocess with NMS.

Three graph forms (``nms`` / ``decode``):

* ``nms="onnx"`` (default): images ``[B, 3, h, w]`` float32 (BGR, 0-255, letterboxed as
  :func:`yolox_fast.data.preprocess`) -> ``num_dets [B]``, ``boxes [B, M, 4]``, ``scores [B, M]``,
  ``labels [B, M]`` (:mod:`yolox_fast.deploy.onnx_postprocess`);
* ``nms="none"``: -> ``prediction [B, A, 5 + C]``, the model's decoded eval output;
* ``nms="none", decode=False``: -> ``prediction [B, A, 5 + C]`` with raw box offsets and sigmoid
  scores, what the official exporter gives (``decode_in_inference=False``).

The batch dimension is dynamic unless ``static``. ``half`` stores fp16 weights and runs the network in
fp16; the image input, the decode and the outputs stay float32 (an fp16 decode would round box
coordinates above 512 px to 0.5 px). Everything the runtime needs travels in the model's metadata
(:data:`METADATA_KEY`: model name, input size, class names, the postprocess settings).

The network goes through PyTorch's TorchScript-based exporter (``dynamo=False``): on this 2-core
machine it exports YOLOX-Nano in ~4 s against ~33 s for the ``torch.export`` one, without needing
``onnxscript``; the graph is plain convolutions, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from ..files.atomic import atomic_write
from ..ops.anchors import DEFAULT_STRIDES, anchor_grid, anchor_grid_for_input, check_input_size
from ..ops.box_coding import decode_outputs
from ..ops.postprocess import PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET

#: Metadata key holding the export settings as JSON (read back by :mod:`yolox_fast.deploy.onnx_runtime`).
METADATA_KEY = "yolox_fast"
#: Lowest supported opset (GreaterOrEqual, batch_dims of GatherND, NonMaxSuppression all predate it).
MIN_OPSET = 17
DEFAULT_OPSET = 17


def max_opset() -> int:
    """The newest opset the exporter used here (PyTorch's TorchScript-based one) can write; 20 when this torch
    does not say."""
    try:
        from torch.onnx import _constants
    except ImportError:  # private module: a torch without it gets the value of torch 2.1 - 2.14
        return 20
    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
INPUT_NAME = "images"
PREDICTION_NAME = "prediction"


class ExportNetwork(nn.Module):
    """The traced part: images ``[B, 3, h, w]`` float32 -> prediction ``[B, A, 5 + C]`` float32.

    Runs the backbone and the raw head (in fp16 when ``half``), then decodes in float32 with
    :func:`yolox_fast.ops.box_coding.decode_outputs` (``decode``) or applies only the sigmoid (the
    official raw output). With ``dynamic_size`` the anchor grids are built in the graph from the feature
    maps' shapes (``Range`` over each level's height and width), so any input of multiples of 32 decodes
    right; otherwise they are constants for ``img_size``.
    """

    def __init__(self, model: nn.Module, img_size: tuple[int, int], decode: bool = True, half: bool = False,
                 dynamic_size: bool = False):
        super().__init__()
        self.model, self.decode, self.half, self.dynamic_size = model, decode, half, dynamic_size
        self.level_strides = tuple(getattr(model.head, "strides", DEFAULT_STRIDES))
        grids, strides = anchor_grid_for_input(*img_size, strides=self.level_strides)
        self.register_buffer("grids", grids, persistent=False)
        self.register_buffer("strides", strides, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.half() if self.half else images
        raw, sizes = self.model.head.forward_raw(self.model.backbone(x))
        raw = raw.float()
        if self.decode:
            # traced: the level sizes are shape values, so anchor_grid's arange/full become Range/Expand nodes
            grids, strides = anchor_grid(sizes, self.level_strides) if self.dynamic_size else (self.grids, self.strides)
            return decode_outputs(raw, grids, strides)
        return torch.cat([raw[..., :4], raw[..., 4:].sigmoid()], dim=-1)


def _slim(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """``proto`` simplified by onnxslim, and whether it ran (False when onnxslim is not installed)."""
    try:
        import onnxslim
    except ImportError:
        return proto, False
    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(proto), True
def check_opset(opset: int, name: str = "opset") -> int:
    """``opset`` if this exporter can write it (:data:`MIN_OPSET` to :func:`max_opset`), else ``ValueError``."""
    newest = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"{name} must be >= {MIN_OPSET} and <= {newest} (the newest this PyTorch's exporter "
                         f"writes), got {opset!r}")
    return opset


def export_onnx(
    model: nn.Module,
    output: str | os.PathLike,
    img_size: int | tuple[int, int],
    *,
    nms: str = "onnx",
    decode: bool = True,
    conf: float = PREDICT_CONF,
    nms_thre: float = PREDICT_IOU,
    max_det: int = PREDICT_MAX_DET,
    pre_nms_topk: int | None = None,
    class_agnostic: bool = False,
    multi_label: bool = False,
    static: bool = False,
    batch_size: int = 1,
    half: bool = False,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    model_name: str | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    dynamic_size: bool = False,
    network_pass: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
    extra_meta: dict | None = None,
) -> dict:
    """Export ``model`` (a :class:`yolox_fast.models.YOLOX`) to the ONNX file ``output`` (module docstring).

    Args:
        model: the detector; it is not modified (a copy is put in eval mode, and in fp16 for ``half``).
        output: the ``.onnx`` path. Written atomically (temporary file, then rename): a failed export
            leaves an existing file untouched. Without ``overwrite`` the last step fails if ``output`` exists
            by then (an exclusive link: a file created there during the export is never replaced).
        img_size: network input size, an int or ``(h, w)``, multiples of 32.
        nms: ``"onnx"`` (postprocess in the graph) or ``"none"``.
        decode: decode boxes in the graph (``nms="none"`` only; the NMS needs decoded boxes).
        conf, nms_thre, max_det, pre_nms_topk, class_agnostic, multi_label: the postprocess constants
            (see :func:`yolox_fast.ops.postprocess_padded`).
        static: fixed batch size ``batch_size`` instead of a dynamic batch.
        half: fp16 weights and network (float32 input and outputs).
        opset: ONNX opset, >= 17.
        simplify: run onnxslim on the graph when it is installed.
        model_name, class_names: recorded in the metadata (class names default to ``0 .. C-1``).
        overwrite: replace an existing ``output`` (otherwise an existing file is an error).
        dynamic_size: height and width dynamic (any multiples of 32; ``img_size`` is then the default size
            recorded in the metadata); the decode builds its grids from the input's shape.
        network_pass: applied to the exported network graph (images -> prediction) before the postprocess
            is appended, e.g. INT8 quantization (:func:`yolox_fast.deploy.quantize.quantize_network`); the
            network is simplified before it and the whole graph not after it (so that onnxslim cannot fold
            quantized weights back into float ones).
        extra_meta: more entries for the metadata (e.g. the INT8 settings).

    Returns:
        The metadata dict written into the model (plus ``"simplified"``: whether onnxslim ran).

    Raises:
        ValueError: a bad setting (the message names it).
        FileExistsError: ``output`` exists and ``overwrite`` is false (before the export, or at its end).
        OSError: ``output`` cannot be written.
    """
    from .onnx_postprocess import OUTPUT_NAMES, append_postprocess

    size = check_input_size(img_size, "img_size")
    if nms not in ("onnx", "none"):
        raise ValueError(f"nms must be 'onnx' or 'none', got {nms!r}")
    if nms == "onnx" and not decode:
        raise ValueError("the in-graph NMS needs decoded boxes: use decode=True (or nms='none')")
    check_opset(opset)
    if static and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_classes = int(model.head.num_classes)
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    class_names = [str(n) for n in class_names]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
    output = os.fspath(output)
    folder = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise ValueError(f"output {output} is a folder; give a file path such as {os.path.join(output, 'model.onnx')}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output} exists; choose another --output or pass --overwrite")

    import copy

    network = copy.deepcopy(model).float().eval()
    if half:
        network.half()
    wrapper = ExportNetwork(network, size, decode=decode, half=half, dynamic_size=dynamic_size).eval()
    batch = batch_size if static else 1
    dummy = torch.zeros((batch, 3, *size), dtype=torch.float32, device=next(network.parameters()).device)
    buffer = io.BytesIO()
    input_axes = {} if static else {0: "batch"}
    if dynamic_size:
        input_axes.update({2: "height", 3: "width"})
    dynamic_axes = {INPUT_NAME: input_axes, PREDICTION_NAME: {**({} if static else {0: "batch"}),
                                                              **({1: "anchors"} if dynamic_size else {})}}
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns about its own deprecation and about the model's input-shape check
        # (a Python bool during tracing, which is constant for the traced shapes anyway).
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (dummy,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[PREDICTION_NAME], dynamic_axes=dynamic_axes, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    num_anchors = sum((size[0] // s) * (size[1] // s) for s in wrapper.level_strides)
    simplified = False
    if network_pass is not None:
        if simplify:
            proto, simplified = _slim(proto)
        proto = network_pass(proto)
        simplify = False

    meta = {
        "model": model_name, "num_classes": num_classes, "class_names": class_names, "img_size": list(size),
        "nms": nms, "decode": bool(decode), "half": bool(half), "static": bool(static),
        "batch_size": batch if static else None, "num_anchors": None if dynamic_size else num_anchors,
        "dynamic_size": bool(dynamic_size),
        "input": INPUT_NAME, "preprocess": "BGR 0-255, keep-ratio resize, top-left paste on 114, NCHW float32",
    }
    if nms == "onnx":
        append_postprocess(proto, PREDICTION_NAME, None if dynamic_size else num_anchors, num_classes,
                           conf_thre=conf, nms_thre=nms_thre, max_det=max_det, pre_nms_topk=pre_nms_topk,
                           class_agnostic=class_agnostic, multi_label=multi_label, batch=batch if static else "batch")
        meta.update(conf=float(conf), nms_thre=float(nms_thre), max_det=int(max_det), pre_nms_topk=pre_nms_topk,
                    class_agnostic=bool(class_agnostic), multi_label=bool(multi_label), outputs=list(OUTPUT_NAMES))
    else:
        meta.update(outputs=[PREDICTION_NAME],
                    prediction="cx, cy, w, h (input pixels), obj, classes" if decode
                    else "raw box offsets (official, undecoded), sigmoid obj, sigmoid classes")

    meta.update(extra_meta or {})
    if simplify:
        proto, simplified = _slim(proto)
    proto.producer_name = "yolox_fast"
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta), "names": json.dumps(class_names)})
    onnx.checker.check_model(proto, full_check=True)

    data = proto.SerializeToString()
    # An earlier file stays whole if anything fails; without overwrite, one that appeared meanwhile too.
    atomic_write(Path(output), lambda f: f.write(data), overwrite=overwrite)
    return {**meta, "simplified": simplified}
