"""Hot paths of YOLOX training and inference, each with a reference and fast backends."""

from . import reference
from .anchors import anchor_grid, anchor_grid_for_input
from .postprocess import postprocess
from .simota import simota_assign

__all__ = ["anchor_grid", "anchor_grid_for_input", "postprocess", "reference", "simota_assign"]
