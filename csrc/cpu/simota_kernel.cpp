// SimOTA assignment on the CPU, batched over images, never building the [G, A, C] tensor.
//
// The reference (yolox_fast/ops/reference.py) computes the cost of every (GT, candidate) pair, each
// through a sum over C classes. Here most of that work is skipped, exactly (same result, not an
// approximation):
//
// * A GT takes k <= 10 anchors. Pairs failing the geometry test cost >= penalty (1e5 / 1e6); pairs
//   passing it almost always cost < penalty / 2 (below_penalty in simota_math.h). So when a GT has
//   >= k geometry pairs whose k-th smallest cost is below penalty / 2, its k cheapest anchors are
//   among its geometry pairs (a few dozen), and only those need a cost.
// * Otherwise (small GTs: fewer geometry anchors than k) the GT "falls back" to all candidates, but
//   a cheap lower bound prunes most of them: for any class c, cls_cost(c, u) >= cls_cost(c*, u) with
//   c* the anchor's highest logit (the BCE sum S_u + log((1-p)/p) decreases with p), and a pair with
//   IoU 0 pays exactly 3 * -log(1e-8). Only pairs whose bound could reach the current k-th cost get
//   an exact cost (measured: ~1-3% of the fallback pairs on realistic batches).
// * Conflicts (an anchor taken by several GTs) go to the argmin over ALL GTs of the image; again the
//   geometry pairs decide it unless every one of them is above penalty / 2.
// * The per-anchor BCE sum S_u (DESIGN.md section 1) is computed only for the anchors some cost or
//   bound needs: anchors with a geometry pair, and the candidates of images with a fallback GT.
//
// Phases (each an at::parallel_for; tie rules as in the reference's module docstring):
//   1. per (image, block of anchors): candidate and "has a geometry pair" flags;
//   2. per anchor: S_u where needed;
//   3. per (image, GT): top-10 IoUs over candidates -> k; the k cheapest geometry pairs, or fallback;
//   4. per fallback (image, GT): the k cheapest candidates, pruned by the lower bound;
//   5. per image: count takers per anchor, resolve conflicts, write the outputs.
// The transcendental loops run through simota_loops.h: AVX2 + Sleef (at::vec) when the CPU has it.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/simota_checks.h"
#include "../common/simota_math.h"
#include "simota_loops.h"

namespace yolox_fast {

// ---- The baseline (scalar) inner loops; simota_kernel_avx2.cpp has the AVX2 ones ------------------
namespace simota_cpu {
namespace scalar {

using namespace simota;

void sigmoid(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = sigmoidf(x[i]);
}

float bce_sum(const float* logits, int64_t num_classes, float sig_obj, float* max_logit) {
  // sum_c -max(log1p(-p_c), -100) in double, rounded once (see the AVX2 version)
  double s = 0.0;
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < num_classes; ++c) {
    const float p = sqrtf(sigmoidf(logits[c]) * sig_obj);
    const double l = std::log1p(-static_cast<double>(p));
    s += l < -100.0 ? -100.0 : l;
    mx = logits[c] > mx ? logits[c] : mx;
  }
  *max_logit = mx;
  return static_cast<float>(-s);
}

int top_ious(const ScanArgs& a, float* top) {
  const Box<float> gb = box_from_cxcywh<float>(a.cx, a.cy, a.w, a.h);
  const float garea = a.w * a.h;
  int n_top = 0;
  for (int64_t u = 0; u < a.n; ++u) {
    const float v = box_iou<float>(gb, garea, Box<float>{a.px1[u], a.py1[u], a.px2[u], a.py2[u]}, a.parea[u]) * a.cand[u];
    if (n_top < kTopIou || v > top[kTopIou - 1]) insert_largest(top, n_top, kTopIou, v);
  }
  return n_top;
}

void gt_ious(const ScanArgs& a, float* iou) {
  const Box<float> gb = box_from_cxcywh<float>(a.cx, a.cy, a.w, a.h);
  const float garea = a.w * a.h;
  for (int64_t u = 0; u < a.n; ++u)
    iou[u] = box_iou<float>(gb, garea, Box<float>{a.px1[u], a.py1[u], a.px2[u], a.py2[u]}, a.parea[u]) * a.cand[u];
}

void pair_costs(int64_t n, const float* logit, const float* sig_obj, const float* s_u, const float* iou,
                const uint8_t* geo, float penalty, float* cost) {
  for (int64_t i = 0; i < n; ++i)
    cost[i] = pair_cost(s_u[i], sqrtf(sigmoidf(logit[i]) * sig_obj[i]), iou[i], geo[i] != 0, penalty);
}

const Loops kLoops{"scalar", &sigmoid, &bce_sum, &top_ious, &gt_ious, &pair_costs};

}  // namespace scalar

const Loops& scalar_loops() { return scalar::kLoops; }

}  // namespace simota_cpu

