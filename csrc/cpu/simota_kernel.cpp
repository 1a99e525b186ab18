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
//   only a few pairs need an exact cost: those with IoU > 0 and the geometry pairs. Every other
//   pair pays the full penalty plus 3 * -log(1e-8) (IoU 0) plus a class cost >= 0, which usually
//   already exceeds the k-th cost found. When it does not, a per-anchor lower bound decides:
//   cls_cost(c, u) >= cls_cost(c*, u) for any class c, with c* the anchor's highest logit (the BCE
//   sum S_u + log((1-p)/p) decreases with p). Measured on the benchmark batches (B=8, G=120,
//   A=8400): ~250 exact costs per fallback GT out of ~7000 candidates.
// * Conflicts (an anchor taken by several GTs) go to the argmin over ALL GTs of the image; again the
//   geometry pairs decide it unless every one of them is above penalty / 2.
// * The per-anchor BCE sum S_u (docs/design.md) is computed only for the anchors some cost or
//   bound needs: anchors with a geometry pair or an exact fallback cost, and the candidates of an
//   image whose fallback GTs need the bound.
//
// Phases (tie rules as in the reference's module docstring):
//   1-2. per (image, block of anchors): candidate and "has a geometry pair" flags, S_u of the latter;
//   3.   per (image, GT): top-10 IoUs over candidates -> k; the k cheapest geometry pairs, or fallback;
//   4.   per fallback (image, GT): the k cheapest candidates, pruned as above;
//   5.   per image: count takers per anchor, resolve conflicts, write the outputs.
// They run image by image on each thread (at::parallel_for over images) or, for fewer images than
// threads and much work, phase by phase with each phase parallel over blocks or GTs.
// The transcendental loops run through simota_loops.h: AVX2 + Sleef (at::vec) when the CPU has it.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
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

void mark_flags(const AnchorArgs& a, int64_t n, float* cand, float* geo) {
  for (int64_t u = 0; u < n; ++u) {
    const PairGeometry pg = pair_geometry(a.ax[u], a.ay[u], a.ar[u], a.cx, a.cy, a.w, a.h, a.center_only);
    if (pg.candidate) cand[u] = 1.0f;
    if (pg.geometry) geo[u] = 1.0f;
  }
}

int64_t geometry_indices(const AnchorArgs& a, int64_t n, int32_t base, int32_t* out) {
  int64_t m = 0;
  for (int64_t u = 0; u < n; ++u)
    if (pair_geometry(a.ax[u], a.ay[u], a.ar[u], a.cx, a.cy, a.w, a.h, a.center_only).geometry)
      out[m++] = base + static_cast<int32_t>(u);
  return m;
}

int64_t positive_indices(const float* x, int64_t n, int32_t base, int32_t* out) {
  int64_t m = 0;
  for (int64_t u = 0; u < n; ++u)
    if (x[u] > 0.0f) out[m++] = base + static_cast<int32_t>(u);
  return m;
}

int64_t reachable_indices(const float* bound, const float* iou, float bar, int64_t n, int32_t base, int32_t* out) {
  int64_t m = 0;
  for (int64_t u = 0; u < n; ++u)
    if (bound[u] <= bar && iou[u] == 0.0f) out[m++] = base + static_cast<int32_t>(u);
  return m;
}

const Loops kLoops{"scalar",         &sigmoid,          &bce_sum,          &top_ious,          &gt_ious,
                   &mark_flags,      &geometry_indices, &positive_indices, &reachable_indices, &pair_costs};

}  // namespace scalar

const Loops& scalar_loops() { return scalar::kLoops; }

}  // namespace simota_cpu

