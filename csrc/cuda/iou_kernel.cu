// Pairwise IoU on the GPU: one thread per (i, j) pair, on the current stream. Columns j on gridDim.x, rows
// i strided over gridDim.y (capped at 65535 by CUDA), so any number of rows fits.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/box_math.h"
#include "../common/checks.h"

namespace yolox_fast {
namespace {

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_box(const scalar_t* p, bool xyxy, Box<acc_t>& box, acc_t& area) {
  const acc_t a = p[0], b = p[1], c = p[2], d = p[3];
  if (xyxy) {
    box = {a, b, c, d};
    area = (c - a) * (d - b);
  } else {
    box = box_from_cxcywh<acc_t>(a, b, c, d);
    area = c * d;
  }
}

template <typename scalar_t>
__global__ void pairwise_iou_kernel(const scalar_t* __restrict__ b1, const scalar_t* __restrict__ b2, int64_t n,
                                    int64_t m, bool xyxy, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= m) return;
  Box<acc_t> bi, bj;
  acc_t ai, aj;
  load_box<scalar_t, acc_t>(b2 + 4 * j, xyxy, bj, aj);
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    load_box<scalar_t, acc_t>(b1 + 4 * i, xyxy, bi, ai);
    out[i * m + j] = static_cast<scalar_t>(box_iou<acc_t>(bi, ai, bj, aj));
  }
}

at::Tensor pairwise_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, bool xyxy) {
  check_pairwise_iou_args(boxes1, boxes2);
  const c10::cuda::CUDAGuard guard(boxes1.device());
  auto b1 = boxes1.contiguous();
  auto b2 = boxes2.contiguous();
  const int64_t n = b1.size(0), m = b2.size(0);
  auto out = at::empty({n, m}, b1.options());
  if (n == 0 || m == 0) return out;
  const int threads = 256;
  const int64_t col_blocks = (m + threads - 1) / threads;
  TORCH_CHECK(col_blocks < (int64_t(1) << 31), "pairwise_iou on CUDA supports at most 2^31 - 1 blocks of ", threads,
              " boxes in boxes2, got ", m, " boxes");
  const dim3 grid(unsigned(col_blocks), unsigned(std::min<int64_t>(n, 65535)));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "pairwise_iou_cuda", [&] {
    pairwise_iou_kernel<scalar_t><<<grid, threads, 0, stream>>>(b1.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(),
                                                               n, m, xyxy, out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CUDA, m) { m.impl("pairwise_iou", &pairwise_iou_cuda); }

}  // namespace yolox_fast
