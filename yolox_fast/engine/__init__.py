"""Training engine: config, schedule, optimiser, EMA, checkpoints, distributed helpers, records, the loop.

``python -m yolox_fast.train`` is the command-line entry point; :class:`Trainer` is the loop.
"""

from .config import TrainConfig, build_config
from .ema import ModelEMA
from .lr_schedule import WarmCosineSchedule
from .optim import build_optimizer, param_groups
from .trainer import Trainer

__all__ = ["ModelEMA", "TrainConfig", "Trainer", "WarmCosineSchedule", "build_config", "build_optimizer",
           "param_groups"]
