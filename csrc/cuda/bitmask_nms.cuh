// What the nms / batched_nms op (nms_kernel.cu) and the postprocess op (postprocess_kernel.cu) share on the
// GPU: the 64-bit sort key, the stable descending sort, and the bitmask NMS (mask kernel + greedy reduction)
// over G independent problems of boxes in priority order. Included by both .cu files (an anonymous namespace:
// each has its own copy).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>
#include <limits>
#include <tuple>

#include "../common/box_math.h"
#include "../common/checks.h"
#include "../common/postprocess_math.h"  // the order keys of float scores

namespace yolox_fast {
namespace {

constexpr int kTile = 64;  // boxes per mask word
constexpr int64_t kInvalidKey = std::numeric_limits<int64_t>::min();
constexpr int64_t kMaxMaskBytes = int64_t(4) << 30;

// Sort key, larger = better: (score descending, sec ascending). float/half/bf16 scores fit in the high
// 32 bits with the tie-break below; double scores take all 64 bits and ties keep the input order (stable
// sort), which is the tie order by construction (slot layout, or the pre-order of tie_order_kernel).
template <typename acc_t>
__device__ __forceinline__ int64_t make_key(acc_t score, uint32_t sec) {
  uint64_t u;
  if constexpr (std::is_same_v<acc_t, double>) {
    u = double_order_key(score);
  } else {
    u = (uint64_t(float_order_key(score)) << 32) | uint64_t(0xFFFFFFFFu - sec);
  }
  return int64_t(u ^ (uint64_t(1) << 63));  // unsigned order -> signed order
}

// Stable descending sort of int64 keys with values of `segments` segments [begin[s], end[s]) within arrays of
// `items` entries. One segment: cub's device-wide radix sort over all `items` (stable; entries past the
// segment's end must hold kInvalidKey so that they sort last; begin/end unused); DeviceSegmentedSort
// would sort a single segment in one thread block. Several: cub's segmented sort, at most
// kSortSegmentsPerCall segments per call. Above its partitioning threshold (300 or 500 segments, by
// architecture) cub copies the sizes of its segment groups to the host and synchronises the stream, a sync
// that torch.cuda.set_sync_debug_mode cannot see; calls on successive slices of the segments keep under it.
constexpr int64_t kSortSegmentsPerCall = 300;

template <typename value_t>
void sort_pairs_desc(const at::Tensor& keys_in, at::Tensor& keys_out, const at::Tensor& vals_in, at::Tensor& vals_out,
                     int64_t items, int64_t segments, const int32_t* begin, const int32_t* end, cudaStream_t stream) {
  const int64_t* ki = keys_in.data_ptr<int64_t>();
  int64_t* ko = keys_out.data_ptr<int64_t>();
  const value_t* vi = vals_in.data_ptr<value_t>();
  value_t* vo = vals_out.data_ptr<value_t>();
  const auto byte_opts = keys_in.options().dtype(at::kByte);
  if (segments == 1) {
    size_t temp_bytes = 0;
    C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, ki, ko, vi, vo, items, 0, 64,
                                                             stream));
    auto temp = at::empty({int64_t(std::max<size_t>(temp_bytes, 1))}, byte_opts);
    C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(temp.data_ptr(), temp_bytes, ki, ko, vi, vo, items, 0,
                                                             64, stream));
    return;
  }
  // Segment offsets are absolute positions in the arrays: each call sorts the ranges of its slice only. Two
  // slice sizes at most (full slices, then the rest): the workspace is sized for the larger need.
  const int64_t full = std::min(kSortSegmentsPerCall, segments);
  const int64_t rest = segments % kSortSegmentsPerCall;
  size_t temp_bytes = 0;
  for (const int64_t n : {full, rest}) {
    if (n == 0) continue;
    size_t bytes = 0;
    C10_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(nullptr, bytes, ki, ko, vi, vo, items, n, begin,
                                                                       end, stream));
    temp_bytes = std::max(temp_bytes, bytes);
  }
  auto temp = at::empty({int64_t(std::max<size_t>(temp_bytes, 1))}, byte_opts);
  for (int64_t first = 0; first < segments; first += kSortSegmentsPerCall) {
    const int64_t n = std::min(kSortSegmentsPerCall, segments - first);
    size_t bytes = temp_bytes;
    C10_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(temp.data_ptr(), bytes, ki, ko, vi, vo, items,
                                                                       n, begin + first, end + first, stream));
  }
}

