"""The memory layout the network runs in: ``channels_last`` (NHWC) or contiguous (NCHW), by a measured rule.

The values are the same in both layouts (within float rounding of the convolution kernels); only the
speed differs, and it differs per device:

* CPU: ``channels_last`` is faster. oneDNN's convolutions work in NHWC; fed NCHW they reorder every
  activation on the way in and out. Measured on the 2-core development CPU (forward, backward and SGD
  step, ``benchmarks/bench_train_step.py``, model-only group): yolox-nano 416 batch 8 about 1.3x faster
  (issue 11: 616 -> 465 ms), yolox-s 640 batch 4 faster too (figures in the benchmark's report).
* CUDA with AMP (fp16/bf16) on compute capability 7.0 or newer: ``channels_last``; cuDNN's tensor-core
  convolutions are NHWC kernels and an NCHW network pays a transpose around each of them.
* CUDA in float32, or older GPUs: contiguous (no tensor-core kernels to gain; NHWC kernels can be slower).

``--channels-last on|off`` forces either layout.

Inference (prediction and evaluation) leaves the model as it is and chooses the layout of its input:
:func:`inference_memory_format`.
"""

from __future__ import annotations

import torch

#: Values of the ``channels_last`` setting.
LAYOUT_MODES = ("auto", "on", "off")


def use_channels_last(mode: str, device: torch.device | str, amp: bool = False) -> bool:
    """Whether to run in ``channels_last`` on ``device``.

    ``mode``: ``auto`` (the rule of the module docstring), ``on`` or ``off``; ``amp``: mixed precision is on.
    """
    if mode not in LAYOUT_MODES:
        raise ValueError(f"channels_last must be one of {', '.join(LAYOUT_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return amp and major >= 7
    return False


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def inference_memory_format(device: torch.device | str) -> torch.memory_format:
    """The layout to give a model's input batch at inference on ``device`` (the model is not converted).

    CPU: ``channels_last`` (oneDNN's convolutions work in NHWC; YOLOX-Nano about 25% faster on 2 cores,
    scores unchanged to ~1e-6). Elsewhere the input keeps its layout, which then follows the model's.
    """
    return torch.channels_last if torch.device(device).type == "cpu" else torch.preserve_format
