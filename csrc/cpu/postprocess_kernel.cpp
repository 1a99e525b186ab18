// The fused inference postprocess on the CPU (see yolox_fast/ops/postprocess.py for the semantics).
//
// Per image (images in parallel with at::parallel_for), one pass over the [A, 5 + C] predictions:
//   score = obj * max(cls) computed on the fly (vectorised max over the C class scores, no [A, C]
//   temporary), threshold, and a sort key for each surviving candidate; then top-k, grouping by class
//   (counting sort), sorted greedy NMS with early exit (nms_cpu.h), max_det, and the output rows.
// Only the few candidates above the threshold ever get a box, a class index or (raw input) a decode.
//
// Raw input (grids given): obj and class scores are logits. sigmoid(obj) < conf rules a row out
// without reading its class logits (class scores are <= 1, so obj * cls <= obj, also after rounding),
// and otherwise max(sigmoid(l)) = sigmoid(max(l)) needs one exp per row instead of C.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../common/checks.h"
#include "../common/postprocess_math.h"
#include "nms_cpu.h"

namespace yolox_fast {
namespace {

template <typename scalar_t>
struct Params {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t A, S, C;  // anchors, row stride (>= 5 + C), classes
  acc_t conf;       // conf_thre rounded to scalar_t: the reference compares in the prediction dtype
  // Raw input: an objectness logit below this has sigmoid < conf for sure (-inf: never skip on the logit).
  acc_t obj_logit_skip = -std::numeric_limits<acc_t>::infinity();
  float nms;        // nms_thre rounded to float32: the reference's NMS IoU is float32
  bool agnostic, multi;
  int64_t topk, max_det;                         // <= 0: no limit
  const float* grids = nullptr;                  // [A, 2] raw input only
  const float* strides = nullptr;                // [A]
  bool raw() const { return grids != nullptr; }
  // The sort key's tie-break, which also encodes (anchor, class). Class-aware: class, then anchor (the
  // reference's output order among equal scores); class-agnostic: anchor, then class.
  uint32_t sec(int64_t a, int64_t c) const { return uint32_t(agnostic ? a * C + c : c * A + a); }
  int64_t anchor_of(uint32_t s) const { return agnostic ? s / C : s % A; }
  int64_t class_of(uint32_t s) const { return agnostic ? s % C : s / A; }
};

// Largest of v[0, n) ignoring NaN (-inf when n == 0); the candidate check below handles NaN. Eight
// independent `x > m ? x : m` chains (the compiler vectorises the float32 case on its own only with
// -ffast-math, so x86-64 gets explicit SSE2 below).
template <typename scalar_t>
inline at::opmath_type<scalar_t> row_max(const scalar_t* v, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int W = 8;
  acc_t m[W];
  for (int w = 0; w < W; ++w) m[w] = -std::numeric_limits<acc_t>::infinity();
  int64_t c = 0;
  for (; c + W <= n; c += W) {
    for (int w = 0; w < W; ++w) {
      const acc_t x = static_cast<acc_t>(v[c + w]);
      m[w] = x > m[w] ? x : m[w];
    }
  }
  acc_t r = -std::numeric_limits<acc_t>::infinity();
  for (int w = 0; w < W; ++w) r = m[w] > r ? m[w] : r;
  for (; c < n; ++c) {
    const acc_t x = static_cast<acc_t>(v[c]);
    r = x > r ? x : r;
  }
  return r;
}

#if defined(__SSE2__)
// float32, 16 classes per step with SSE2 (every x86-64 CPU has it). maxps(x, m) = x > m ? x : m, the
// scalar rule above. Measured on the 2-core dev VM (YOLOX-Nano predictions, B=8, A=8400, C=80, one
// thread): the scalar loop took 1.24 ms for the batch at conf 0.25, a full-batch `sum` 0.42 ms.
template <>
inline float row_max<float>(const float* v, int64_t n) {
  const __m128 ninf = _mm_set1_ps(-std::numeric_limits<float>::infinity());
  __m128 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    m0 = _mm_max_ps(_mm_loadu_ps(v + c), m0);
    m1 = _mm_max_ps(_mm_loadu_ps(v + c + 4), m1);
    m2 = _mm_max_ps(_mm_loadu_ps(v + c + 8), m2);
    m3 = _mm_max_ps(_mm_loadu_ps(v + c + 12), m3);
  }
  for (; c + 4 <= n; c += 4) m0 = _mm_max_ps(_mm_loadu_ps(v + c), m0);
  m0 = _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3));
  m0 = _mm_max_ps(m0, _mm_movehl_ps(m0, m0));
  m0 = _mm_max_ss(m0, _mm_shuffle_ps(m0, m0, 1));
  float r = _mm_cvtss_f32(m0);
  for (; c < n; ++c) r = v[c] > r ? v[c] : r;
  return r;
}
#endif