// ------------------------------------------------------------------------------------------------
// Bitmask NMS over G independent problems of n[g] boxes in priority order (postprocess steps 5-6, nms)
// ------------------------------------------------------------------------------------------------

// Tiles (row block, column block >= row block) are spread over gridDim.x blocks per problem; tiles past
// the problem's own count are never visited, so a fixed grid serves any count without a host sync.
__global__ void nms_mask_kernel(const float4* __restrict__ boxes, const int64_t* __restrict__ cls,
                                const int64_t* __restrict__ n_in, int64_t cap, int64_t words, float thr,
                                unsigned long long* __restrict__ mask) {
  const int64_t g = blockIdx.y;
  const int64_t n = std::min<int64_t>(n_in[g], cap);
  const int64_t nb = (n + kTile - 1) / kTile;
  const float4* gb = boxes + g * cap;
  const int64_t* gc = cls == nullptr ? nullptr : cls + g * cap;
  __shared__ float4 sb[kTile];
  __shared__ float sa[kTile];
  __shared__ int64_t sc[kTile];
  for (int64_t t = blockIdx.x; t < nb * nb; t += gridDim.x) {
    const int64_t rb = t / nb, cbk = t % nb;
    if (cbk < rb) continue;  // only boxes after the row's box matter
    const int64_t row0 = rb * kTile, col0 = cbk * kTile;
    const int rows = int(std::min<int64_t>(kTile, n - row0)), cols = int(std::min<int64_t>(kTile, n - col0));
    __syncthreads();  // the previous tile is done with the shared arrays
    if (threadIdx.x < cols) {
      const float4 bx = gb[col0 + threadIdx.x];
      sb[threadIdx.x] = bx;
      sa[threadIdx.x] = (bx.z - bx.x) * (bx.w - bx.y);
      sc[threadIdx.x] = gc == nullptr ? 0 : gc[col0 + threadIdx.x];
    }
    __syncthreads();
    if (threadIdx.x < rows) {
      const int64_t i = row0 + threadIdx.x;
      const float4 bi = gb[i];
      const float ai = (bi.z - bi.x) * (bi.w - bi.y);
      const int64_t ci = gc == nullptr ? 0 : gc[i];
      unsigned long long bits = 0;
      for (int j = (rb == cbk ? threadIdx.x + 1 : 0); j < cols; ++j) {
        const float4 bj = sb[j];
        if (sc[j] == ci && box_iou_nms<float>(bi.x, bi.y, bi.z, bi.w, ai, bj.x, bj.y, bj.z, bj.w, sa[j]) > thr) {
          bits |= 1ull << j;
        }
      }
      mask[(g * cap + i) * words + cbk] = bits;
    }
  }
}

