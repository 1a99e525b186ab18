"""The SimOTA variants: the one definition of their names, radii, candidate rules and penalties.

The released YOLOX weights were trained with the seed's SimOTA; upstream YOLOX changed the candidate
region in January 2023 (docs/design.md). Everything that needs a variant (the reference, the
backends and their op arguments, the assigner, the training config and CLI, the tests) imports it
from here:

=========== ============ =================================== ======================= ========
name        radius r     candidate anchors                   geometry (no penalty)   penalty
=========== ============ =================================== ======================= ========
``seed``    2.5 strides  centre in some GT box OR centre sq.  in box AND in square    1e5
``center``  1.5 strides  centre in some GT's centre square    in square               1e6
=========== ============ =================================== ======================= ========
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = [
    "CANDIDATE_MODES",
    "CENTER",
    "DEFAULT_VARIANT",
    "SEED",
    "VARIANTS",
    "SimOTAVariant",
    "get_variant",
    "resolve_variant",
]

#: Candidate rules: ``"box_or_center"`` (seed) or ``"center"`` (upstream 2023).
CANDIDATE_MODES = ("box_or_center", "center")


@dataclass(frozen=True)
class SimOTAVariant:
    """The knobs that differ between the released-weights SimOTA and the 2023 upstream one.

    Attributes:
        center_radius: half side of the centre square, in strides.
        candidates: ``"box_or_center"`` (an anchor is a candidate when its centre lies inside some GT
            box or inside some GT's centre square; geometry = in box AND in square) or ``"center"``
            (inside some centre square only; geometry = in square).
        penalty: cost added to a (GT, anchor) pair that fails the geometry test.
    """

    center_radius: float
    candidates: str
    penalty: float

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATE_MODES:
            raise ValueError(f"candidates must be one of {CANDIDATE_MODES}, got {self.candidates!r}")
        if not self.center_radius > 0:
            raise ValueError(f"center_radius must be > 0, got {self.center_radius}")
        if not self.penalty > 0:
            raise ValueError(f"penalty must be > 0, got {self.penalty}")

    @property
    def center_only(self) -> bool:
        """The flag the compiled ops take: True for the ``center`` candidate rule."""
        return self.candidates == "center"

    def op_args(self) -> tuple[float, bool, float]:
        """``(center_radius, center_only, penalty)``: the trailing arguments of every backend's op
        (``torch.ops.yolox_fast.simota_assign``, the Triton op, the batched torch path)."""
        return float(self.center_radius), self.center_only, float(self.penalty)


#: The SimOTA the released YOLOX weights were trained with (the seed's).
SEED = SimOTAVariant(center_radius=2.5, candidates="box_or_center", penalty=1e5)
#: Upstream YOLOX since January 2023.
CENTER = SimOTAVariant(center_radius=1.5, candidates="center", penalty=1e6)

#: The named variants (the ``--simota`` choices of the training CLI).
VARIANTS: dict[str, SimOTAVariant] = {"seed": SEED, "center": CENTER}
DEFAULT_VARIANT = "seed"


def get_variant(name: str) -> SimOTAVariant:
    """The variant called ``name`` (a key of :data:`VARIANTS`); ``ValueError`` listing the names otherwise."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown SimOTA variant {name!r}; choose from {', '.join(VARIANTS)}") from None


def resolve_variant(
    variant: str | SimOTAVariant = DEFAULT_VARIANT,
    *,
    center_radius: float | None = None,
    candidates: str | None = None,
    penalty: float | None = None,
) -> SimOTAVariant:
    """A named (or given) variant with some knobs overridden.

    ``candidates`` switches to the named variant with that candidate rule first, so its radius and
    penalty follow unless they are given too: ``resolve_variant(candidates="center") == CENTER``.
    """
    base = variant if isinstance(variant, SimOTAVariant) else get_variant(variant)
    if candidates is not None and candidates != base.candidates:
        matching = [v for v in VARIANTS.values() if v.candidates == candidates]
        if not matching:
            raise ValueError(f"candidates must be one of {CANDIDATE_MODES}, got {candidates!r}")
        base = matching[0]
    changes = {}
    if center_radius is not None:
        changes["center_radius"] = float(center_radius)
    if penalty is not None:
        changes["penalty"] = float(penalty)
    return dataclasses.replace(base, **changes) if changes else base