namespace {

using namespace simota;
using simota_cpu::Loops;
using simota_cpu::ScanArgs;

// The AVX2 loops when this CPU allows them and PyTorch uses AVX2 or AVX-512 itself (so
// ATEN_CPU_CAPABILITY=default selects the scalar loops, e.g. to test them), else the scalar ones.
const Loops& pick_loops() {
  static const Loops* chosen = [] {
    const Loops* avx2 = simota_cpu::avx2_loops();
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
    const std::string cap = at::get_cpu_capability();
    if (avx2 != nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        (cap == "AVX2" || cap == "AVX512"))
      return avx2;
#endif
    return &simota_cpu::scalar_loops();
  }();
  return *chosen;
}

// Anchors per block in phases 1 and 3. A block spans a few feature-map rows, so its bounding box
// lets a GT skip it with one test; 256 keeps the per-block flags in L1.
constexpr int64_t kBlock = 256;
// Pairs per pair_costs call in the fallback scans (buffers stay in L1).
constexpr int64_t kChunk = 256;

struct GtBox {
  float cx, cy, w, h;
};

// Everything the phases share. Per-(image, anchor) arrays are [B * A].
template <typename scalar_t>
struct Problem {
  const Loops* loops;
  int64_t B, A, C, G;
  float penalty;
  bool center_only;
  const float *ax, *ay, *ar;                   // [A] anchor centre x, y; centre-square half side
  const float *px1, *py1, *px2, *py2, *parea;  // [B * A] predicted corners (box_from_cxcywh) and w * h
  const float* sig_obj;                        // [B * A] sigmoid(obj)
  const float* gt;                             // [B, G, 4] cx, cy, w, h
  const int64_t* gcls;                         // [B, G]
  const scalar_t* logits;                      // cls_logits, class dim contiguous
  int64_t lsb, lsa;                            // its image and anchor strides
  const std::vector<std::vector<int32_t>>* valid;  // per image: the real (unpadded) GT indices