// Greedy reduction of the mask, one block per problem: rows 64 at a time; thread 0 resolves the
// diagonal word (staged in shared memory), then all threads OR the kept rows into later words.
// Writes kept ranks (positions in priority order) to keep[g, :limit] and their number to count[g].
__global__ void nms_reduce_kernel(const unsigned long long* __restrict__ mask, const int64_t* __restrict__ n_in,
                                  int64_t cap, int64_t words, int64_t limit, int32_t* __restrict__ keep,
                                  int64_t* __restrict__ count) {
  extern __shared__ unsigned long long removed[];  // `words` words
  __shared__ unsigned long long diag[kTile];
  __shared__ int s_new[kTile];
  __shared__ int s_nnew, s_cnt;
  __shared__ bool s_done;
  const int64_t g = blockIdx.x;
  const int64_t n = std::min<int64_t>(n_in[g], cap);
  const int64_t nb = (n + kTile - 1) / kTile;
  const unsigned long long* m = mask + g * cap * words;
  for (int64_t w = threadIdx.x; w < nb; w += blockDim.x) removed[w] = 0;
  if (threadIdx.x == 0) {
    s_cnt = 0;
    s_done = limit <= 0;
  }
  __syncthreads();
  for (int64_t rb = 0; rb < nb && !s_done; ++rb) {
    const int rows = int(std::min<int64_t>(kTile, n - rb * kTile));
    if (threadIdx.x < rows) diag[threadIdx.x] = m[(rb * kTile + threadIdx.x) * words + rb];
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long rem = removed[rb];
      int nn = 0;
      for (int i = 0; i < rows && s_cnt + nn < limit; ++i) {
        if (!((rem >> i) & 1ull)) {
          s_new[nn++] = i;
          rem |= diag[i];
        }
      }
      removed[rb] = rem;
      for (int k = 0; k < nn; ++k) keep[g * limit + s_cnt + k] = int32_t(rb * kTile + s_new[k]);
      s_cnt += nn;
      s_nnew = nn;
    }
    __syncthreads();
    const int nn = s_nnew;
    const bool done = s_cnt >= limit;
    for (int64_t w = rb + 1 + threadIdx.x; w < nb; w += blockDim.x) {
      unsigned long long acc = removed[w];
      for (int k = 0; k < nn; ++k) acc |= m[(rb * kTile + s_new[k]) * words + w];
      removed[w] = acc;
    }
    __syncthreads();  // everyone has read s_nnew/s_cnt before thread 0 writes them again
    if (threadIdx.x == 0) s_done = done;
    __syncthreads();
  }
  if (threadIdx.x == 0) count[g] = s_cnt;
}

struct MaskWorkspace {
  at::Tensor mask, keep, count;
};

// Steps 5 and 6 for G problems of at most `cap` boxes (boxes [G, cap] float4, cls [G, cap] or null).
MaskWorkspace run_bitmask_nms(const at::Tensor& boxes, const int64_t* cls, const at::Tensor& n_valid, int64_t G,
                              int64_t cap, float thr, int64_t limit, cudaStream_t stream) {
  const int64_t words = (cap + kTile - 1) / kTile;
  TORCH_CHECK(G * cap * words * 8 <= kMaxMaskBytes, "NMS on the GPU would need a ", G * cap * words * 8 >> 20,
              " MiB suppression mask for ", G, " x ", cap,
              " candidate boxes; lower the candidate count (pre_nms_topk, a higher conf_thre, or max_det=None "
              "for the list output, which sizes it from the actual count)");
  TORCH_CHECK(words * 8 <= 48 * 1024, "NMS on the GPU supports at most ", 48 * 1024 / 8 * kTile,
              " boxes per problem, got ", cap);
  auto opts = boxes.options();
  MaskWorkspace ws;
  ws.mask = at::empty({G, cap, words}, opts.dtype(at::kLong));
  ws.keep = at::empty({G, std::max<int64_t>(limit, 1)}, opts.dtype(at::kInt));
  ws.count = at::empty({G}, opts.dtype(at::kLong));
  if (cap == 0) {
    ws.count.zero_();
    return ws;
  }
  auto* mask = reinterpret_cast<unsigned long long*>(ws.mask.data_ptr<int64_t>());
  const int64_t tiles = words * words;
  const int64_t per_problem = std::max<int64_t>(1, std::min<int64_t>(tiles, 4096 / std::max<int64_t>(G, 1)));
  TORCH_CHECK(G <= 65535, "at most 65535 images per call on the GPU, got ", G);
  const dim3 grid(static_cast<unsigned>(per_problem), static_cast<unsigned>(G));
  nms_mask_kernel<<<grid, kTile, 0, stream>>>(reinterpret_cast<const float4*>(boxes.data_ptr<float>()), cls,
                                              n_valid.data_ptr<int64_t>(), cap, words, thr, mask);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  nms_reduce_kernel<<<unsigned(G), 256, words * 8, stream>>>(mask, n_valid.data_ptr<int64_t>(), cap, words, limit,
                                                             ws.keep.data_ptr<int32_t>(), ws.count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return ws;
}

}  // namespace
}  // namespace yolox_fast