namespace {

using namespace simota;
using simota_cpu::AnchorArgs;
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

// Anchors per block. A block spans less than a feature-map row or a few of them, so its bounding
// box lets a GT skip it with one test, and the geometry anchors of a GT (its centre square) lie
// in a handful of blocks.
constexpr int64_t kBlock = 64;
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
  const float* pred;                           // [B, A, 4] cx, cy, w, h (float32, contiguous)
  const float* obj;                            // [B, A] objectness logits (float32, contiguous)
  float *px1, *py1, *px2, *py2, *parea;        // [B * A] predicted corners (box_from_cxcywh) and w * h
  float* sig_obj;                              // [B * A] sigmoid(obj)
  // (the last two are filled image by image by CpuAssigner::prepare)
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
  AnchorArgs anchor_args(const GtBox& g, int64_t u0) const {
    return {ax + u0, ay + u0, ar + u0, g.cx, g.cy, g.w, g.h, center_only};
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

// Per-thread scratch, sized for one image.
struct Scratch {
  std::vector<float> iou, row;
  std::vector<uint8_t> mark, takers;
  std::vector<int32_t> geo_list, owner, idx;
  PairBuffers buf;
  explicit Scratch(int64_t A) : iou(A), mark(A, 0), takers(A), owner(A), idx(A), buf(kChunk) {}
};

// The five phases of the file comment, each callable for one image / block / GT, so that they can
// run either image by image on each thread (one parallel region: no barriers between phases) or
// phase by phase with each phase parallel over blocks or GTs (when there are fewer images than
// threads). Measured on the shared 2-core machines: every extra parallel region costs a thread
// wake-up, and under load that dominated small batches.
template <typename scalar_t>
class CpuAssigner {
 public:
  CpuAssigner(const Problem<scalar_t>& P, bool* out_fg, int64_t* out_gt, float* out_iou)
      : P(P), loops(*P.loops), valid(*P.valid), A(P.A), C(P.C), out_fg(out_fg), out_gt(out_gt), out_iou(out_iou) {
    const int64_t B = P.B;
    nblocks = (A + kBlock - 1) / kBlock;
    blk.resize(nblocks * 5);
    for (int64_t k = 0; k < nblocks; ++k) {  // anchor-centre bounding box (x0, x1, y0, y1), max radius
      float x0 = std::numeric_limits<float>::infinity(), x1 = -x0, y0 = x0, y1 = -x0, r = 0.0f;
      for (int64_t u = k * kBlock; u < std::min(A, (k + 1) * kBlock); ++u) {
        x0 = std::min(x0, P.ax[u]), x1 = std::max(x1, P.ax[u]);
        y0 = std::min(y0, P.ay[u]), y1 = std::max(y1, P.ay[u]);
        r = std::max(r, P.ar[u]);
      }
      blk[k * 5 + 0] = x0, blk[k * 5 + 1] = x1, blk[k * 5 + 2] = y0, blk[k * 5 + 3] = y1, blk[k * 5 + 4] = r;
    }
    candf.assign(B * A, 0.0f), geof.assign(B * A, 0.0f);
    S.assign(B * A, 0.0f), max_logit.assign(B * A, 0.0f), s_done.assign(B * A, 0);
    bound.assign(B * A, std::numeric_limits<float>::quiet_NaN());
    first_item.assign(B + 1, 0);
    for (int64_t b = 0; b < B; ++b) {
      for (int32_t g : valid[b]) items.emplace_back(static_cast<int32_t>(b), g);
      first_item[b + 1] = static_cast<int64_t>(items.size());
    }
    const int64_t n = static_cast<int64_t>(items.size());
    sel.assign(n * kMaxK, 0), n_sel.assign(n, 0), ks.assign(n, 0), fallback.assign(n, 0);
    bounds_done.assign(B, 0);
  }

  void run() {
    const int64_t B = P.B;
    const int threads = at::get_num_threads();
    // Few images: phase-parallel only when there is enough work per phase to pay for its
    // parallel regions (each costs a thread wake-up; measured ~1 scheduler slice under load).
    const bool phased = threads > 1 && B < threads && static_cast<double>(items.size()) * A >= 4e6;
    if (!phased) {
      // Image by image: each thread takes the next image from a shared counter (images differ in
      // their number of GTs, so a static split would leave threads idle). One parallel region.
      std::atomic<int64_t> next{0};
      at::parallel_for(0, std::min<int64_t>(threads, B), 1, [&](int64_t, int64_t) {
        Scratch sc(A);
        for (int64_t b = next++; b < B; b = next++) {
          prepare(b);
          flags_and_sums(b, 0, nblocks);
          bool any_fallback = false;
          for (int64_t it = first_item[b]; it < first_item[b + 1]; ++it) {
            select_geometry(it, sc);
            any_fallback |= fallback[it] != 0;
          }
          if (any_fallback) {
            for (int64_t it = first_item[b]; it < first_item[b + 1]; ++it)
              if (fallback[it]) select_fallback(it, sc, /*lazy=*/true);
          }
          resolve(b, sc);
        }
      });
      return;
    }
    // Phase by phase, each parallel inside (few images, several threads).
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) prepare(b);
    });
    at::parallel_for(0, B * nblocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) flags_and_sums(j / nblocks, j % nblocks, j % nblocks + 1);
    });
    const int64_t n_items = static_cast<int64_t>(items.size());
    at::parallel_for(0, n_items, 1, [&](int64_t begin, int64_t end) {
      Scratch sc(A);
      for (int64_t it = begin; it < end; ++it) select_geometry(it, sc);
    });
    std::vector<int64_t> fb_items;
    std::vector<uint8_t> image_fb(B, 0);
    for (int64_t it = 0; it < n_items; ++it)
      if (fallback[it]) fb_items.push_back(it), image_fb[items[it].first] = 1;
    if (!fb_items.empty()) {
      at::parallel_for(0, B * nblocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          const int64_t b = j / nblocks, k = j % nblocks;
          if (image_fb[b]) fallback_bounds(b, k * kBlock, std::min(A, (k + 1) * kBlock));
        }
      });
      at::parallel_for(0, static_cast<int64_t>(fb_items.size()), 1, [&](int64_t begin, int64_t end) {
        Scratch sc(A);
        for (int64_t f = begin; f < end; ++f) select_fallback(fb_items[f], sc, /*lazy=*/false);
      });
    }
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      Scratch sc(A);
      for (int64_t b = begin; b < end; ++b) resolve(b, sc);
    });
  }

 private:
  // Per-image inputs in the layout the loops want, and the outputs' background values.
  void prepare(int64_t b) {
    for (int64_t i = b * A; i < (b + 1) * A; ++i) {
      const float* q = P.pred + 4 * i;
      const Box<float> box = box_from_cxcywh<float>(q[0], q[1], q[2], q[3]);
      P.px1[i] = box.x1, P.py1[i] = box.y1, P.px2[i] = box.x2, P.py2[i] = box.y2, P.parea[i] = q[2] * q[3];
      out_fg[i] = false, out_gt[i] = -1, out_iou[i] = 0.0f;
    }
    loops.sigmoid(P.obj + b * A, P.sig_obj + b * A, A);
  }

  // Whether some anchor centre of block k may lie within max(half_size, the block's largest
  // centre-square radius) of the GT centre. The slack (1 px plus a relative part) covers the
  // rounding of the exact tests, which compare differences of these numbers.
  bool blk_near(int64_t k, const GtBox& gb, float half_size) const {
    const float* bb = &blk[k * 5];
    const float ext = std::max(half_size, bb[4]);
    const float slack = 1.0f + 1e-5f * (std::abs(gb.cx) + std::abs(gb.cy) + ext + std::abs(bb[1]) + std::abs(bb[3]));
    return bb[1] > gb.cx - ext - slack && bb[0] < gb.cx + ext + slack && bb[3] > gb.cy - ext - slack &&
           bb[2] < gb.cy + ext + slack;
  }

  // S_u and the highest logit of anchor i = b * A + u (once).
  void anchor_sum(int64_t i, std::vector<float>& row) {
    if (s_done[i]) return;
    const scalar_t* src = P.logits + (i / A) * P.lsb + (i % A) * P.lsa;
    const float* rowp;
    if constexpr (std::is_same_v<scalar_t, float>) {
      rowp = src;
    } else {
      row.resize(C);
      for (int64_t c = 0; c < C; ++c) row[c] = static_cast<float>(src[c]);
      rowp = row.data();
    }
    S[i] = loops.bce_sum(rowp, C, P.sig_obj[i], &max_logit[i]);
    s_done[i] = 1;
  }

  // Phase 1 + 2 for blocks [k0, k1) of image b: candidate / geometry flags, then S_u of the
  // anchors with a geometry pair.
  void flags_and_sums(int64_t b, int64_t k0, int64_t k1) {
    std::vector<float> row;
    float* c = candf.data() + b * A;
    float* o = geof.data() + b * A;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t u0 = k * kBlock, n = std::min(A, u0 + kBlock) - u0;
      for (int32_t g : valid[b]) {
        const GtBox gb = P.gt_box(b, g);
        if (blk_near(k, gb, P.center_only ? 0.0f : 0.5f * std::max(gb.w, gb.h)))
          loops.mark_flags(P.anchor_args(gb, u0), n, c + u0, o + u0);
      }
      for (int64_t u = u0; u < u0 + n; ++u)
        if (o[u] != 0.0f) anchor_sum(b * A + u, row);
    }
  }

  // Exact costs of the pairs (b, buf.gt[i], buf.anchor[i]), i < n, through the vectorised pair_costs.
  void costs_of(PairBuffers& buf, int64_t b, int64_t n) const {
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
  }

  // The geometry anchors of a GT, ascending: they lie in its centre square, so only nearby blocks.
  void geometry_anchors(const GtBox& gb, std::vector<int32_t>& out) const {
    out.clear();
    for (int64_t k = 0; k < nblocks; ++k) {
      if (!blk_near(k, gb, 0.0f)) continue;
      const int64_t u0 = k * kBlock, n = std::min(A, u0 + kBlock) - u0, m = static_cast<int64_t>(out.size());
      out.resize(m + n);
      out.resize(m + loops.geometry_indices(P.anchor_args(gb, u0), n, static_cast<int32_t>(u0), out.data() + m));
    }
  }

  // Phase 3 for item `it`: dynamic k, then the k cheapest geometry pairs, or a fallback flag.
  void select_geometry(int64_t it, Scratch& sc) {
    const int64_t b = items[it].first;
    const int32_t g = items[it].second;
    const GtBox gb = P.gt_box(b, g);
    float top[kTopIou];
    const int k = dynamic_k(top, loops.top_ious(P.scan_args(gb, b, candf.data()), top));
    ks[it] = static_cast<int8_t>(k);
    geometry_anchors(gb, sc.geo_list);
    const int64_t n_geo = static_cast<int64_t>(sc.geo_list.size());
    if (n_geo < k) {  // the geometry pairs cannot decide: fall back
      fallback[it] = 1;
      return;
    }
    PairBuffers& buf = sc.buf;
    buf.resize(n_geo);
    std::fill_n(buf.gt.begin(), n_geo, g);
    std::copy(sc.geo_list.begin(), sc.geo_list.end(), buf.anchor.begin());
    costs_of(buf, b, n_geo);
    Selection s{{}, sel.data() + it * kMaxK, 0, k};
    for (int64_t j = 0; j < n_geo; ++j) s.add(buf.cost[j], sc.geo_list[j]);
    if (below_penalty(s.cost[k - 1], P.penalty)) {
      n_sel[it] = static_cast<int8_t>(s.n);
    } else {
      fallback[it] = 1;
    }
  }

  // Phase 4a for anchors [u0, u1) of image b: S_u of every candidate and the lower bound of the
  // penalised cost of any IoU-0 pair at u: fl(fl(cls_cost(c*, u) - margin + ic0) + penalty), with
  // c* the highest logit; +inf for non-candidates. The margin absorbs the last-ulp wobble of the
  // float log / log1p on either side of the (mathematically exact) monotone bound.
  void fallback_bounds(int64_t b, int64_t u0, int64_t u1) {
    std::vector<float> row, ones(kChunk, 1.0f), cb(kChunk);
    std::vector<uint8_t> geo(kChunk, 1);
    for (int64_t c0 = u0; c0 < u1; c0 += kChunk) {
      const int64_t n = std::min(kChunk, u1 - c0), i0 = b * A + c0;
      for (int64_t i = i0; i < i0 + n; ++i)
        if (candf[i] != 0.0f) anchor_sum(i, row);
      // cls_cost(c*, u) exactly as pair_costs computes it: IoU 1 and geometry make the rest 0
      loops.pair_costs(n, max_logit.data() + i0, P.sig_obj + i0, S.data() + i0, ones.data(), geo.data(), P.penalty,
                       cb.data());
      for (int64_t i = i0; i < i0 + n; ++i) {
        if (candf[i] == 0.0f) continue;
        const float c = cb[i - i0];
        const float margin = 4e-6f * (std::abs(c) + std::abs(S[i]) + 1.0f);
        bound[i] = ((c - margin) + ic0_lb) + P.penalty;
      }
    }
  }

  // Phase 4b for item `it`: the k cheapest of all candidates. Exact costs for the geometry and
  // IoU > 0 pairs, then for the IoU-0 penalised candidates whose bound can still reach the bar.
  // An IoU-0 penalised pair costs at least fl(3 * -log(1e-8) + penalty) (its class cost is >= 0),
  // so when the k-th cost so far is below that, no such pair can enter and neither S_u of every
  // candidate nor the bounds are needed. `lazy` (one thread per image) computes S_u and the
  // bounds only when needed; otherwise fallback_bounds has run for the image already.
  void select_fallback(int64_t it, Scratch& sc, bool lazy) {
    const int64_t b = items[it].first;
    const int32_t g = items[it].second;
    const GtBox gb = P.gt_box(b, g);
    Selection s{{}, sel.data() + it * kMaxK, 0, ks[it]};
    PairBuffers& buf = sc.buf;
    buf.resize(kChunk);
    int64_t m = 0;
    const auto flush = [&] {
      costs_of(buf, b, m);
      for (int64_t j = 0; j < m; ++j) s.add(buf.cost[j], buf.anchor[j]);
      m = 0;
    };
    std::vector<float>& row = sc.row;
    const auto push = [&](int32_t u) {
      if (lazy) anchor_sum(b * A + u, row);
      buf.gt[m] = g, buf.anchor[m] = u;
      if (++m == kChunk) flush();
    };
    // Exact costs first for the pairs the bound does not cover: IoU > 0 and geometry pairs.
    loops.gt_ious(P.scan_args(gb, b, candf.data()), sc.iou.data());  // 0 for non-candidates
    geometry_anchors(gb, sc.geo_list);
    int32_t* idx = sc.idx.data();
    const int64_t n_pos = loops.positive_indices(sc.iou.data(), A, 0, idx);
    for (int64_t j = 0; j < n_pos; ++j) push(idx[j]);
    for (int32_t u : sc.geo_list) {
      sc.mark[u] = 1;
      if (sc.iou[u] == 0.0f) push(u);
    }
    flush();
    // The rest, IoU-0 penalised candidates: exact only where the bound can reach the bar (the bar
    // only falls, so it is refreshed after each window of anchors).
    if (s.n == s.k && s.bar() < ic0_lb + P.penalty) {
      for (int32_t u : sc.geo_list) sc.mark[u] = 0;
      n_sel[it] = static_cast<int8_t>(s.n);
      return;
    }
    if (lazy && !bounds_done[b]) fallback_bounds(b, 0, A), bounds_done[b] = 1;
    const float* bnd = bound.data() + b * A;  // NaN for non-candidates: never passes
    constexpr int64_t kWindow = 1024;
    for (int64_t u0 = 0; u0 < A; u0 += kWindow) {
      const int64_t n = loops.reachable_indices(bnd + u0, sc.iou.data() + u0, s.bar(), std::min(kWindow, A - u0),
                                                static_cast<int32_t>(u0), idx);
      for (int64_t j = 0; j < n; ++j)
        if (!sc.mark[idx[j]]) push(idx[j]);
      flush();
    }
    for (int32_t u : sc.geo_list) sc.mark[u] = 0;
    n_sel[it] = static_cast<int8_t>(s.n);
  }

  // argmin over the GTs buf.gt[0:n) (ascending) of the cost at anchor u, lowest GT index on ties
  int32_t argmin_over(PairBuffers& buf, int64_t b, int32_t u, int64_t n, float& best) const {
    std::fill_n(buf.anchor.begin(), n, u);
    costs_of(buf, b, n);
    int32_t best_g = -1;
    for (int64_t j = 0; j < n; ++j)
      if (best_g < 0 || cost_before(buf.cost[j], buf.gt[j], best, best_g)) best = buf.cost[j], best_g = buf.gt[j];
    return best_g;
  }

  // Phase 5 for image b: count takers per anchor, resolve conflicts, write the outputs.
  void resolve(int64_t b, Scratch& sc) {
    uint8_t* takers = sc.takers.data();
    int32_t* owner = sc.owner.data();
    PairBuffers& buf = sc.buf;
    buf.resize(static_cast<int64_t>(valid[b].size()));
    const int64_t i0 = first_item[b], i1 = first_item[b + 1];
    for (int64_t it = i0; it < i1; ++it) {
      for (int j = 0; j < n_sel[it]; ++j) {
        const int32_t u = sel[it * kMaxK + j];
        takers[u] = 0;
      }
    }
    for (int64_t it = i0; it < i1; ++it) {
      for (int j = 0; j < n_sel[it]; ++j) {
        const int32_t u = sel[it * kMaxK + j];
        if (takers[u] == 0) owner[u] = items[it].second;
        takers[u] = takers[u] < 2 ? takers[u] + 1 : 2;
      }
    }
    for (int64_t it = i0; it < i1; ++it) {
      for (int j = 0; j < n_sel[it]; ++j) {
        const int32_t u = sel[it * kMaxK + j];
        if (takers[u] != 2) continue;
        // Contested: the argmin of cost over ALL real GTs of the image, lowest GT index on ties.
        // The geometry pairs decide unless all of them are above penalty / 2.
        int64_t n = 0;
        for (int32_t g : valid[b])
          if (P.geometry(P.gt_box(b, g), u)) buf.gt[n++] = g;
        float best = 0.0f;
        int32_t best_g = n == 0 ? -1 : argmin_over(buf, b, u, n, best);
        if (best_g < 0 || !below_penalty(best, P.penalty)) {
          std::copy(valid[b].begin(), valid[b].end(), buf.gt.begin());
          best_g = argmin_over(buf, b, u, static_cast<int64_t>(valid[b].size()), best);
        }
        owner[u] = best_g;
        takers[u] = 1;  // resolved; later visits of u skip it
      }
    }
    for (int64_t it = i0; it < i1; ++it) {
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

  const Problem<scalar_t>& P;
  const Loops& loops;
  const std::vector<std::vector<int32_t>>& valid;
  const int64_t A, C;
  bool* out_fg;
  int64_t* out_gt;
  float* out_iou;
  int64_t nblocks = 0;
  std::vector<float> blk;
  // per (image, anchor)
  std::vector<uint8_t> s_done;
  std::vector<float> candf, geof, S, max_logit, bound;  // candf / geof: flags as 1.0f / 0.0f
  // per (image, real GT) item
  std::vector<std::pair<int32_t, int32_t>> items;
  std::vector<int64_t> first_item;  // items of image b: [first_item[b], first_item[b + 1])
  std::vector<int32_t> sel;         // [item, kMaxK] picked anchors
  std::vector<int8_t> n_sel, ks;
  std::vector<uint8_t> fallback, bounds_done;
  // lower bound of the IoU cost of an IoU-0 pair, 3 * -log(0 + 1e-8) = 55.26..., minus a margin
  // for the last-ulp differences between this log and the vectorised one
  const float ic0_lb = 3.0f * -std::log(1e-8f) - 1e-3f;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> simota_assign_cpu(
    const at::Tensor& pred_boxes, const at::Tensor& cls_logits, const at::Tensor& obj_logits, const at::Tensor& grids,
    const at::Tensor& strides, const at::Tensor& gt_boxes, const at::Tensor& gt_classes, const at::Tensor& gt_mask,
    double center_radius, bool center_only, double penalty) {
  const auto [B, A, C, G] = check_simota_inputs(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes,
                                                gt_classes, gt_mask);
  const auto opts = pred_boxes.options();
  if (B == 0 || A == 0 || G == 0)
    return {at::zeros({B, A}, opts.dtype(at::kBool)), at::full({B, A}, -1, opts.dtype(at::kLong)),
            at::zeros({B, A}, opts.dtype(at::kFloat))};
  // Filled by the kernel (background first, image by image): no separate fill pass.
  auto fg = at::empty({B, A}, opts.dtype(at::kBool));
  auto matched = at::empty({B, A}, opts.dtype(at::kLong));
  auto miou = at::empty({B, A}, opts.dtype(at::kFloat));

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
      TORCH_CHECK_VALUE(gc[b * G + g] >= 0 && gc[b * G + g] < C, "gt_classes[", b, ", ", g, "] = ", gc[b * G + g],
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

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cls.scalar_type(), "simota_assign_cpu", [&] {
    const Problem<scalar_t> P{&loops, B, A, C, G, static_cast<float>(penalty), center_only, ax.data(), ay.data(),
                              ar.data(), pb.data_ptr<float>(), ob.data_ptr<float>(), px1.data(), py1.data(),
                              px2.data(), py2.data(), parea.data(), sig_obj.data(), gtb.data_ptr<float>(), gc,
                              cls.data_ptr<scalar_t>(), cls.stride(0), cls.stride(1), &valid};
    CpuAssigner<scalar_t>(P, fg.data_ptr<bool>(), matched.data_ptr<int64_t>(), miou.data_ptr<float>()).run();
  });
  return {fg, matched, miou};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CPU, m) { m.impl("simota_assign", &simota_assign_cpu); }

}  // namespace yolox_fast