  GtBox gt_box(int64_t b, int64_t g) const {
    const float* q = gt + (b * G + g) * 4;
    return {q[0], q[1], q[2], q[3]};
  }
  float logit(int64_t b, int64_t u, int64_t c) const { return static_cast<float>(logits[b * lsb + u * lsa + c]); }
  // IoU of the GT with the prediction of anchor u (bit-identical to the vectorised top_ious / gt_ious).
  float iou(const GtBox& g, int64_t b, int64_t u) const {
    const int64_t i = b * A + u;
    return box_iou<float>(box_from_cxcywh<float>(g.cx, g.cy, g.w, g.h), g.w * g.h,
                          Box<float>{px1[i], py1[i], px2[i], py2[i]}, parea[i]);
  }
  bool geometry(const GtBox& g, int64_t u) const {
    return pair_geometry(ax[u], ay[u], ar[u], g.cx, g.cy, g.w, g.h, center_only).geometry;
  }
  ScanArgs scan_args(const GtBox& g, int64_t b, const float* candf) const {
    const int64_t o = b * A;
    return {A, px1 + o, py1 + o, px2 + o, py2 + o, parea + o, candf + o, g.cx, g.cy, g.w, g.h};
  }
};

// Structure-of-arrays buffers for pair_costs.
struct PairBuffers {
  std::vector<float> logit, sig, s, iou, cost;
  std::vector<uint8_t> geo;
  std::vector<int32_t> gt, anchor;
  explicit PairBuffers(int64_t n = 0) { resize(n); }
  void resize(int64_t n) {
    if (static_cast<int64_t>(cost.size()) >= n) return;
    for (auto* v : {&logit, &sig, &s, &iou, &cost}) v->resize(n);
    geo.resize(n), gt.resize(n), anchor.resize(n);
  }
};

// The k smallest (cost, index) seen so far, ascending.
struct Selection {
  float cost[kMaxK];
  int32_t* idx;
  int n = 0, k = 0;
  void add(float c, int32_t i) { insert_smallest(cost, idx, n, k, c, i); }
  // Cost a newcomer must not exceed to enter (all are welcome until k are in).
  float bar() const { return n < k ? std::numeric_limits<float>::infinity() : cost[k - 1]; }
};

template <typename scalar_t>
void simota_cpu_impl(const Problem<scalar_t>& P, bool* out_fg, int64_t* out_gt, float* out_iou) {
  const int64_t B = P.B, A = P.A, C = P.C;
  const auto& valid = *P.valid;
  const Loops& loops = *P.loops;

  // ---- Phase 1: candidate / geometry flags per anchor --------------------------------------------
  const int64_t nblocks = (A + kBlock - 1) / kBlock;
  // bounding box of the anchor centres of each block (x0, x1, y0, y1) and its largest radius
  std::vector<float> blk(nblocks * 5);
  for (int64_t k = 0; k < nblocks; ++k) {
    float x0 = std::numeric_limits<float>::infinity(), x1 = -x0, y0 = x0, y1 = -x0, r = 0.0f;
    for (int64_t u = k * kBlock; u < std::min(A, (k + 1) * kBlock); ++u) {
      x0 = std::min(x0, P.ax[u]), x1 = std::max(x1, P.ax[u]);
      y0 = std::min(y0, P.ay[u]), y1 = std::max(y1, P.ay[u]);
      r = std::max(r, P.ar[u]);
    }
    blk[k * 5 + 0] = x0, blk[k * 5 + 1] = x1, blk[k * 5 + 2] = y0, blk[k * 5 + 3] = y1, blk[k * 5 + 4] = r;
  }
  // Whether some anchor centre of block k may lie within max(half_size, the block's largest
  // centre-square radius) of the GT centre. The slack (1 px plus a relative part) covers the
  // rounding of the exact tests, which compare differences of these numbers.
  const auto blk_near = [&blk](int64_t k, const GtBox& gb, float half_size) {
    const float* bb = &blk[k * 5];
    const float ext = std::max(half_size, bb[4]);
    const float slack = 1.0f + 1e-5f * (std::abs(gb.cx) + std::abs(gb.cy) + ext + std::abs(bb[1]) + std::abs(bb[3]));
    return bb[1] > gb.cx - ext - slack && bb[0] < gb.cx + ext + slack && bb[3] > gb.cy - ext - slack &&
           bb[2] < gb.cy + ext + slack;
  };
  std::vector<uint8_t> cand(B * A, 0), geo_any(B * A, 0);
  at::parallel_for(0, B * nblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / nblocks, k = job % nblocks;
      const int64_t u0 = k * kBlock, u1 = std::min(A, u0 + kBlock);
      uint8_t* c = cand.data() + b * A;
      uint8_t* o = geo_any.data() + b * A;
      for (int32_t g : valid[b]) {
        const GtBox gb = P.gt_box(b, g);
        if (!blk_near(k, gb, P.center_only ? 0.0f : 0.5f * std::max(gb.w, gb.h))) continue;
        for (int64_t u = u0; u < u1; ++u) {
          const PairGeometry pg = pair_geometry(P.ax[u], P.ay[u], P.ar[u], gb.cx, gb.cy, gb.w, gb.h, P.center_only);
          c[u] |= pg.candidate;
          o[u] |= pg.geometry;
        }
      }
    }
  });
  std::vector<float> candf(B * A);
  for (int64_t i = 0; i < B * A; ++i) candf[i] = cand[i] ? 1.0f : 0.0f;

  // ---- Phase 2: S_u (and the highest logit) for the anchors with a geometry pair -----------------
  std::vector<float> S(B * A, 0.0f), max_logit(B * A, 0.0f);
  std::vector<uint8_t> s_done(B * A, 0);
  const auto compute_s = [&](const std::vector<uint8_t>& need, const std::vector<uint8_t>* image_filter) {
    at::parallel_for(0, B * A, 256, [&](int64_t begin, int64_t end) {
      std::vector<float> row(std::is_same_v<scalar_t, float> ? 0 : C);
      for (int64_t i = begin; i < end; ++i) {
        if (!need[i] || s_done[i] || (image_filter && !(*image_filter)[i / A])) continue;
        const scalar_t* src = P.logits + (i / A) * P.lsb + (i % A) * P.lsa;
        const float* rowp;
        if constexpr (std::is_same_v<scalar_t, float>) {
          rowp = src;
        } else {
          for (int64_t c = 0; c < C; ++c) row[c] = static_cast<float>(src[c]);
          rowp = row.data();
        }
        S[i] = loops.bce_sum(rowp, C, P.sig_obj[i], &max_logit[i]);
        s_done[i] = 1;
      }
    });
  };
  compute_s(geo_any, nullptr);

  // Exact costs of the pairs (b, buf.gt[i], buf.anchor[i]), i < n, through the vectorised pair_costs.
  const auto costs_of = [&](PairBuffers& buf, int64_t b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t g = buf.gt[i], u = buf.anchor[i], bi = b * A + u;
      const GtBox gb = P.gt_box(b, g);
      buf.logit[i] = P.logit(b, u, P.gcls[b * P.G + g]);
      buf.sig[i] = P.sig_obj[bi];
      buf.s[i] = S[bi];
      buf.iou[i] = P.iou(gb, b, u);
      buf.geo[i] = P.geometry(gb, u);
    }
    loops.pair_costs(n, buf.logit.data(), buf.sig.data(), buf.s.data(), buf.iou.data(), buf.geo.data(), P.penalty,
                     buf.cost.data());
  };
  // The geometry anchors of a GT, ascending: they lie in its centre square, so only nearby blocks.
  const auto geometry_anchors = [&](const GtBox& gb, std::vector<int32_t>& out) {
    out.clear();
    for (int64_t k = 0; k < nblocks; ++k) {
      if (!blk_near(k, gb, 0.0f)) continue;
      for (int64_t u = k * kBlock; u < std::min(A, (k + 1) * kBlock); ++u)
        if (P.geometry(gb, u)) out.push_back(static_cast<int32_t>(u));
    }
  };

  // ---- Phase 3: dynamic k and the k cheapest geometry pairs of every real GT ---------------------
  std::vector<std::pair<int32_t, int32_t>> items;  // (image, GT)
  for (int64_t b = 0; b < B; ++b)
    for (int32_t g : valid[b]) items.emplace_back(static_cast<int32_t>(b), g);
  const int64_t n_items = static_cast<int64_t>(items.size());
  std::vector<int32_t> sel(n_items * kMaxK);
  std::vector<int8_t> n_sel(n_items, 0), ks(n_items, 0);
  std::vector<uint8_t> fallback(n_items, 0);
  at::parallel_for(0, n_items, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> geo_list;
    PairBuffers buf;
    for (int64_t it = begin; it < end; ++it) {
      const int64_t b = items[it].first, g = items[it].second;
      const GtBox gb = P.gt_box(b, g);
      float top[kTopIou];
      const int k = dynamic_k(top, loops.top_ious(P.scan_args(gb, b, candf.data()), top));
      ks[it] = static_cast<int8_t>(k);
      geometry_anchors(gb, geo_list);
      const int64_t n_geo = static_cast<int64_t>(geo_list.size());
      if (n_geo < k) {  // the geometry pairs cannot decide: fall back
        fallback[it] = 1;
        continue;
      }
      buf.resize(n_geo);
      std::fill_n(buf.gt.begin(), n_geo, static_cast<int32_t>(g));
      std::copy(geo_list.begin(), geo_list.end(), buf.anchor.begin());
      costs_of(buf, b, n_geo);
      Selection s{{}, sel.data() + it * kMaxK, 0, k};
      for (int64_t j = 0; j < n_geo; ++j) s.add(buf.cost[j], geo_list[j]);
      if (below_penalty(s.cost[k - 1], P.penalty)) {
        n_sel[it] = static_cast<int8_t>(s.n);
      } else {
        fallback[it] = 1;
      }
    }
  });

  // ---- Phase 4: fallback GTs choose among all candidates -----------------------------------------
  std::vector<int64_t> fb_items;
  std::vector<uint8_t> image_fb(B, 0);
  for (int64_t it = 0; it < n_items; ++it)
    if (fallback[it]) fb_items.push_back(it), image_fb[items[it].first] = 1;
  if (!fb_items.empty()) {
    compute_s(cand, &image_fb);
    // Lower bound of the penalised cost of any IoU-0 pair at anchor u (any GT, any class):
    // fl(fl(cls_cost(c*, u) - margin + ic0) + penalty), +inf for non-candidates. The margin
    // absorbs the last-ulp wobble of the float log / log1p on either side of the monotone bound.
    const float ic0 = 3.0f * -std::log(1e-8f) - 1e-3f;
    std::vector<float> bound(B * A, std::numeric_limits<float>::infinity());
    at::parallel_for(0, B * A, kChunk, [&](int64_t begin, int64_t end) {
      std::vector<float> ones(end - begin, 1.0f), cb(end - begin);
      std::vector<uint8_t> geo(end - begin, 1);
      loops.pair_costs(end - begin, max_logit.data() + begin, P.sig_obj + begin, S.data() + begin, ones.data(),
                       geo.data(), P.penalty, cb.data());  // IoU 1, geometry: cost = cls_cost exactly
      for (int64_t i = begin; i < end; ++i) {
        if (!cand[i] || !image_fb[i / A]) continue;
        const float c = cb[i - begin];
        const float margin = 4e-6f * (std::abs(c) + std::abs(S[i]) + 1.0f);
        bound[i] = ((c - margin) + ic0) + P.penalty;
      }
    });
    at::parallel_for(0, static_cast<int64_t>(fb_items.size()), 1, [&](int64_t begin, int64_t end) {
      std::vector<float> iou(A);
      std::vector<uint8_t> exact(A, 0);
      std::vector<int32_t> geo_list;
      PairBuffers buf(kChunk);
      for (int64_t f = begin; f < end; ++f) {
        const int64_t it = fb_items[f];
        const int64_t b = items[it].first;
        const int32_t g = items[it].second;
        const GtBox gb = P.gt_box(b, g);
        Selection s{{}, sel.data() + it * kMaxK, 0, ks[it]};
        int64_t m = 0;
        const auto flush = [&] {
          costs_of(buf, b, m);
          for (int64_t j = 0; j < m; ++j) s.add(buf.cost[j], buf.anchor[j]);
          m = 0;
        };
        const auto push = [&](int32_t u) {
          buf.gt[m] = g, buf.anchor[m] = u;
          if (++m == kChunk) flush();
        };
        // Exact costs first for the pairs the bound does not cover: geometry pairs and IoU > 0.
        loops.gt_ious(P.scan_args(gb, b, candf.data()), iou.data());
        geometry_anchors(gb, geo_list);
        for (int32_t u : geo_list) exact[u] = 1;
        for (int64_t u = 0; u < A; ++u) {
          if (iou[u] > 0.0f) exact[u] = 1;  // iou is 0 for non-candidates
          if (exact[u]) push(static_cast<int32_t>(u));
        }
        flush();
        // The rest: IoU-0, penalised candidates, exact only where the bound can reach the bar.
        const float* bnd = bound.data() + b * A;
        const uint8_t* c = cand.data() + b * A;
        for (int64_t u = 0; u < A; ++u) {
          if (bnd[u] <= s.bar() && c[u] && !exact[u]) push(static_cast<int32_t>(u));
        }
        flush();
        std::fill(exact.begin(), exact.end(), 0);
        n_sel[it] = static_cast<int8_t>(s.n);
      }
    });
  }

  // ---- Phase 5: conflicts and outputs, per image ---------------------------------------------------
  std::vector<int64_t> first_item(B + 1, 0);
  for (int64_t it = 0; it < n_items; ++it) first_item[items[it].first + 1] = it + 1;
  for (int64_t b = 0; b < B; ++b) first_item[b + 1] = std::max(first_item[b + 1], first_item[b]);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> takers(A);
    std::vector<int32_t> owner(A);
    PairBuffers buf;
    // argmin over the GTs buf.gt[0:n) (ascending) of the cost at anchor u, lowest GT index on ties
    const auto argmin_over = [&](int64_t b, int32_t u, int64_t n, float& best) {
      std::fill_n(buf.anchor.begin(), n, u);
      costs_of(buf, b, n);
      int32_t best_g = -1;
      for (int64_t j = 0; j < n; ++j)
        if (best_g < 0 || cost_before(buf.cost[j], buf.gt[j], best, best_g)) best = buf.cost[j], best_g = buf.gt[j];
      return best_g;
    };
    for (int64_t b = begin; b < end; ++b) {
      std::fill(takers.begin(), takers.end(), 0);
      buf.resize(static_cast<int64_t>(valid[b].size()));
      for (int64_t it = first_item[b]; it < first_item[b + 1]; ++it) {
        for (int j = 0; j < n_sel[it]; ++j) {
          const int32_t u = sel[it * kMaxK + j];
          if (takers[u] == 0) owner[u] = items[it].second;
          takers[u] = takers[u] < 2 ? takers[u] + 1 : 2;
        }
      }
      for (int64_t it = first_item[b]; it < first_item[b + 1]; ++it) {
        for (int j = 0; j < n_sel[it]; ++j) {
          const int32_t u = sel[it * kMaxK + j];
          if (takers[u] != 2) continue;
          // Contested: the argmin of cost over ALL real GTs of the image, lowest GT index on ties.
          // The geometry pairs decide unless all of them are above penalty / 2.
          int64_t n = 0;
          for (int32_t g : valid[b])
            if (P.geometry(P.gt_box(b, g), u)) buf.gt[n++] = g;
          float best = 0.0f;
          int32_t best_g = n == 0 ? -1 : argmin_over(b, u, n, best);
          if (best_g < 0 || !below_penalty(best, P.penalty)) {
            std::copy(valid[b].begin(), valid[b].end(), buf.gt.begin());
            best_g = argmin_over(b, u, static_cast<int64_t>(valid[b].size()), best);
          }
          owner[u] = best_g;
          takers[u] = 1;  // resolved; later visits of u skip it
        }
      }
      for (int64_t it = first_item[b]; it < first_item[b + 1]; ++it) {
        for (int j = 0; j < n_sel[it]; ++j) {
          const int32_t u = sel[it * kMaxK + j];
          const int64_t o = b * A + u;
          if (out_fg[o]) continue;
          out_fg[o] = true;
          out_gt[o] = owner[u];
          out_iou[o] = P.iou(P.gt_box(b, owner[u]), b, u);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> simota_assign_cpu(
    const at::Tensor& pred_boxes, const at::Tensor& cls_logits, const at::Tensor& obj_logits, const at::Tensor& grids,
    const at::Tensor& strides, const at::Tensor& gt_boxes, const at::Tensor& gt_classes, const at::Tensor& gt_mask,
    double center_radius, bool center_only, double penalty) {
  const auto [B, A, C, G] = check_simota_inputs(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes,
                                                gt_classes, gt_mask);
  auto fg = at::zeros({B, A}, pred_boxes.options().dtype(at::kBool));
  auto matched = at::full({B, A}, -1, pred_boxes.options().dtype(at::kLong));
  auto miou = at::zeros({B, A}, pred_boxes.options().dtype(at::kFloat));
  if (B == 0 || A == 0 || G == 0) return {fg, matched, miou};

  // Small inputs become contiguous float32 (the reference's .float()); the big cls_logits stay in
  // their dtype and layout (only a non-contiguous class dim is copied).
  const auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat).contiguous(); };
  const at::Tensor pb = f32(pred_boxes), ob = f32(obj_logits.reshape({B, A})), gr = f32(grids), st = f32(strides);
  const at::Tensor gtb = f32(gt_boxes), gtc = gt_classes.to(at::kLong).contiguous(), gm = gt_mask.contiguous();
  const at::Tensor cls = cls_logits.stride(2) == 1 ? cls_logits : cls_logits.contiguous();

  const int64_t* gc = gtc.data_ptr<int64_t>();
  const bool* gmp = gm.data_ptr<bool>();
  std::vector<std::vector<int32_t>> valid(B);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t g = 0; g < G; ++g) {
      if (!gmp[b * G + g]) continue;
      TORCH_CHECK(gc[b * G + g] >= 0 && gc[b * G + g] < C, "gt_classes[", b, ", ", g, "] = ", gc[b * G + g],
                  " is outside [0, ", C, ")");
      valid[b].push_back(static_cast<int32_t>(g));
    }
  }

  // Anchor centres / radii and the predicted corners, as the reference computes them in float32.
  std::vector<float> ax(A), ay(A), ar(A), px1(B * A), py1(B * A), px2(B * A), py2(B * A), parea(B * A),
      sig_obj(B * A);
  const float* grp = gr.data_ptr<float>();
  const float* stp = st.data_ptr<float>();
  const float rscale = static_cast<float>(center_radius);
  for (int64_t u = 0; u < A; ++u) {
    ax[u] = anchor_center(grp[2 * u], stp[u]);
    ay[u] = anchor_center(grp[2 * u + 1], stp[u]);
    ar[u] = rscale * stp[u];
  }
  const Loops& loops = pick_loops();
  const float* pbp = pb.data_ptr<float>();
  const float* obp = ob.data_ptr<float>();
  at::parallel_for(0, B * A, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* q = pbp + 4 * i;
      const Box<float> box = box_from_cxcywh<float>(q[0], q[1], q[2], q[3]);
      px1[i] = box.x1, py1[i] = box.y1, px2[i] = box.x2, py2[i] = box.y2, parea[i] = q[2] * q[3];
    }
    loops.sigmoid(obp + begin, sig_obj.data() + begin, end - begin);
  });

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cls.scalar_type(), "simota_assign_cpu", [&] {
    const Problem<scalar_t> P{&loops, B, A, C, G, static_cast<float>(penalty), center_only, ax.data(), ay.data(),
                              ar.data(), px1.data(), py1.data(), px2.data(), py2.data(), parea.data(),
                              sig_obj.data(), gtb.data_ptr<float>(), gc, cls.data_ptr<scalar_t>(), cls.stride(0),
                              cls.stride(1), &valid};
    simota_cpu_impl<scalar_t>(P, fg.data_ptr<bool>(), matched.data_ptr<int64_t>(), miou.data_ptr<float>());
  });
  return {fg, matched, miou};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CPU, m) { m.impl("simota_assign", &simota_assign_cpu); }

}  // namespace yolox_fast
