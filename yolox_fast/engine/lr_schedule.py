"""The official "yoloxwarmcos" learning-rate schedule, per iteration."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmCosineSchedule:
    """Quadratic warm-up, cosine decay, then a constant tail (the no-augmentation epochs).

    With ``W = warmup_epochs * iters_per_epoch``, ``N = no_aug_epochs * iters_per_epoch`` and
    ``T = epochs * iters_per_epoch``, the learning rate of iteration ``i`` (0-based, the one used by
    step ``i``) is

    * ``warmup_lr + (base_lr - warmup_lr) * (i / W) ** 2`` for ``i <= W``;
    * ``min_lr`` for ``i >= T - N``;
    * ``min_lr + (base_lr - min_lr) * (1 + cos(pi * (i - W) / (T - W - N))) / 2`` in between,

    where ``min_lr = base_lr * min_lr_ratio``. The official trainer starts the optimiser at
    ``warmup_lr`` and sets ``lr(i + 1)`` after step ``i``, so step ``i`` uses ``lr(i)``, as here.
    """

    base_lr: float
    iters_per_epoch: int
    epochs: int
    warmup_epochs: float = 5.0
    no_aug_epochs: int = 15
    warmup_lr: float = 0.0
    min_lr_ratio: float = 0.05

    @property
    def warmup_iters(self) -> int:
        return int(round(self.warmup_epochs * self.iters_per_epoch))

    @property
    def total_iters(self) -> int:
        return self.epochs * self.iters_per_epoch

    @property
    def no_aug_iters(self) -> int:
        return self.no_aug_epochs * self.iters_per_epoch

    @property
    def min_lr(self) -> float:
        return self.base_lr * self.min_lr_ratio

    def __call__(self, iteration: int) -> float:
        warmup = self.warmup_iters
        if warmup > 0 and iteration <= warmup:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * (iteration / warmup) ** 2
        cosine_span = self.total_iters - warmup - self.no_aug_iters
        if iteration >= self.total_iters - self.no_aug_iters or cosine_span <= 0:
            return self.min_lr
        progress = (iteration - warmup) / cosine_span
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