// torch.max(dim=1) on one row of class scores (sigmoid applied first when raw): the first index of the
// maximum, or -1 when the row holds a NaN (torch.max then returns NaN, and a NaN score fails the
// threshold). Only called for rows that passed the threshold, so its cost does not matter.
template <typename scalar_t, bool RAW>
inline int64_t class_argmax(const scalar_t* v, int64_t n, at::opmath_type<scalar_t>& best) {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t idx = -1;
  for (int64_t c = 0; c < n; ++c) {
    acc_t x = static_cast<acc_t>(v[c]);
    if (RAW) x = sigmoid_as<scalar_t, acc_t>(x);
    if (std::isnan(x)) return -1;
    if (idx < 0 || x > best) {
      best = x;
      idx = c;
    }
  }
  return idx;
}

#if defined(__SSE2__)
// The same for decoded float32 rows, 4 classes per instruction: 1876 passing rows x 80 classes at
// conf 0.001 made the scalar loop a visible part of the batch time.
template <>
inline int64_t class_argmax<float, false>(const float* v, int64_t n, float& best) {
  __m128 vmax = _mm_set1_ps(-std::numeric_limits<float>::infinity());
  int nan = 0;
  int64_t c = 0;
  for (; c + 4 <= n; c += 4) {
    const __m128 x = _mm_loadu_ps(v + c);
    nan |= _mm_movemask_ps(_mm_cmpunord_ps(x, x));
    vmax = _mm_max_ps(x, vmax);
  }
  float m = -std::numeric_limits<float>::infinity();
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, vmax);
  for (int k = 0; k < 4; ++k) m = lanes[k] > m ? lanes[k] : m;
  for (; c < n; ++c) {
    if (std::isnan(v[c])) return -1;
    m = v[c] > m ? v[c] : m;
  }
  if (nan || n == 0) return -1;
  for (int64_t k = 0; k < n; ++k) {  // first index of the maximum (torch.max)
    if (v[k] == m) {
      best = m;
      return k;
    }
  }
  return -1;  // unreachable: m is one of the values
}
#endif

template <typename scalar_t>
struct Workspace {
  using acc_t = at::opmath_type<scalar_t>;
  using K = cpu::SortKey<acc_t>;
  std::vector<typename K::type> keys, grouped, kept_keys;
  std::vector<int64_t> offsets, kept;
  cpu::BoxArrays boxes, kept_boxes;
};

// Pass 1 over one image: the sort key of every candidate (anchor, class) with obj * cls >= conf.
template <typename scalar_t, bool RAW, bool MULTI>
void scan_image(const scalar_t* pred, const Params<scalar_t>& p, Workspace<scalar_t>& ws) {
  using acc_t = at::opmath_type<scalar_t>;
  using K = cpu::SortKey<acc_t>;
  const acc_t conf = p.conf;
  ws.keys.clear();
  for (int64_t a = 0; a < p.A; ++a) {
    const scalar_t* row = pred + a * p.S;
    const scalar_t* cls = row + 5;
    acc_t obj = static_cast<acc_t>(row[4]);
    if (RAW) {
      if (obj < p.obj_logit_skip) continue;  // no exp for most background rows
      obj = sigmoid_as<scalar_t, acc_t>(obj);
      if (obj < conf) continue;  // every class score is <= 1, so obj * cls <= obj < conf
    }
    const acc_t m = row_max(cls, p.C);
    const acc_t best = RAW ? sigmoid_as<scalar_t, acc_t>(m) : m;
    const acc_t top = round_as<scalar_t, acc_t>(obj * best);
    if (!MULTI) {
      if (!(top >= conf)) continue;  // also drops NaN scores, as the reference's `>=` does
      acc_t exact = 0;
      const int64_t c = class_argmax<scalar_t, RAW>(cls, p.C, exact);
      if (c < 0) continue;
      const acc_t score = round_as<scalar_t, acc_t>(obj * exact);  // == top unless exp is not monotone
      if (!(score >= conf)) continue;
      ws.keys.push_back(K::make(score, p.sec(a, c)));
    } else {
      // obj >= 0 and rounding is monotone, so no class beats the best one: skip when it fails.
      if (obj >= acc_t(0) && top < conf) continue;
      for (int64_t c = 0; c < p.C; ++c) {
        acc_t x = static_cast<acc_t>(cls[c]);
        if (RAW) x = sigmoid_as<scalar_t, acc_t>(x);
        const acc_t score = round_as<scalar_t, acc_t>(obj * x);
        if (score >= conf) ws.keys.push_back(K::make(score, p.sec(a, c)));  // NaN never passes
      }
    }
  }
}

