// SimOTA arithmetic shared by the CPU and CUDA kernels.
//
// Every function mirrors yolox_fast/ops/reference.py (candidate_masks, simota_cost,
// dynamic_k_matching) operation by operation and in float32, so that with FMA contraction off (see
// setup.py) the candidate tests, IoUs and dynamic k agree bit for bit with the reference. The
// classification cost uses the per-anchor BCE-sum identity of docs/design.md,
//
//   sum_c BCE(p_c, onehot_g) = S_u - L1(p_g) + Lp(p_g),   S_u = sum_c L1(p_c),
//
// which rounds differently from the reference's sum over C (a few float32 ulps), so costs agree
// to ~1e-6 relative and decisions agree except at such near-ties.
#pragma once

#include <math.h>

#include <cstdint>

#include "box_math.h"
#include "macros.h"

namespace yolox_fast {
namespace simota {

// dynamic k = max(1, int(sum of the <= 10 largest IoUs)) and each IoU is <= 1 (up to rounding),
// so no GT ever takes more than 10 anchors.
constexpr int kTopIou = 10;
constexpr int kMaxK = 10;

// Anchor centre in input pixels: (grid + 0.5) * stride, as reference.anchor_centers.
YF_HOST_DEVICE float anchor_center(float grid, float stride) { return (grid + 0.5f) * stride; }

// Anchor centre strictly inside the GT box (cx, cy, w, h): all four distances > 0
// (reference: x - (cx - 0.5 * w), y - (cy - 0.5 * h), (cx + 0.5 * w) - x, (cy + 0.5 * h) - y).
YF_HOST_DEVICE bool in_gt_box(float x, float y, float cx, float cy, float w, float h) {
  const float hw = 0.5f * w, hh = 0.5f * h;
  return (x - (cx - hw) > 0.0f) & (y - (cy - hh) > 0.0f) & ((cx + hw) - x > 0.0f) & ((cy + hh) - y > 0.0f);
}

// Anchor centre strictly inside the square of half side `radius` (= center_radius * stride)
// around the GT centre.
YF_HOST_DEVICE bool in_center_square(float x, float y, float cx, float cy, float radius) {
  return (x - (cx - radius) > 0.0f) & (y - (cy - radius) > 0.0f) & ((cx + radius) - x > 0.0f) &
         ((cy + radius) - y > 0.0f);
}

// The candidate test and the geometry (penalty-free) test of one (GT, anchor) pair.
//   seed   (center_only = false): candidate = in_box | in_center, geometry = in_box & in_center;
//   center (center_only = true):  candidate = geometry = in_center.
struct PairGeometry {
  bool candidate;
  bool geometry;
};

YF_HOST_DEVICE PairGeometry pair_geometry(float x, float y, float radius, float cx, float cy, float w, float h,
                                          bool center_only) {
  const bool c = in_center_square(x, y, cx, cy, radius);
  if (center_only) return {c, c};
  const bool b = in_gt_box(x, y, cx, cy, w, h);
  return {static_cast<bool>(b | c), static_cast<bool>(b & c)};
}

// sigmoid in float32 as PyTorch's scalar kernel: 1 / (1 + exp(-x)).
YF_HOST_DEVICE float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// p = sqrt(sigmoid(cls) * sigmoid(obj)), the official joint score; sig_obj = sigmoidf(obj).
YF_HOST_DEVICE float joint_score(float cls_logit, float sig_obj) { return sqrtf(sigmoidf(cls_logit) * sig_obj); }

// BCE terms with PyTorch's clamp of each log at -100 (binary_cross_entropy computes
// (t - 1) * max(log1p(-p), -100) - t * max(log(p), -100)):
//   L1(p) = -max(log1p(-p), -100)   (target 0),   Lp(p) = -max(log(p), -100)   (target 1).
// `l < -100 ? -100 : l` is std::max(l, -100) (NaN passes through, as in PyTorch).
YF_HOST_DEVICE float bce_target0(float p) {
  const float l = log1pf(-p);
  return -(l < -100.0f ? -100.0f : l);
}

YF_HOST_DEVICE float bce_target1(float p) {
  const float l = logf(p);
  return -(l < -100.0f ? -100.0f : l);
}

// IoU cost term of the reference: 3 * (-log(iou + 1e-8)).
YF_HOST_DEVICE float iou_cost(float iou) { return 3.0f * (-logf(iou + 1e-8f)); }

// Cost of one (GT g, anchor u) pair in the reference's operation order:
//   (cls_cost + 3 * (-log(iou + 1e-8))) + penalty * !geometry,
//   cls_cost = (S_u - L1(p_g)) + Lp(p_g),  p_g = the joint score of u for the class of g.
YF_HOST_DEVICE float pair_cost(float s_u, float p_g, float iou, bool geometry, float penalty) {
  const float cls_cost = (s_u - bce_target0(p_g)) + bce_target1(p_g);
  return (cls_cost + iou_cost(iou)) + penalty * (geometry ? 0.0f : 1.0f);
}

// Every penalised pair costs at least fl(x + penalty) with x = cls_cost + iou_cost >= -tiny (all BCE
// terms are >= 0 and S_u >= L1(p_g) because S_u sums L1(p_g) with other non-negative terms; IoU <= 1
// up to rounding). So a cost below half the penalty can never be beaten by a penalised pair: this
// lets the kernels first look at the few geometry pairs and fall back to all candidates only when
// they do not decide the answer.
YF_HOST_DEVICE bool below_penalty(float cost, float penalty) { return cost < 0.5f * penalty; }

// Strict total order used for every selection: lower cost first, NaN after every number, and on
// equal cost the lower index (anchor index for top-k, GT index for conflicts) first.
YF_HOST_DEVICE bool cost_before(float ca, int64_t ia, float cb, int64_t ib) {
  const bool na = ca != ca, nb = cb != cb;
  if (na | nb) return (!na && nb) || (na && nb && ia < ib);
  return ca < cb || (ca == cb && ia < ib);
}

// Insert (value, index) into `vals/idx[0:n)`, kept in ascending cost_before order, capacity `cap`.
// Callers visit indices in increasing order, so an equal value never displaces an earlier index.
YF_HOST_DEVICE void insert_smallest(float* vals, int32_t* idx, int& n, int cap, float v, int32_t i) {
  if (n == cap && !cost_before(v, i, vals[cap - 1], idx[cap - 1])) return;
  int j = n < cap ? n++ : cap - 1;
  while (j > 0 && cost_before(v, i, vals[j - 1], idx[j - 1])) {
    vals[j] = vals[j - 1];
    idx[j] = idx[j - 1];
    --j;
  }
  vals[j] = v;
  idx[j] = i;
}

// Insert `v` into the descending list `vals[0:n)` of capacity `cap` (top IoUs; order among equal
// values does not matter for their sum).
YF_HOST_DEVICE void insert_largest(float* vals, int& n, int cap, float v) {
  if (n == cap && !(v > vals[cap - 1])) return;
  int j = n < cap ? n++ : cap - 1;
  while (j > 0 && v > vals[j - 1]) {
    vals[j] = vals[j - 1];
    --j;
  }
  vals[j] = v;
}

// dynamic k from the descending top IoUs: max(1, int(sequential float32 sum, largest first)).
YF_HOST_DEVICE int dynamic_k(const float* top_desc, int n) {
  float s = 0.0f;
  for (int j = 0; j < n; ++j) s = s + top_desc[j];
  // int() truncates like the reference's .int(); the bounds also keep NaN / huge sums defined
  // (IoU <= 1 for boxes of non-negative size, so s < kMaxK + 1 always in practice).
  return s >= static_cast<float>(kMaxK) ? kMaxK : (s >= 1.0f ? static_cast<int>(s) : 1);
}

}  // namespace simota
}  // namespace yolox_fast
