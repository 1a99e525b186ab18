"""INT8 static quantization of an exported YOLOX network with NNCF, calibrated on real images.

:func:`quantize_network` takes the exported network graph (images -> decoded prediction ``[B, A, 5 + C]``,
before the in-graph postprocess is appended), runs it over calibration images letterboxed exactly as at
inference (:func:`yolox_fast.data.preprocess`), and returns the graph with QuantizeLinear/DequantizeLinear
pairs on the convolutions' inputs (QDQ format; OpenVINO compiles them into int8 convolutions, ONNX Runtime
runs them too). NNCF's ``MIXED`` preset: weights int8 symmetric per output channel, activations uint8
asymmetric per tensor, and fast bias correction (each quantized convolution's bias absorbs the mean shift
quantization causes, which YOLOX-Nano's depthwise layers need).

What stays float32 (:data:`FLOAT_REGIONS`):

* always: everything downstream of the head's last 1x1 convolutions: the concatenation of the three levels,
  the sigmoid of objectness and classes, the decode (``exp`` of the box sizes, grid offsets, strides); the
  postprocess (scoring, threshold, NMS) is appended in float32 after quantization;
* ``"stem"`` (default): the first convolution, on the raw 0-255 pixels after the space-to-depth focus;
* ``"head-preds"`` (default): the head's last convolutions (``reg_preds``, ``obj_preds``, ``cls_preds``;
  9 of YOLOX-Nano's 113), whose outputs are logits and box offsets.

Why NNCF rather than ONNX Runtime's ``quantize_static``, and what each float32 region costs and saves:
measured in ``docs/deployment.md`` (ONNX Runtime's min-max ranges cost YOLOX-Nano 28 AP points).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from ..data.preprocess import IMAGE_SUFFIXES

#: Optional float32 regions (name -> node-name fragments of the convolutions to keep in float32).
FLOAT_REGIONS = {
    "head-preds": ("reg_preds", "obj_preds", "cls_preds"),
    "stem": ("/stem/conv/",),
}
DEFAULT_FLOAT_REGIONS = ("stem", "head-preds")
DEFAULT_CALIB_COUNT = 64


def calibration_images(folder: str | os.PathLike, count: int | None = DEFAULT_CALIB_COUNT) -> list[Path]:
    """The first ``count`` images (sorted by name) of ``folder`` (all with ``None``).

    Raises:
        FileNotFoundError: no such folder.
        ValueError: not a folder, or no images in it.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"--calib-images {folder} is not a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the calibration folder {folder}")
    return paths[:count] if count else paths


def _letterboxed(paths: Sequence[Path], img_size: tuple[int, int]) -> Iterator[dict[str, np.ndarray]]:
    """One ``{"images": [1, 3, h, w] float32}`` feed per image, preprocessed as at inference."""
    from ..data import preprocess, read_image
    from .onnx_export import INPUT_NAME

    for path in paths:
        try:
            image = read_image(path)
        except Exception as exc:  # read_image names the file; keep one line
            raise ValueError(f"calibration image {path} cannot be read ({exc})") from None
        yield {INPUT_NAME: preprocess(image, img_size)[0][None].numpy()}


def float_nodes(model: onnx.ModelProto, regions: Sequence[str] = DEFAULT_FLOAT_REGIONS) -> list[str]:
    """Names of the nodes that stay float32: the optional ``regions`` (:data:`FLOAT_REGIONS`) and everything
    downstream of the head's last convolutions (module docstring)."""
    unknown = [r for r in regions if r not in FLOAT_REGIONS]
    if unknown:
        raise ValueError(f"unknown float32 region {unknown[0]!r}; choose from {', '.join(FLOAT_REGIONS)}")
    pred_convs = [n for n in model.graph.node if n.op_type == "Conv"
                  and any(k in n.name for k in FLOAT_REGIONS["head-preds"])]
    if not pred_convs:
        raise ValueError("the graph has no head prediction convolutions (reg_preds/obj_preds/cls_preds) to anchor "
                         "the float32 decode on; is it a yolox_fast export?")
    # Everything fed (directly or not) by a prediction convolution: concat, sigmoid, decode.
    tainted = {t for n in pred_convs for t in n.output}
    downstream: list[str] = []
    for node in model.graph.node:  # the exporter writes nodes in topological order
        if node not in pred_convs and any(t in tainted for t in node.input):
            tainted.update(node.output)
            downstream.append(node.name)
    kept = [n.name for n in model.graph.node if n.op_type == "Conv"
            and any(k in n.name for r in regions for k in FLOAT_REGIONS[r])]
    return kept + downstream


def quantize_network(
    model: onnx.ModelProto,
    calib_images: Sequence[str | os.PathLike],
    img_size: tuple[int, int],
    *,
    float_regions: Sequence[str] = DEFAULT_FLOAT_REGIONS,
) -> onnx.ModelProto:
    """INT8 QDQ version of the network graph ``model`` (images -> prediction), calibrated on ``calib_images``.

    Args:
        model: the exported network (no postprocess yet), float32, with the exporter's node names.
        calib_images: image files; each is letterboxed to ``img_size`` as at inference.
        img_size: ``(h, w)`` the network input size used for calibration.
        float_regions: optional regions kept in float32 (:data:`FLOAT_REGIONS`).

    Returns:
        The quantized graph (a new proto).

    Raises:
        ImportError: NNCF is not installed (``pip install yolox_fast[int8]``).
        ValueError: no images, an image that cannot be read, or an unknown region.
    """
    if not calib_images:
        raise ValueError("no calibration images")
    exclude = float_nodes(model, float_regions)
    try:
        import nncf
    except ImportError:
        raise ImportError("INT8 export needs NNCF: pip install nncf (or yolox_fast[int8])") from None
    import logging

    feeds = list(_letterboxed([Path(p) for p in calib_images], img_size))
    # NNCF logs progress bars and notes at INFO; keep the export's output to its own lines.
    logging.getLogger("nncf").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                             preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=True,
                             ignored_scope=nncf.IgnoredScope(names=exclude))
