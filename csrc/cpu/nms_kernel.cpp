// nms and batched_nms on the CPU, with torchvision's semantics (see yolox_fast/ops/nms.py).
//
// Sort by (score descending, index ascending); group by category with a counting sort when the category
// values span a small range (the usual class ids), else with a comparison sort; greedy NMS with early exit
// per category (nms_cpu.h), categories in parallel; the kept indices are then sorted by score.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "../common/checks.h"
#include "nms_cpu.h"

namespace yolox_fast {
namespace {

void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores, const char* op) {
  check_nms_args(boxes, scores, op);  // the op's rule (common/checks.h); then this kernel's own size limit
  TORCH_CHECK(boxes.size(0) < (int64_t(1) << 32), op, ": at most 2^32 - 1 boxes, got ", boxes.size(0));
}

template <typename score_t>
std::vector<typename cpu::SortKey<at::opmath_type<score_t>>::type> score_keys(const at::Tensor& scores,
                                                                               const char* op) {
  using acc_t = at::opmath_type<score_t>;
  using K = cpu::SortKey<acc_t>;
  const int64_t n = scores.size(0);
  const score_t* s = scores.data_ptr<score_t>();
  std::vector<typename K::type> keys(n);
  for (int64_t i = 0; i < n; ++i) {
    const acc_t v = s[i];
    // NaN has no place in a score order (torch.sort would put it first): refuse it, naming the box.
    TORCH_CHECK_VALUE(!std::isnan(v), op, ": scores[", i, "] is NaN; NMS needs ordered scores (+-inf are fine)");
    keys[i] = K::make(v, uint32_t(i));
  }
  return keys;
}

template <typename box_t>
void load_boxes(const box_t* b, const uint32_t* index, int64_t n, cpu::BoxArrays& out) {
  out.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const box_t* p = b + 4 * int64_t(index[i]);
    out.set(i, float(p[0]), float(p[1]), float(p[2]), float(p[3]));
  }
}

template <typename score_t, typename box_t>
at::Tensor batched_nms_cpu_impl(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor* idxs,
                                float thr, const char* op) {
  using acc_t = at::opmath_type<score_t>;
  using K = cpu::SortKey<acc_t>;
  using Key = typename K::type;
  const int64_t n = boxes.size(0);
  std::vector<Key> keys = score_keys<score_t>(scores, op);
  const box_t* b = boxes.data_ptr<box_t>();

  // Groups: [offsets[g], offsets[g + 1]) of `grouped`, each sorted by key.
  std::vector<Key> grouped;
  std::vector<int64_t> offsets;
  bool sort_groups = true;  // false when `grouped` comes out of a full sort already
  if (idxs == nullptr) {
    grouped = std::move(keys);
    offsets = {0, n};
  } else {
    const int64_t* cat = idxs->data_ptr<int64_t>();
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
    for (int64_t i = 0; i < n; ++i) {
      lo = std::min(lo, cat[i]);
      hi = std::max(hi, cat[i]);
    }
    // Class ids span a small range: counting sort (O(N)). Otherwise sort (category, key) pairs.
    const bool dense = n > 0 && uint64_t(hi) - uint64_t(lo) < uint64_t(4 * n + 4096);
    if (dense) {
      cpu::group_by(keys, int64_t(uint64_t(hi) - uint64_t(lo)) + 1,
                    [&](const Key& k) { return int64_t(uint64_t(cat[K::sec(k)]) - uint64_t(lo)); }, grouped,
                    offsets);
    } else {
      sort_groups = false;
      grouped = std::move(keys);
      std::sort(grouped.begin(), grouped.end(), [&](const Key& x, const Key& y) {
        const int64_t cx = cat[K::sec(x)], cy = cat[K::sec(y)];
        return cx != cy ? cx < cy : x < y;
      });
      offsets = {0};
      for (int64_t i = 1; i <= n; ++i) {
        if (i == n || cat[K::sec(grouped[i])] != cat[K::sec(grouped[i - 1])]) offsets.push_back(i);
      }
    }
  }

  // Greedy NMS per group; groups are independent, so run them in parallel. kept_flag[p] marks position p
  // of `grouped` as kept (each position is written by one group only).
  const int64_t num_groups = int64_t(offsets.size()) - 1;
  std::vector<uint8_t> kept_flag(n, 0);
  at::parallel_for(0, num_groups, std::max<int64_t>(1, num_groups * 2000 / std::max<int64_t>(n, 1)),
                   [&](int64_t g0, int64_t g1) {
                     cpu::BoxArrays in, kept_boxes;
                     std::vector<uint32_t> index;
                     std::vector<int64_t> kept;
                     for (int64_t g = g0; g < g1; ++g) {
                       const int64_t begin = offsets[g], m = offsets[g + 1] - begin;
                       if (m == 0) continue;
                       if (sort_groups) std::sort(grouped.begin() + begin, grouped.begin() + begin + m);
                       index.resize(m);
                       for (int64_t i = 0; i < m; ++i) index[i] = K::sec(grouped[begin + i]);
                       load_boxes(b, index.data(), m, in);
                       kept.resize(m);
                       const int64_t nk = cpu::greedy_nms(in, m, thr, m, kept_boxes, kept.data());
                       for (int64_t i = 0; i < nk; ++i) kept_flag[begin + kept[i]] = 1;
                     }
                   });

  std::vector<Key> kept_keys;
  for (int64_t p = 0; p < n; ++p) {
    if (kept_flag[p]) kept_keys.push_back(grouped[p]);
  }
  if (idxs != nullptr) std::sort(kept_keys.begin(), kept_keys.end());  // by score across groups
  auto keep = at::empty({int64_t(kept_keys.size())}, boxes.options().dtype(at::kLong));
  int64_t* out = keep.data_ptr<int64_t>();
  for (size_t i = 0; i < kept_keys.size(); ++i) out[i] = K::sec(kept_keys[i]);
  return keep;
}

at::Tensor dispatch(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor* idxs, double thr,
                    const char* op) {
  check_nms_inputs(boxes_in, scores_in, op);
  auto boxes = boxes_in.contiguous();
  auto scores = scores_in.contiguous();
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "nms_cpu", [&] {
    // float(thr): the reference compares the float32 IoU with the threshold rounded to float32.
    keep = batched_nms_cpu_impl<scalar_t, scalar_t>(boxes, scores, idxs, static_cast<float>(thr), op);
  });
  return keep;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  return dispatch(boxes, scores, nullptr, iou_threshold, "nms");
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold) {
  auto cat = checked_category_ids(idxs, boxes);
  return dispatch(boxes, scores, &cat, iou_threshold, "batched_nms");
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace yolox_fast
