// The inner loops of the CPU SimOTA op, compiled once per instruction set.
//
// simota_kernel.cpp includes this file as is (baseline ISA, scalar math from simota_math.h);
// simota_kernel_avx2.cpp includes it with CPU_CAPABILITY_AVX2 defined and the whole file compiled for
// AVX2 + FMA, where the transcendental loops use at::vec (Sleef, <= 1 ulp, the functions PyTorch's own
// vectorised kernels use). simota_kernel.cpp picks the AVX2 table at run time when
// at::native::get_cpu_capability() allows it (ATEN_CPU_CAPABILITY=default forces the scalar one).
//
// Everything here takes flat float32 arrays: no c10 types cross the ISA boundary.
#pragma once

#include <cstdint>

namespace yolox_fast {
namespace simota_cpu {

// One GT against all anchors of one image (phase 3 of simota_kernel.cpp).
struct ScanArgs {
  int64_t n;                                    // anchors
  const float *px1, *py1, *px2, *py2, *parea;   // predicted corners and areas of this image
  const float* cand;                            // candidate flags of this image (1.0 / 0.0)
  float cx, cy, w, h;                           // the GT, cx, cy, w, h
};

// One GT against a run of n anchors (pointers already offset to the first anchor).
struct AnchorArgs {
  const float *ax, *ay, *ar;  // anchor centre x, y; centre-square half side
  float cx, cy, w, h;         // the GT
  bool center_only;           // variant: centre square only
};

struct Loops {
  const char* name;
  // out[i] = sigmoid(x[i]) = 1 / (1 + exp(-x[i]))
  void (*sigmoid)(const float* x, float* out, int64_t n);
  // S_u = sum_c -max(log1p(-p_c), -100), p_c = sqrt(sigmoid(logits[c]) * sig_obj), accumulated in
  // double and rounded once; *max_logit = max_c logits[c]
  float (*bce_sum)(const float* logits, int64_t num_classes, float sig_obj, float* max_logit);
  // The min(10, n) largest of IoU(GT, pred u) * cand[u] over all anchors u, descending, into
  // top[0:10); returns how many. (Zeros of non-candidates cannot change dynamic k's sum.)
  int (*top_ious)(const ScanArgs& args, float* top);
  // iou[u] = IoU(GT, pred u) * cand[u] for every anchor
  void (*gt_ious)(const ScanArgs& args, float* iou);
  // cand[u] = 1 where (GT, u) is a candidate pair, geo[u] = 1 where it passes the geometry test
  // (both stay as they are elsewhere: flags are 1.0f / 0.0f), u < n
  void (*mark_flags)(const AnchorArgs& args, int64_t n, float* cand, float* geo);
  // Appends base + u for the anchors u < n that pass the geometry test; returns how many.
  int64_t (*geometry_indices)(const AnchorArgs& args, int64_t n, int32_t base, int32_t* out);
  // Appends base + u for u < n with x[u] > 0; returns how many.
  int64_t (*positive_indices)(const float* x, int64_t n, int32_t base, int32_t* out);
  // Appends base + u for u < n with bound[u] <= bar and iou[u] == 0 (a NaN bound never passes).
  int64_t (*reachable_indices)(const float* bound, const float* iou, float bar, int64_t n, int32_t base,
                               int32_t* out);
  // cost[i] of n pairs from their class logit, sigmoid(obj), S_u, IoU and geometry flag
  // (simota::pair_cost: ((S - L1(p)) + Lp(p)) + 3 * (-log(iou + 1e-8)) + penalty * !geo)
  void (*pair_costs)(int64_t n, const float* logit, const float* sig_obj, const float* s_u, const float* iou,
                     const uint8_t* geo, float penalty, float* cost);
};

// The baseline table (always there) and the AVX2 one (nullptr when not compiled in).
const Loops& scalar_loops();
const Loops* avx2_loops();

}  // namespace simota_cpu
}  // namespace yolox_fast