// Corners of the box of anchor a, as the reference computes them (decode first when raw).
template <typename scalar_t>
inline void anchor_box(const scalar_t* pred, const Params<scalar_t>& p, int64_t a, at::opmath_type<scalar_t>* xyxy) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* row = pred + a * p.S;
  acc_t b[4] = {acc_t(row[0]), acc_t(row[1]), acc_t(row[2]), acc_t(row[3])};
  if (p.raw()) {
    const acc_t gx = round_as<scalar_t, acc_t>(p.grids[2 * a]);
    const acc_t gy = round_as<scalar_t, acc_t>(p.grids[2 * a + 1]);
    const acc_t s = round_as<scalar_t, acc_t>(p.strides[a]);
    acc_t d[4];
    decode_box_as<scalar_t, acc_t>(b[0], b[1], b[2], b[3], gx, gy, s, d);
    for (int i = 0; i < 4; ++i) b[i] = d[i];
  }
  cxcywh_to_xyxy_as<scalar_t, acc_t>(b[0], b[1], b[2], b[3], xyxy);
}

// One image: candidates -> top-k -> NMS -> max_det -> rows (x1, y1, x2, y2, obj, cls_conf, cls_id).
template <typename scalar_t>
int64_t process_image(const scalar_t* pred, const Params<scalar_t>& p, Workspace<scalar_t>& ws,
                      std::vector<scalar_t>& rows) {
  using acc_t = at::opmath_type<scalar_t>;
  using K = cpu::SortKey<acc_t>;
  using Key = typename K::type;
  const bool raw = p.raw();
  if (raw && p.multi) scan_image<scalar_t, true, true>(pred, p, ws);
  else if (raw) scan_image<scalar_t, true, false>(pred, p, ws);
  else if (p.multi) scan_image<scalar_t, false, true>(pred, p, ws);
  else scan_image<scalar_t, false, false>(pred, p, ws);
  auto& keys = ws.keys;
  rows.clear();
  if (keys.empty()) return 0;

  if (p.topk > 0 && int64_t(keys.size()) > p.topk) {  // the topk best by the final order
    std::nth_element(keys.begin(), keys.begin() + p.topk, keys.end());
    keys.resize(p.topk);
  }
  const int64_t n = keys.size();
  const int64_t limit = p.max_det > 0 ? std::min(p.max_det, n) : n;

  // Groups of candidates that may suppress each other: one per class, or all of them.
  if (p.agnostic) {
    std::sort(keys.begin(), keys.end());
    ws.grouped.swap(keys);
    ws.offsets.assign({0, n});
  } else {
    cpu::group_by(keys, p.C, [&](const Key& k) { return p.class_of(K::sec(k)); }, ws.grouped, ws.offsets);
  }

  ws.kept_keys.clear();
  ws.kept.resize(n);
  for (size_t g = 0; g + 1 < ws.offsets.size(); ++g) {
    const int64_t begin = ws.offsets[g], m = ws.offsets[g + 1] - begin;
    if (m == 0) continue;
    Key* gk = ws.grouped.data() + begin;
    if (!p.agnostic) std::sort(gk, gk + m);
    ws.boxes.resize(m);
    for (int64_t i = 0; i < m; ++i) {
      acc_t xyxy[4];
      anchor_box(pred, p, p.anchor_of(K::sec(gk[i])), xyxy);
      ws.boxes.set(i, float(xyxy[0]), float(xyxy[1]), float(xyxy[2]), float(xyxy[3]));
    }
    const int64_t nk = cpu::greedy_nms(ws.boxes, m, p.nms, limit, ws.kept_boxes, ws.kept.data());
    for (int64_t i = 0; i < nk; ++i) ws.kept_keys.push_back(gk[ws.kept[i]]);
  }
  if (!p.agnostic) {
    std::sort(ws.kept_keys.begin(), ws.kept_keys.end());  // merge the classes by score
    if (int64_t(ws.kept_keys.size()) > limit) ws.kept_keys.resize(limit);
  }

  const int64_t count = ws.kept_keys.size();
  rows.resize(7 * count);
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t s = K::sec(ws.kept_keys[i]);
    const int64_t a = p.anchor_of(s), c = p.class_of(s);
    const scalar_t* row = pred + a * p.S;
    acc_t xyxy[4];
    anchor_box(pred, p, a, xyxy);
    scalar_t* out = rows.data() + 7 * i;
    for (int j = 0; j < 4; ++j) out[j] = static_cast<scalar_t>(xyxy[j]);
    out[4] = raw ? static_cast<scalar_t>(sigmoid_as<scalar_t, acc_t>(row[4])) : row[4];
    out[5] = raw ? static_cast<scalar_t>(sigmoid_as<scalar_t, acc_t>(row[5 + c])) : row[5 + c];
    out[6] = static_cast<scalar_t>(static_cast<acc_t>(c));  // the reference: class_pred.to(dtype)
  }
  return count;
}

