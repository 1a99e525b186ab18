"""The definition of nms, batched_nms and pairwise_iou, as an oracle, and generated cases of every kind.

Shared by ``tests/test_ops_torchvision_oracle.py`` (every CPU backend and torchvision) and
``tests/test_ops_torchvision_oracle_triton.py`` (the Triton kernels under the interpreter).

The oracle judges a result by the definition, not by another implementation:

* NMS: boxes go in priority order (score descending, equal scores by index, across categories too); a box
  is kept iff no kept box before it, of its category, has IoU ``> threshold``. IoU is
  ``inter / (area_a + area_b - inter)`` with ``inter = max(0, min(x2) - max(x1)) * max(0, min(y2) - max(y1))``,
  on the boxes rounded to float32 (the documented compute dtype) against the threshold rounded to float32.
  A pair with a non-finite coordinate, or whose float32 areas or area sum overflow, never suppresses.
* pairwise IoU: the official ``bboxes_iou``: the intersection counts only when both sides are positive,
  a union that is not positive gives 0, a pair with a non-finite coordinate gives 0; computed in float32
  for half inputs (float32 overflow of an area or the area sum gives 0), float64 in float64.

IoUs are computed in float64 from the exact inputs and, near the threshold, in exact rationals
(``fractions.Fraction``). A case is *exact* when its boxes lie on an integer grid (times a power of two)
with sides of at most 64 and its threshold is a multiple of 1/1024: then float32 arithmetic decides every
pair as exact rationals do (every area and union is an exact float32; the one rounding, of the quotient, is
smaller than the distance between a quotient of such small integers and the threshold), so exactly one
answer is right. Otherwise a pair within float32 rounding of the threshold may go either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

#: Where float32 rounding overflows: exact values at or above it become inf.
F32_OVERFLOW = 2.0**128 * (1 - 2.0**-25)
#: Relative float32 rounding a computed IoU may carry (a few roundings of 2**-24 each, generously).
F32_BAND = 4e-6


@dataclass(frozen=True)
class NmsCase:
    """One generated NMS problem. ``boxes [N, 4]`` xyxy and ``scores [N]`` of one dtype, ``idxs [N]`` int64."""

    name: str
    boxes: torch.Tensor
    scores: torch.Tensor
    idxs: torch.Tensor
    threshold: float
    exact: bool


@dataclass(frozen=True)
class IouCase:
    """One generated IoU problem: ``boxes1 [N, 4]``, ``boxes2 [M, 4]`` in ``fmt``."""

    name: str
    boxes1: torch.Tensor
    boxes2: torch.Tensor
    fmt: str
    exact: bool


# --------------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------------


def grid_boxes(g: torch.Generator, n: int, lo: int = -96, hi: int = 96, sides: tuple[int, int] = (1, 64),
               scale: float = 1.0) -> torch.Tensor:
    """``[n, 4]`` float64 xyxy boxes: integer corners in ``[lo, hi + sides[1]]``, integer sides in ``sides``
    (0: zero area, negative: negative width), all times ``scale``."""
    xy = torch.randint(lo, hi + 1, (n, 2), generator=g)
    wh = torch.randint(sides[0], sides[1] + 1, (n, 2), generator=g)
    return torch.cat([xy, xy + wh], 1).double() * scale


def float_boxes(g: torch.Generator, n: int, extent: float = 640.0, max_side: float = 160.0) -> torch.Tensor:
    """``[n, 4]`` float64 xyxy boxes with uniform random corners and sides in ``[1, max_side]``."""
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g, dtype=torch.float64) * (max_side - 1)], 1)


def tied_scores(g: torch.Generator, n: int, levels: int = 4) -> torch.Tensor:
    """``[n]`` float64 scores from ``levels`` values: many exact ties."""
    return torch.randint(0, levels, (n,), generator=g).double() / levels


def dyadic_threshold(g: torch.Generator) -> float:
    """A threshold in [0, 1] that is a multiple of 1/1024 (0 and 1 included), for exact cases."""
    return int(torch.randint(0, 1025, (1,), generator=g)) / 1024


def with_non_finite(g: torch.Generator, boxes: torch.Tensor, fraction: float = 0.15) -> torch.Tensor:
    """``boxes`` with about ``fraction`` of the coordinates set to NaN, +inf or -inf."""
    boxes = boxes.clone()
    hit = torch.rand(boxes.shape, generator=g) < fraction
    values = torch.tensor([math.nan, math.inf, -math.inf], dtype=boxes.dtype)
    boxes[hit] = values[torch.randint(0, 3, (int(hit.sum()),), generator=g)]
    return boxes


def nms_cases(dtype: torch.dtype, small: bool = False) -> list[NmsCase]:
    """Cases of every kind in ``dtype`` (float16 skips the coordinates it cannot hold). ``small`` keeps N
    low (the Triton interpreter)."""
    cases: list[NmsCase] = []
    big = 60 if small else (2000 if dtype == torch.float32 else 600)  # the torch backend's nms is O(N^2)
    n = 30 if small else 200

    def add(name, boxes, scores, idxs, threshold, exact):
        cases.append(NmsCase(f"{name}-{str(dtype)[6:]}", boxes.to(dtype), scores.to(dtype), idxs, threshold,
                             exact))

    which = {torch.float16: 0, torch.float32: 1}.get(dtype, 2)
    g = torch.Generator().manual_seed(which)
    thr = dyadic_threshold(g)
    # equal scores within and across categories, exact IoU ties at dyadic thresholds
    add("ties", grid_boxes(g, n, sides=(1, 24)), tied_scores(g, n), torch.randint(0, 5, (n,), generator=g),
        thr, True)
    # tiny boxes on a small grid: many IoUs exactly 1/2, 1/4, 3/4 ...
    add("threshold-ties", grid_boxes(g, n, lo=0, hi=6, sides=(1, 4)), tied_scores(g, n, 8),
        torch.randint(0, 2, (n,), generator=g), (0.25, 0.5, 0.75)[which], True)
    # duplicates: few distinct boxes and scores, repeated
    base = grid_boxes(g, 12, sides=(1, 40))
    pick = torch.randint(0, 12, (n,), generator=g)
    add("duplicates", base[pick], tied_scores(g, 12, 3)[pick], torch.randint(0, 3, (n,), generator=g),
        thr, True)
    # zero-area and negative-width/height boxes among ordinary ones
    add("degenerate", grid_boxes(g, n, sides=(-12, 30)), torch.rand(n, generator=g, dtype=torch.float64),
        torch.randint(0, 3, (n,), generator=g), thr, True)
    # every coordinate negative (torchvision's batched offset trick lets categories meet there)
    add("negative", grid_boxes(g, n, lo=-300, hi=-100, sides=(1, 64)), tied_scores(g, n, 16),
        torch.randint(-2, 3, (n,), generator=g), thr, True)
    # NaN and infinite coordinates, +-inf scores
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    scores[torch.randint(0, n, (6,), generator=g)] = torch.tensor([math.inf, -math.inf] * 3, dtype=torch.float64)
    add("non-finite", with_non_finite(g, grid_boxes(g, n, sides=(1, 40))), scores,
        torch.randint(0, 3, (n,), generator=g), thr, True)
    # huge coordinates: the grid times 2**50 (2**6 in float16, whose range ends at 65,504)
    scale = 2.0**6 if dtype == torch.float16 else 2.0**50
    add("huge", grid_boxes(g, n, sides=(1, 64), scale=scale), tied_scores(g, n, 16),
        torch.randint(0, 3, (n,), generator=g), thr, True)
    # thresholds 0 and 1 exactly
    add("threshold0", grid_boxes(g, n), tied_scores(g, n, 16), torch.randint(0, 3, (n,), generator=g),
        0.0, True)
    add("threshold1", grid_boxes(g, n, lo=0, hi=8, sides=(1, 8)), tied_scores(g, n, 16),
        torch.randint(0, 3, (n,), generator=g), 1.0, True)
    if dtype == torch.float32:
        # float32 areas overflow (sides near 2**63): such pairs never suppress, as documented
        add("float32-overflow", grid_boxes(g, n, sides=(1, 64), scale=2.0**60), tied_scores(g, n, 16),
            torch.randint(0, 3, (n,), generator=g), thr, True)
    # random float boxes, distinct scores, an ordinary threshold: not exact (float32 rounding may decide)
    add("random", float_boxes(g, big), torch.rand(big, generator=g, dtype=torch.float64),
        torch.randint(0, 80, (big,), generator=g), 0.3 + 0.4 * float(torch.rand(1, generator=g)),
        False)
    # many boxes on the grid, few score levels, many categories: ties at scale
    add("large-ties", grid_boxes(g, 4 * n, lo=0, hi=600), tied_scores(g, 4 * n, 32),
        torch.randint(0, 80, (4 * n,), generator=g), thr, True)
    g = torch.Generator().manual_seed(7)
    for n in (0, 1):
        add(f"size{n}", grid_boxes(g, n), tied_scores(g, n), torch.zeros(n, dtype=torch.long), 0.5, True)
    return cases


def iou_cases(dtype: torch.dtype, small: bool = False) -> list[IouCase]:
    """IoU cases of every kind in ``dtype``, both formats."""
    cases: list[IouCase] = []
    n, m = (9, 30) if small else (60, 300)
    g = torch.Generator().manual_seed({torch.float16: 11, torch.float32: 12}.get(dtype, 13))
    kinds = {
        "ordinary": lambda k: grid_boxes(g, k),
        "touching-and-tiny": lambda k: grid_boxes(g, k, lo=0, hi=6, sides=(0, 4)),
        "degenerate": lambda k: grid_boxes(g, k, sides=(-12, 30)),
        "negative": lambda k: grid_boxes(g, k, lo=-300, hi=-100),
        "non-finite": lambda k: with_non_finite(g, grid_boxes(g, k, sides=(1, 40))),
        "huge": lambda k: grid_boxes(g, k, scale=2.0**6 if dtype == torch.float16 else 2.0**50),
        "random": lambda k: float_boxes(g, k),
    }
    if dtype != torch.float16:
        kinds["float32-overflow"] = lambda k: grid_boxes(g, k, scale=2.0**60)
    for name, make in kinds.items():
        for fmt in ("xyxy", "cxcywh"):
            a, b = make(n), make(m)
            b[: n // 3] = a[: n // 3]  # identical pairs
            if fmt == "cxcywh":  # centre = corner mean, size = side: on the grid, the corners stay exact
                a, b = (torch.cat([(x[:, :2] + x[:, 2:]) / 2, x[:, 2:] - x[:, :2]], 1) for x in (a, b))
            cases.append(IouCase(f"{name}-{fmt}-{str(dtype)[6:]}", a.to(dtype), b.to(dtype), fmt, name != "random"))
    cases.append(IouCase(f"empty-{str(dtype)[6:]}", torch.zeros(0, 4, dtype=dtype), grid_boxes(g, 3).to(dtype),
                         "xyxy", True))
    cases.append(IouCase(f"empty2-{str(dtype)[6:]}", grid_boxes(g, 3).to(dtype), torch.zeros(0, 4, dtype=dtype),
                         "cxcywh", True))
    return cases


# --------------------------------------------------------------------------------------------------
# The NMS oracle
# --------------------------------------------------------------------------------------------------


def _float32_overflow(area_x: np.ndarray, area_y: np.ndarray, area_sum: np.ndarray) -> np.ndarray:
    """``[n, m]``: whether float32 overflows on an area or the area sum of the pair (inputs exact in float64:
    the grid cases, where this decides exactly)."""
    with np.errstate(invalid="ignore"):
        biggest = np.maximum(np.maximum(np.abs(area_x)[:, None], np.abs(area_y)[None, :]), np.abs(area_sum))
    return biggest >= F32_OVERFLOW


def _exact_iou(a: np.ndarray, b: np.ndarray) -> Fraction:
    """The IoU of two finite xyxy boxes in rationals (0 when they do not intersect)."""
    a, b = [Fraction(float(v)) for v in a], [Fraction(float(v)) for v in b]
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, Fraction(0)) * max(h, Fraction(0))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if inter > 0 else Fraction(0)


def _pair_terms(x: np.ndarray, y: np.ndarray, area_x: np.ndarray, area_y: np.ndarray):
    """float64 ``inter``, area sum and ``q = inter / union`` of every pair of xyxy rows ``x [n, 4]``,
    ``y [m, 4]`` (``q`` 0 where ``inter`` is 0), and which pairs have only finite coordinates."""
    finite = np.isfinite(x).all(1)[:, None] & np.isfinite(y).all(1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        w = np.minimum(x[:, None, 2], y[None, :, 2]) - np.maximum(x[:, None, 0], y[None, :, 0])
        h = np.minimum(x[:, None, 3], y[None, :, 3]) - np.maximum(x[:, None, 1], y[None, :, 1])
        inter = np.where(finite & (w > 0) & (h > 0), w * h, 0.0)
        area_sum = area_x[:, None] + area_y[None, :]
        q = np.where(inter > 0, inter / (area_sum - inter), 0.0)
    return inter, area_sum, q, finite


def nms_decisions(boxes: torch.Tensor, threshold: float, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """``must [N, N]``, ``may [N, N]`` bool: whether box i, kept, must / may suppress box j by the definition.

    Equal where the case is exact (pairs near the threshold are decided in rationals); elsewhere a pair
    within float32 rounding of the threshold, or of float32 overflow, may go either way.
    """
    x = boxes.float().double().numpy()  # the documented compute dtype: float32 (exact for float16)
    t = float(np.float32(threshold))
    with np.errstate(invalid="ignore", over="ignore"):
        area = (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    inter, area_sum, q, finite = _pair_terms(x, x, area, area)
    counts = finite & (inter > 0) & ~_float32_overflow(area, area, area_sum)
    above = counts & (q > t)
    if exact:
        for i, j in zip(*np.nonzero(counts & (np.abs(q - t) <= 1e-9)), strict=True):  # ties (or nearly): rationals
            above[i, j] = _exact_iou(x[i], x[j]) > Fraction(t)
        return above, above
    near = counts & (np.abs(q - t) <= F32_BAND * max(t, 1e-30))
    return above & ~near, above | near


def nms_violation(keep: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor | None, decisions) -> str | None:
    """Why ``keep`` is not the NMS answer by the definition (see :func:`nms_decisions`), or None."""
    must, may = decisions
    got = keep.tolist()
    n = scores.shape[0]
    if keep.dtype != torch.long or len(set(got)) != len(got) or any(not 0 <= k < n for k in got):
        return f"not distinct int64 indices in [0, {n}): {keep}"
    s = scores.double().tolist()
    priority = sorted(range(n), key=lambda i: (-s[i], i))
    rank = {i: r for r, i in enumerate(priority)}
    if got != sorted(got, key=rank.__getitem__):
        return f"not ordered by score descending, equal scores by index: {got[:20]}"
    cat = np.zeros(n, dtype=np.int64) if idxs is None else idxs.numpy()
    kept = np.zeros(n, dtype=bool)
    is_kept = np.zeros(n, dtype=bool)
    is_kept[got] = True
    for i in priority:
        earlier = kept & (cat == cat[i])
        if is_kept[i]:
            by = np.nonzero(earlier & must[:, i])[0]
            if by.size:
                return f"box {i} is kept although kept box {by[0]} suppresses it"
            kept[i] = True
        elif not (earlier & may[:, i]).any():
            return f"box {i} is dropped although no kept box of its category suppresses it"
    return None


# --------------------------------------------------------------------------------------------------
# The IoU oracle
# --------------------------------------------------------------------------------------------------


def _corners(boxes: torch.Tensor, fmt: str, compute: torch.dtype) -> np.ndarray:
    """xyxy corners in the compute dtype (cx +- w / 2 rounded once there, as every backend), as float64."""
    b = boxes.to(compute)
    if fmt == "cxcywh":
        b = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
    return b.double().numpy()


def iou_expected(boxes1: torch.Tensor, boxes2: torch.Tensor, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """The official ``bboxes_iou`` by the definition: ``value [N, M]`` float64 and the absolute
    ``tolerance [N, M]`` of the computed result (float32 arithmetic, rounding to a half dtype)."""
    compute = torch.float64 if boxes1.dtype == torch.float64 else torch.float32
    x, y = _corners(boxes1, fmt, compute), _corners(boxes2, fmt, compute)

    def areas(boxes, corners):
        with np.errstate(invalid="ignore", over="ignore"):
            if fmt == "cxcywh":  # the official rule: w * h of the box as given
                return boxes[:, 2].to(compute).double().numpy() * boxes[:, 3].to(compute).double().numpy()
            return (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])

    area1, area2 = areas(boxes1, x), areas(boxes2, y)
    inter, area_sum, q, finite = _pair_terms(x, y, area1, area2)
    if compute == torch.float32:
        value = np.where(finite & ~_float32_overflow(area1, area2, area_sum), q, 0.0)
    else:
        value = np.where(finite, q, 0.0)
    info = torch.finfo(boxes1.dtype)
    rel = 1e-13 if compute == torch.float64 else F32_BAND + (info.eps / 2 if info.bits == 16 else 0.0)
    return value, rel * value + info.tiny * info.eps / 2  # the last term: half of the smallest subnormal step


def iou_violation(got: torch.Tensor, case: IouCase, expected: tuple[np.ndarray, np.ndarray]) -> str | None:
    """Why ``got [N, M]`` is not the IoU of ``case`` by the definition (``expected`` from
    :func:`iou_expected`), or None."""
    boxes1, boxes2 = case.boxes1, case.boxes2
    if got.shape != (boxes1.shape[0], boxes2.shape[0]) or got.dtype != boxes1.dtype:
        want = (boxes1.shape[0], boxes2.shape[0])
        return f"shape {tuple(got.shape)} dtype {got.dtype}, expected {want} {boxes1.dtype}"
    value, tolerance = expected
    g = got.double().numpy()
    bad = ~(np.abs(g - value) <= tolerance)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        return (f"{int(bad.sum())} wrong values; IoU({boxes1[i].tolist()}, {boxes2[j].tolist()}) = {g[i, j]!r}, "
                f"the definition gives {value[i, j]!r}")
    return None
