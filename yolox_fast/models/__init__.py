"""YOLOX models: CSPDarknet backbone, PAFPN neck, decoupled head, official presets."""

from .checkpoint import CheckpointError, CheckpointWeights, load_model, load_official_weights, read_checkpoint
from .darknet import CSPDarknet
from .head import YOLOXHead
from .losses import YOLOXLoss, iou_loss
from .pafpn import YOLOPAFPN
from .yolox import PRESETS, YOLOX, build_yolox, canonical_name

__all__ = [
    "CheckpointError",
    "CheckpointWeights",
    "CSPDarknet",
    "PRESETS",
    "YOLOPAFPN",
    "YOLOX",
    "YOLOXHead",
    "YOLOXLoss",
    "build_yolox",
    "canonical_name",
    "iou_loss",
    "load_model",
    "load_official_weights",
    "read_checkpoint",
]
