"""The argument rules of the ops, run the same way for every backend.

Each op's rule (shapes, dtypes, devices: nothing that reads tensor data, so no host sync) is written once,
in C++: ``csrc/common/checks.h`` (``pairwise_iou``, ``nms``/``batched_nms``, ``postprocess``) and
``csrc/common/simota_checks.h`` (``simota_assign``). The CPU and CUDA kernels call it first, and
``yolox_fast._C`` exposes it as ``torch.ops.yolox_fast.check_<op>_args``. The public wrappers call
:func:`check_args` before they choose a backend, so the torch, reference and Triton paths raise the very same
``ValueError`` as the compiled ops (for an argument that is not a tensor, the dispatcher's error naming it).

The Python layer checks only what C++ cannot see: arguments of the Python API itself (``fmt``,
``input_size``, ``pre_nms_topk=None``, the assigner's class count) and the value checks that read data.
Without the compiled extension (a warned, degraded install) the pure-PyTorch paths run unchecked, and
inside ``torch.compile`` tracing the checks are skipped (the traced graph was checked when called eagerly).
"""

from __future__ import annotations

import torch

from . import _extension

#: op -> the name of its rule in ``torch.ops.yolox_fast``.
RULES = {
    "pairwise_iou": "check_pairwise_iou_args",
    "nms": "check_nms_args",
    "postprocess": "check_postprocess_args",
    "simota_assign": "check_simota_args",
}


def check_args(op: str, *args) -> None:
    """Run ``op``'s argument rule on ``args`` (the rule's schema, e.g. ``check_nms_args(boxes, scores, idxs)``).

    Raises:
        ValueError: naming the malformed argument (shape, dtype or device).
        RuntimeError: an argument is not a tensor (the dispatcher's message names it).
    """
    if torch.compiler.is_compiling() or not _extension.extension_loaded():
        return
    getattr(torch.ops.yolox_fast, RULES[op])(*args)
