// nms and batched_nms on the GPU (semantics: yolox_fast/ops/nms.py): keys (score, then index), one device-wide
// stable radix sort, float32 corners in priority order, then the bitmask NMS of bitmask_nms.cuh (one problem;
// batched: classes compared in the mask kernel). One host sync: the kept count and whether a score was NaN.
#include "bitmask_nms.cuh"

namespace yolox_fast {
namespace {

// ------------------------------------------------------------------------------------------------
// nms / batched_nms
// ------------------------------------------------------------------------------------------------

template <typename scalar_t>
__global__ void nms_keys_kernel(const scalar_t* __restrict__ scores, int64_t n, int64_t* __restrict__ keys,
                                int32_t* __restrict__ index, int64_t* __restrict__ status) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const acc_t v = static_cast<acc_t>(scores[i]);
  if (v != v) atomicMax(reinterpret_cast<unsigned long long*>(status + 1), 1ull);  // NaN: reported on the host
  keys[i] = make_key<acc_t>(v, uint32_t(i));
  index[i] = int32_t(i);
}

template <typename scalar_t>
__global__ void nms_gather_kernel(const scalar_t* __restrict__ boxes, const int64_t* __restrict__ idxs,
                                  const int32_t* __restrict__ order, int64_t n, float4* __restrict__ out_boxes,
                                  int64_t* __restrict__ out_cls) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  const int64_t i = order[r];
  const scalar_t* b = boxes + 4 * i;
  out_boxes[r] = make_float4(float(b[0]), float(b[1]), float(b[2]), float(b[3]));  // float32 IoU, as the reference
  if (idxs != nullptr) out_cls[r] = idxs[i];
}

at::Tensor batched_nms_cuda_impl(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor* idxs,
                                 double iou_threshold, const char* op) {
  check_nms_args(boxes_in, scores_in, op);
  const c10::cuda::CUDAGuard guard(boxes_in.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t n = boxes_in.size(0);
  auto opts = boxes_in.options();
  if (n == 0) return at::empty({0}, opts.dtype(at::kLong));
  TORCH_CHECK(n < (int64_t(1) << 31), op, ": at most 2^31 - 1 boxes on the GPU, got ", n);
  auto boxes = boxes_in.contiguous();
  auto scores = scores_in.contiguous();
  auto keys = at::empty({n}, opts.dtype(at::kLong));
  auto index = at::empty({n}, opts.dtype(at::kInt));
  auto status = at::zeros({2}, opts.dtype(at::kLong));  // [kept count, NaN seen]: one copy to the host
  const unsigned blocks = unsigned((n + 255) / 256);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "nms_cuda_keys", [&] {
    nms_keys_kernel<scalar_t><<<blocks, 256, 0, stream>>>(scores.data_ptr<scalar_t>(), n, keys.data_ptr<int64_t>(),
                                                          index.data_ptr<int32_t>(), status.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // One segment: a device-wide stable radix sort by (score desc, index asc).
  auto keys_s = at::empty_like(keys);
  auto order = at::empty_like(index);
  sort_pairs_desc<int32_t>(keys, keys_s, index, order, n, 1, nullptr, nullptr, stream);
  auto sorted_boxes = at::empty({n, 4}, opts.dtype(at::kFloat));
  at::Tensor sorted_cls;
  if (idxs != nullptr) sorted_cls = at::empty({n}, opts.dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_cuda_gather", [&] {
    nms_gather_kernel<scalar_t><<<blocks, 256, 0, stream>>>(
        boxes.data_ptr<scalar_t>(), idxs ? idxs->data_ptr<int64_t>() : nullptr, order.data_ptr<int32_t>(), n,
        reinterpret_cast<float4*>(sorted_boxes.data_ptr<float>()), idxs ? sorted_cls.data_ptr<int64_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  auto n_dev = at::full({1}, n, opts.dtype(at::kLong));
  auto ws = run_bitmask_nms(sorted_boxes, idxs ? sorted_cls.data_ptr<int64_t>() : nullptr, n_dev, 1, n,
                            static_cast<float>(iou_threshold), n, stream);
  status.narrow(0, 0, 1).copy_(ws.count);
  auto host = status.cpu();  // the one sync: the output size, and whether a score was NaN
  TORCH_CHECK_VALUE(host[1].item<int64_t>() == 0, op,
                    ": scores contain NaN; NMS needs ordered scores (+-inf are fine)");
  const int64_t kept = host[0].item<int64_t>();
  auto ranks = ws.keep.narrow(1, 0, kept).reshape({kept}).to(at::kLong);
  return order.index_select(0, ranks).to(at::kLong);
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  return batched_nms_cuda_impl(boxes, scores, nullptr, iou_threshold, "nms");
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  auto cat = checked_category_ids(idxs, boxes);
  return batched_nms_cuda_impl(boxes, scores, &cat, iou_threshold, "batched_nms");
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace yolox_fast
