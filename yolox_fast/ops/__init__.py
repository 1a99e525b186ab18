"""Hot paths of YOLOX training and inference, each with a reference and fast backends."""

from . import reference
from .anchors import anchor_grid, anchor_grid_for_input
from .nms import batched_nms, nms
from .postprocess import PaddedDetections, padded_to_list, postprocess, postprocess_padded
from .simota import simota_assign

__all__ = [
    "PaddedDetections",
    "anchor_grid",
    "anchor_grid_for_input",
    "batched_nms",
    "nms",
    "padded_to_list",
    "postprocess",
    "postprocess_padded",
    "reference",
    "simota_assign",
]
