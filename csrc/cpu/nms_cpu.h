// The CPU greedy NMS core shared by nms_kernel.cpp (nms, batched_nms) and postprocess_kernel.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../common/box_math.h"
#include "../common/postprocess_math.h"

namespace yolox_fast {
namespace cpu {

// Sort key "score descending, then `sec` ascending" for one candidate. For float scores (also fp16 and
// bf16, which widen to float exactly) the key is one uint64 so that std::sort compares integers; for
// double it is a pair. `sec` is a 32-bit tie-break that also encodes which candidate this is.
template <typename acc_t>
struct SortKey;

template <>
struct SortKey<float> {
  using type = uint64_t;
  static type make(float score, uint32_t sec) { return (uint64_t(~float_order_key(score)) << 32) | sec; }
  static uint32_t sec(type k) { return uint32_t(k); }
};

struct DoubleKey {
  uint64_t neg_score;
  uint32_t sec;
  bool operator<(const DoubleKey& o) const { return neg_score != o.neg_score ? neg_score < o.neg_score : sec < o.sec; }
};

template <>
struct SortKey<double> {
  using type = DoubleKey;
  static type make(double score, uint32_t sec) { return {~double_order_key(score), sec}; }
  static uint32_t sec(type k) { return k.sec; }
};

// Boxes of one NMS group in priority order (best first), float32 structure of arrays: the reference
// computes NMS IoU in float32 whatever the input dtype.
struct BoxArrays {
  std::vector<float> x1, y1, x2, y2, area;
  void resize(size_t n) {
    x1.resize(n);
    y1.resize(n);
    x2.resize(n);
    y2.resize(n);
    area.resize(n);
  }
  void set(size_t i, float a, float b, float c, float d) {
    x1[i] = a;
    y1[i] = b;
    x2[i] = c;
    y2[i] = d;
    area[i] = (c - a) * (d - b);  // as the reference: (x2 - x1) * (y2 - y1)
  }
};

// Whether any of the kept boxes [j, j + 8) has IoU > thr with box b (box_iou_nms, kept box first).
// x86-64: SSE2, 4 IoUs per instruction. Each intrinsic is the exact IEEE op of the scalar formula:
// minps(a, b) = a < b ? a : b, maxps(a, b) = a > b ? a : b, andnot(w < 0, w) = w < 0 ? 0 : w.
// Measured (20,000 boxes, 80 classes, one thread): GCC left the scalar block unvectorised.
inline bool any_above8(const float* kx1, const float* ky1, const float* kx2, const float* ky2, const float* ka,
                       float bx1, float by1, float bx2, float by2, float ba, float thr) {
#if defined(__SSE2__)
  const __m128 vx1 = _mm_set1_ps(bx1), vy1 = _mm_set1_ps(by1), vx2 = _mm_set1_ps(bx2), vy2 = _mm_set1_ps(by2);
  const __m128 va = _mm_set1_ps(ba), vt = _mm_set1_ps(thr), zero = _mm_setzero_ps();
  int hit = 0;
  for (int h = 0; h < 8; h += 4) {
    __m128 w = _mm_sub_ps(_mm_min_ps(_mm_loadu_ps(kx2 + h), vx2), _mm_max_ps(_mm_loadu_ps(kx1 + h), vx1));
    __m128 ht = _mm_sub_ps(_mm_min_ps(_mm_loadu_ps(ky2 + h), vy2), _mm_max_ps(_mm_loadu_ps(ky1 + h), vy1));
    w = _mm_andnot_ps(_mm_cmplt_ps(w, zero), w);
    ht = _mm_andnot_ps(_mm_cmplt_ps(ht, zero), ht);
    const __m128 inter = _mm_mul_ps(w, ht);
    const __m128 iou = _mm_div_ps(inter, _mm_sub_ps(_mm_add_ps(_mm_loadu_ps(ka + h), va), inter));
    hit |= _mm_movemask_ps(_mm_cmpgt_ps(iou, vt));
  }
  return hit != 0;
#else
  bool any = false;
  for (int t = 0; t < 8; ++t) {
    any |= box_iou_nms<float>(kx1[t], ky1[t], kx2[t], ky2[t], ka[t], bx1, by1, bx2, by2, ba) > thr;
  }
  return any;
#endif
}

// Greedy NMS over boxes [0, n) of `in`, already in priority order: a box is kept unless a kept box has
// IoU > thr with it. Writes kept positions to `kept` in order and returns how many; stops at `limit`.
//
// Sorted greedy with early exit: each box is tested only against the boxes kept so far, and only until
// the first one that suppresses it (usually one of the first: the best boxes suppress most). Torchvision's
// loop instead tests every kept box against all later boxes. The kept boxes are copied into `kept_boxes`
// (contiguous arrays) and tested 8 at a time (any_above8).
inline int64_t greedy_nms(const BoxArrays& in, int64_t n, float thr, int64_t limit, BoxArrays& kept_boxes,
                          int64_t* kept) {
  constexpr int64_t kBlock = 8;
  if (kept_boxes.x1.size() < size_t(n)) kept_boxes.resize(n);
  float* kx1 = kept_boxes.x1.data();
  float* ky1 = kept_boxes.y1.data();
  float* kx2 = kept_boxes.x2.data();
  float* ky2 = kept_boxes.y2.data();
  float* ka = kept_boxes.area.data();
  int64_t nk = 0;
  for (int64_t i = 0; i < n && nk < limit; ++i) {
    const float bx1 = in.x1[i], by1 = in.y1[i], bx2 = in.x2[i], by2 = in.y2[i], ba = in.area[i];
    bool suppressed = false;
    int64_t j = 0;
    for (; j + kBlock <= nk; j += kBlock) {
      if (any_above8(kx1 + j, ky1 + j, kx2 + j, ky2 + j, ka + j, bx1, by1, bx2, by2, ba, thr)) {
        suppressed = true;
        break;
      }
    }
    for (; !suppressed && j < nk; ++j) {
      suppressed = box_iou_nms<float>(kx1[j], ky1[j], kx2[j], ky2[j], ka[j], bx1, by1, bx2, by2, ba) > thr;
    }
    if (!suppressed) {
      kx1[nk] = bx1;
      ky1[nk] = by1;
      kx2[nk] = bx2;
      ky2[nk] = by2;
      ka[nk] = ba;
      kept[nk++] = i;
    }
  }
  return nk;
}

// Stable counting sort of `keys` by group id `group_of(key)` in [0, num_groups): fills `out` and
// `offsets` (num_groups + 1 entries) so that group g is out[offsets[g], offsets[g + 1]).
template <typename Key, typename GroupOf>
void group_by(const std::vector<Key>& keys, int64_t num_groups, GroupOf group_of, std::vector<Key>& out,
              std::vector<int64_t>& offsets) {
  offsets.assign(num_groups + 1, 0);
  for (const Key& k : keys) ++offsets[group_of(k) + 1];
  for (int64_t g = 0; g < num_groups; ++g) offsets[g + 1] += offsets[g];
  out.resize(keys.size());
  std::vector<int64_t> pos(offsets.begin(), offsets.end() - 1);
  for (const Key& k : keys) out[pos[group_of(k)]++] = k;
}

}  // namespace cpu
}  // namespace yolox_fast
