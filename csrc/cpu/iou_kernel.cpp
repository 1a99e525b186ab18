// Pairwise IoU on the CPU: one parallel loop over rows of the [N, M] output.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/box_math.h"
#include "../common/checks.h"

namespace yolox_fast {
namespace {

template <typename scalar_t>
void pairwise_iou_cpu_impl(const at::Tensor& b1, const at::Tensor& b2, bool xyxy, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;  // half/bfloat16 compute in float
  const int64_t n = b1.size(0), m = b2.size(0);
  const scalar_t* p1 = b1.data_ptr<scalar_t>();
  const scalar_t* p2 = b2.data_ptr<scalar_t>();
  scalar_t* po = out.data_ptr<scalar_t>();
  auto load = [xyxy](const scalar_t* p, Box<acc_t>& box, acc_t& area) {
    const acc_t a = p[0], b = p[1], c = p[2], d = p[3];
    if (xyxy) {
      box = {a, b, c, d};
      area = (c - a) * (d - b);
    } else {
      box = box_from_cxcywh<acc_t>(a, b, c, d);
      area = c * d;
    }
  };
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Box<acc_t> bi;
      acc_t ai;
      load(p1 + 4 * i, bi, ai);
      for (int64_t j = 0; j < m; ++j) {
        Box<acc_t> bj;
        acc_t aj;
        load(p2 + 4 * j, bj, aj);
        po[i * m + j] = static_cast<scalar_t>(box_iou<acc_t>(bi, ai, bj, aj));
      }
    }
  });
}

at::Tensor pairwise_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, bool xyxy) {
  check_boxes(boxes1, "boxes1");
  check_boxes(boxes2, "boxes2");
  check_same_device(boxes1, "boxes1", boxes2, "boxes2");
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), "boxes1 (", boxes1.scalar_type(),
              ") and boxes2 (", boxes2.scalar_type(), ") must have the same dtype");
  auto b1 = boxes1.contiguous();
  auto b2 = boxes2.contiguous();
  auto out = at::empty({b1.size(0), b2.size(0)}, b1.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "pairwise_iou_cpu",
                                  [&] { pairwise_iou_cpu_impl<scalar_t>(b1, b2, xyxy, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CPU, m) { m.impl("pairwise_iou", &pairwise_iou_cpu); }

}  // namespace yolox_fast
