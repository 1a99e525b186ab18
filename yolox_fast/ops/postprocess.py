"""Inference postprocess: score filter and NMS over the model's decoded output."""

from __future__ import annotations

import torch

from . import backends, reference

OP = "postprocess"


@backends.register(OP, "reference", backends.always)
def _postprocess_reference(prediction, num_classes, conf_thre, nms_thre, class_agnostic):
    return reference.postprocess(prediction, num_classes, conf_thre, nms_thre, class_agnostic)


def postprocess(prediction: torch.Tensor, num_classes: int, conf_thre: float = 0.7, nms_thre: float = 0.45,
                class_agnostic: bool = False, backend: str | None = None) -> list[torch.Tensor | None]:
    """The official YOLOX postprocess (see :func:`yolox_fast.ops.reference.postprocess`).

    Args:
        prediction: ``[B, A, 5 + C]`` decoded cx, cy, w, h, objectness, class scores.
        num_classes: C.
        conf_thre: keep boxes with ``obj * cls_conf >= conf_thre``.
        nms_thre: suppress boxes whose IoU with a better one is ``> nms_thre``.
        class_agnostic: NMS over all classes at once.
        backend: force a backend (see :mod:`yolox_fast.ops.backends`).

    Returns:
        Per image, ``[n, 7]`` ``(x1, y1, x2, y2, obj, cls_conf, cls_id)`` by decreasing score, or None.
    """
    if prediction.dim() != 3 or prediction.shape[-1] < 5 + num_classes:
        raise ValueError(f"prediction must be [B, A, 5 + {num_classes}], got {tuple(prediction.shape)}")
    _, impl = backends.choose(OP, prediction.device, backend)
    return impl(prediction, num_classes, conf_thre, nms_thre, class_agnostic)