std::tuple<at::Tensor, at::Tensor> postprocess_cpu(const at::Tensor& prediction, int64_t num_classes,
                                                   double conf_thre, double nms_thre, bool class_agnostic,
                                                   bool multi_label, int64_t pre_nms_topk, int64_t max_det,
                                                   const std::optional<at::Tensor>& grids,
                                                   const std::optional<at::Tensor>& strides) {
  check_postprocess_args(prediction, num_classes, grids, strides);
  const int64_t B = prediction.size(0), A = prediction.size(1);
  TORCH_CHECK(A * num_classes < (int64_t(1) << 32), "postprocess: anchors x classes must be < 2^32, got ", A,
              " x ", num_classes);
  at::Tensor g, s;
  if (grids.has_value()) {
    g = grids->to(at::kFloat).contiguous();
    s = strides->to(at::kFloat).contiguous();
  }
  auto pred = prediction.contiguous();  // a copy only when the input is not contiguous; never written

  at::Tensor out, counts = at::zeros({B}, prediction.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "postprocess_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Params<scalar_t> p;
    p.A = A;
    p.S = pred.size(2);
    p.C = num_classes;
    p.conf = round_as<scalar_t, acc_t>(static_cast<acc_t>(conf_thre));
    if (conf_thre > 0.0 && conf_thre < 1.0) {
      // x < logit(conf) - m  =>  sigmoid(x) <= conf * exp(-m (1 - conf)) = conf * exp(-0.01): 1% below
      // conf, far more than exp's error plus the rounding to scalar_t (2^-9 relative for bfloat16).
      // Measured (one thread, raw YOLOX-Nano output, B=8, conf 0.001): 1.26 ms -> see the commit.
      const double m = 0.01 / (1.0 - conf_thre);
      p.obj_logit_skip = static_cast<acc_t>(std::log(conf_thre) - std::log1p(-conf_thre) - m);
    }
    p.nms = static_cast<float>(nms_thre);
    p.agnostic = class_agnostic;
    p.multi = multi_label;
    p.topk = pre_nms_topk;
    p.max_det = max_det;
    if (g.defined()) {
      p.grids = g.data_ptr<float>();
      p.strides = s.data_ptr<float>();
    }
    const scalar_t* base = pred.data_ptr<scalar_t>();
    std::vector<std::vector<scalar_t>> rows(B);
    int64_t* cnt = counts.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      Workspace<scalar_t> ws;
      for (int64_t b = b0; b < b1; ++b) cnt[b] = process_image(base + b * A * p.S, p, ws, rows[b]);
    });
    int64_t M = max_det;
    if (M <= 0) {
      M = 0;
      for (int64_t b = 0; b < B; ++b) M = std::max(M, cnt[b]);
    }
    out = at::zeros({B, M, 7}, pred.options());
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b) std::copy(rows[b].begin(), rows[b].end(), o + b * M * 7);
  });
  return {out, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CPU, m) { m.impl("postprocess", &postprocess_cpu); }

}  // namespace yolox_fast
