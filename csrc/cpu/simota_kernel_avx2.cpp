// AVX2 + FMA versions of the SimOTA inner loops (see simota_loops.h).
//
// This whole file is compiled for AVX2 (isa_avx2_begin.h), so nothing here may run before the
// run-time check in simota_kernel.cpp. It includes only at::vec and the shared math, and defines its
// functions in an ISA-named namespace, so no inline function of another file gets an AVX2 copy.
//
// Why: measured on the 2-core EPYC dev machine (one thread, B=8, A=8400, C=80, seed variant), the
// whole op takes 19 ms of CPU time at G=120 and 1.4 ms at G=10 with these loops, against 90 ms and
// 7.1 ms with the scalar libm ones (ATEN_CPU_CAPABILITY=default).
#include "simota_loops.h"

#include "isa.h"

#if defined(YF_X86_ISA_FILES) && !defined(YOLOX_FAST_NO_AVX2)
#define YF_SIMOTA_AVX2 1
#endif

#ifdef YF_SIMOTA_AVX2
#include "isa_avx2_begin.h"

#include <ATen/cpu/vec/vec.h>
#include <math.h>

#include <cstdint>
#include <limits>

namespace yolox_fast {
namespace simota_cpu {
namespace avx2 {

// The shared math, compiled here for AVX2 under this ISA-named namespace: its inline functions must
// not share symbols with the baseline copies in simota_kernel.cpp (the linker could otherwise keep
// an AVX2 copy for the baseline path).
namespace isa {
#include "../common/simota_math.h"
}  // namespace isa
using isa::yolox_fast::Box;
using isa::yolox_fast::box_from_cxcywh;
using isa::yolox_fast::box_iou;
namespace simota = isa::yolox_fast::simota;

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kW = Vec::size();

// PyTorch's vectorised sigmoid: (1 + exp(0 - x)).reciprocal().
inline Vec vsigmoid(const Vec& x) { return (Vec(1.0f) + (Vec(0.0f) - x).exp()).reciprocal(); }

// -max(l, -100) with NaN passing through, as the scalar bce_target0/1.
inline Vec neg_clamped(const Vec& l) { return Vec(0.0f) - at::vec::maximum(l, Vec(-100.0f)); }

void sigmoid(const float* x, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vsigmoid(Vec::loadu(x + i)).store(out + i);
  if (i < n) vsigmoid(Vec::loadu(x + i, n - i)).store(out + i, n - i);
}

float bce_sum(const float* logits, int64_t num_classes, float sig_obj, float* max_logit) {
  // sum_c log1p(-p_c) as the log of products of (1 - p_c) in double: 1 - p is exact in double, 40
  // factors >= 2^-24 per lane cannot underflow (2^-960 > 2^-1022), and one 4-lane double log per
  // 160 classes replaces 160 float log1p calls (Sleef's log1p dominated the profile). The result
  // is the sum rounded once.
  // p == 1 (log1p = -inf, clamped to -100 by PyTorch) counts 100 and contributes factor 1.
  using VecD = at::vec::Vectorized<double>;
  const Vec so(sig_obj), zero(0.0f), one(1.0f);
  const VecD one_d(1.0);
  Vec mx(-std::numeric_limits<float>::infinity());
  VecD prod_lo(1.0), prod_hi(1.0), logsum(0.0);
  int64_t saturated = 0;
  int groups = 0;
  for (int64_t c = 0; c < num_classes; c += kW) {
    const int64_t r = num_classes - c < kW ? num_classes - c : kW;
    const Vec l = Vec::loadu(logits + c, r);
    const Vec p = Vec::set(zero, (vsigmoid(l) * so).sqrt(), r);  // unused lanes: p = 0, factor 1
    const Vec sat = p == one;
    saturated += __builtin_popcount(_mm256_movemask_ps(sat));
    const Vec pm = Vec::blendv(p, zero, sat);
    mx = Vec::set(mx, at::vec::maximum(mx, l), r);
    prod_lo = prod_lo * (one_d - VecD(_mm256_cvtps_pd(_mm256_castps256_ps128(pm))));
    prod_hi = prod_hi * (one_d - VecD(_mm256_cvtps_pd(_mm256_extractf128_ps(pm, 1))));
    if (++groups == 20) {
      logsum = logsum + (prod_lo * prod_hi).log();
      prod_lo = one_d, prod_hi = one_d, groups = 0;
    }
  }
  if (groups) logsum = logsum + (prod_lo * prod_hi).log();
  alignas(32) double lanes_d[4];
  logsum.store(lanes_d);
  const double total = (lanes_d[0] + lanes_d[1]) + (lanes_d[2] + lanes_d[3]);
  alignas(32) float lanes[kW];
  mx.store(lanes);
  float m = lanes[0];
  for (int64_t j = 1; j < kW; ++j) m = lanes[j] > m ? lanes[j] : m;
  *max_logit = m;
  return static_cast<float>(100.0 * static_cast<double>(saturated) - total);
}

int top_ious(const ScanArgs& a, float* top) {
  // IoU exactly as box_iou (same IEEE operations; blendv on a > b is the ternary a > b ? a : b),
  // 8 anchors at a time; a lane goes to the scalar insertion only when it beats the current 10th.
  const Box<float> gb = box_from_cxcywh<float>(a.cx, a.cy, a.w, a.h);
  const Vec gx1(gb.x1), gy1(gb.y1), gx2(gb.x2), gy2(gb.y2), garea(a.w * a.h), zero(0.0f);
  int n_top = 0;
  float thr = -1.0f;  // below every IoU until 10 values are in
  alignas(32) float lanes[kW];
  for (int64_t u = 0; u < a.n; u += kW) {
    const int64_t r = a.n - u < kW ? a.n - u : kW;
    const Vec px1 = Vec::loadu(a.px1 + u, r), py1 = Vec::loadu(a.py1 + u, r);
    const Vec px2 = Vec::loadu(a.px2 + u, r), py2 = Vec::loadu(a.py2 + u, r);
    const Vec tlx = Vec::blendv(px1, gx1, gx1 > px1), tly = Vec::blendv(py1, gy1, gy1 > py1);
    const Vec brx = Vec::blendv(px2, gx2, gx2 < px2), bry = Vec::blendv(py2, gy2, gy2 < py2);
    const Vec overlap = (tlx < brx) & (tly < bry);
    const Vec inter = Vec::blendv(zero, (brx - tlx) * (bry - tly), overlap);
    const Vec uni = (garea + Vec::loadu(a.parea + u, r)) - inter;
    const Vec iou = Vec::blendv(zero, inter / uni, uni > zero) * Vec::loadu(a.cand + u, r);  // lanes >= r: 0
    if (_mm256_movemask_ps(iou > Vec(thr)) == 0) continue;
    iou.store(lanes);
    for (int64_t j = 0; j < r; ++j) {
      if (lanes[j] > thr || n_top < simota::kTopIou) {
        simota::insert_largest(top, n_top, simota::kTopIou, lanes[j]);
        if (n_top == simota::kTopIou) thr = top[simota::kTopIou - 1];
      }
    }
  }
  return n_top;
}

void gt_ious(const ScanArgs& a, float* out) {
  const Box<float> gb = box_from_cxcywh<float>(a.cx, a.cy, a.w, a.h);
  const Vec gx1(gb.x1), gy1(gb.y1), gx2(gb.x2), gy2(gb.y2), garea(a.w * a.h), zero(0.0f);
  for (int64_t u = 0; u < a.n; u += kW) {
    const int64_t r = a.n - u < kW ? a.n - u : kW;
    const Vec px1 = Vec::loadu(a.px1 + u, r), py1 = Vec::loadu(a.py1 + u, r);
    const Vec px2 = Vec::loadu(a.px2 + u, r), py2 = Vec::loadu(a.py2 + u, r);
    const Vec tlx = Vec::blendv(px1, gx1, gx1 > px1), tly = Vec::blendv(py1, gy1, gy1 > py1);
    const Vec brx = Vec::blendv(px2, gx2, gx2 < px2), bry = Vec::blendv(py2, gy2, gy2 < py2);
    const Vec inter = Vec::blendv(zero, (brx - tlx) * (bry - tly), (tlx < brx) & (tly < bry));
    const Vec uni = (garea + Vec::loadu(a.parea + u, r)) - inter;
    (Vec::blendv(zero, inter / uni, uni > zero) * Vec::loadu(a.cand + u, r)).store(out + u, r);
  }
}

// The geometry / candidate tests of simota_math.h on 8 anchors (same float operations).
inline void geometry_vec(const AnchorArgs& a, int64_t u, int64_t r, Vec& candidate, Vec& geometry) {
  const Vec x = Vec::loadu(a.ax + u, r), y = Vec::loadu(a.ay + u, r), rad = Vec::loadu(a.ar + u, r), zero(0.0f);
  const Vec cx(a.cx), cy(a.cy);
  const Vec in_center = ((x - (cx - rad)) > zero) & ((y - (cy - rad)) > zero) & (((cx + rad) - x) > zero) &
                        (((cy + rad) - y) > zero);
  if (a.center_only) {
    candidate = geometry = in_center;
    return;
  }
  const float hw = 0.5f * a.w, hh = 0.5f * a.h;
  const Vec in_box = ((x - Vec(a.cx - hw)) > zero) & ((y - Vec(a.cy - hh)) > zero) & ((Vec(a.cx + hw) - x) > zero) &
                     ((Vec(a.cy + hh) - y) > zero);
  candidate = in_center | in_box;
  geometry = in_center & in_box;
}

inline int lane_bits(const Vec& mask, int64_t r) {
  return _mm256_movemask_ps(mask) & ((1 << r) - 1);
}

void mark_flags(const AnchorArgs& a, int64_t n, float* cand, float* geo) {
  const Vec one(1.0f);
  for (int64_t u = 0; u < n; u += kW) {
    const int64_t r = n - u < kW ? n - u : kW;
    Vec c, g;
    geometry_vec(a, u, r, c, g);
    (Vec::loadu(cand + u, r) | (c & one)).store(cand + u, r);
    (Vec::loadu(geo + u, r) | (g & one)).store(geo + u, r);
  }
}

int64_t geometry_indices(const AnchorArgs& a, int64_t n, int32_t base, int32_t* out) {
  int64_t m = 0;
  for (int64_t u = 0; u < n; u += kW) {
    const int64_t r = n - u < kW ? n - u : kW;
    Vec c, g;
    geometry_vec(a, u, r, c, g);
    for (int bits = lane_bits(g, r); bits; bits &= bits - 1) out[m++] = base + static_cast<int32_t>(u + __builtin_ctz(bits));
  }
  return m;
}

int64_t positive_indices(const float* x, int64_t n, int32_t base, int32_t* out) {
  int64_t m = 0;
  const Vec zero(0.0f);
  for (int64_t u = 0; u < n; u += kW) {
    const int64_t r = n - u < kW ? n - u : kW;
    for (int bits = lane_bits(Vec::loadu(x + u, r) > zero, r); bits; bits &= bits - 1)
      out[m++] = base + static_cast<int32_t>(u + __builtin_ctz(bits));
  }
  return m;
}

int64_t reachable_indices(const float* bound, const float* iou, float bar, int64_t n, int32_t base, int32_t* out) {
  int64_t m = 0;
  const Vec zero(0.0f), vbar(bar);
  for (int64_t u = 0; u < n; u += kW) {
    const int64_t r = n - u < kW ? n - u : kW;
    const Vec pass = (Vec::loadu(bound + u, r) <= vbar) & (Vec::loadu(iou + u, r) == zero);
    for (int bits = lane_bits(pass, r); bits; bits &= bits - 1)
      out[m++] = base + static_cast<int32_t>(u + __builtin_ctz(bits));
  }
  return m;
}

inline Vec cost_vec(const Vec& logit, const Vec& so, const Vec& s, const Vec& iou, const Vec& notgeo, float penalty) {
  const Vec p = (vsigmoid(logit) * so).sqrt();
  const Vec l1 = neg_clamped((Vec(0.0f) - p).log1p());
  const Vec lp = neg_clamped(p.log());
  const Vec cls = (s - l1) + lp;
  const Vec ic = Vec(3.0f) * (Vec(0.0f) - (iou + Vec(1e-8f)).log());
  return (cls + ic) + Vec(penalty) * notgeo;
}

void pair_costs(int64_t n, const float* logit, const float* sig_obj, const float* s_u, const float* iou,
                const uint8_t* geo, float penalty, float* cost) {
  alignas(32) float notgeo[kW];
  for (int64_t i = 0; i < n; i += kW) {
    const int64_t r = n - i < kW ? n - i : kW;
    for (int64_t j = 0; j < kW; ++j) notgeo[j] = (j < r && !geo[i + j]) ? 1.0f : 0.0f;
    const Vec c = cost_vec(Vec::loadu(logit + i, r), Vec::loadu(sig_obj + i, r), Vec::loadu(s_u + i, r),
                           Vec::loadu(iou + i, r), Vec::loadu(notgeo), penalty);
    c.store(cost + i, r);
  }
}

const Loops kLoops{"avx2",      &sigmoid,          &bce_sum,          &top_ious,          &gt_ious,
                   &mark_flags, &geometry_indices, &positive_indices, &reachable_indices, &pair_costs};

}  // namespace avx2
}  // namespace simota_cpu
}  // namespace yolox_fast

#include "isa_end.h"

namespace yolox_fast {
namespace simota_cpu {
// Compiled for the baseline ISA: safe to call before the CPU check.
const Loops* avx2_loops() { return &avx2::kLoops; }
}  // namespace simota_cpu
}  // namespace yolox_fast

#else  // no AVX2 build

namespace yolox_fast {
namespace simota_cpu {
const Loops* avx2_loops() { return nullptr; }
}  // namespace simota_cpu
}  // namespace yolox_fast

#endif
